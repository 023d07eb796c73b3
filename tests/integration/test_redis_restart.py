"""A redis-server restart keeps what lookups in flight hold, and a client kept from before it
goes on without an error (the gateway's lookup state, the combiner's seen ids, queued jobs)."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from shardline import redis_client, servers


def test_a_restart_keeps_the_data_and_the_old_client_reconnects(tmp_path):
    port = servers.free_port()
    spec = servers.redis_spec(tmp_path / "data", port)
    proc = servers.spawn(spec, tmp_path / "redis.log")
    url = f"redis://127.0.0.1:{port}/0"

    async def before(client: Redis, bare: Redis) -> None:
        await client.hset("lookup:ab", mapping={"esk": "00" * 32, "threshold": 2})
        await client.expire("lookup:ab", 600)
        await bare.ping()  # a pooled connection, as a running gateway has

    async def after(client: Redis, bare: Redis) -> tuple[dict, int, str]:
        state = await client.hgetall("lookup:ab")
        ttl = await client.ttl("lookup:ab")
        try:
            await bare.ping()
            plain = "no error"
        except Exception as exc:  # what a client without retries sees on its dead connection
            plain = type(exc).__name__
        return state, ttl, plain

    async def go():
        client, bare = redis_client.connect(url), Redis.from_url(url)
        await before(client, bare)
        servers.stop_pid(proc.pid)  # SIGTERM, as a restart for an upgrade does
        restarted = servers.spawn(spec, tmp_path / "redis.log")
        try:
            return await after(client, bare)
        finally:
            await client.aclose()
            await bare.aclose()
            servers.stop_pid(restarted.pid)

    state, ttl, plain = asyncio.run(go())
    assert state == {b"esk": b"00" * 32, b"threshold": b"2"}
    assert 0 < ttl <= 600
    # the reason for redis_client: a plain from_url client fails once per dead connection
    assert plain == "ConnectionError"
    assert (tmp_path / "data").stat().st_mode & 0o077 == 0
