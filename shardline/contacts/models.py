"""SQLAlchemy models of an org's contact store. The schema is made by Alembic migrations
(``migrations/``), never by ``create_all``, so PostgreSQL and SQLite stores evolve alike."""

from __future__ import annotations

from sqlalchemy import Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shardline.core.contacts import FIELD_MAX


class ContactsBase(DeclarativeBase):
    pass


def _field(name: str) -> Mapped[str]:
    """A contact field's column: as wide as the longest value the field keeps (FIELD_MAX)."""
    return mapped_column(String(FIELD_MAX[name]), default="")


class ImportBatch(ContactsBase):
    """One imported file: what came in, what was refused and why."""

    __tablename__ = "contact_imports"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    file_name: Mapped[str] = mapped_column(String(255))
    file_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    fmt: Mapped[str] = mapped_column(String(8))
    mapping_json: Mapped[str] = mapped_column(Text)
    rows: Mapped[int] = mapped_column(Integer)
    imported: Mapped[int] = mapped_column(Integer)
    errors_json: Mapped[str] = mapped_column(Text)
    imported_at: Mapped[float] = mapped_column(Float)


class Contact(ContactsBase):
    """A normalised contact, its original row, its phonetic keys and its anonymous id."""

    __tablename__ = "contacts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    import_id: Mapped[int] = mapped_column(ForeignKey("contact_imports.id"), index=True)
    line: Mapped[int] = mapped_column(Integer)
    anon_id: Mapped[str] = mapped_column(String(64), index=True)
    external_id: Mapped[str] = _field("external_id")
    given_name: Mapped[str] = _field("given_name")
    family_name: Mapped[str] = _field("family_name")
    birth_date: Mapped[str] = _field("birth_date")
    sex: Mapped[str] = _field("sex")
    phone: Mapped[str] = _field("phone")
    email: Mapped[str] = _field("email")
    street_number: Mapped[str] = _field("street_number")
    address: Mapped[str] = _field("address")
    locality: Mapped[str] = _field("locality")
    postcode: Mapped[str] = _field("postcode")
    region: Mapped[str] = _field("region")
    id_number: Mapped[str] = _field("id_number")
    original_json: Mapped[str] = mapped_column(Text)
    keys_json: Mapped[str] = mapped_column(Text)
    registered_at: Mapped[float] = mapped_column(Float)
    # set by a merge, cleared by its undo: the contact then stands for the survivor
    merged_into: Mapped[int | None] = mapped_column(Integer, nullable=True)


class DedupJob(ContactsBase):
    __tablename__ = "dedup_jobs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))  # queued, running, done, failed
    stage: Mapped[str] = mapped_column(String(32), default="")
    done: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int] = mapped_column(Integer, default=0)
    threshold: Mapped[float | None] = mapped_column(Float, nullable=True)
    model_json: Mapped[str] = mapped_column(Text, default="")
    contacts: Mapped[int] = mapped_column(Integer, default=0)
    groups: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str] = mapped_column(Text, default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class DedupChunk(ContactsBase):
    """A chunk of candidate pairs whose comparison levels are stored: a resumed job skips it."""

    __tablename__ = "dedup_chunks"
    job_id: Mapped[str] = mapped_column(ForeignKey("dedup_jobs.id"), primary_key=True)
    chunk: Mapped[int] = mapped_column(Integer, primary_key=True)
    levels_json: Mapped[str] = mapped_column(Text)


class DedupPair(ContactsBase):
    __tablename__ = "dedup_pairs"
    job_id: Mapped[str] = mapped_column(ForeignKey("dedup_jobs.id"), primary_key=True)
    a: Mapped[int] = mapped_column(Integer, primary_key=True)
    b: Mapped[int] = mapped_column(Integer, primary_key=True)
    score: Mapped[float] = mapped_column(Float)
    group_no: Mapped[int] = mapped_column(Integer, index=True)


class DedupMember(ContactsBase):
    __tablename__ = "dedup_members"
    job_id: Mapped[str] = mapped_column(ForeignKey("dedup_jobs.id"), primary_key=True)
    contact_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    group_no: Mapped[int] = mapped_column(Integer)
    __table_args__ = (Index("ix_dedup_members_group", "job_id", "group_no"),)


class PairReview(ContactsBase):
    """A reviewer's word on a pair; later jobs honour it."""

    __tablename__ = "pair_reviews"
    a: Mapped[int] = mapped_column(Integer, primary_key=True)
    b: Mapped[int] = mapped_column(Integer, primary_key=True)
    decision: Mapped[str] = mapped_column(String(8))  # accept, reject
    reviewer: Mapped[str] = mapped_column(String(100))
    reviewed_at: Mapped[float] = mapped_column(Float)


class Merge(ContactsBase):
    """A merge: the members now point at the survivor. Undo clears them; the row stays."""

    __tablename__ = "merges"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(32))
    group_no: Mapped[int] = mapped_column(Integer)
    survivor: Mapped[int] = mapped_column(Integer)
    members_json: Mapped[str] = mapped_column(Text)
    merged_by: Mapped[str] = mapped_column(String(100))
    merged_at: Mapped[float] = mapped_column(Float)
    undone_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    __table_args__ = (UniqueConstraint("job_id", "group_no", "merged_at"),)


class PsiSession(ContactsBase):
    """One private match with a peer org, from this org's side."""

    __tablename__ = "psi_sessions"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    peer: Mapped[str] = mapped_column(String(32))
    role: Mapped[str] = mapped_column(String(12))  # initiator, responder
    state: Mapped[str] = mapped_column(String(16))  # running, done, failed
    detail: Mapped[str] = mapped_column(Text, default="")
    mine: Mapped[int] = mapped_column(Integer, default=0)  # elements sent, padding included
    theirs: Mapped[int] = mapped_column(Integer, default=0)
    shared_contacts: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class PsiShared(ContactsBase):
    """A contact of this org that the peer also has; ``handle`` is the smallest doubly-blinded
    value it shares, which the peer's twin contact knows too (the pair's common name)."""

    __tablename__ = "psi_shared"
    session_id: Mapped[str] = mapped_column(ForeignKey("psi_sessions.id"), primary_key=True)
    contact_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    handle: Mapped[str] = mapped_column(String(64), index=True)
    values_json: Mapped[str] = mapped_column(Text)


class DistributionList(ContactsBase):
    """A service being delivered by several orgs; each org keeps its own view of it.

    ``roster_json`` is the owner's word on who takes part, in the order they joined
    (``[{"org", "capacity"}]``); ``invited_json`` is kept by the owner only.
    """

    __tablename__ = "distribution_lists"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    owner: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16))  # owner, invited, accepted
    capacity: Mapped[int] = mapped_column(Integer, default=0)  # this org's, once it takes part
    roster_json: Mapped[str] = mapped_column(Text, default="[]")
    invited_json: Mapped[str] = mapped_column(Text, default="[]")
    created_at: Mapped[float] = mapped_column(Float)
    accepted_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class ListPair(ContactsBase):
    """This org and one partner inside a list: their match, the two bid tables, the digest."""

    __tablename__ = "list_pairs"
    list_id: Mapped[str] = mapped_column(ForeignKey("distribution_lists.id"), primary_key=True)
    peer: Mapped[str] = mapped_column(String(32), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(32), index=True)
    role: Mapped[str] = mapped_column(String(12))  # initiator, responder
    state: Mapped[str] = mapped_column(String(16))  # matching, bidding, agreed, recorded, failed
    detail: Mapped[str] = mapped_column(Text, default="")
    bids_sent: Mapped[int] = mapped_column(Integer, default=0)
    agreement_json: Mapped[str] = mapped_column(Text, default="")
    digest: Mapped[str] = mapped_column(String(64), default="")
    tx_hash: Mapped[str] = mapped_column(String(66), default="")
    created_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class ListBidPart(ContactsBase):
    """One part of the bid table a partner sent for a pair (kept until the table is whole)."""

    __tablename__ = "list_bid_parts"
    list_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    peer: Mapped[str] = mapped_column(String(32), primary_key=True)
    part: Mapped[int] = mapped_column(Integer, primary_key=True)
    parts: Mapped[int] = mapped_column(Integer)
    capacity: Mapped[int] = mapped_column(Integer)
    entries_json: Mapped[str] = mapped_column(Text)
