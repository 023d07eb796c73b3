"""An MPC server's own tables, beside the org node's: the share vectors producers sent it, the
order of contributions the chain fixed, its open jobs (so a restart reveals what it committed),
and its chain cursor.

One share vector alone says nothing about a row (any t shares are uniform), so the shares are
kept as they were unsealed; the org's key file protects the box, not the database.
"""

from __future__ import annotations

import json

from sqlalchemy import Integer, LargeBinary, String, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from shardline.core.logpoller import BlockRef
from shardline.workers.store import load_cursor, make_engine, save_cursor

IN_LIST_MAX = 500  # digests looked up by key at once; more, and one scan of the data set


class Base(DeclarativeBase):
    pass


class InputRow(Base):
    """A contribution as this server keeps it: the sum of its share vectors over the batch's rows
    (the servers only ever add, so the rows themselves are not kept once checked and summed)."""

    __tablename__ = "analytics_inputs"
    dataset: Mapped[str] = mapped_column(String(32), primary_key=True)
    digest: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    producer: Mapped[str] = mapped_column(String(32))
    rows: Mapped[int] = mapped_column(Integer)
    shares: Mapped[bytes] = mapped_column(LargeBinary)


class ContributionRow(Base):
    __tablename__ = "analytics_contributions"
    dataset: Mapped[str] = mapped_column(String(32), primary_key=True)
    index: Mapped[int] = mapped_column(Integer, primary_key=True)
    digest: Mapped[bytes] = mapped_column(LargeBinary(32))
    rows: Mapped[int] = mapped_column(Integer)


class ContributionBlock(Base):
    """The block that put a contribution's digest on chain: its hash seeds the range check."""

    __tablename__ = "analytics_contribution_blocks"
    dataset: Mapped[str] = mapped_column(String(32), primary_key=True)
    digest: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    block_hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class CheckPointRow(Base):
    """One server's opened check values for one contribution (the first it sent counts)."""

    __tablename__ = "analytics_check_points"
    dataset: Mapped[str] = mapped_column(String(32), primary_key=True)
    digest: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    x: Mapped[int] = mapped_column(Integer, primary_key=True)
    consistency: Mapped[str] = mapped_column(String(40))
    rules: Mapped[str] = mapped_column(String(40))


class VerdictRow(Base):
    """Whether a contribution passed the servers' range check: only those that did count."""

    __tablename__ = "analytics_verdicts"
    dataset: Mapped[str] = mapped_column(String(32), primary_key=True)
    digest: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    ok: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String)


class JobRow(Base):
    __tablename__ = "analytics_jobs"
    job: Mapped[int] = mapped_column(Integer, primary_key=True)
    state: Mapped[str] = mapped_column(String(16))  # committed, revealed, refused, failed
    detail: Mapped[str] = mapped_column(String)  # JSON: salt, masked output, reason


class AnalyticsCursorBlock(Base):
    __tablename__ = "analytics_cursor_blocks"
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    hash: Mapped[bytes] = mapped_column(LargeBinary)
    parent: Mapped[bytes] = mapped_column(LargeBinary)


class AnalyticsStore:
    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        Base.metadata.create_all(self.engine)

    def put_input(
        self, dataset: str, digest: bytes, producer: str, rows: int, shares: bytes
    ) -> None:
        with Session(self.engine) as s, s.begin():
            s.merge(
                InputRow(
                    dataset=dataset, digest=digest, producer=producer, rows=rows, shares=shares
                )
            )

    def inputs(self, dataset: str, digests: list[bytes]) -> dict[bytes, bytes]:
        """The stored sums for ``digests`` (missing ones are absent)."""
        wanted = set(digests)
        query = select(InputRow.digest, InputRow.shares).where(InputRow.dataset == dataset)
        if len(wanted) <= IN_LIST_MAX:
            query = query.where(InputRow.digest.in_(wanted))
        with Session(self.engine) as s:
            return {bytes(d): bytes(sh) for d, sh in s.execute(query) if bytes(d) in wanted}

    def add_contribution(
        self, dataset: str, index: int, digest: bytes, rows: int, block_hash: bytes | None = None
    ) -> None:
        """A contribution in the chain's order, and (given) the block that recorded it: one
        transaction."""
        with Session(self.engine) as s, s.begin():
            s.merge(ContributionRow(dataset=dataset, index=index, digest=digest, rows=rows))
            if block_hash is not None:
                s.merge(ContributionBlock(dataset=dataset, digest=digest, block_hash=block_hash))

    def contributions(self, dataset: str, upto: int) -> list[bytes]:
        with Session(self.engine) as s:
            return [
                bytes(d)
                for (d,) in s.execute(
                    select(ContributionRow.digest)
                    .where(ContributionRow.dataset == dataset, ContributionRow.index < upto)
                    .order_by(ContributionRow.index)
                )
            ]

    def put_block(self, dataset: str, digest: bytes, block_hash: bytes) -> None:
        with Session(self.engine) as s, s.begin():
            s.merge(ContributionBlock(dataset=dataset, digest=digest, block_hash=block_hash))

    def block(self, dataset: str, digest: bytes) -> bytes | None:
        with Session(self.engine) as s:
            row = s.get(ContributionBlock, (dataset, digest))
            return None if row is None else bytes(row.block_hash)

    def add_points(
        self, dataset: str, x: int, points: list[tuple[bytes, int, int]]
    ) -> dict[bytes, int]:
        """Keep the first point server ``x`` sent for each contribution; how many servers'
        points each of these contributions has now. One transaction, two statements."""
        table = CheckPointRow.__table__
        rows = [
            {"dataset": dataset, "digest": d, "x": x, "consistency": str(c), "rules": str(r)}
            for d, c, r in points
        ]
        dialect = self.engine.dialect.name
        with Session(self.engine) as s, s.begin():
            if dialect in ("sqlite", "postgresql"):
                ins = sqlite_insert if dialect == "sqlite" else pg_insert
                s.execute(ins(table).on_conflict_do_nothing(), rows)
            else:
                for row in rows:
                    if s.get(CheckPointRow, (dataset, row["digest"], x)) is None:
                        s.add(CheckPointRow(**row))
            digests = [d for d, _c, _r in points]
            counts = s.execute(
                select(CheckPointRow.digest, func.count())
                .where(CheckPointRow.dataset == dataset, CheckPointRow.digest.in_(digests))
                .group_by(CheckPointRow.digest)
            )
            return {bytes(d): n for d, n in counts}

    def points_of(
        self, dataset: str, digests: list[bytes]
    ) -> dict[bytes, dict[int, tuple[int, int]]]:
        """Every server's point for each of ``digests``, in one query."""
        out: dict[bytes, dict[int, tuple[int, int]]] = {d: {} for d in digests}
        with Session(self.engine) as s:
            rows = s.execute(
                select(
                    CheckPointRow.digest,
                    CheckPointRow.x,
                    CheckPointRow.consistency,
                    CheckPointRow.rules,
                ).where(CheckPointRow.dataset == dataset, CheckPointRow.digest.in_(digests))
            )
            for d, x, c, r in rows:
                out[bytes(d)][x] = (int(c), int(r))
        return out

    def put_verdicts(self, dataset: str, verdicts: dict[bytes, str | None]) -> None:
        """Several contributions' verdicts in one transaction."""
        with Session(self.engine) as s, s.begin():
            for digest, reason in verdicts.items():
                s.merge(
                    VerdictRow(
                        dataset=dataset, digest=digest, ok=int(reason is None), reason=reason or ""
                    )
                )

    def points(self, dataset: str, digest: bytes) -> dict[int, tuple[int, int]]:
        with Session(self.engine) as s:
            rows = s.execute(
                select(CheckPointRow.x, CheckPointRow.consistency, CheckPointRow.rules).where(
                    CheckPointRow.dataset == dataset, CheckPointRow.digest == digest
                )
            )
            return {x: (int(c), int(r)) for x, c, r in rows}

    def put_verdict(self, dataset: str, digest: bytes, reason: str | None) -> None:
        with Session(self.engine) as s, s.begin():
            s.merge(
                VerdictRow(
                    dataset=dataset, digest=digest, ok=int(reason is None), reason=reason or ""
                )
            )

    def verdicts(self, dataset: str, digests: list[bytes]) -> dict[bytes, bool]:
        wanted = set(digests)
        query = select(VerdictRow.digest, VerdictRow.ok).where(VerdictRow.dataset == dataset)
        if len(wanted) <= IN_LIST_MAX:  # a few: by key; many: one pass over the data set
            query = query.where(VerdictRow.digest.in_(wanted))
        with Session(self.engine) as s:
            return {bytes(d): bool(ok) for d, ok in s.execute(query) if bytes(d) in wanted}

    def save_job(self, job: int, state: str, **detail) -> None:
        with Session(self.engine) as s, s.begin():
            s.merge(JobRow(job=job, state=state, detail=json.dumps(detail)))

    def job(self, job: int) -> tuple[str, dict] | None:
        with Session(self.engine) as s:
            row = s.get(JobRow, job)
            return None if row is None else (row.state, json.loads(row.detail))

    def jobs_in(self, *states: str) -> list[tuple[int, dict]]:
        with Session(self.engine) as s:
            rows = s.execute(select(JobRow.job, JobRow.detail).where(JobRow.state.in_(states)))
            return [(j, json.loads(d)) for j, d in rows]

    def cursor_blocks(self) -> list[BlockRef]:
        return load_cursor(self.engine, AnalyticsCursorBlock.__table__)

    def save_cursor(self, blocks: list[BlockRef]) -> None:
        save_cursor(self.engine, AnalyticsCursorBlock.__table__, blocks)
