"""Seen envelope ids in an org node's own database: see shardline/bus/seen_ids.py for why.

A module of its own so that processes without a database (the combiner) do not load SQLAlchemy:
a restarted worker is back sooner.
"""

from __future__ import annotations

import sqlite3
import time

from sqlalchemy import (
    Column,
    Float,
    MetaData,
    String,
    Table,
    bindparam,
    delete,
    func,
    select,
)
from sqlalchemy.engine import Engine

from shardline.bus.seen_ids import position_key
from shardline.db import create_engine, dialect_insert, direct_sqlite

TRIM_EVERY_S = 10.0


_metadata = MetaData()
_seen = Table(
    "envelopes_seen",
    _metadata,
    Column("scope", String(64), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("position", String(160), nullable=False),
    Column("sent_at", Float, nullable=False, index=True),
)


def _engine(url: str) -> Engine:
    engine = create_engine(url)
    _metadata.create_all(engine)
    return engine


class SqlSeenIds:
    """Seen ids in an org node's database (``database_url`` of its configuration).

    On the hot path (one claim per message): SQLite is spoken to directly, one autocommit insert
    per new id (a fraction of SQLAlchemy's cost per statement); another database through
    SQLAlchemy."""

    def __init__(self, url: str, clock=time.time) -> None:
        self.clock = clock
        self._trimmed = 0.0
        self.engine = _engine(url)  # creates the table, whatever the database
        self._sqlite: sqlite3.Connection | None = direct_sqlite(self.engine)
        if self._sqlite is not None:
            self.engine.dispose()
            return
        # an id already there keeps its first position: the insert does nothing
        self._insert = dialect_insert(self.engine.dialect.name)(_seen).on_conflict_do_nothing()
        self._first = select(_seen.c.position).where(
            _seen.c.scope == bindparam("scope"), _seen.c.id == bindparam("id")
        )

    async def claim(self, scope: str, env_id: str, position: object, sent_at: float) -> str:
        where = position_key(position)
        if self._sqlite is not None:
            cur = self._sqlite.execute(
                "INSERT INTO envelopes_seen (scope, id, position, sent_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                (scope, env_id, where, sent_at),
            )
            if cur.rowcount == 1:
                return where
            row = self._sqlite.execute(
                "SELECT position FROM envelopes_seen WHERE scope = ? AND id = ?", (scope, env_id)
            ).fetchone()
            return row[0] if row else where
        with self.engine.begin() as conn:
            conn.execute(
                self._insert, {"scope": scope, "id": env_id, "position": where, "sent_at": sent_at}
            )
            return conn.execute(self._first, {"scope": scope, "id": env_id}).scalar_one()

    async def trim(self, horizon: float) -> None:
        now = self.clock()
        if now - self._trimmed < TRIM_EVERY_S:
            return
        self._trimmed = now
        if self._sqlite is not None:
            self._sqlite.execute("DELETE FROM envelopes_seen WHERE sent_at < ?", (horizon,))
            return
        with self.engine.begin() as conn:
            conn.execute(delete(_seen).where(_seen.c.sent_at < horizon))

    def __len__(self) -> int:
        if self._sqlite is not None:
            return self._sqlite.execute("SELECT count(*) FROM envelopes_seen").fetchone()[0]
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(_seen)).scalar_one()
