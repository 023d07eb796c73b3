"""The PSI's wire form and its pool: packed elements, tags of the second blinding, and the
pipelined pool giving the same answers, chunk by chunk and in order, as the core in-process."""

from __future__ import annotations

import asyncio

import pytest

from shardline.contacts import psi_pool
from shardline.contacts.psi_pool import PsiPool
from shardline.core import psi
from shardline.workers.psi_node import ITEM_BYTES, PART, round_body


def test_tags_of_the_second_blinding_meet_exactly_when_the_keys_do():
    ka, kb = psi.new_scalar(), psi.new_scalar()
    a = psi.blind_keys([b"k1", b"k2"], ka)
    b = psi.blind_keys([b"k2", b"k3"], kb)
    reply, final = psi.reblind_tags(a, kb), psi.reblind_tags(b, ka)
    assert all(len(t) == psi.TAG_BYTES for t in reply + final)
    assert reply[1] == final[0] and reply[0] not in final and final[1] not in reply
    assert psi.reblind_tags(a, kb) == [psi.tag(p) for p in psi.reblind(a, kb)]


def test_packing_round_trips_and_refuses_a_ragged_blob():
    pts = psi.blind_keys([b"x", b"y", b"z"], psi.new_scalar())
    assert psi.unpack(psi.pack(pts, 32), 32) == pts
    assert psi.unpack(b"", 32) == []
    with pytest.raises(psi.BadPoint, match="not a whole number of 32-byte elements"):
        psi.unpack(psi.pack(pts, 32)[:-1], 32)
    with pytest.raises(ValueError, match="every item must have 32 bytes"):
        psi.pack([b"short"], 32)


def test_a_round_body_is_valid_for_its_schema_and_names_its_parts():
    from shardline.bus import envelope
    from shardline.core.keys import ParticipantKeys

    keys = ParticipantKeys.generate("org1")
    pts = psi.blind_keys([str(i).encode() for i in range(PART + 5)], psi.new_scalar())
    body = round_body("a" * 32, "org1", "org2", "offer", 1, len(pts), pts[PART:])
    assert (body["parts"], body["count"]) == (2, PART + 5)
    env = envelope.parse(envelope.make("psi.round", body, keys).to_bytes(), "psi.round")
    blob = envelope.unb64(env.body["blob"])
    assert psi.unpack(blob, ITEM_BYTES["offer"]) == pts[PART:]


def test_the_pool_streams_chunks_in_order_with_the_cores_answers(monkeypatch):
    monkeypatch.setattr(psi_pool, "CHUNK", 7)
    keys = [str(i).encode() for i in range(30)]
    k = psi.new_scalar()
    pool = PsiPool(2).start()
    try:

        async def run():
            chunks = [c async for c in pool.stream(psi.blind_keys, keys, k)]
            return chunks, await pool.map(psi.reblind_tags, [p for c in chunks for p in c], k)

        chunks, tags = asyncio.run(run())
    finally:
        pool.shutdown()
    assert [len(c) for c in chunks] == [7, 7, 7, 7, 2]
    assert [p for c in chunks for p in c] == psi.blind_keys(keys, k)
    assert tags == psi.reblind_tags(psi.blind_keys(keys, k), k)
