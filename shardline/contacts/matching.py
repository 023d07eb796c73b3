"""Ask an org's own PSI worker to match its contacts with a peer, and wait for the outcome."""

from __future__ import annotations

import asyncio
import json
import secrets
import time

from shardline.bus import envelope, subjects
from shardline.bus.connect import connect
from shardline.config import StackConfig
from shardline.contacts.models import PsiSession
from shardline.contacts.store import ContactStore
from shardline.core.keys import ParticipantKeys


class MatchError(RuntimeError):
    pass


async def start_match(
    cfg: StackConfig,
    org: str,
    peer: str,
    *,
    pad_to: int = 0,
    timeout_s: float = 600.0,
    prototype: bool = False,
) -> str:
    keys = ParticipantKeys.load(cfg.org(org).key_file)
    session = secrets.token_hex(16)
    body = {"session": session, "peer": peer, "pad_to": pad_to, "timeout_s": timeout_s}
    if prototype:
        body["prototype"] = True
    env = envelope.make("psi.start", body, keys, trace_id=session)
    nc = await connect(cfg.nats_url, f"match.{org}")
    try:
        try:
            msg = await nc.request(subjects.PSI_START.format(org=org), env.to_bytes(), timeout=10)
        except Exception as exc:
            raise MatchError(
                f"the PSI worker of {org} did not answer ({exc!r}); is node-{org} running? "
                "see `shardline status`"
            ) from None
    finally:
        await nc.close()
    answer = json.loads(msg.data)
    if "error" in answer:
        raise MatchError(answer["error"])
    return answer["session"]


async def wait_match(
    store: ContactStore, session: str, timeout_s: float = 900.0, on_poll=None
) -> PsiSession:
    """Wait until the session is done or failed (the worker's own deadline fails it)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            row = await asyncio.to_thread(store.psi_session, session)
        except ValueError:
            row = None
        if row is not None and row.state != "running":
            return row
        if on_poll:
            on_poll(row)
        await asyncio.sleep(0.2)
    raise MatchError(f"match {session} still running after {timeout_s:.0f} s")
