"""A bus client's socket gives up on a server that stops acknowledging (TCP_USER_TIMEOUT), set
on the first connection and again on every reconnection, against a real nats-server."""

from __future__ import annotations

import asyncio
import socket

import pytest

from shardline.bus.connect import UNACKED_TIMEOUT_S, connect

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not hasattr(socket, "TCP_USER_TIMEOUT"), reason="TCP_USER_TIMEOUT is Linux"),
]


def _user_timeout_ms(nc) -> int:
    sock = nc._transport._bare_io_writer.get_extra_info("socket")
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)


def test_the_bus_socket_gives_up_on_unacknowledged_data(nats_url):
    async def go():
        nc = await connect(nats_url, "tcp-guard-test")
        try:
            first = _user_timeout_ms(nc)
            # the connection breaks: the client reconnects on a new socket, which gets it too
            await nc._process_op_err(ConnectionResetError("broken by the test"))
            again = 0
            for _ in range(200):
                await asyncio.sleep(0.05)
                if nc.is_connected and nc.stats["reconnects"]:
                    again = _user_timeout_ms(nc)
                    if again:
                        break
            return first, again, nc.stats["reconnects"]
        finally:
            await nc.close()

    first, again, reconnects = asyncio.run(go())
    assert first == int(1000 * UNACKED_TIMEOUT_S)
    assert reconnects >= 1
    assert again == int(1000 * UNACKED_TIMEOUT_S)
