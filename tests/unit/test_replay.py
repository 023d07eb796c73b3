"""The replay guard: a freshness window on the signed ``sent_at`` and one stream position per id."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from shardline.bus import envelope
from shardline.bus.envelope import BadMessage
from shardline.bus.replay import ReplayGuard
from shardline.core.keys import ParticipantKeys

KEYS = ParticipantKeys.generate("org1")
BODY = {
    "guid": "ab" * 16,
    "org": "org1",
    "x": 1,
    "transport_key": "00" * 32,
    "trigger": "chain",
    "sealed": "AAAA",
}


def env():
    return envelope.make("lookup.share", BODY, KEYS)


def test_a_fresh_envelope_passes_and_its_redelivery_too():
    guard = ReplayGuard()
    e = env()
    guard.check(e, e.sent_at + 0.5, ("LOOKUPS", 7))
    guard.check(e, e.sent_at + 0.5, ("LOOKUPS", 7))  # the same stored copy, delivered again
    assert len(guard) == 1


def test_the_same_envelope_stored_again_is_a_replay():
    guard = ReplayGuard()
    e = env()
    guard.check(e, e.sent_at + 0.5, ("LOOKUPS", 7))
    with pytest.raises(BadMessage, match=f"replayed envelope {e.id} from org1"):
        guard.check(e, e.sent_at + 3, ("LOOKUPS", 9))


def test_an_old_envelope_stored_now_is_stale_but_an_old_backlog_is_not():
    guard = ReplayGuard(window_s=120, clock=lambda: 10_000.0)
    e = env()
    with pytest.raises(BadMessage, match="stale envelope"):
        guard.check(e, e.sent_at + 121, ("LOOKUPS", 1))
    # stored a second after it was signed, read much later (the worker was down): accepted
    ReplayGuard(window_s=120, clock=lambda: e.sent_at + 7200).check(e, e.sent_at + 1, ("L", 2))


def test_an_envelope_from_the_future_is_refused():
    e = env()
    with pytest.raises(BadMessage, match="in the future"):
        ReplayGuard(skew_s=30).check(e, e.sent_at - 31, ("LOOKUPS", 1))


def test_the_seen_set_keeps_only_the_window():
    guard = ReplayGuard(window_s=10, skew_s=0)
    first = env()
    guard.check(first, first.sent_at, ("S", 1))
    # a message 20 s newer pushes the first out of the window
    newer = dataclasses.replace(env(), sent_at=first.sent_at + 20)
    guard.check(newer, newer.sent_at, ("S", 2))
    assert len(guard) == 1


def test_the_seen_set_is_bounded():
    guard = ReplayGuard(max_seen=100)
    for i in range(250):
        e = env()
        guard.check(e, e.sent_at, ("S", i))
    assert len(guard) == 100


def test_a_durable_store_remembers_what_a_restart_forgets(tmp_path):
    """Two guards on one SQLite file stand for a worker before and after a restart."""
    from shardline.bus.seen_ids_sql import SqlSeenIds

    url = f"sqlite:///{tmp_path / 'org1.db'}"
    e = env()
    before = ReplayGuard(durable=SqlSeenIds(url), scope="share-node")
    asyncio.run(before.admit(e, e.sent_at + 0.5, ("LOOKUPS", 7)))
    after = ReplayGuard(durable=SqlSeenIds(url), scope="share-node")
    asyncio.run(after.admit(e, e.sent_at + 1, ("LOOKUPS", 7)))  # redelivered: the same copy
    with pytest.raises(BadMessage, match=f"replayed envelope {e.id} from org1: .* LOOKUPS:7"):
        asyncio.run(after.admit(e, e.sent_at + 2, ("LOOKUPS", 9)))
    # memory alone, as before, would have let it through
    asyncio.run(ReplayGuard().admit(e, e.sent_at + 2, ("LOOKUPS", 9)))
    # another worker kind keeps its own set; entries past the window are trimmed
    asyncio.run(ReplayGuard(durable=SqlSeenIds(url), scope="psi").admit(e, e.sent_at, ("P", 1)))
    store = SqlSeenIds(url, clock=lambda: e.sent_at + 1000)
    asyncio.run(store.trim(e.sent_at + 1))
    assert len(store) == 0


def test_the_sqlalchemy_path_keeps_the_first_position_too():
    """A database other than a SQLite file (PostgreSQL by URL) goes through SQLAlchemy."""
    from shardline.bus.seen_ids_sql import SqlSeenIds

    store = SqlSeenIds("sqlite://")
    assert store._sqlite is None
    assert asyncio.run(store.claim("share-node", "id1", ("LOOKUPS", 1), 1.0)) == "LOOKUPS:1"
    assert asyncio.run(store.claim("share-node", "id1", ("LOOKUPS", 2), 1.0)) == "LOOKUPS:1"
    assert asyncio.run(store.claim("psi-node", "id1", ("PSI", 2), 1.0)) == "PSI:2"
    asyncio.run(store.trim(5.0))
    assert len(store) == 0
