"""The one place an org node's ``database_url`` becomes a SQLAlchemy engine.

SQLite by default (``sqlite:///path``); PostgreSQL by URL. The PostgreSQL driver that ships with
shardline is psycopg 3, so a plain ``postgresql://`` (or ``postgres://``, which SQLAlchemy itself
refuses) URL is read as ``postgresql+psycopg://``: an operator need not name the driver, and it
stays so whichever driver SQLAlchemy picks by default (2.1 picks psycopg 3; 2.0 picked psycopg2,
which shardline does not install). A URL that names a driver (``postgresql+psycopg2://``) is
left as it is.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable

import sqlalchemy
from sqlalchemy import Table, event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError

POSTGRES_DRIVER = "postgresql+psycopg"
_PLAIN_POSTGRES = ("postgresql", "postgres")


def engine_url(url: str | URL) -> URL:
    """``url`` as SQLAlchemy is given it: a PostgreSQL URL without a driver gets psycopg 3."""
    u = make_url(url)
    if u.drivername in _PLAIN_POSTGRES:
        u = u.set(drivername=POSTGRES_DRIVER)
    return u


# An org's SQLite file is written by several of its stores and processes: a writer waits this
# long for another's lock before it fails.
SQLITE_BUSY_MS = 10_000


def create_engine(url: str | URL, **kwargs) -> Engine:
    """An engine whose errors name the statement but not its parameters: those are shares,
    sums and keys, and an error's text goes to the logs and to a dead letter's reason. On
    SQLite, every connection is set up by ``_sqlite_pragmas``."""
    kwargs.setdefault("hide_parameters", True)
    engine = sqlalchemy.create_engine(engine_url(url), **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    """WAL, so that readers never block the writer; synchronous NORMAL, which survives a
    process crash (fsync at checkpoints); and a writer waits for another's lock."""
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
    cur.close()


def direct_sqlite(engine: Engine) -> sqlite3.Connection | None:
    """A plain sqlite3 connection to the engine's file, for statements on a hot path:
    SQLAlchemy costs several times the statement itself there (None: not a SQLite file)."""
    if engine.dialect.name != "sqlite" or engine.url.database in (None, "", ":memory:"):
        return None
    db = sqlite3.connect(engine.url.database, isolation_level=None)
    _sqlite_pragmas(db, None)
    return db


def upsert(dialect: str, table: Table):
    """Insert rows of ``table``, or replace the row with the same primary key."""
    ins = dialect_insert(dialect)(table)
    keys = [col.name for col in table.primary_key]
    others = [col.name for col in table.columns if col.name not in keys]
    return ins.on_conflict_do_update(index_elements=keys, set_={k: ins.excluded[k] for k in others})


def dialect_insert(dialect: str) -> Callable:
    """The dialect's own ``insert`` (it has ``on_conflict_do_nothing`` and
    ``on_conflict_do_update``): SQLite's or PostgreSQL's, the two databases the stores speak."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        raise ValueError(f"database {dialect!r}: an org node's stores speak SQLite or PostgreSQL")
    return insert


def shown_url(url: str | URL) -> str:
    """``url`` fit for a message or a log: its password masked (``***``). A ``{org}`` template
    (``shardline up --database-url``) keeps its ``{org}``; text that is no URL at all has any
    ``user:password@`` masked all the same."""
    text = url if isinstance(url, str) else url.render_as_string(hide_password=True)
    marker = "ORGPLACEHOLDER"
    try:
        shown = make_url(text.replace("{org}", marker)).render_as_string(hide_password=True)
    except ArgumentError:
        return re.sub(r"(://[^/@:]*:)[^@/]*@", r"\1***@", text)
    return shown.replace(marker, "{org}")
