"""The signed (and optionally sealed) envelope: make, parse, verify, open_body."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from shardline import schemas
from shardline.bus import envelope
from shardline.bus.envelope import BadMessage
from shardline.core import sealing
from shardline.core.directory import GATEWAY, ORG, Directory, Participant
from shardline.core.keys import ParticipantKeys

GUID = "0123456789abcdef0123456789abcdef"
PROGRESS = {"guid": GUID, "stage": "share", "org": "org1"}
RESULT = {
    "guid": GUID,
    "ok": True,
    "sheet": {"un": "UN1079"},
    "used_orgs": ["org1", "org2"],
    "bad_orgs": [],
}

KEYS = {pid: ParticipantKeys.generate(pid) for pid in ("org1", "org2", "gateway", "outsider")}


def participant(k: ParticipantKeys, kind: int = ORG, active: bool = True) -> Participant:
    return Participant(
        id=k.participant_id,
        signing_pk=k.signing_public,
        sealing_pk=k.sealing_public,
        account="0x" + "00" * 20,
        kind=kind,
        active=active,
    )


@pytest.fixture
def directory() -> Directory:
    return Directory(
        [
            participant(KEYS["org1"]),
            participant(KEYS["org2"]),
            participant(KEYS["gateway"], kind=GATEWAY),
        ]
    )


def resign(data: dict, keys: ParticipantKeys) -> bytes:
    """Sign arbitrary envelope data, so that only the check under test can reject it."""
    unsigned = {k: v for k, v in data.items() if k != "sig"}
    sig = envelope.b64(sealing.sign(envelope.canonical(unsigned), keys.signing_key))
    return envelope.canonical({**unsigned, "sig": sig})


def data_of(env: envelope.Envelope) -> dict:
    return json.loads(env.to_bytes())


# ---- round trips --------------------------------------------------------------------------------


async def test_plain_round_trip(directory):
    env = envelope.make("lookup.progress", PROGRESS, KEYS["org1"], trace_id="ab" * 16)
    assert not env.sealed
    assert env.type == "lookup.progress"
    assert env.sender == "org1"
    assert env.schema_version == schemas.SCHEMA_VERSION
    assert env.trace_id == "ab" * 16
    got = envelope.parse(env.to_bytes(), "lookup.progress")
    assert got == env
    await envelope.verify(got, directory)
    assert envelope.open_body(got, KEYS["org2"]) == PROGRESS


async def test_sealed_round_trip(directory):
    gw = KEYS["gateway"]
    env = envelope.make(
        "lookup.result", RESULT, KEYS["org1"], seal_to=("gateway", gw.sealing_public)
    )
    assert env.sealed
    assert env.body["sealed_to"] == "gateway"
    raw = env.to_bytes()
    assert b"UN1079" not in raw and b"used_orgs" not in raw
    got = envelope.parse(raw, "lookup.result")
    await envelope.verify(got, directory)
    assert envelope.open_body(got, gw) == RESULT


def test_ids_and_trace_ids_are_fresh():
    a = envelope.make("lookup.progress", PROGRESS, KEYS["org1"])
    b = envelope.make("lookup.progress", PROGRESS, KEYS["org1"])
    assert a.id != b.id
    assert a.trace_id != b.trace_id
    assert len(a.id) == len(a.trace_id) == 32


def test_repr_hides_body_and_signature():
    env = envelope.make("lookup.progress", PROGRESS, KEYS["org1"])
    assert env.sig not in repr(env)
    assert GUID not in repr(env)


# ---- signatures and senders ---------------------------------------------------------------------


async def test_tampered_body_fails_verify(directory):
    data = data_of(envelope.make("lookup.progress", PROGRESS, KEYS["org1"]))
    data["body"]["stage"] = "bad_share"
    env = envelope.parse(envelope.canonical(data))  # still a well-formed message
    with pytest.raises(BadMessage, match="signature of org1 does not verify"):
        await envelope.verify(env, directory)


async def test_tampered_sealed_box_fails_verify(directory):
    gw = KEYS["gateway"]
    data = data_of(
        envelope.make("lookup.result", RESULT, KEYS["org1"], seal_to=("gateway", gw.sealing_public))
    )
    other = envelope.make(
        "lookup.result", RESULT, KEYS["org2"], seal_to=("gateway", gw.sealing_public)
    )
    data["body"]["box"] = other.body["box"]
    with pytest.raises(BadMessage, match="does not verify"):
        await envelope.verify(envelope.parse(envelope.canonical(data)), directory)


@pytest.mark.parametrize("field", ["sender", "trace_id", "id", "sent_at", "type"])
async def test_tampered_header_fails_verify(directory, field):
    data = data_of(envelope.make("lookup.progress", PROGRESS, KEYS["org1"]))
    data[field] = {
        "sender": "org2",
        "trace_id": "f" * 32,
        "id": "e" * 32,
        "sent_at": data["sent_at"] + 1,
        "type": "lookup.requested",
    }[field]
    if field == "type":  # the body no longer fits the type: parse already refuses it
        with pytest.raises(BadMessage):
            envelope.parse(envelope.canonical(data))
        return
    with pytest.raises(BadMessage, match="does not verify"):
        await envelope.verify(envelope.parse(envelope.canonical(data)), directory)


async def test_unknown_sender_mentions_the_registry(directory):
    env = envelope.parse(envelope.make("lookup.progress", PROGRESS, KEYS["outsider"]).to_bytes())
    with pytest.raises(BadMessage, match="unknown sender") as info:
        await envelope.verify(env, directory)
    assert "outsider" in str(info.value)
    assert "registry" in str(info.value)


async def test_inactive_sender_is_refused():
    d = Directory([participant(KEYS["org1"], active=False)])
    env = envelope.make("lookup.progress", PROGRESS, KEYS["org1"])
    with pytest.raises(BadMessage, match="registry"):
        await envelope.verify(env, d)


async def test_unknown_sender_triggers_one_refresh():
    calls = []

    async def refresh():
        calls.append(1)
        return [participant(KEYS["outsider"])]

    d = Directory([], refresh=refresh)
    env = envelope.make("lookup.progress", PROGRESS, KEYS["outsider"])
    await envelope.verify(env, d)
    assert calls == [1]
    await envelope.verify(env, d)  # now known: no second refresh
    assert calls == [1]


async def test_signature_by_another_key_fails(directory):
    # a message that claims org1 but is signed with org2's key
    data = data_of(envelope.make("lookup.progress", PROGRESS, KEYS["org1"]))
    env = envelope.parse(resign(data, KEYS["org2"]))
    with pytest.raises(BadMessage, match="does not verify"):
        await envelope.verify(env, directory)


@pytest.mark.parametrize("sig", ["AAAA", "!!!!" * 3, "QUJD"])
async def test_garbage_signature_fails(directory, sig):
    data = data_of(envelope.make("lookup.progress", PROGRESS, KEYS["org1"]))
    data["sig"] = sig
    with pytest.raises(BadMessage):
        await envelope.verify(envelope.parse(envelope.canonical(data)), directory)


# ---- sealed bodies -----------------------------------------------------------------------------


def test_sealed_to_someone_else():
    gw = KEYS["gateway"]
    env = envelope.make(
        "lookup.result", RESULT, KEYS["org1"], seal_to=("gateway", gw.sealing_public)
    )
    with pytest.raises(BadMessage, match="sealed to gateway, not to org2"):
        envelope.open_body(env, KEYS["org2"])


def test_sealed_with_the_wrong_key():
    # labelled for the gateway, but sealed to org2's key
    env = envelope.make(
        "lookup.result", RESULT, KEYS["org1"], seal_to=("gateway", KEYS["org2"].sealing_public)
    )
    with pytest.raises(BadMessage, match="does not open"):
        envelope.open_body(env, KEYS["gateway"])


@pytest.mark.parametrize(
    "inner",
    [b'{"guid": "nope"}', b"not json", b"[1, 2]"],
)
def test_sealed_body_that_is_not_a_valid_message(inner):
    gw = KEYS["gateway"]
    data = data_of(
        envelope.make("lookup.result", RESULT, KEYS["org1"], seal_to=("gateway", gw.sealing_public))
    )
    data["body"]["box"] = envelope.b64(sealing.seal(inner, gw.sealing_public))
    env = envelope.parse(resign(data, KEYS["org1"]))
    with pytest.raises(BadMessage):
        envelope.open_body(env, gw)


def test_sealed_box_not_base64():
    data = data_of(envelope.make("lookup.progress", PROGRESS, KEYS["org1"]))
    data["body"] = {"sealed_to": "gateway", "box": "QUJ=D"}
    env = envelope.parse(resign(data, KEYS["org1"]))
    with pytest.raises(BadMessage, match="does not open"):
        envelope.open_body(env, KEYS["gateway"])


# ---- outer form --------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"not json", b"\xff\xfe\x00", b"", b"{"])
def test_not_json(raw):
    with pytest.raises(BadMessage, match="not JSON"):
        envelope.parse(raw)


@pytest.mark.parametrize("raw", [b"[]", b"null", b"42", b'"x"'])
def test_json_that_is_not_an_object(raw):
    with pytest.raises(BadMessage, match="envelope"):
        envelope.parse(raw)


@pytest.mark.parametrize("field", ["id", "type", "sender", "body", "sig", "trace_id"])
def test_missing_field(field):
    data = data_of(envelope.make("lookup.progress", PROGRESS, KEYS["org1"]))
    del data[field]
    with pytest.raises(BadMessage, match="envelope") as info:
        envelope.parse(envelope.canonical(data))
    assert field in str(info.value)


def test_extra_field():
    data = data_of(envelope.make("lookup.progress", PROGRESS, KEYS["org1"]))
    data["surprise"] = 1
    with pytest.raises(BadMessage, match="envelope") as info:
        envelope.parse(envelope.canonical(data))
    assert "surprise" in str(info.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [("id", "short"), ("sender", "Org1"), ("schema_version", "1"), ("sent_at", "now")],
)
def test_badly_shaped_field(field, value):
    data = data_of(envelope.make("lookup.progress", PROGRESS, KEYS["org1"]))
    data[field] = value
    with pytest.raises(BadMessage, match=field):
        envelope.parse(envelope.canonical(data))


def test_unknown_type():
    data = data_of(envelope.make("lookup.progress", PROGRESS, KEYS["org1"]))
    data["type"] = "lookup.teleport"
    with pytest.raises(BadMessage, match=r"unknown message type lookup\.teleport"):
        envelope.parse(resign(data, KEYS["org1"]))


def test_unexpected_type():
    env = envelope.make("lookup.progress", PROGRESS, KEYS["org1"])
    with pytest.raises(
        BadMessage, match=r"expected a lookup\.result message, got lookup\.progress"
    ):
        envelope.parse(env.to_bytes(), "lookup.result")


@pytest.mark.parametrize("version", [2, 99])
def test_wrong_schema_version(version):
    data = data_of(envelope.make("lookup.progress", PROGRESS, KEYS["org1"]))
    data["schema_version"] = version
    with pytest.raises(BadMessage, match=f"schema version {version} is not supported") as info:
        envelope.parse(resign(data, KEYS["org1"]))
    assert "upgrade" in str(info.value)


def test_plain_body_checked_against_its_type():
    data = data_of(envelope.make("lookup.progress", PROGRESS, KEYS["org1"]))
    data["body"]["stage"] = "teleported"
    with pytest.raises(BadMessage, match=r"lookup\.progress") as info:
        envelope.parse(resign(data, KEYS["org1"]))
    assert "stage" in str(info.value)


def test_body_with_sealed_to_and_extra_fields_is_refused():
    data = data_of(envelope.make("lookup.progress", PROGRESS, KEYS["org1"]))
    data["body"] = {"sealed_to": "gateway", "box": "AAAA", "extra": 1}
    with pytest.raises(BadMessage):
        envelope.parse(resign(data, KEYS["org1"]))


NESTED = """
import sys
{prelude}
from shardline.bus import envelope
try:
    envelope.parse(b"[" * 200_000)
except envelope.BadMessage:
    print("BadMessage")
except BaseException as exc:
    print(type(exc).__name__, sys.getrecursionlimit())
"""


@pytest.mark.parametrize("prelude", ["", "import shardline.runtime"], ids=["plain", "runtime"])
def test_deeply_nested_json_is_a_bad_message(prelude):
    # in a child process: the failure mode is a segmentation fault
    proc = subprocess.run(
        [sys.executable, "-c", NESTED.format(prelude=prelude)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (proc.returncode, proc.stdout.strip()) == (0, "BadMessage"), proc.stderr[-300:]


# ---- make --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {},
        {**PROGRESS, "stage": "teleported"},
        {**PROGRESS, "extra": 1},
        {k: v for k, v in PROGRESS.items() if k != "org"},
        {**PROGRESS, "guid": "XYZ"},
    ],
)
def test_make_with_invalid_body_raises_schema_error(body):
    with pytest.raises(schemas.SchemaError, match=r"lookup\.progress"):
        envelope.make("lookup.progress", body, KEYS["org1"])


def test_make_checks_before_sealing():
    with pytest.raises(schemas.SchemaError):
        envelope.make(
            "lookup.result",
            {"guid": GUID},
            KEYS["org1"],
            seal_to=("gateway", KEYS["gateway"].sealing_public),
        )


def test_make_unknown_type_raises_schema_error():
    with pytest.raises(schemas.SchemaError, match="no schema"):
        envelope.make("lookup.teleport", {}, KEYS["org1"])
