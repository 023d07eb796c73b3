"""The capsule-fragment frame a proxy answers with (no servers)."""

from __future__ import annotations

import os

import pytest

from shardline.core import records_wire as wire
from shardline.core.keys import ParticipantKeys

REQ = {"request_id": "ab" * 16, "record_id": "cd" * 16, "reader": "st-marys", "org": "org1"}


@pytest.fixture(scope="module")
def keys():
    return ParticipantKeys.generate("org1"), ParticipantKeys.generate("st-marys")


def frame(keys, cfrag: bytes = b"c" * 381, **changes) -> bytes:
    org, reader = keys
    return wire.make(
        **(REQ | changes),
        version=7,
        cfrag=cfrag,
        signing_key=org.signing_key,
        reader_sealing_pk=reader.sealing_public,
    )


def open_(keys, raw: bytes, **changes):
    org, reader = keys
    return wire.open_frame(
        raw,
        **(REQ | changes),
        org_signing_pk=org.signing_public,
        reader_sealing_key=reader.sealing_key,
    )


def test_the_reader_opens_the_frame_of_its_request(keys):
    cfrag = os.urandom(381)
    raw = frame(keys, cfrag)
    assert wire.is_frame(raw) and not wire.is_frame(b'{"id": "x"}')
    assert cfrag not in raw  # sealed to the reader
    assert open_(keys, raw) == (7, cfrag)


@pytest.mark.parametrize(
    "field", [("request_id", "ef" * 16), ("record_id", "ef" * 16), ("reader", "x"), ("org", "org2")]
)
def test_a_frame_for_another_request_reader_or_org_is_refused(keys, field):
    with pytest.raises(wire.BadFrame, match="not signed by"):
        open_(keys, frame(keys), **dict([field]))


def test_a_changed_frame_is_refused(keys):
    raw = bytearray(frame(keys))
    for at in (len(wire.MAGIC), len(wire.MAGIC) + 10, len(raw) - 1):  # version, signature, box
        bad = bytearray(raw)
        bad[at] ^= 1
        with pytest.raises(wire.BadFrame, match="not signed by"):
            open_(keys, bytes(bad))
    with pytest.raises(wire.BadFrame, match="not a capsule-fragment frame"):
        open_(keys, bytes(raw[:60]))


def test_a_frame_sealed_to_another_reader_does_not_open(keys):
    org, _reader = keys
    other = ParticipantKeys.generate("mallory")
    raw = wire.make(
        **REQ,
        version=1,
        cfrag=b"c" * 381,
        signing_key=org.signing_key,
        reader_sealing_pk=other.sealing_public,
    )
    with pytest.raises(wire.BadFrame, match="not sealed to st-marys"):
        open_(keys, raw)
