"""A bus connection to a server that vanished is given up in seconds, not minutes.

When a server's host is cut off the network (no FIN, no RST), a client that keeps publishing
fills its socket's send buffer; nats-py's flusher then waits in ``drain()`` for ever, the ping
that would notice the stale connection queues behind it, and the client never moves to another
server of the cluster (nats-io/nats.py#671). ``TCP_USER_TIMEOUT`` makes the kernel fail a
connection whose sent data stays unacknowledged that long, so the read loop sees the error and
the client reconnects elsewhere, whatever its own ping loop is doing. Linux only; elsewhere the
client's pings are all there is.
"""

from __future__ import annotations

import socket
from typing import Any

from shardline.bus import log


def bound_unacked(nc: Any, timeout_s: float, client: str) -> bool:
    """Set ``TCP_USER_TIMEOUT`` on ``nc``'s current socket; False where it cannot be set."""
    option = getattr(socket, "TCP_USER_TIMEOUT", None)
    transport = getattr(nc, "_transport", None)  # nats-py keeps the stream writers here
    writer = getattr(transport, "_bare_io_writer", None) or getattr(transport, "_io_writer", None)
    sock = writer.get_extra_info("socket") if writer is not None else None
    if option is None or sock is None:
        return False
    try:
        sock.setsockopt(socket.IPPROTO_TCP, option, int(1000 * timeout_s))
    except OSError as exc:
        log.warn("bus.tcp_user_timeout_unset", client=client, error=str(exc))
        return False
    return True
