"""A forged, a replayed and a stale envelope are refused: each lands in the dead letters."""

from __future__ import annotations

import asyncio
import secrets
import time

import httpx
import nats
import pytest

from shardline import stack
from shardline.bus import envelope
from shardline.bus.envelope import Envelope, b64, canonical
from shardline.core import sealing
from shardline.core.keys import ParticipantKeys
from shardline.lookup_client import api_key, base_url

pytestmark = pytest.mark.e2e


def share_body(guid: str, org: str) -> dict:
    return {
        "guid": guid,
        "org": org,
        "x": 2,
        "transport_key": "00" * 32,
        "trigger": "chain",
        "sealed": "AAAA",
    }


def signed_at(msg_type: str, body: dict, keys: ParticipantKeys, sent_at: float) -> Envelope:
    """A validly signed envelope with a chosen ``sent_at`` (what an attacker who kept one has)."""
    unsigned = {
        "id": secrets.token_hex(16),
        "type": msg_type,
        "schema_version": 1,
        "sender": keys.participant_id,
        "sent_at": sent_at,
        "trace_id": secrets.token_hex(16),
        "body": body,
    }
    return Envelope(**unsigned, sig=b64(sealing.sign(canonical(unsigned), keys.signing_key)))


async def dead_letters(js, subject: str, want: int, within: float = 15.0) -> list:
    deadline = time.monotonic() + within
    found: list = []
    while time.monotonic() < deadline:
        sub = await js.subscribe(f"dlq.{subject}", ordered_consumer=True)
        found = []
        while True:
            try:
                found.append(await sub.next_msg(timeout=0.3))
            except Exception:
                break
        await sub.unsubscribe()
        if len(found) >= want:
            return found
        await asyncio.sleep(0.2)
    return found


def test_replayed_and_stale_envelopes_are_dead_lettered(live_stack):
    org2 = ParticipantKeys.load(live_stack.org("org2").key_file)
    guid_replay, guid_stale, guid_forged = (secrets.token_hex(16) for _ in range(3))

    async def go():
        nc = await nats.connect(live_stack.nats_url)
        js = nc.jetstream()
        # a real share envelope, signed by org2, published twice (an attacker on the bus copies
        # it; a new Nats-Msg-Id gets it past JetStream's duplicate window)
        original = envelope.make("lookup.share", share_body(guid_replay, "org2"), org2)
        subject = f"lookup.share.{guid_replay}"
        await js.publish(subject, original.to_bytes(), headers={"Nats-Msg-Id": "first"})
        await js.publish(subject, original.to_bytes(), headers={"Nats-Msg-Id": "second"})
        # validly signed ten minutes ago, published now
        stale = signed_at("lookup.share", share_body(guid_stale, "org2"), org2, time.time() - 600)
        await js.publish(f"lookup.share.{guid_stale}", stale.to_bytes())
        # signed by a key that is not org2's
        forged = envelope.make(
            "lookup.share", share_body(guid_forged, "org2"), ParticipantKeys.generate("org2")
        )
        await js.publish(f"lookup.share.{guid_forged}", forged.to_bytes())
        replayed = await dead_letters(js, subject, 1)
        await asyncio.sleep(1.0)  # the first copy, had it been refused, would be here too
        replayed = await dead_letters(js, subject, 1)
        stale_dl = await dead_letters(js, f"lookup.share.{guid_stale}", 1)
        forged_dl = await dead_letters(js, f"lookup.share.{guid_forged}", 1)
        await nc.close()
        return original, replayed, stale_dl, forged_dl

    original, replayed, stale_dl, forged_dl = asyncio.run(go())
    assert len(replayed) == 1, "exactly the second copy is refused"
    assert (
        replayed[0]
        .headers["Shardline-Reason"]
        .startswith(f"replayed envelope {original.id} from org2")
    )
    assert replayed[0].headers["Shardline-Worker"] == "combiner.main"
    assert len(stale_dl) == 1 and "stale envelope" in stale_dl[0].headers["Shardline-Reason"]
    assert len(forged_dl) == 1
    assert "signature of org2 does not verify" in forged_dl[0].headers["Shardline-Reason"]


def test_a_share_its_org_did_not_sign_blames_no_org(live_stack, sample_sheets):
    """Any bus user may publish on lookup.share.* and a lookup's guid is public on chain. A share
    naming org3 but signed by org2, and one naming org4 whose signature does not verify, must
    not make org3 or org4 a bad org of the lookup (that would let anyone knock an honest org's
    share out); each goes to the dead letters naming what is wrong with it."""
    cfg = live_stack
    down = ["node-org2", "node-org3", "node-org4"]  # org1 alone: the lookup waits to its 504
    for name in down:
        stack.stop(cfg.run_dir, name)
    org2 = ParticipantKeys.load(cfg.org("org2").key_file)
    try:

        async def go() -> tuple[int, dict, list]:
            headers = {"X-API-Key": api_key(cfg)}
            async with httpx.AsyncClient(base_url=base_url(cfg), timeout=30) as client:
                posted = await client.post(
                    "/lookups",
                    json={"transport_id": sample_sheets[1].transport_id},
                    headers=headers,
                )
                assert posted.status_code == 202, posted.text
                guid = posted.json()["guid"]
                nc = await nats.connect(cfg.nats_url)
                js = nc.jetstream()
                subject = f"lookup.share.{guid}"
                as_org2 = envelope.make("lookup.share", share_body(guid, "org3"), org2)
                forged = envelope.make(
                    "lookup.share", share_body(guid, "org4"), ParticipantKeys.generate("org4")
                )
                for env in (as_org2, forged):
                    await js.publish(subject, env.to_bytes())
                await nc.flush()
                outcome = await client.get(f"/lookups/{guid}", headers=headers)
                letters = await dead_letters(js, subject, 2)
                await nc.close()
                return outcome.status_code, outcome.json(), letters

        status, body, letters = asyncio.run(go())
    finally:
        stack.start_workers(cfg, down)
    assert status == 504, body
    assert body["bad"] == {}, body
    assert "bad:" not in body["detail"], body["detail"]
    reasons = sorted(m.headers["Shardline-Reason"] for m in letters)
    assert len(reasons) == 2, reasons
    assert reasons[0] == "org2 signed a share naming org3", reasons
    assert "signature of org4 does not verify" in reasons[1], reasons
