"""An org's contact store: SQLite by default, PostgreSQL by URL (``postgresql+psycopg://...``).

Opening a store runs its Alembic migrations. Imports keep every row's original beside the
normalised fields; merges never delete: members point at the survivor until the merge is undone.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from shardline.contacts import migrate
from shardline.contacts.models import (
    Contact,
    DedupChunk,
    DedupJob,
    DedupMember,
    DedupPair,
    ImportBatch,
    Merge,
    PairReview,
    PsiSession,
    PsiShared,
)
from shardline.core.contact_keys import anonymous_id, phonetic_keys
from shardline.core.contacts import FIELDS, ContactRecord, ImportResult, RowError
from shardline.db import create_engine


class StoreError(ValueError):
    """A request the store cannot honour; the text says what to do."""


def contact_secret(signing_seed: bytes) -> bytes:
    """The org's secret for anonymous ids, derived from its own key (never leaves the node)."""
    return hmac.new(signing_seed, b"shardline contacts anonymous id v1", hashlib.sha256).digest()


@dataclass(frozen=True)
class ImportReport:
    import_id: int
    rows: int
    imported: int
    errors: list[RowError]
    already: bool = False


def to_record(c: Contact) -> ContactRecord:
    return ContactRecord(line=c.line, **{f: getattr(c, f) for f in FIELDS})


class ContactStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_engine(url)
        migrate.upgrade(self.engine)

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    # ---- import ---------------------------------------------------------------------
    def import_result(
        self,
        result: ImportResult,
        *,
        file_name: str,
        file_sha256: str,
        fmt: str,
        mapping: dict,
        secret: bytes,
    ) -> ImportReport:
        with self.session() as s, s.begin():
            old = s.scalar(select(ImportBatch).where(ImportBatch.file_sha256 == file_sha256))
            if old is not None:
                return ImportReport(
                    old.id,
                    old.rows,
                    old.imported,
                    [RowError(**e) for e in json.loads(old.errors_json)],
                    already=True,
                )
            now = time.time()
            batch = ImportBatch(
                file_name=file_name[:255],
                file_sha256=file_sha256,
                fmt=fmt,
                mapping_json=json.dumps(mapping, sort_keys=True),
                rows=result.rows,
                imported=len(result.records),
                errors_json=json.dumps([e.__dict__ for e in result.errors]),
                imported_at=now,
            )
            s.add(batch)
            s.flush()
            s.add_all(
                Contact(
                    import_id=batch.id,
                    line=r.line,
                    anon_id=anonymous_id(r, secret),
                    original_json=json.dumps(r.original, ensure_ascii=False, sort_keys=True),
                    keys_json=phonetic_keys(r).to_json(),
                    registered_at=now,
                    **r.fields(),
                )
                for r in result.records
            )
            return ImportReport(batch.id, result.rows, len(result.records), result.errors)

    # ---- reading --------------------------------------------------------------------
    def count(self) -> int:
        with self.session() as s:
            return s.scalar(select(func.count(Contact.id))) or 0

    def contacts(self, ids: Iterable[int] | None = None, live_only: bool = False) -> list[Contact]:
        with self.session() as s:
            q = select(Contact).order_by(Contact.id)
            if ids is not None:
                q = q.where(Contact.id.in_(list(ids)))
            if live_only:
                q = q.where(Contact.merged_into.is_(None))
            return list(s.scalars(q))

    def page(self, offset: int = 0, limit: int = 100) -> list[Contact]:
        with self.session() as s:
            q = select(Contact).order_by(Contact.id).offset(offset).limit(limit)
            return list(s.scalars(q))

    # ---- dedup jobs -----------------------------------------------------------------
    def create_job(self, job_id: str, threshold: float | None) -> DedupJob:
        with self.session() as s, s.begin():
            job = DedupJob(id=job_id, state="queued", threshold=threshold, created_at=time.time())
            s.add(job)
            return job

    def job(self, job_id: str) -> DedupJob:
        with self.session() as s:
            job = s.get(DedupJob, job_id)
            if job is None:
                raise StoreError(
                    f"no dedup job {job_id}: list them with `shardline contacts dedup --list`"
                )
            return job

    def jobs(self) -> list[DedupJob]:
        with self.session() as s:
            return list(s.scalars(select(DedupJob).order_by(DedupJob.created_at.desc())))

    def update_job(self, job_id: str, **values) -> None:
        with self.session() as s, s.begin():
            s.execute(update(DedupJob).where(DedupJob.id == job_id).values(**values))

    def done_chunks(self, job_id: str) -> dict[int, list]:
        with self.session() as s:
            rows = s.scalars(select(DedupChunk).where(DedupChunk.job_id == job_id))
            return {r.chunk: json.loads(r.levels_json) for r in rows}

    def save_chunk(self, job_id: str, chunk: int, levels: list) -> None:
        """Idempotent: a chunk saved twice (a retried job) keeps its first copy."""
        with self.session() as s, s.begin():
            if s.get(DedupChunk, (job_id, chunk)) is None:
                s.add(DedupChunk(job_id=job_id, chunk=chunk, levels_json=json.dumps(levels)))

    def save_result(
        self,
        job_id: str,
        groups: Sequence[Sequence[int]],
        pairs: Sequence[tuple[int, int, float]],
        model: dict,
        threshold: float,
    ) -> None:
        """Replace the job's result in one transaction, so a rerun never doubles it."""
        group_of = {cid: n for n, g in enumerate(groups, 1) for cid in g}
        with self.session() as s, s.begin():
            s.execute(delete(DedupMember).where(DedupMember.job_id == job_id))
            s.execute(delete(DedupPair).where(DedupPair.job_id == job_id))
            s.add_all(
                DedupMember(job_id=job_id, contact_id=cid, group_no=n)
                for cid, n in group_of.items()
            )
            s.add_all(
                DedupPair(job_id=job_id, a=a, b=b, score=sc, group_no=group_of[a])
                for a, b, sc in pairs
                if a in group_of
            )
            s.execute(
                update(DedupJob)
                .where(DedupJob.id == job_id)
                .values(
                    state="done",
                    stage="done",
                    groups=len(groups),
                    model_json=json.dumps(model),
                    threshold=threshold,
                    finished_at=time.time(),
                )
            )
            s.execute(delete(DedupChunk).where(DedupChunk.job_id == job_id))

    def groups(self, job_id: str) -> list[list[int]]:
        with self.session() as s:
            rows = s.execute(
                select(DedupMember.group_no, DedupMember.contact_id)
                .where(DedupMember.job_id == job_id)
                .order_by(DedupMember.group_no, DedupMember.contact_id)
            )
            out: dict[int, list[int]] = {}
            for g, c in rows:
                out.setdefault(g, []).append(c)
            return [out[k] for k in sorted(out)]

    def pairs(self, job_id: str, group_no: int | None = None) -> list[DedupPair]:
        with self.session() as s:
            q = select(DedupPair).where(DedupPair.job_id == job_id)
            if group_no is not None:
                q = q.where(DedupPair.group_no == group_no)
            return list(s.scalars(q.order_by(DedupPair.score)))

    # ---- review and merge -----------------------------------------------------------
    def review(self, a: int, b: int, decision: str, reviewer: str) -> None:
        if decision not in ("accept", "reject"):
            raise StoreError(f"a review is accept or reject, not {decision!r}")
        a, b = min(a, b), max(a, b)
        with self.session() as s, s.begin():
            known = s.scalars(select(Contact.id).where(Contact.id.in_([a, b]))).all()
            if len(set(known)) != 2:
                raise StoreError(f"no contact pair {a}, {b} in this org's store")
            row = s.get(PairReview, (a, b))
            if row is None:
                s.add(
                    PairReview(
                        a=a, b=b, decision=decision, reviewer=reviewer, reviewed_at=time.time()
                    )
                )
            else:
                row.decision, row.reviewer, row.reviewed_at = decision, reviewer, time.time()

    def reviews(self) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        with self.session() as s:
            rows = s.scalars(select(PairReview)).all()
        acc = [(r.a, r.b) for r in rows if r.decision == "accept"]
        rej = [(r.a, r.b) for r in rows if r.decision == "reject"]
        return acc, rej

    def merge(self, job_id: str, group_no: int, by: str) -> Merge:
        members = dict(enumerate(self.groups(job_id), 1)).get(group_no)
        if not members:
            raise StoreError(f"dedup job {job_id} has no group {group_no}")
        survivor = min(members)
        with self.session() as s, s.begin():
            taken = s.scalars(
                select(Contact.id).where(Contact.id.in_(members), Contact.merged_into.is_not(None))
            ).all()
            if taken:
                raise StoreError(
                    f"contacts {sorted(taken)} are already merged; undo that merge first"
                )
            m = Merge(
                job_id=job_id,
                group_no=group_no,
                survivor=survivor,
                members_json=json.dumps(members),
                merged_by=by,
                merged_at=time.time(),
            )
            s.add(m)
            s.execute(
                update(Contact)
                .where(Contact.id.in_([c for c in members if c != survivor]))
                .values(merged_into=survivor)
            )
            return m

    def undo_merge(self, merge_id: int) -> Merge:
        with self.session() as s, s.begin():
            m = s.get(Merge, merge_id)
            if m is None:
                raise StoreError(f"no merge {merge_id}")
            if m.undone_at is not None:
                raise StoreError(f"merge {merge_id} was already undone")
            members = json.loads(m.members_json)
            s.execute(
                update(Contact)
                .where(Contact.id.in_(members), Contact.merged_into == m.survivor)
                .values(merged_into=None)
            )
            m.undone_at = time.time()
            return m

    def merges(self) -> list[Merge]:
        with self.session() as s:
            return list(s.scalars(select(Merge).order_by(Merge.id)))

    # ---- private matching -------------------------------------------------------------
    def start_session(self, session_id: str, peer: str, role: str) -> None:
        with self.session() as s, s.begin():
            if s.get(PsiSession, session_id) is None:
                s.add(
                    PsiSession(
                        id=session_id, peer=peer, role=role, state="running", started_at=time.time()
                    )
                )

    def psi_session(self, session_id: str) -> PsiSession:
        with self.session() as s:
            row = s.get(PsiSession, session_id)
            if row is None:
                raise StoreError(f"no match session {session_id} in this org's store")
            return row

    def psi_sessions(self) -> list[PsiSession]:
        with self.session() as s:
            return list(s.scalars(select(PsiSession).order_by(PsiSession.started_at.desc())))

    def fail_session(self, session_id: str, detail: str) -> None:
        with self.session() as s, s.begin():
            row = s.get(PsiSession, session_id)
            if row is not None and row.state == "running":
                row.state, row.detail, row.finished_at = "failed", detail[:2000], time.time()

    def finish_session(
        self, session_id: str, shared: dict[int, set[bytes]], mine: int, theirs: int
    ) -> None:
        """Keep the result in one transaction: a session is either whole or absent."""
        with self.session() as s, s.begin():
            row = s.get(PsiSession, session_id)
            if row is None or row.state != "running":
                return
            s.add_all(
                PsiShared(
                    session_id=session_id,
                    contact_id=cid,
                    handle=min(values).hex(),
                    values_json=json.dumps(sorted(v.hex() for v in values)),
                )
                for cid, values in shared.items()
            )
            row.state, row.mine, row.theirs = "done", mine, theirs
            row.shared_contacts, row.finished_at = len(shared), time.time()

    def shared(self, session_id: str) -> list[PsiShared]:
        with self.session() as s:
            q = select(PsiShared).where(PsiShared.session_id == session_id)
            return list(s.scalars(q.order_by(PsiShared.contact_id)))
