"""The responder's client fails over between gateways: what it takes for a gateway that is down
(refused connection, a proxy's 502/503) and what it takes for an answer (the gateway's own JSON,
its 503 with Retry-After). Real HTTP servers on loopback stand for the gateways and the proxy."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest
from aiohttp import web

from shardline.lookup_client import Gateways, lookup_light


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SHEET = {"transport_id": "TR-1", "un": "1203"}


def _gateway(answers: list[tuple[int, object, dict]]):
    """An HTTP server that answers POST /lookups with each of ``answers`` in turn (the last
    one again after that), counting the requests."""
    seen = {"posts": 0}

    async def post(_request: web.Request) -> web.Response:
        status, body, headers = answers[min(seen["posts"], len(answers) - 1)]
        seen["posts"] += 1
        if isinstance(body, str):
            return web.Response(status=status, text=body, headers=headers)
        return web.json_response(body, status=status, headers=headers)

    app = web.Application()
    app.router.add_post("/lookups", post)
    return app, seen


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


OK = (200, {"guid": "g2", "sheet": SHEET}, {})


async def _run(first_answers, urls_for, **kw):
    apps = [_gateway(first_answers), _gateway([OK])]
    runners = []
    try:
        bases = []
        for app, _seen in apps:
            runner, base = await _serve(app)
            runners.append(runner)
            bases.append(base)
        async with aiohttp.ClientSession() as session:
            out, retries = await lookup_light(session, urls_for(bases), "TR-1", "k", **kw)
        return out, retries, [seen["posts"] for _app, seen in apps], bases
    finally:
        for r in runners:
            await r.cleanup()


def test_a_refused_connection_sends_the_lookup_to_the_next_gateway():
    dead = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    out, retries, posts, bases = asyncio.run(_run([OK], lambda b: [dead, b[1]], retry_busy_s=5))
    assert (out.status, out.body["sheet"], out.gateway) == (200, SHEET, bases[1])
    assert (out.failovers, retries, posts) == (1, 1, [0, 1])


def test_a_proxys_502_for_a_dead_gateway_sends_the_lookup_to_the_next():
    proxy_502 = (502, "<html>502 Bad Gateway</html>", {})
    out, _retries, posts, bases = asyncio.run(_run([proxy_502], lambda b: b, retry_busy_s=5))
    assert (out.status, out.gateway, out.failovers, posts) == (200, bases[1], 1, [1, 1])


def test_the_gateways_own_502_is_its_answer_not_a_failover():
    own = (502, {"guid": "g1", "detail": "the shares did not rebuild the sheet"}, {})
    out, retries, posts, bases = asyncio.run(_run([own], lambda b: b, retry_busy_s=5))
    assert (out.status, out.body["guid"], out.gateway) == (502, "g1", bases[0])
    assert (out.failovers, retries, posts) == (0, 0, [1, 0])


def test_a_busy_gateway_is_asked_again_after_retry_after():
    busy = (503, {"detail": "at its limit"}, {"Retry-After": "0"})
    out, retries, posts, bases = asyncio.run(_run([busy, OK], lambda b: b, retry_busy_s=5))
    assert (out.status, out.gateway, out.failovers, retries, posts) == (200, bases[0], 0, 1, [2, 0])


def test_when_every_gateway_is_down_the_client_says_so_after_its_budget():
    dead = [f"http://127.0.0.1:{_free_port()}" for _ in range(2)]

    async def ask():
        async with aiohttp.ClientSession() as session:
            return await lookup_light(session, dead, "TR-1", "k", retry_busy_s=0.3)

    with pytest.raises(aiohttp.ClientConnectionError):
        asyncio.run(ask())


def test_the_preference_moves_once_however_many_lookups_found_the_gateway_down():
    gws = Gateways(["http://a/", "http://b", "http://c"])
    assert gws.order() == ["http://a", "http://b", "http://c"]
    for _ in range(5):  # five lookups in flight on a, all dropped
        gws.down("http://a")
    assert gws.order() == ["http://b", "http://c", "http://a"]
    gws.down("http://a")  # a late one: a is no longer first, nothing moves
    assert gws.order()[0] == "http://b"
    with pytest.raises(ValueError, match="at least one base URL"):
        Gateways([])
