"""An org node's own database: its shares (sealed at rest), what it served, its chain cursor.

SQLite through SQLAlchemy by default; PostgreSQL by URL (``postgresql+psycopg://...``).
"""

from __future__ import annotations

import sqlite3
import time
import weakref
from dataclasses import dataclass

from sqlalchemy import (
    Float,
    Integer,
    LargeBinary,
    String,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.schema import Table

from shardline.core.logpoller import BlockRef
from shardline.db import create_engine, direct_sqlite


class Base(DeclarativeBase):
    pass


class StoredShare(Base):
    """A share exactly as it arrived: sealed to this org's key. It is opened only to serve."""

    __tablename__ = "shares"
    transport_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    transport_id: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[int] = mapped_column(Integer)
    company: Mapped[str] = mapped_column(String(32))
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    stored_at: Mapped[float] = mapped_column(Float)


class Served(Base):
    """One share this org sent out, and on what authority."""

    __tablename__ = "served"
    guid: Mapped[str] = mapped_column(String(32), primary_key=True)
    transport_key: Mapped[str] = mapped_column(String(64))
    requester: Mapped[str] = mapped_column(String(42))
    trigger: Mapped[str] = mapped_column(String(8))
    served_at: Mapped[float] = mapped_column(Float)
    on_chain_block: Mapped[int | None] = mapped_column(Integer, nullable=True)


class CursorBlock(Base):
    __tablename__ = "cursor_blocks"
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    hash: Mapped[bytes] = mapped_column(LargeBinary)
    parent: Mapped[bytes] = mapped_column(LargeBinary)


@dataclass(frozen=True)
class ServedRecord:
    guid: str
    transport_key: str
    requester: str
    trigger: str
    served_at: float
    on_chain_block: int | None


def make_engine(url: str) -> Engine:
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    return engine


@dataclass(frozen=True)
class ShareRow:
    transport_key: str
    transport_id: str
    version: int
    company: str
    sealed: bytes


_shares = StoredShare.__table__
_served = Served.__table__
_cursor = CursorBlock.__table__

# Built once: on the hot path only parameters change, so SQLAlchemy's compiled cache is hit
# without rebuilding a statement per call.
_SHARE_VERSION = select(_shares.c.version).where(_shares.c.transport_key == bindparam("k"))
_GET_SHARE = select(
    _shares.c.transport_key,
    _shares.c.transport_id,
    _shares.c.version,
    _shares.c.company,
    _shares.c.sealed,
).where(_shares.c.transport_key == bindparam("k"))
_GET_SERVED = select(_served).where(_served.c.guid == bindparam("g"))
_INSERT_SERVED = insert(_served)
_MARK_ON_CHAIN = (  # the first block it was seen in stays
    update(_served)
    .where(_served.c.guid == bindparam("g"))
    # not "requester": a bound name that is a column's is kept for the SET clause
    .where(func.lower(_served.c.requester) == func.lower(bindparam("by")))
    .values(on_chain_block=func.coalesce(_served.c.on_chain_block, bindparam("block")))
)


_SQL_GET_SHARE = (
    "SELECT transport_key, transport_id, version, company, sealed FROM shares "
    "WHERE transport_key = ?"
)
_SQL_GET_SERVED = (
    'SELECT guid, transport_key, requester, "trigger", served_at, on_chain_block FROM served '
    "WHERE guid = ?"
)
_SQL_INSERT_SERVED = (
    'INSERT OR IGNORE INTO served (guid, transport_key, requester, "trigger", served_at, '
    "on_chain_block) VALUES (?, ?, ?, ?, ?, ?)"
)
_SQL_MARK_ON_CHAIN = (
    "UPDATE served SET on_chain_block = coalesce(on_chain_block, ?) "
    "WHERE guid = ? AND lower(requester) = lower(?)"
)


class OrgStore:
    """Plain SQL statements (SQLAlchemy Core; a SQLite file's hot-path statements straight
    through sqlite3): a lookup touches this store on its hot path."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        self._db = direct_sqlite(self.engine)

    # shares -----------------------------------------------------------------------
    def put_share(
        self, transport_key: str, transport_id: str, version: int, company: str, sealed: bytes
    ) -> bool:
        """Keep the newest version of a transport's share; False when it is not newer."""
        row = {
            "transport_key": transport_key,
            "transport_id": transport_id,
            "version": version,
            "company": company,
            "sealed": sealed,
            "stored_at": time.time(),
        }
        with self.engine.begin() as c:
            old = c.execute(_SHARE_VERSION, {"k": transport_key}).scalar()
            if old is not None and old >= version:
                return False
            if old is None:
                c.execute(insert(_shares).values(row))
            else:
                c.execute(
                    update(_shares).where(_shares.c.transport_key == transport_key).values(row)
                )
            return True

    def get_share(self, transport_key: str) -> ShareRow | None:
        if self._db is not None:
            r = self._db.execute(_SQL_GET_SHARE, (transport_key,)).fetchone()
            return ShareRow(*r) if r is not None else None
        with self.engine.connect() as c:
            r = c.execute(_GET_SHARE, {"k": transport_key}).first()
        return ShareRow(*r) if r is not None else None

    # served -----------------------------------------------------------------------
    def served(self, guid: str) -> ServedRecord | None:
        if self._db is not None:
            r = self._db.execute(_SQL_GET_SERVED, (guid,)).fetchone()
            return ServedRecord(*r) if r is not None else None
        with self.engine.connect() as c:
            r = c.execute(_GET_SERVED, {"g": guid}).first()
        return _record(r) if r is not None else None

    def record_served(
        self, guid: str, transport_key: str, requester: str, trigger: str, block: int | None
    ) -> bool:
        """Write that a share went out; False when it was already written (a redelivery)."""
        if self._db is not None:
            cur = self._db.execute(
                _SQL_INSERT_SERVED,
                (guid, transport_key, requester, trigger, time.time(), block),
            )
            return cur.rowcount == 1
        try:
            with self.engine.begin() as c:
                c.execute(
                    _INSERT_SERVED,
                    {
                        "guid": guid,
                        "transport_key": transport_key,
                        "requester": requester,
                        "trigger": trigger,
                        "served_at": time.time(),
                        "on_chain_block": block,
                    },
                )
            return True
        except IntegrityError:
            return False

    def mark_on_chain(self, guid: str, block: int, requester: str) -> bool:
        """Note the block of a served lookup's on-chain request (the first one noted stays);
        False if this org served no such lookup to that requester (the chain keeps no set of
        used guids: a guid someone else requests again confirms nothing and is served nothing).
        """
        if self._db is not None:
            return self._db.execute(_SQL_MARK_ON_CHAIN, (block, guid, requester)).rowcount == 1
        with self.engine.begin() as c:
            done = c.execute(_MARK_ON_CHAIN, {"g": guid, "block": block, "by": requester})
            return bool(done.rowcount)

    def served_since(self, since: float = 0.0, until: float | None = None) -> list[ServedRecord]:
        q = select(_served).where(_served.c.served_at >= since)
        if until is not None:
            q = q.where(_served.c.served_at <= until)
        with self.engine.connect() as c:
            return [_record(r) for r in c.execute(q.order_by(_served.c.served_at))]

    # cursor -----------------------------------------------------------------------
    def cursor_blocks(self) -> list[BlockRef]:
        return load_cursor(self.engine, _cursor)

    def save_cursor(self, blocks: list[BlockRef]) -> None:
        save_cursor(self.engine, _cursor, blocks)


def load_cursor(engine: Engine, table: Table) -> list[BlockRef]:
    """The blocks a chain reader remembers, from its own (number, hash, parent) table."""
    with engine.connect() as c:
        return [
            BlockRef(r.number, r.hash, r.parent)
            for r in c.execute(select(table).order_by(table.c.number))
        ]


def save_cursor(engine: Engine, table: Table, blocks: list[BlockRef]) -> None:
    """Make the stored blocks equal ``blocks`` (ascending), touching only what changed.

    A chain reader saves after each block that carried its events: on a SQLite file that is
    one plain transaction, a fraction of SQLAlchemy's cost for the same three statements."""
    db = _cursor_db(engine)
    if db is not None:
        _save_cursor_sqlite(db, table.name, blocks)
        return
    with engine.begin() as c:
        if not blocks:
            c.execute(delete(table))
            return
        lo, hi = blocks[0].number, blocks[-1].number
        c.execute(delete(table).where((table.c.number < lo) | (table.c.number > hi)))
        top = c.execute(select(func.max(table.c.number))).scalar()
        new = [
            {"number": b.number, "hash": b.hash, "parent": b.parent}
            for b in blocks
            if top is None or b.number > top
        ]
        if new:
            c.execute(insert(table), new)


# engine -> its plain sqlite3 connection for cursor saves (None: not a SQLite file)
_CURSOR_DBS: weakref.WeakKeyDictionary[Engine, sqlite3.Connection | None] = (
    weakref.WeakKeyDictionary()
)


def _cursor_db(engine: Engine) -> sqlite3.Connection | None:
    if engine not in _CURSOR_DBS:
        _CURSOR_DBS[engine] = direct_sqlite(engine)
    return _CURSOR_DBS[engine]


def _save_cursor_sqlite(db: sqlite3.Connection, table: str, blocks: list[BlockRef]) -> None:
    db.execute("BEGIN IMMEDIATE")
    try:
        if not blocks:
            db.execute(f"DELETE FROM {table}")  # noqa: S608 (a table name of this module's)
        else:
            lo, hi = blocks[0].number, blocks[-1].number
            db.execute(f"DELETE FROM {table} WHERE number < ? OR number > ?", (lo, hi))  # noqa: S608
            top = db.execute(f"SELECT max(number) FROM {table}").fetchone()[0]  # noqa: S608
            db.executemany(
                f"INSERT INTO {table} (number, hash, parent) VALUES (?, ?, ?)",  # noqa: S608
                [(b.number, b.hash, b.parent) for b in blocks if top is None or b.number > top],
            )
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _record(row) -> ServedRecord:
    return ServedRecord(
        row.guid, row.transport_key, row.requester, row.trigger, row.served_at, row.on_chain_block
    )
