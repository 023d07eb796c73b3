"""A client of the gateway's lookup API, as a responder's phone (or the CLI) uses it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
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

    @property
    def ok(self) -> bool:
        return self.status == 200


def api_key(cfg: StackConfig, responder: str = "responder") -> str:
    path = Path(cfg.run_dir) / "keys" / f"{responder}.apikey"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise FileNotFoundError(f"no API key for responder {responder!r} at {path}") from None


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


async def lookup_light(
    session: aiohttp.ClientSession,
    base: str,
    transport_id: str,
    key: str,
    *,
    wait_s: float = 5.0,
    retry_busy_s: float = 0.0,
) -> tuple[LookupOutcome, int]:
    """``lookup`` without the event stream, through aiohttp, which costs a load generator a
    fraction of httpx's CPU per request: one ``POST`` with ``Prefer: wait``, a ``GET`` of the
    outcome if it did not come within ``wait_s``. A 503 at the gateway's limit is asked again
    after its ``Retry-After`` for up to ``retry_busy_s``, as a phone would. Returns the outcome
    and how many times it was asked again."""
    headers = {"Authorization": f"Bearer {key}", "Prefer": f"wait={wait_s:g}"}
    started, retries = time.monotonic(), 0
    while True:
        async with session.post(
            f"{base}/lookups", json={"transport_id": transport_id}, headers=headers
        ) as r:
            status, body = r.status, json.loads(await r.read())
            retry_after = r.headers.get("Retry-After")
        if status == 503 and retry_after and time.monotonic() - started < retry_busy_s:
            retries += 1
            await asyncio.sleep(float(retry_after))
            continue
        break
    if status == 202:  # not done within the wait: ask for the outcome
        async with session.get(f"{base}{body['result']}", headers=headers) as r:
            status, body = r.status, json.loads(await r.read())
    return LookupOutcome(status, body), retries
