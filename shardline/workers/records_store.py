"""A records proxy's own tables, beside the org node's: key fragments (sealed at rest), what it
re-encrypted for whom, and its chain cursor for grant events.

It shares the org's database (``OrgNodeConfig.database_url``) but not its tables. Key fragments
are kept exactly as they arrived, sealed to this org, and are deleted on revocation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import Float, Integer, LargeBinary, String, delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from shardline.core.logpoller import BlockRef
from shardline.workers.store import load_cursor, make_engine, save_cursor


class Base(DeclarativeBase):
    pass


class KeyFragRow(Base):
    __tablename__ = "records_kfrags"
    record_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    reader: Mapped[str] = mapped_column(String(32), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    owner: Mapped[str] = mapped_column(String(32))
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    stored_at: Mapped[float] = mapped_column(Float)


class ReencryptedRow(Base):
    """One capsule fragment this proxy made, for the audit."""

    __tablename__ = "records_reencrypted"
    request_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    record_id: Mapped[str] = mapped_column(String(32), index=True)
    reader: Mapped[str] = mapped_column(String(32))
    version: Mapped[int] = mapped_column(Integer)
    served_at: Mapped[float] = mapped_column(Float)


class RecordsCursorBlock(Base):
    __tablename__ = "records_cursor_blocks"
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    hash: Mapped[bytes] = mapped_column(LargeBinary)
    parent: Mapped[bytes] = mapped_column(LargeBinary)


@dataclass(frozen=True)
class StoredKeyFrag:
    record_id: str
    reader: str
    version: int
    owner: str
    sealed: bytes


class ProxyStore:
    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        Base.metadata.create_all(self.engine)

    def put_kfrag(
        self, record_id: str, reader: str, version: int, owner: str, sealed: bytes
    ) -> bool:
        """Keep the key fragment of the newest grant; False when it is not newer."""
        with Session(self.engine) as s, s.begin():
            row = s.get(KeyFragRow, (record_id, reader))
            if row is not None and row.version >= version:
                return False
            if row is None:
                s.add(
                    KeyFragRow(
                        record_id=record_id,
                        reader=reader,
                        version=version,
                        owner=owner,
                        sealed=sealed,
                        stored_at=time.time(),
                    )
                )
            else:
                row.version, row.owner, row.sealed, row.stored_at = (
                    version,
                    owner,
                    sealed,
                    time.time(),
                )
            return True

    def get_kfrag(self, record_id: str, reader: str) -> StoredKeyFrag | None:
        with Session(self.engine) as s:
            row = s.get(KeyFragRow, (record_id, reader))
            if row is None:
                return None
            return StoredKeyFrag(row.record_id, row.reader, row.version, row.owner, row.sealed)

    def drop_kfrag(self, record_id: str, reader: str, up_to_version: int | None = None) -> bool:
        """Delete the fragment (of this version or older); True when one was deleted."""
        with Session(self.engine) as s, s.begin():
            q = delete(KeyFragRow).where(
                KeyFragRow.record_id == record_id, KeyFragRow.reader == reader
            )
            if up_to_version is not None:
                q = q.where(KeyFragRow.version <= up_to_version)
            return bool(s.execute(q).rowcount)

    def kfrags(self) -> list[tuple[str, str, int]]:
        with Session(self.engine) as s:
            rows = s.execute(select(KeyFragRow.record_id, KeyFragRow.reader, KeyFragRow.version))
            return [(r, rd, v) for r, rd, v in rows]

    def record_reencrypted(
        self, request_id: str, record_id: str, reader: str, version: int
    ) -> None:
        with Session(self.engine) as s, s.begin():
            s.merge(
                ReencryptedRow(
                    request_id=request_id,
                    record_id=record_id,
                    reader=reader,
                    version=version,
                    served_at=time.time(),
                )
            )

    def record_reencrypted_many(self, rows: list[tuple[str, str, str, int, float]]) -> None:
        """Audit rows (request id, record, reader, version, served at) in one transaction.

        A request sent twice (same id) is kept once, as ``record_reencrypted`` keeps it.
        """
        if not rows:
            return
        try:
            with Session(self.engine) as s, s.begin():
                s.execute(
                    insert(ReencryptedRow),
                    [
                        {
                            "request_id": q,
                            "record_id": r,
                            "reader": rd,
                            "version": v,
                            "served_at": at,
                        }
                        for q, r, rd, v, at in rows
                    ],
                )
        except IntegrityError:  # a repeated request id: row by row
            for q, r, rd, v, _at in rows:
                self.record_reencrypted(q, r, rd, v)

    def reencrypted(self, record_id: str) -> list[tuple[str, str, int]]:
        """(request id, reader, grant version) of each capsule fragment made for a record."""
        with Session(self.engine) as s:
            rows = s.execute(
                select(ReencryptedRow.request_id, ReencryptedRow.reader, ReencryptedRow.version)
                .where(ReencryptedRow.record_id == record_id)
                .order_by(ReencryptedRow.served_at)
            )
            return [(q, rd, v) for q, rd, v in rows]

    def cursor_blocks(self) -> list[BlockRef]:
        return load_cursor(self.engine, RecordsCursorBlock.__table__)

    def save_cursor(self, blocks: list[BlockRef]) -> None:
        save_cursor(self.engine, RecordsCursorBlock.__table__, blocks)
