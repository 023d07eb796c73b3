"""Envelope ids a worker has already taken, kept where a restart does not forget them.

The replay guard (shardline/bus/replay.py) refuses an envelope id that reaches a worker from a
second stream position within the freshness window. Kept only in memory, that set is empty after a
restart, so for one window an envelope handled just before could be replayed once. These stores
keep it across restarts, in the trust domain of the worker that relies on it:

- ``SqlSeenIds`` (shardline/bus/seen_ids_sql.py): an org node's own database (SQLite by default, PostgreSQL by URL), the same
  database as its shares and served log. Only the org writes it; no other party (the bus operator,
  the gateway, another org) can delete an entry to open a replay. Every process of the org node
  (scale-out instances on one durable consumer) shares it, so a replay is refused whichever
  instance it reaches.
- ``RedisSeenIds``: the combiner's, in the gateway's Redis, where the gateway already keeps its
  lookup state; each entry expires with the window (``SET NX EX``).

An entry is (scope, envelope id) -> the stream position first seen and the signed ``sent_at``.
The scope is the worker kind, so each worker keeps the guarantee it had in memory. Entries past
the window are deleted (SQL: at most once per ``TRIM_EVERY_S``; Redis: by expiry): older
envelopes are refused as stale before the set is consulted, so it stays bounded by the message
rate times the window.
"""

from __future__ import annotations

from typing import Protocol


def position_key(position: object) -> str:
    """A stream position as stored: ``STREAM:sequence`` for a JetStream (stream, sequence)."""
    if isinstance(position, tuple):
        return ":".join(str(p) for p in position)
    return str(position)


class SeenIds(Protocol):
    async def claim(self, scope: str, env_id: str, position: object, sent_at: float) -> str:
        """Record ``env_id`` at ``position`` unless known; return the position first recorded."""
        ...

    async def trim(self, horizon: float) -> None:
        """Forget entries signed before ``horizon``."""
        ...


class RedisSeenIds:
    """Seen ids in Redis, each expiring ``ttl_s`` after it was recorded."""

    def __init__(self, redis, ttl_s: float, prefix: str = "shardline:seen") -> None:
        self.redis = redis
        self.ttl_s = max(1, int(ttl_s + 0.999))
        self.prefix = prefix

    async def claim(self, scope: str, env_id: str, position: object, sent_at: float) -> str:
        where = position_key(position)
        key = f"{self.prefix}:{scope}:{env_id}"
        if await self.redis.set(key, where, nx=True, ex=self.ttl_s):
            return where
        first = await self.redis.get(key)
        if first is None:  # expired between the two calls: it is outside the window
            return where
        return first.decode() if isinstance(first, bytes) else str(first)

    async def trim(self, horizon: float) -> None:
        return None  # entries expire by themselves
