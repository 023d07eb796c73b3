"""Connecting to NATS: reconnect for ever, and say clearly when the bus cannot be reached."""

from __future__ import annotations

from nats.aio.client import Client
from nats.errors import NoServersError

from shardline.bus import log


class BusUnavailable(ConnectionError):
    pass


async def connect(url: str, name: str) -> Client:
    async def on_error(exc: Exception) -> None:
        log.warn("bus.error", client=name, error=str(exc))

    async def on_disconnect() -> None:
        if not nc.is_closed:
            log.warn("bus.disconnected", client=name)

    async def on_reconnect() -> None:
        log.event("bus.reconnected", client=name)

    nc = Client()
    try:
        await nc.connect(
            url,
            name=name,
            connect_timeout=2,
            reconnect_time_wait=0.25,
            max_reconnect_attempts=-1,
            allow_reconnect=True,
            error_cb=on_error,
            disconnected_cb=on_disconnect,
            reconnected_cb=on_reconnect,
        )
        return nc
    except (NoServersError, OSError, TimeoutError) as exc:
        raise BusUnavailable(
            f"cannot reach the NATS bus at {url} ({exc}); is the stack up? try `shardline status`"
        ) from exc
