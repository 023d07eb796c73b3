"""Every subject a worker reads gets malformed, oversized, wrongly signed and wrongly typed
messages (hypothesis draws them): no worker crashes, and each message lands in the dead letters
with its reason."""

from __future__ import annotations

import asyncio
import secrets
import time

import nats
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nats.js.api import ConsumerConfig, DeliverPolicy

from shardline import stack
from shardline.bus.envelope import MAX_MESSAGE_BYTES, b64, canonical
from shardline.core import sealing
from shardline.core.keys import ParticipantKeys
from shardline.schemas import SCHEMA_VERSION, message_types

pytestmark = pytest.mark.e2e

# subject -> the message type its worker expects; {id} is a fresh token per message
SUBJECTS = {
    "transport.share.org3": "transport.share",
    "lookup.requested.org3": "lookup.requested",
    "lookup.intent.org3.{id}": "lookup.intent",
    "lookup.left.org3": "lookup.left",
    "lookup.share.{id}": "lookup.share",
    "psi.round.{id}.org3": "psi.round",
    "records.kfrag.org3": "records.kfrag",
}
IMPOSTOR = ParticipantKeys.generate("org1")


def envelope_bytes(
    msg_type: str, body: dict, keys: ParticipantKeys, sender: str | None = None, **over
) -> bytes:
    unsigned = {
        "id": secrets.token_hex(16),
        "type": msg_type,
        "schema_version": SCHEMA_VERSION,
        "sender": sender or keys.participant_id,
        "sent_at": time.time(),
        "trace_id": secrets.token_hex(16),
        "body": body,
    }
    unsigned.update(over)
    sig = b64(sealing.sign(canonical(unsigned), keys.signing_key))
    return canonical({**unsigned, "sig": sig})


def sealed_junk(reader: str) -> dict:
    return {"sealed_to": reader, "box": b64(secrets.token_bytes(80))}


json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def bad_message(draw) -> tuple[str, str, bytes]:
    """(subject, what is wrong, the bytes)."""
    pattern = draw(st.sampled_from(sorted(SUBJECTS)))
    subject = pattern.format(id=secrets.token_hex(16))
    expected = SUBJECTS[pattern]
    kind = draw(
        st.sampled_from(
            ["bytes", "json", "oversized", "forged", "unknown-sender", "wrong-type", "wrong-fields"]
        )
    )
    if kind == "bytes":
        raw = draw(st.binary(min_size=0, max_size=300))
    elif kind == "json":
        raw = canonical({"v": draw(json_values)})
    elif kind == "oversized":
        raw = b'{"pad":"' + b"x" * (MAX_MESSAGE_BYTES + draw(st.integers(1, 4096))) + b'"}'
    elif kind == "forged":  # claims to be org1, signed by another key
        raw = envelope_bytes(expected, sealed_junk("org3"), IMPOSTOR, sender="org1")
    elif kind == "unknown-sender":
        raw = envelope_bytes(expected, sealed_junk("org3"), ParticipantKeys.generate("nobody9"))
    elif kind == "wrong-type":
        other = draw(st.sampled_from([t for t in message_types() if t != expected]))
        raw = envelope_bytes(other, sealed_junk("org3"), IMPOSTOR)
    else:  # the right type with a body of the wrong shape
        body = draw(
            st.dictionaries(st.sampled_from(["guid", "org", "x", "id"]), json_scalars, min_size=1)
        )
        raw = envelope_bytes(expected, body, IMPOSTOR)
    if kind == "bytes":  # a random tail keeps the raw draws apart from each other
        raw += secrets.token_bytes(8)
    return subject, kind, raw


async def dead_lettered(nc, after_seq: int, sent: dict[bytes, str], within: float = 30.0):
    js = nc.jetstream()
    found: dict[bytes, list] = {}
    sub = await js.subscribe(
        "dlq.>",
        ordered_consumer=True,
        config=ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after_seq + 1
        ),
    )
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and len(found) < len(sent):
        try:
            msg = await sub.next_msg(timeout=0.5)
        except nats.errors.TimeoutError:
            continue
        if msg.data in sent:
            found.setdefault(msg.data, []).append(msg)
    await sub.unsubscribe()
    return found


@settings(
    max_examples=4,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(batch=st.lists(bad_message(), min_size=10, max_size=25))
def test_bad_messages_on_every_subject_are_dead_lettered(live_stack, batch):
    async def go():
        nc = await nats.connect(live_stack.nats_url)
        js = nc.jetstream()
        start = (await js.stream_info("DLQ")).state.last_seq
        sent: dict[bytes, str] = {}
        for subject, kind, raw in batch:
            if raw in sent:
                continue
            sent[raw] = f"{kind} on {subject}"
            if subject.startswith(("lookup.intent.", "lookup.left.")):  # plain: in no stream
                await nc.publish(subject, raw)
            else:
                await js.publish(subject, raw, headers={"Nats-Msg-Id": secrets.token_hex(8)})
        await nc.flush()
        found = await dead_lettered(nc, start, sent)
        await nc.close()
        return sent, found

    sent, found = asyncio.run(go())
    missing = [what for raw, what in sent.items() if raw not in found]
    assert not missing, f"not dead-lettered: {missing}"
    for raw, msgs in found.items():
        for m in msgs:
            assert m.headers.get("Shardline-Reason"), f"no reason for {sent[raw]}"
            assert m.headers["Shardline-Subject"] == m.subject.removeprefix("dlq.")
    alive = stack.running(live_stack.run_dir)
    assert {f"node-org{i}" for i in range(1, 5)} | {"combiner", "gateway"} <= set(alive)
