"""The combiner's seen envelope ids in a real redis-server: refused again, expiring with the window."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from shardline.bus import envelope
from shardline.bus.envelope import BadMessage
from shardline.bus.replay import ReplayGuard
from shardline.bus.seen_ids import RedisSeenIds
from shardline.core.keys import ParticipantKeys

KEYS = ParticipantKeys.generate("org1")
BODY = {
    "guid": "cd" * 16,
    "org": "org1",
    "x": 1,
    "transport_key": "00" * 32,
    "trigger": "chain",
    "sealed": "AAAA",
}


def test_a_redis_store_remembers_until_the_window_ends(redis_url):
    e = envelope.make("lookup.share", BODY, KEYS)

    async def go():
        redis = Redis.from_url(redis_url)
        store = RedisSeenIds(redis, ttl_s=150)
        await ReplayGuard(durable=store, scope="combiner").admit(e, e.sent_at, ("LOOKUPS", 3))
        with pytest.raises(BadMessage, match="replayed envelope"):
            await ReplayGuard(durable=store, scope="combiner").admit(e, e.sent_at, ("LOOKUPS", 4))
        ttl = await redis.ttl(f"shardline:seen:combiner:{e.id}")
        await redis.aclose()
        return ttl

    assert 0 < asyncio.run(go()) <= 150
