"""Connecting to NATS: reconnect for ever, and say clearly when the bus cannot be reached."""

from __future__ import annotations

from nats.aio.client import Client
from nats.errors import NoServersError

from shardline.bus import log
from shardline.bus.credentials import BusTLS, ClientAuth, bare, redact
from shardline.bus.tcp_guard import bound_unacked


class BusUnavailable(ConnectionError):
    pass


# A server that vanishes without closing its connections (a host cut off the network) is
# noticed after PING_INTERVAL_S * (MAX_OUTSTANDING_PINGS + 1) at most (6 s); the client then moves to
# another server of the cluster.
PING_INTERVAL_S = 2
MAX_OUTSTANDING_PINGS = 2
# ... and one that keeps publishing to it, after this long without an acknowledgement.
UNACKED_TIMEOUT_S = PING_INTERVAL_S * (MAX_OUTSTANDING_PINGS + 1)
FIRST_ATTEMPTS = 2  # a command's tries of a bus that is not there before it says so


def server_list(url: str) -> list[str]:
    """``nats://a:4222,nats://b:4222`` (a cluster's seed servers) as a list."""
    return [u.strip() for u in url.split(",") if u.strip()]


async def connect(
    url: str,
    name: str,
    auth: ClientAuth | None = None,
    tls: BusTLS | None = None,
    *,
    patient: bool = True,
) -> Client:
    """``auth``: connect as that nkey user (seed, inbox prefix, TLS); ``tls`` alone: TLS for a
    URL that carries its own user and password (the operator's).

    ``patient``: a worker waits for a bus that is not there yet for as long as it takes; a
    command (``patient=False``) tries a few times, then raises ``BusUnavailable`` with what to
    do. Once connected, both ride out a bus restart."""
    connected = False

    async def on_error(exc: Exception) -> None:
        if connected or patient:
            log.warn("bus.error", client=name, error=str(exc))

    async def on_disconnect() -> None:
        if not nc.is_closed:
            log.warn("bus.disconnected", client=name)

    async def on_reconnect() -> None:
        bound_unacked(nc, UNACKED_TIMEOUT_S, name)  # a new socket
        log.event("bus.reconnected", client=name)

    nc = Client()
    try:
        await nc.connect(
            [bare(u) for u in server_list(url)] if auth else server_list(url),
            name=name,
            ping_interval=PING_INTERVAL_S,
            max_outstanding_pings=MAX_OUTSTANDING_PINGS,
            connect_timeout=2,
            reconnect_time_wait=0.25,
            max_reconnect_attempts=-1 if patient else FIRST_ATTEMPTS,
            allow_reconnect=True,
            error_cb=on_error,
            disconnected_cb=on_disconnect,
            reconnected_cb=on_reconnect,
            **(auth.options() if auth else {}),
            **({"tls": tls.client_context()} if tls and not auth else {}),
        )
        bound_unacked(nc, UNACKED_TIMEOUT_S, name)
        connected = True
        nc.options["max_reconnect_attempts"] = -1  # from now on, ride out a restart
        return nc
    except (NoServersError, OSError, TimeoutError) as exc:
        raise BusUnavailable(
            f"cannot reach the NATS bus at {redact(url)} ({exc}); is the stack up? try `shardline status`"
        ) from exc
