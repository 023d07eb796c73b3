"""Every SQL store of an org node on a real PostgreSQL server, and the same assertions on SQLite.

An org node's ``database_url`` is a SQLite file by default and PostgreSQL by URL. Each test runs
on three databases: a SQLite file (the stores' direct-sqlite3 fast paths where they have one),
SQLite in memory (the SQLAlchemy statements those fast paths stand in for) and PostgreSQL
(``postgresql://``, the driver implied), so the backends are held to the same behaviour.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from shardline.bus.seen_ids_sql import SqlSeenIds
from shardline.contacts import migrate
from shardline.contacts.lists_store import ListStore
from shardline.contacts.models import Contact, ContactsBase
from shardline.contacts.store import ContactStore, StoreError, contact_secret
from shardline.core.contacts import FIELD_MAX, FIELDS, read_csv
from shardline.core.logpoller import BlockRef
from shardline.db import SQLITE_BUSY_MS, engine_url
from shardline.workers.analytics_store import IN_LIST_MAX, AnalyticsStore
from shardline.workers.privtx_store import FacilitatorStore, TxRow
from shardline.workers.records_store import ProxyStore
from shardline.workers.store import OrgStore, ShareRow
from tests.unit.test_contacts_import import MAPPING  # the columns of CSV below

pytestmark = pytest.mark.integration

ALL_BYTES = bytes(range(256)) * 2  # NUL and every other byte survive the round trip
REQUESTER = "0xAbCdEf0123456789aBcDeF0123456789AbCdEf01"


@pytest.fixture(params=["sqlite-file", "sqlite-memory", "postgresql"])
def url(request, tmp_path) -> str:
    if request.param == "sqlite-file":
        return f"sqlite:///{tmp_path / 'org.db'}"
    if request.param == "sqlite-memory":
        return "sqlite://"
    return request.getfixturevalue("postgres_url")


def blocks(*numbers: int, fork: int = 0) -> list[BlockRef]:
    """A chain segment; ``fork`` gives the same heights other hashes (a reorg's side)."""
    return [
        BlockRef(n, bytes([n, fork]) * 16, bytes([n - 1, fork]) * 16 + b"\x00") for n in numbers
    ]


def assert_cursor_round_trips(store) -> None:
    """What every chain reader's store promises: the saved blocks come back, as bytes."""
    assert store.cursor_blocks() == []
    store.save_cursor(blocks(1, 2, 3))
    got = store.cursor_blocks()
    assert got == blocks(1, 2, 3)
    assert all(type(b.hash) is bytes and type(b.parent) is bytes for b in got)
    store.save_cursor(blocks(2, 3, 4, 5))  # moved on: 1 dropped, 4 and 5 added
    assert store.cursor_blocks() == blocks(2, 3, 4, 5)
    store.save_cursor(blocks(2, 3))  # a reorg: back to the common ancestor...
    store.save_cursor(blocks(2, 3) + blocks(4, fork=1))  # ...then the other side
    assert store.cursor_blocks() == blocks(2, 3) + blocks(4, fork=1)
    store.save_cursor([])
    assert store.cursor_blocks() == []


def test_a_plain_postgresql_url_means_the_psycopg_driver_that_ships_with_shardline():
    assert engine_url("postgresql://u@h:5432/db").drivername == "postgresql+psycopg"
    assert engine_url("postgres://u@h/db").drivername == "postgresql+psycopg"
    assert engine_url("postgresql+psycopg2://u@h/db").drivername == "postgresql+psycopg2"
    assert str(engine_url("sqlite:///x.db")) == "sqlite:///x.db"


@pytest.mark.parametrize(
    "store", [OrgStore, AnalyticsStore, SqlSeenIds, ContactStore, ProxyStore, FacilitatorStore]
)
def test_every_store_opens_postgresql_through_psycopg_whatever_the_url_says(store, postgres_url):
    for url in (postgres_url, postgres_url.replace("postgresql://", "postgres://", 1)):
        engine = store(url).engine
        assert (engine.dialect.name, engine.dialect.driver) == ("postgresql", "psycopg")
    assert OrgStore(postgres_url)._db is None  # no SQLite fast path there


@pytest.mark.parametrize(
    "store", [OrgStore, AnalyticsStore, SqlSeenIds, ContactStore, ProxyStore, FacilitatorStore]
)
def test_every_store_sets_up_a_sqlite_file_the_same_way(store, tmp_path):
    """One org's SQLite file is shared by all these stores and by several processes: each opens
    it in WAL mode, syncs at checkpoints and waits for another writer's lock (db.py)."""
    engine = store(f"sqlite:///{tmp_path / 'org.db'}").engine
    with engine.connect() as conn:
        pragma = conn.exec_driver_sql
        assert pragma("PRAGMA journal_mode").scalar() == "wal"
        assert pragma("PRAGMA synchronous").scalar() == 1  # NORMAL
        assert pragma("PRAGMA busy_timeout").scalar() == SQLITE_BUSY_MS


# ---- the org node's own store -----------------------------------------------------------


def test_org_store_keeps_the_newest_share(url):
    store = OrgStore(url)
    key = "ab" * 32
    assert store.get_share(key) is None
    assert store.put_share(key, "TR-100001", 2, "org2", ALL_BYTES)
    got = store.get_share(key)
    assert got == ShareRow(key, "TR-100001", 2, "org2", ALL_BYTES)
    assert type(got.sealed) is bytes
    assert not store.put_share(key, "TR-100001", 2, "org2", b"same version")
    assert not store.put_share(key, "TR-100001", 1, "org2", b"older")
    assert store.get_share(key).sealed == ALL_BYTES
    assert store.put_share(key, "TR-100001", 3, "org2", b"newer")
    assert store.get_share(key) == ShareRow(key, "TR-100001", 3, "org2", b"newer")
    if url != "sqlite://":  # reopened (a restarted node): the same row
        assert OrgStore(url).get_share(key) == ShareRow(key, "TR-100001", 3, "org2", b"newer")


def test_org_store_records_what_it_served_once_and_the_first_block_it_was_seen_in(url):
    store = OrgStore(url)
    g1, g2, g3 = "11" * 16, "22" * 16, "33" * 16
    assert store.served(g1) is None
    assert store.record_served(g1, "ab" * 32, REQUESTER, "chain", None)
    assert not store.record_served(g1, "cd" * 32, REQUESTER, "intent", 9)  # a redelivery
    assert store.record_served(g2, "cd" * 32, REQUESTER, "intent", 5)
    first = store.served(g1)
    assert (first.guid, first.transport_key, first.requester) == (g1, "ab" * 32, REQUESTER)
    assert (first.trigger, first.on_chain_block) == ("chain", None)
    assert store.served(g2).on_chain_block == 5

    assert store.mark_on_chain(g1, 7, REQUESTER.lower())  # addresses compare in any case
    assert store.mark_on_chain(g1, 8, REQUESTER.upper())  # confirmed again: the first stays
    assert store.served(g1).on_chain_block == 7
    assert not store.mark_on_chain(g1, 9, "0x" + "99" * 20)  # another requester's guid
    assert not store.mark_on_chain(g3, 9, REQUESTER)  # never served

    assert store.record_served(g3, "ef" * 32, REQUESTER, "chain", None)
    every = store.served_since()
    assert [r.guid for r in every] == [g1, g2, g3]  # in the order they were served
    assert all(isinstance(r.served_at, float) for r in every)
    assert [r.guid for r in store.served_since(every[1].served_at)] == [g2, g3]
    assert [r.guid for r in store.served_since(0.0, every[1].served_at)] == [g1, g2]
    assert store.served_since(every[2].served_at + 1) == []


def test_org_store_cursor(url):
    assert_cursor_round_trips(OrgStore(url))


# ---- an MPC server's store ----------------------------------------------------------------


def test_analytics_inputs_are_replaced_by_key_and_read_by_digest(url):
    store = AnalyticsStore(url)
    d1, d2, d3 = b"\x01" * 32, b"\x02" * 32, b"\x00" * 32
    store.put_input("ds", d1, "prod-a", 10, ALL_BYTES)
    store.put_input("ds", d2, "prod-b", 3, b"two")
    store.put_input("other", d3, "prod-a", 1, b"elsewhere")
    got = store.inputs("ds", [d1, d2, d3])
    assert got == {d1: ALL_BYTES, d2: b"two"}  # d3 is another data set's
    assert all(type(k) is bytes and type(v) is bytes for k, v in got.items())
    store.put_input("ds", d2, "prod-b", 4, b"replaced")  # the same key: an upsert
    assert store.inputs("ds", [d2]) == {d2: b"replaced"}
    many = [i.to_bytes(32, "big") for i in range(IN_LIST_MAX + 1)]  # one scan, not a key list
    assert store.inputs("ds", [*many, d1]) == {d1: ALL_BYTES}


def test_analytics_contributions_in_chain_order_with_their_blocks(url):
    store = AnalyticsStore(url)
    ds = [bytes([i]) * 32 for i in range(4)]
    store.add_contribution("ds", 1, ds[1], 5, block_hash=b"\xbb" * 32)
    store.add_contribution("ds", 0, ds[0], 7, block_hash=b"\xaa" * 32)
    store.add_contribution("ds", 2, ds[2], 1)  # no block given
    assert store.contributions("ds", 3) == [ds[0], ds[1], ds[2]]
    assert store.contributions("ds", 2) == [ds[0], ds[1]]
    assert store.contributions("other", 3) == []
    assert store.block("ds", ds[0]) == b"\xaa" * 32
    assert type(store.block("ds", ds[0])) is bytes
    assert store.block("ds", ds[2]) is None
    store.add_contribution("ds", 2, ds[3], 1, block_hash=b"\xcc" * 32)  # same index: replaced
    assert store.contributions("ds", 3) == [ds[0], ds[1], ds[3]]
    store.add_contribution("ds", 0, ds[0], 7, block_hash=b"\xdd" * 32)  # its block replaced
    assert store.block("ds", ds[0]) == b"\xdd" * 32


def test_analytics_points_keep_each_servers_first(url):
    store = AnalyticsStore(url)
    a, b = b"\x0a" * 32, b"\x0b" * 32
    big = 2**61 - 2  # a field element of GF(2^61 - 1): kept as text, exact
    assert store.add_points("ds", 1, [(a, big, 1), (b, 2, 3)]) == {a: 1, b: 1}
    assert store.add_points("ds", 2, [(a, 4, 5)]) == {a: 2}
    # server 1 sends a again, with other values: the first it sent counts, once
    assert store.add_points("ds", 1, [(a, 99, 99)]) == {a: 2}
    assert store.points("ds", a) == {1: (big, 1), 2: (4, 5)}
    assert store.points("ds", b) == {1: (2, 3)}
    assert store.points("other", a) == {}
    assert store.points_of("ds", [a, b, b"\x0c" * 32]) == {
        a: {1: (big, 1), 2: (4, 5)},
        b: {1: (2, 3)},
        b"\x0c" * 32: {},
    }


def test_analytics_verdicts_and_jobs_are_replaced_by_key(url):
    store = AnalyticsStore(url)
    a, b, c = b"\x0a" * 32, b"\x0b" * 32, b"\x0c" * 32
    store.put_verdicts("ds", {a: None, b: "a rule failed"})
    store.put_verdicts("ds", {})  # nothing to write
    assert store.verdicts("ds", [a, b, c]) == {a: True, b: False}
    store.put_verdicts("ds", {b: None})  # checked again: it passed
    assert store.verdicts("ds", [b]) == {b: True}
    many = [i.to_bytes(32, "big") for i in range(IN_LIST_MAX + 1)]
    assert store.verdicts("ds", [*many, a]) == {a: True}

    assert store.job(7) is None
    store.save_job(7, "committed", salt="ab" * 16, output=[1, 2])
    store.save_job(8, "committed", salt="cd" * 16)
    store.save_job(9, "refused", reason="below k")
    assert store.job(7) == ("committed", {"salt": "ab" * 16, "output": [1, 2]})
    assert sorted(store.jobs_in("committed")) == [
        (7, {"salt": "ab" * 16, "output": [1, 2]}),
        (8, {"salt": "cd" * 16}),
    ]
    store.save_job(7, "revealed", salt="ab" * 16)  # the same job: its row replaced
    assert store.job(7) == ("revealed", {"salt": "ab" * 16})
    assert [j for j, _d in store.jobs_in("committed")] == [8]
    assert sorted(j for j, _d in store.jobs_in("revealed", "refused")) == [7, 9]


def test_analytics_cursor(url):
    assert_cursor_round_trips(AnalyticsStore(url))


# ---- seen envelope ids ----------------------------------------------------------------------


async def test_seen_ids_keep_the_first_position_per_scope(url):
    store = SqlSeenIds(url, clock=lambda: 1000.0)
    assert await store.claim("share-node", "id1", ("LOOKUPS", 1), 10.0) == "LOOKUPS:1"
    assert await store.claim("share-node", "id1", ("LOOKUPS", 2), 11.0) == "LOOKUPS:1"
    assert await store.claim("share-node", "id2", ("LOOKUPS", 3), 50.0) == "LOOKUPS:3"
    assert await store.claim("psi-node", "id1", ("PSI", 2), 10.0) == "PSI:2"  # its own set
    assert len(store) == 3
    await store.trim(20.0)  # entries sent before the window are forgotten
    assert len(store) == 1
    assert await store.claim("share-node", "id1", ("LOOKUPS", 4), 60.0) == "LOOKUPS:4"
    assert await store.claim("share-node", "id2", ("LOOKUPS", 5), 60.0) == "LOOKUPS:3"


# ---- the contact store (Alembic migrations) ------------------------------------------------

CSV = (
    "First,Last,Born,Tel,Street,Town\n"
    "Mohammed,Al-Hassan,1980-03-04,+961 1 234 567,Rue Clemenceau,Beyrouth\n"
    "  JOSÉ ,Núñez,04/03/1980,,Calle 5,Sevilla\n"
    "محمد,حسن,1979-13-01,,x,y\n"
)


def test_contact_store_migrates_and_keeps_contacts(url):
    store = ContactStore(url)
    with store.engine.connect() as conn:  # the migrations made exactly the models' tables
        ctx = MigrationContext.configure(conn, opts={"version_table": "alembic_version_contacts"})
        diff = [
            d
            for d in compare_metadata(ctx, ContactsBase.metadata)
            if not (d[0] == "remove_table" and d[1].name == "alembic_version_contacts")
        ]
        assert diff == [], diff
        assert ctx.get_current_revision() == "0003"
    if url != "sqlite://":
        ContactStore(url)  # opened again: already at head, nothing to do

    secret = contact_secret(b"\x01" * 32)
    result = read_csv(CSV, MAPPING)
    report = store.import_result(
        result, file_name="a.csv", file_sha256="ab" * 32, fmt="csv", mapping=MAPPING, secret=secret
    )
    assert (report.rows, report.imported, report.already) == (3, 2, False)
    assert [(e.line, e.field) for e in report.errors] == [(4, "birth_date")]
    again = store.import_result(
        result, file_name="a.csv", file_sha256="ab" * 32, fmt="csv", mapping=MAPPING, secret=secret
    )
    assert (again.import_id, again.already) == (report.import_id, True)
    assert [(e.line, e.field) for e in again.errors] == [(4, "birth_date")]
    assert store.count() == 2
    first, jose = store.contacts()
    assert (first.given_name, first.family_name, first.phone) == (
        "mohammed",
        "al hassan",
        "9611234567",
    )
    assert json.loads(jose.original_json)["First"] == "JOSÉ "  # as typed, accents and all

    store.create_job("job1", 0.8)
    store.save_result("job1", [[first.id, jose.id]], [(first.id, jose.id, 0.93)], {"m": 1}, 0.8)
    assert store.job("job1").state == "done"
    assert store.groups("job1") == [[first.id, jose.id]]
    merge = store.merge("job1", 1, by="ana")
    assert [c.id for c in store.contacts(live_only=True)] == [first.id]  # the survivor
    assert store.contacts([jose.id])[0].merged_into == first.id
    store.undo_merge(merge.id)
    assert len(store.contacts(live_only=True)) == 2
    with pytest.raises(StoreError, match="already undone"):
        store.undo_merge(merge.id)

    lists = ListStore(store)
    dl = lists.create("food parcels", "org1", 40)
    assert lists.get(dl.id).capacity == 40


def import_text(store: ContactStore, text: str, mapping: dict[str, str]):
    """Import a CSV text as a file of its own (named by its hash)."""
    digest = hashlib.sha256(text.encode()).hexdigest()
    return store.import_result(
        read_csv(text, mapping),
        file_name=f"{digest[:8]}.csv",
        file_sha256=digest,
        fmt="csv",
        mapping=mapping,
        secret=contact_secret(b"\x02" * 32),
    )


def test_a_contact_field_longer_than_its_column_is_that_rows_error_on_every_database(url):
    assert FIELD_MAX == {f: Contact.__table__.c[f].type.length for f in FIELDS}
    store = ContactStore(url)
    mapping = {"given_name": "First", "address": "Street", "phone": "Tel"}
    text = f"First,Street,Tel\nAna,{'x' * 301},1\nRui,{'y' * 300},{'9' * 33}\nEva,Rua 1,2\n"
    report = import_text(store, text, mapping)
    assert [(e.line, e.field) for e in report.errors] == [(2, "address"), (3, "phone")]
    assert "301 characters long, 300 at most" in str(report.errors[0])
    assert [c.given_name for c in store.contacts()] == ["eva"]


def test_a_control_character_in_a_contact_field_is_that_rows_error_on_every_database(url):
    """PostgreSQL refuses NUL in text: the row that holds one is named, the others import."""
    store = ContactStore(url)
    mapping = {"given_name": "First", "email": "Mail", "external_id": "Ref"}
    text = "First,Mail,Ref\nAna,a\x00@b.co,1\nRui,r@b.co,R\x072\nEva,e@b.co,3\n"
    report = import_text(store, text, mapping)
    assert [(e.line, e.field) for e in report.errors] == [(2, "email"), (3, "external_id")]
    assert "U+0000" in str(report.errors[0]) and "U+0007" in str(report.errors[1])
    assert [c.given_name for c in store.contacts()] == ["eva"]


def test_contact_store_migrations_go_down_and_up_again(url):
    store = ContactStore(url)
    migrate.downgrade(store.engine, "base")
    tables = set(inspect(store.engine).get_table_names())
    assert not tables & {t.name for t in ContactsBase.metadata.sorted_tables}
    migrate.upgrade(store.engine)
    tables = set(inspect(store.engine).get_table_names())
    assert {t.name for t in ContactsBase.metadata.sorted_tables} <= tables


# ---- a records proxy's store ----------------------------------------------------------------


def test_records_store_keeps_the_newest_key_fragment_and_the_audit(url):
    store = ProxyStore(url)
    assert store.get_kfrag("rec1", "org9") is None
    assert store.put_kfrag("rec1", "org9", 2, "org1", ALL_BYTES)
    assert not store.put_kfrag("rec1", "org9", 2, "org1", b"same")
    got = store.get_kfrag("rec1", "org9")
    assert (got.version, got.owner, got.sealed) == (2, "org1", ALL_BYTES)
    assert type(got.sealed) is bytes
    assert store.put_kfrag("rec1", "org9", 3, "org1", b"newer")
    assert store.put_kfrag("rec2", "org9", 1, "org1", b"other")
    assert sorted(store.kfrags()) == [("rec1", "org9", 3), ("rec2", "org9", 1)]
    assert not store.drop_kfrag("rec1", "org9", up_to_version=2)  # a newer grant stands
    assert store.drop_kfrag("rec1", "org9", up_to_version=3)
    assert not store.drop_kfrag("rec1", "org9")
    assert store.kfrags() == [("rec2", "org9", 1)]

    store.record_reencrypted("q1", "rec1", "org9", 3)
    store.record_reencrypted("q1", "rec1", "org9", 3)  # a repeated request: kept once
    store.record_reencrypted_many([("q2", "rec1", "org8", 3, 1.0), ("q3", "rec2", "org9", 1, 2.0)])
    # a batch holding an id already kept: the rest is still written, the repeat once
    store.record_reencrypted_many([("q2", "rec1", "org8", 3, 1.0), ("q4", "rec1", "org7", 4, 3.0)])
    assert sorted(store.reencrypted("rec1")) == [
        ("q1", "org9", 3),
        ("q2", "org8", 3),
        ("q4", "org7", 4),
    ]
    assert store.reencrypted("rec2") == [("q3", "org9", 1)]
    assert_cursor_round_trips(store)


# ---- a private-contract facilitator's store --------------------------------------------------


def test_privtx_store_keeps_groups_in_join_order_and_replaces_transactions(url):
    store = FacilitatorStore(url)
    store.add_group("ff" * 32, 2, "0x" + "11" * 20)
    store.add_group("00" * 32, 1, "0x" + "22" * 20)
    store.add_group("ff" * 32, 3, "0x" + "33" * 20)  # joined already: kept as it was
    assert list(store.groups().items()) == [
        ("ff" * 32, (2, "0x" + "11" * 20)),
        ("00" * 32, (1, "0x" + "22" * 20)),
    ]
    store.set_contract("ff" * 32, "0x" + "44" * 20)
    assert store.groups()["ff" * 32] == (2, "0x" + "44" * 20)

    row = TxRow(
        "aa" * 32,
        "ff" * 32,
        1,
        2,
        "executed",
        "0x1",
        ALL_BYTES,
        b"\x02" * 32,
        4_102_444_800,  # 2100: past 2**31 s
    )
    store.put_tx(row)
    store.put_tx(TxRow("bb" * 32, "00" * 32, 1, 1, "pre", "0x2", b"", b"\x03" * 32, 5, "ahead"))
    assert store.txs() == [
        TxRow("bb" * 32, "00" * 32, 1, 1, "pre", "0x2", b"", b"\x03" * 32, 5, "ahead"),
        row,
    ]
    row.state, row.note = "final", "settled"
    store.put_tx(row)  # the same transaction: its row replaced
    assert [(r.payload_hash, r.state, r.note) for r in store.txs()] == [
        ("bb" * 32, "pre", "ahead"),
        ("aa" * 32, "final", "settled"),
    ]
    assert all(type(r.old_root) is bytes for r in store.txs())
    assert_cursor_round_trips(store)
    store.close()


def test_a_privtx_file_from_before_join_order_was_kept_keeps_its_order(tmp_path):
    """Groups were ordered by SQLite's rowid; an older file gets the column, in that order."""
    db = sqlite3.connect(tmp_path / "facilitator.db")
    db.execute(
        "CREATE TABLE privtx_groups (group_id VARCHAR(64) NOT NULL PRIMARY KEY, member INTEGER, "
        "contract VARCHAR(42))"
    )
    db.executemany(
        "INSERT INTO privtx_groups VALUES (?, ?, ?)",
        [("ff" * 32, 2, "0xb"), ("00" * 32, 1, "0xa")],
    )
    db.commit()
    db.close()
    store = FacilitatorStore(f"sqlite:///{tmp_path / 'facilitator.db'}")
    store.add_group("77" * 32, 3, "0xc")
    assert list(store.groups()) == ["ff" * 32, "00" * 32, "77" * 32]
