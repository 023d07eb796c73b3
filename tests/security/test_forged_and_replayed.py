"""A forged, a replayed and a stale envelope are refused: each lands in the dead letters."""

from __future__ import annotations

import asyncio
import secrets
import time

import nats
import pytest

from shardline.bus import envelope
from shardline.bus.envelope import Envelope, b64, canonical
from shardline.core import sealing
from shardline.core.keys import ParticipantKeys

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
