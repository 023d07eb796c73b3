"""An MPC server's own tables, beside the org node's: the share vectors producers sent it, the
order of contributions the chain fixed, its open jobs (so a restart reveals what it committed),
and its chain cursor.

One share vector alone says nothing about a row (any t shares are uniform), so the shares are
kept as they were unsealed; the org's key file protects the box, not the database.
"""

from __future__ import annotations

import json

from sqlalchemy import (
    Connection,
    Integer,
    LargeBinary,
    String,
    Table,
    bindparam,
    func,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shardline.core.logpoller import BlockRef
from shardline.db import dialect_insert, upsert
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


_inputs = InputRow.__table__
_contributions = ContributionRow.__table__
_blocks = ContributionBlock.__table__
_points = CheckPointRow.__table__
_verdicts = VerdictRow.__table__
_jobs = JobRow.__table__

# Built once: only parameters change per call, so SQLAlchemy's compiled cache is hit.
_BLOCK = select(_blocks.c.block_hash).where(
    _blocks.c.dataset == bindparam("ds"), _blocks.c.digest == bindparam("d")
)
_POINTS = select(_points.c.x, _points.c.consistency, _points.c.rules).where(
    _points.c.dataset == bindparam("ds"), _points.c.digest == bindparam("d")
)
_JOB = select(_jobs.c.state, _jobs.c.detail).where(_jobs.c.job == bindparam("j"))
_POINT_COUNTS = (
    select(_points.c.digest, func.count())
    .where(
        _points.c.dataset == bindparam("ds"),
        _points.c.digest.in_(bindparam("ds_digests", expanding=True)),
    )
    .group_by(_points.c.digest)
)
# a few digests: by key; many (more than IN_LIST_MAX): one pass over the data set's rows
_VERDICTS = select(_verdicts.c.digest, _verdicts.c.ok).where(_verdicts.c.dataset == bindparam("ds"))
_VERDICTS_OF = _VERDICTS.where(_verdicts.c.digest.in_(bindparam("ds_digests", expanding=True)))
_INPUTS = select(_inputs.c.digest, _inputs.c.shares).where(_inputs.c.dataset == bindparam("ds"))
_INPUTS_OF = _INPUTS.where(_inputs.c.digest.in_(bindparam("ds_digests", expanding=True)))


class AnalyticsStore:
    """SQLAlchemy Core, no ORM session: a server touches these tables for every contribution
    and every set of check values, on its event loop, and the ORM's unit of work cost several
    times the statements (a merge is a read and then a write)."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        Base.metadata.create_all(self.engine)
        dialect = self.engine.dialect.name
        self._upserts = {
            t.name: upsert(dialect, t) for t in (_inputs, _contributions, _blocks, _verdicts, _jobs)
        }
        # a server's first point per contribution is kept, any other ignored
        self._keep_first = dialect_insert(dialect)(_points).on_conflict_do_nothing()

    def _upsert(self, c: Connection, table: Table, rows: list[dict]) -> None:
        """Insert ``rows``, or replace the row with the same key (what an ORM merge did)."""
        c.execute(self._upserts[table.name], rows)

    def put_input(
        self, dataset: str, digest: bytes, producer: str, rows: int, shares: bytes
    ) -> None:
        row = {
            "dataset": dataset,
            "digest": digest,
            "producer": producer,
            "rows": rows,
            "shares": shares,
        }
        with self.engine.begin() as c:
            self._upsert(c, _inputs, [row])

    def inputs(self, dataset: str, digests: list[bytes]) -> dict[bytes, bytes]:
        """The stored sums for ``digests`` (missing ones are absent)."""
        wanted = set(digests)
        query, params = self._of(_INPUTS, _INPUTS_OF, dataset, wanted)
        with self.engine.connect() as c:
            return {bytes(d): bytes(sh) for d, sh in c.execute(query, params) if bytes(d) in wanted}

    def add_contribution(
        self, dataset: str, index: int, digest: bytes, rows: int, block_hash: bytes | None = None
    ) -> None:
        """A contribution in the chain's order, and (given) the block that recorded it: one
        transaction."""
        with self.engine.begin() as c:
            self._upsert(
                c,
                _contributions,
                [{"dataset": dataset, "index": index, "digest": digest, "rows": rows}],
            )
            if block_hash is not None:
                self._upsert(
                    c, _blocks, [{"dataset": dataset, "digest": digest, "block_hash": block_hash}]
                )

    def contributions(self, dataset: str, upto: int) -> list[bytes]:
        query = (
            select(_contributions.c.digest)
            .where(_contributions.c.dataset == dataset, _contributions.c.index < upto)
            .order_by(_contributions.c.index)
        )
        with self.engine.connect() as c:
            return [bytes(d) for (d,) in c.execute(query)]

    def block(self, dataset: str, digest: bytes) -> bytes | None:
        with self.engine.connect() as c:
            found = c.execute(_BLOCK, {"ds": dataset, "d": digest}).scalar()
        return None if found is None else bytes(found)

    def add_points(
        self, dataset: str, x: int, points: list[tuple[bytes, int, int]]
    ) -> dict[bytes, int]:
        """Keep the first point server ``x`` sent for each contribution; how many servers'
        points each of these contributions has now. One transaction, two statements."""
        rows = [
            {"dataset": dataset, "digest": d, "x": x, "consistency": str(c), "rules": str(r)}
            for d, c, r in points
        ]
        digests = [d for d, _c, _r in points]
        with self.engine.begin() as c:
            c.execute(self._keep_first, rows)
            counts = c.execute(_POINT_COUNTS, {"ds": dataset, "ds_digests": digests})
            return {bytes(d): n for d, n in counts}

    def points_of(
        self, dataset: str, digests: list[bytes]
    ) -> dict[bytes, dict[int, tuple[int, int]]]:
        """Every server's point for each of ``digests``, in one query."""
        out: dict[bytes, dict[int, tuple[int, int]]] = {d: {} for d in digests}
        query = select(_points.c.digest, _points.c.x, _points.c.consistency, _points.c.rules).where(
            _points.c.dataset == dataset, _points.c.digest.in_(digests)
        )
        with self.engine.connect() as c:
            for d, x, con, r in c.execute(query):
                out[bytes(d)][x] = (int(con), int(r))
        return out

    def put_verdicts(self, dataset: str, verdicts: dict[bytes, str | None]) -> None:
        """Several contributions' verdicts in one transaction."""
        rows = [
            {"dataset": dataset, "digest": d, "ok": int(r is None), "reason": r or ""}
            for d, r in verdicts.items()
        ]
        if rows:
            with self.engine.begin() as c:
                self._upsert(c, _verdicts, rows)

    def points(self, dataset: str, digest: bytes) -> dict[int, tuple[int, int]]:
        with self.engine.connect() as c:
            rows = c.execute(_POINTS, {"ds": dataset, "d": digest})
            return {x: (int(con), int(r)) for x, con, r in rows}

    def verdicts(self, dataset: str, digests: list[bytes]) -> dict[bytes, bool]:
        wanted = set(digests)
        query, params = self._of(_VERDICTS, _VERDICTS_OF, dataset, wanted)
        with self.engine.connect() as c:
            return {bytes(d): bool(ok) for d, ok in c.execute(query, params) if bytes(d) in wanted}

    @staticmethod
    def _of(every, by_key, dataset: str, wanted: set[bytes]) -> tuple[object, dict]:
        if len(wanted) <= IN_LIST_MAX:
            return by_key, {"ds": dataset, "ds_digests": list(wanted)}
        return every, {"ds": dataset}

    def save_job(self, job: int, state: str, **detail) -> None:
        with self.engine.begin() as c:
            self._upsert(c, _jobs, [{"job": job, "state": state, "detail": json.dumps(detail)}])

    def job(self, job: int) -> tuple[str, dict] | None:
        with self.engine.connect() as c:
            row = c.execute(_JOB, {"j": job}).first()
        return None if row is None else (row.state, json.loads(row.detail))

    def jobs_in(self, *states: str) -> list[tuple[int, dict]]:
        query = select(_jobs.c.job, _jobs.c.detail).where(_jobs.c.state.in_(states))
        with self.engine.connect() as c:
            return [(j, json.loads(d)) for j, d in c.execute(query)]

    def cursor_blocks(self) -> list[BlockRef]:
        return load_cursor(self.engine, AnalyticsCursorBlock.__table__)

    def save_cursor(self, blocks: list[BlockRef]) -> None:
        save_cursor(self.engine, AnalyticsCursorBlock.__table__, blocks)
