"""A client of the gateway's lookup API, as a responder's phone (or the CLI) uses it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from shardline.config import StackConfig


@dataclass
class LookupOutcome:
    status: int
    body: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)
    failovers: int = 0  # gateways found down and left for the next one (lookup_light)
    gateway: str = ""  # the base URL that answered

    @property
    def ok(self) -> bool:
        return self.status == 200


def api_key(cfg: StackConfig, responder: str = "responder") -> str:
    path = Path(cfg.run_dir) / "keys" / f"{responder}.apikey"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        names = ", ".join(sorted(r.name for r in cfg.gateway.responders))
        raise FileNotFoundError(
            f"no API key for responder {responder!r} at {path}; the responders of this stack: "
            f"{names}"
        ) from None


def responder_token(cfg: StackConfig, responder: str = "responder", ttl_s: float = 3600) -> str:
    """A JWT for ``responder`` signed by the local stack's token issuer (what the brigade's
    identity provider does in a real deployment)."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from shardline.core import responder_tokens
    from shardline.core.keys import ParticipantKeys

    issuer = cfg.gateway.token_issuer
    if issuer is None or issuer.private_key_file is None:
        raise FileNotFoundError(
            "this stack has no local token issuer: tokens come from your identity provider"
        )
    found = cfg.gateway.responder_named(responder)
    if found is None:
        names = ", ".join(r.name for r in cfg.gateway.responders)
        raise FileNotFoundError(f"no responder {responder!r} at this gateway; there are: {names}")
    address = ParticipantKeys.load(found.key_file).chain_address
    return responder_tokens.issue(
        load_pem_private_key(issuer.private_key_file.read_bytes(), None),
        issuer=issuer.issuer,
        audience=issuer.audience,
        subject=responder,
        address=address,
        ttl_s=ttl_s,
    )


def base_url(cfg: StackConfig) -> str:
    return f"http://{cfg.gateway.host}:{cfg.gateway.port}"


async def lookup(
    client: httpx.AsyncClient,
    transport_id: str,
    key: str,
    *,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    wait_s: float = 5.0,
) -> LookupOutcome:
    """Ask for a sheet; with ``on_event`` follow the SSE stream, else wait on the result.

    Without ``on_event`` the POST asks the gateway to answer with the outcome itself if it comes
    within ``wait_s`` (``Prefer: wait``): one round trip instead of two.
    """
    headers = {"Authorization": f"Bearer {key}"}
    post_headers = (
        headers if on_event is not None or not wait_s else {**headers, "Prefer": f"wait={wait_s:g}"}
    )
    r = await client.post("/lookups", json={"transport_id": transport_id}, headers=post_headers)
    if r.status_code != 202:
        return LookupOutcome(r.status_code, r.json())
    accepted = r.json()
    events: list[dict[str, Any]] = []
    if on_event is not None:
        async with client.stream("GET", accepted["events"], headers=headers) as stream:
            async for line in stream.aiter_lines():
                if line.startswith("data:"):
                    ev = json.loads(line[5:].strip())
                    events.append(ev)
                    on_event(ev)
                    if ev["event"] in ("result", "error"):
                        break
    res = await client.get(accepted["result"], headers=headers)
    return LookupOutcome(res.status_code, res.json(), events)


class Gateways:
    """The gateways a responder's client may ask (base URLs, the first preferred), and which
    one it asks first now: the one that last answered, as a phone remembers it. One object can
    serve many concurrent lookups; a gateway found down moves the preference on once."""

    def __init__(self, urls: Sequence[str]) -> None:
        if not urls:
            raise ValueError("no gateway to ask: give at least one base URL")
        self.urls = [u.rstrip("/") for u in urls]
        self.first = 0

    def order(self) -> list[str]:
        return self.urls[self.first :] + self.urls[: self.first]

    def down(self, url: str) -> None:
        if self.urls[self.first] == url:
            self.first = (self.first + 1) % len(self.urls)


# What a client takes for a gateway that is down, not for an answer: the connection refused or
# dropped (a killed process), or a 502/503 from the proxy in front of it (not the gateway's own
# JSON: its 502 says the shares did not rebuild the sheet, and its 503 at its admission limit
# carries Retry-After and is asked again there after it).
GATEWAY_DOWN_STATUS = (502, 503)
FAILOVER_PAUSE_S = 0.25  # after every gateway of the list was found down, before the next round


class _GatewayDown(Exception):
    pass


def _answer(base: str, status: int, raw: bytes, retry_after: str | None) -> dict[str, Any]:
    """The gateway's JSON answer; _GatewayDown for a 502/503 that is not the gateway's own."""
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if status in GATEWAY_DOWN_STATUS and not retry_after and not isinstance(body, dict):
        raise _GatewayDown(f"{base} answered {status} {raw[:80]!r}")
    if not isinstance(body, dict):
        raise ValueError(f"{base} answered {status} with what is not a JSON object: {raw[:80]!r}")
    return body


async def lookup_light(
    session: aiohttp.ClientSession,
    base: str | Sequence[str] | Gateways,
    transport_id: str,
    key: str,
    *,
    wait_s: float = 5.0,
    retry_busy_s: float = 0.0,
) -> tuple[LookupOutcome, int]:
    """``lookup`` without the event stream, through aiohttp, which costs a load generator a
    fraction of httpx's CPU per request: one ``POST`` with ``Prefer: wait``, a ``GET`` of the
    outcome if it did not come within ``wait_s``. A 503 at the gateway's limit is asked again
    after its ``Retry-After`` for up to ``retry_busy_s``, as a phone would.

    ``base`` may list several gateways (or be a shared ``Gateways``): when the one asked is down
    (connection refused or dropped, 502, 503 without Retry-After) the lookup is asked of the next
    at once, for up to ``retry_busy_s`` (at least one round of the list). That is a new lookup
    with a guid of its own there: what the dead gateway held is gone with it, and each lookup is
    authorised and audited on its own. Returns the outcome (``failovers`` says how many gateways
    were found down) and how many times it was asked again in all (busy and failover)."""
    gws = (
        base if isinstance(base, Gateways) else Gateways([base] if isinstance(base, str) else base)
    )
    headers = {"Authorization": f"Bearer {key}", "Prefer": f"wait={wait_s:g}"}
    started, retries, failovers = time.monotonic(), 0, 0
    tried_in_round: set[str] = set()
    while True:
        url = gws.order()[0]
        try:
            status, body, retry_after = await _post_and_get(session, url, transport_id, headers)
        except (aiohttp.ClientConnectionError, _GatewayDown) as exc:
            gws.down(url)
            failovers += 1
            tried_in_round.add(url)
            if len(tried_in_round) >= len(gws.urls):  # every one is down: pause, then again
                if time.monotonic() - started >= retry_busy_s:
                    if isinstance(exc, aiohttp.ClientConnectionError):
                        raise
                    raise RuntimeError(
                        f"every gateway is down: {', '.join(gws.urls)} ({exc})"
                    ) from exc
                tried_in_round.clear()
                await asyncio.sleep(FAILOVER_PAUSE_S)
            retries += 1
            continue
        if status == 503 and retry_after and time.monotonic() - started < retry_busy_s:
            retries += 1
            await asyncio.sleep(float(retry_after))
            continue
        return LookupOutcome(status, body, failovers=failovers, gateway=url), retries


async def _post_and_get(
    session: aiohttp.ClientSession, base: str, transport_id: str, headers: dict[str, str]
) -> tuple[int, dict[str, Any], str | None]:
    """One lookup at one gateway: the POST, and the GET of its outcome if it was not done
    within the wait. Raises _GatewayDown for what says the gateway is down."""
    async with session.post(
        f"{base}/lookups", json={"transport_id": transport_id}, headers=headers
    ) as r:
        status, raw = r.status, await r.read()
        retry_after = r.headers.get("Retry-After")
    body = _answer(base, status, raw, retry_after)
    if status == 202:  # not done within the wait: ask for the outcome
        async with session.get(f"{base}{body['result']}", headers=headers) as r:
            status, raw = r.status, await r.read()
            busy = r.headers.get("Retry-After")
        body = _answer(base, status, raw, busy)
    return status, body, retry_after
