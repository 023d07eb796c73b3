"""Malformed messages go to the dead letters with their reason; the workers keep running."""

from __future__ import annotations

import asyncio
import json

import nats
import pytest

from shardline.bus import envelope
from shardline.core.keys import ParticipantKeys

from .test_lookup import do_lookup

pytestmark = pytest.mark.e2e


async def _dead_letters(nc, subject: str, within: float = 10.0) -> list:
    js = nc.jetstream()
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        sub = await js.subscribe(f"dlq.{subject}", ordered_consumer=True)
        found = []
        while True:
            try:
                found.append(await sub.next_msg(timeout=0.3))
            except Exception:
                break
        await sub.unsubscribe()
        if found:
            return found
        await asyncio.sleep(0.2)
    return []


def test_malformed_and_forged_messages_are_dead_lettered(live_stack, sample_sheets):
    async def go():
        nc = await nats.connect(live_stack.nats_url)
        js = nc.jetstream()
        guid = "ab" * 16
        await js.publish(f"lookup.share.{guid}", b"{not json", headers={"Nats-Msg-Id": "garbage-1"})
        # well-formed, but signed by a key that is not the one org2 registered on chain
        impostor = ParticipantKeys.generate("org2")
        body = {
            "guid": guid,
            "org": "org2",
            "x": 2,
            "transport_key": "00" * 32,
            "trigger": "chain",
            "sealed": "AAAA",
        }
        forged = envelope.make("lookup.share", body, impostor)
        await js.publish(f"lookup.share.{'cd' * 16}", forged.to_bytes())
        # a registration share that is not a transport.share
        await js.publish("transport.share.org3", json.dumps({"id": "x"}).encode())
        garbage = await _dead_letters(nc, f"lookup.share.{guid}")
        forged_dl = await _dead_letters(nc, f"lookup.share.{'cd' * 16}")
        wrong = await _dead_letters(nc, "transport.share.org3")
        await nc.close()
        return garbage, forged_dl, wrong

    garbage, forged_dl, wrong = asyncio.run(go())
    assert len(garbage) == 1 and garbage[0].data == b"{not json"
    assert garbage[0].headers["Shardline-Reason"].startswith("not JSON")
    assert garbage[0].headers["Shardline-Worker"] == "combiner.main"
    assert (
        len(forged_dl) == 1
        and "signature of org2 does not verify" in forged_dl[0].headers["Shardline-Reason"]
    )
    assert len(wrong) == 1 and "envelope" in wrong[0].headers["Shardline-Reason"]
    # and the workers are still serving
    out = asyncio.run(do_lookup(live_stack, sample_sheets[15].transport_id))
    assert out.status == 200
