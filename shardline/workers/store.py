"""An org node's own database: its shares (sealed at rest), what it served, its chain cursor.

SQLite through SQLAlchemy by default; PostgreSQL by URL (``postgresql+psycopg://...``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import (
    Float,
    Integer,
    LargeBinary,
    String,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from shardline.core.logpoller import BlockRef


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
    engine = create_engine(url, future=True)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record) -> None:  # WAL: readers never block the writer
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

    Base.metadata.create_all(engine)
    return engine


class OrgStore:
    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)

    # shares -----------------------------------------------------------------------
    def put_share(
        self, transport_key: str, transport_id: str, version: int, company: str, sealed: bytes
    ) -> bool:
        """Keep the newest version of a transport's share; False when it is not newer."""
        with Session(self.engine) as s, s.begin():
            row = s.get(StoredShare, transport_key)
            if row is not None and row.version >= version:
                return False
            if row is None:
                s.add(
                    StoredShare(
                        transport_key=transport_key,
                        transport_id=transport_id,
                        version=version,
                        company=company,
                        sealed=sealed,
                        stored_at=time.time(),
                    )
                )
            else:
                row.version, row.sealed, row.stored_at = version, sealed, time.time()
            return True

    def get_share(self, transport_key: str) -> StoredShare | None:
        with Session(self.engine, expire_on_commit=False) as s:
            return s.get(StoredShare, transport_key)

    # served -----------------------------------------------------------------------
    def served(self, guid: str) -> ServedRecord | None:
        with Session(self.engine) as s:
            row = s.get(Served, guid)
            return _record(row) if row else None

    def record_served(
        self, guid: str, transport_key: str, requester: str, trigger: str, block: int | None
    ) -> bool:
        """Write that a share went out; False when it was already written (a redelivery)."""
        try:
            with Session(self.engine) as s, s.begin():
                s.add(
                    Served(
                        guid=guid,
                        transport_key=transport_key,
                        requester=requester,
                        trigger=trigger,
                        served_at=time.time(),
                        on_chain_block=block,
                    )
                )
            return True
        except IntegrityError:
            return False

    def mark_on_chain(self, guid: str, block: int) -> None:
        with Session(self.engine) as s, s.begin():
            row = s.get(Served, guid)
            if row is not None and row.on_chain_block is None:
                row.on_chain_block = block

    def served_since(self, since: float = 0.0, until: float | None = None) -> list[ServedRecord]:
        with Session(self.engine) as s:
            q = select(Served).where(Served.served_at >= since)
            if until is not None:
                q = q.where(Served.served_at <= until)
            return [_record(r) for r in s.scalars(q.order_by(Served.served_at))]

    # cursor -----------------------------------------------------------------------
    def cursor_blocks(self) -> list[BlockRef]:
        with Session(self.engine) as s:
            return [
                BlockRef(r.number, r.hash, r.parent)
                for r in s.scalars(select(CursorBlock).order_by(CursorBlock.number))
            ]

    def save_cursor(self, blocks: list[BlockRef]) -> None:
        """Make the stored blocks equal ``blocks`` (ascending), touching only what changed."""
        with Session(self.engine) as s, s.begin():
            if not blocks:
                s.query(CursorBlock).delete()
                return
            lo, hi = blocks[0].number, blocks[-1].number
            s.query(CursorBlock).filter(
                (CursorBlock.number < lo) | (CursorBlock.number > hi)
            ).delete()
            top = s.scalar(select(func.max(CursorBlock.number)))
            s.add_all(
                [
                    CursorBlock(number=b.number, hash=b.hash, parent=b.parent)
                    for b in blocks
                    if top is None or b.number > top
                ]
            )


def _record(row: Served) -> ServedRecord:
    return ServedRecord(
        row.guid, row.transport_key, row.requester, row.trigger, row.served_at, row.on_chain_block
    )
