"""A facilitator's own tables: its groups, what it executed for each transaction, its cursor.

Kept in SQLite beside the executor's state (or in PostgreSQL by URL) so that a facilitator that
stops and comes back knows which snapshots belong to which transaction and reads the chain on
from where it was. No plaintext payload is kept: only hashes, roots and snapshot ids.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    func,
    inspect,
    select,
)
from sqlalchemy.engine import Engine

from shardline.core.logpoller import BlockRef
from shardline.db import dialect_insert, upsert
from shardline.workers.store import load_cursor, make_engine, save_cursor

meta = MetaData()
_cursor = Table(
    "privtx_cursor_blocks",
    meta,
    Column("number", Integer, primary_key=True),
    Column("hash", LargeBinary),
    Column("parent", LargeBinary),
)
_groups = Table(
    "privtx_groups",
    meta,
    Column("group_id", String(64), primary_key=True),
    Column("member", Integer),
    Column("contract", String(42)),
    Column("joined", Integer),  # 1, 2, ...: the order the groups were joined in
)
_txs = Table(
    "privtx_txs",
    meta,
    Column("payload_hash", String(64), primary_key=True),
    Column("group_id", String(64)),
    Column("seq", Integer),
    Column("step", Integer),  # order of execution on this executor, across groups
    # executed | refused | discarded | final | reverted | diverged | lost (its execution went
    # with an executor that lost its state before it settled) | pre (executed ahead of its
    # PrivateTxInit, at position seq, and voted for it) | abandoned (executed ahead, then
    # undone: its position went to another transaction; run afresh if its Init comes)
    Column("state", String(16)),
    Column("snapshot", String(80)),
    Column("old_root", LargeBinary),
    Column("new_root", LargeBinary),
    Column("deadline", BigInteger),  # unix seconds: past 2038 on PostgreSQL too
    Column("note", String(400)),
)


_TX_COLUMNS = [c.name for c in _txs.columns]
_PUT_TX = (
    "INSERT OR REPLACE INTO privtx_txs (payload_hash, group_id, seq, step, state, snapshot, "
    "old_root, new_root, deadline, note) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
assert _TX_COLUMNS == _PUT_TX.split("(")[1].split(")")[0].replace(" ", "").split(",")
_NEXT_JOINED = select(func.coalesce(func.max(_groups.c.joined), 0) + 1).scalar_subquery()


def _add_joined(engine: Engine) -> None:
    """A file from before groups kept ``joined`` (SQLite: the order was the rowid's) gets it."""
    if "joined" in {c["name"] for c in inspect(engine).get_columns("privtx_groups")}:
        return
    with engine.begin() as c:
        c.exec_driver_sql("ALTER TABLE privtx_groups ADD COLUMN joined INTEGER")
        c.exec_driver_sql("UPDATE privtx_groups SET joined = rowid")


@dataclass
class TxRow:
    payload_hash: str
    group_id: str
    seq: int
    step: int
    state: str
    snapshot: str
    old_root: bytes
    new_root: bytes
    deadline: int
    note: str = ""


class FacilitatorStore:
    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        meta.create_all(self.engine)
        if self.engine.dialect.name == "sqlite":
            _add_joined(self.engine)
        self._raw = None
        dialect = self.engine.dialect.name
        self._add_group = dialect_insert(dialect)(_groups).on_conflict_do_nothing()
        self._put_tx = upsert(dialect, _txs)  # INSERT OR REPLACE, elsewhere than SQLite

    def cursor_blocks(self) -> list[BlockRef]:
        return load_cursor(self.engine, _cursor)

    def save_cursor(self, blocks: list[BlockRef]) -> None:
        save_cursor(self.engine, _cursor, blocks)

    def groups(self) -> dict[str, tuple[int, str]]:
        with self.engine.connect() as c:  # in the order they were joined
            rows = c.execute(select(_groups).order_by(_groups.c.joined, _groups.c.group_id))
            return {r.group_id: (r.member, r.contract) for r in rows}

    def add_group(self, group_id: str, member: int, contract: str) -> None:
        with self.engine.begin() as c:
            c.execute(
                self._add_group.values(
                    group_id=group_id, member=member, contract=contract, joined=_NEXT_JOINED
                )
            )

    def set_contract(self, group_id: str, contract: str) -> None:
        """The group's private contract was deployed again (a rebuilt executor)."""
        with self.engine.begin() as c:
            c.execute(
                _groups.update().where(_groups.c.group_id == group_id).values(contract=contract)
            )

    def txs(self) -> list[TxRow]:
        with self.engine.connect() as c:
            rows = c.execute(select(_txs).order_by(_txs.c.step))
            return [TxRow(**r._asdict()) for r in rows]

    def put_tx(self, row: TxRow) -> None:
        """One row written at once (a transaction's state is what a restart goes by). Written
        through the driver's own connection with one prepared statement: this runs twice for
        every private transaction, and the query builder costs more than the write (SQLite; the
        same upsert through SQLAlchemy elsewhere)."""
        if self.engine.dialect.name != "sqlite":
            with self.engine.begin() as c:
                c.execute(self._put_tx, {col: getattr(row, col) for col in _TX_COLUMNS})
            return
        if self._raw is None:
            self._raw = self.engine.raw_connection()
        cur = self._raw.cursor()
        try:
            cur.execute(_PUT_TX, [getattr(row, c) for c in _TX_COLUMNS])
        finally:
            cur.close()
        self._raw.commit()

    def close(self) -> None:
        if self._raw is not None:
            self._raw.close()
            self._raw = None
