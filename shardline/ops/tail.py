"""`shardline tail SUBJECT`: what passes on the bus, as an operator may see it.

For each message: the subject, its size, the envelope's fields (id, type, schema version, sender,
sent at, trace id) and whether the body is sealed, and for whom. A sealed body is shown only as
its reader and its size: the plaintext is never opened (the tail holds no key anyway). A plain
body (progress, intents: no secrets by design) is shown by its field names only, so that a tail
left running does not copy payloads into a terminal's scrollback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

from nats.aio.client import Client

ENVELOPE_FIELDS = ("id", "type", "schema_version", "sender", "sent_at", "trace_id")


def describe(data: bytes, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """What may be shown of one message: envelope fields, never a sealed body's contents."""
    out: dict[str, Any] = {"size": len(data)}
    if headers:
        out["headers"] = {
            k: v
            for k, v in headers.items()
            if k in ("traceparent", "Shardline-Type", "Nats-Msg-Id")
        }
    try:
        env = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        out["envelope"] = None
        out["problem"] = "not JSON: not an envelope"
        return out
    if not isinstance(env, dict) or not all(k in env for k in ("type", "sender", "body")):
        out["envelope"] = None
        out["problem"] = "JSON, but not an envelope (type, sender, body missing)"
        return out
    out["envelope"] = {k: env.get(k) for k in ENVELOPE_FIELDS}
    body = env.get("body")
    if isinstance(body, dict) and "sealed_to" in body:
        box = body.get("box") or ""
        out["body"] = {"sealed_to": body["sealed_to"], "sealed_bytes": len(box) * 3 // 4}
    elif isinstance(body, dict):
        out["body"] = {"plain_fields": sorted(body)}
    else:
        out["body"] = {"kind": type(body).__name__}
    out["signed"] = bool(env.get("sig"))
    return out


async def tail(
    nc: Client,
    subject: str,
    on_message: Callable[[dict[str, Any]], None],
    *,
    count: int | None = None,
    seconds: float | None = None,
    on_ready: Callable[[], None] | None = None,
) -> int:
    """Show messages on ``subject`` as they pass, until ``count`` were seen or ``seconds`` passed."""
    seen = 0
    done = asyncio.Event()

    async def cb(msg) -> None:
        nonlocal seen
        if done.is_set():
            return
        seen += 1
        on_message({"at": time.time(), "subject": msg.subject, **describe(msg.data, msg.headers)})
        if count is not None and seen >= count:
            done.set()

    sub = await nc.subscribe(subject, cb=cb)
    await nc.flush()  # the server has the subscription: nothing from now on is missed
    if on_ready is not None:
        on_ready()
    try:
        if seconds is None:
            await done.wait()
        else:
            with contextlib.suppress(TimeoutError):  # timeout, not wait_for: a cancel gets through
                async with asyncio.timeout(seconds):
                    await done.wait()
    finally:
        await sub.unsubscribe()
    return seen
