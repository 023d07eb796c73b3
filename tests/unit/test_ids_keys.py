"""Identifiers, participant key files, sealing and signatures."""

from __future__ import annotations

import json
import os
import stat

import pytest

from shardline.core import ids, sealing
from shardline.core.ids import InvalidId
from shardline.core.keys import KeyFileError, ParticipantKeys

# ---- ids ---------------------------------------------------------------------------------------


def test_transport_key_is_deterministic_32_bytes():
    a = ids.transport_key("TR-100001")
    assert a == ids.transport_key("TR-100001")
    assert isinstance(a, bytes) and len(a) == 32


def test_transport_keys_differ_per_id():
    keys = {ids.transport_key(f"TR-{i}") for i in range(200)}
    assert len(keys) == 200
    assert ids.transport_key("tr-1") != ids.transport_key("TR-1")


def test_transport_key_is_not_the_bare_hash_of_the_id():
    import hashlib

    assert ids.transport_key("TR-1") != hashlib.sha256(b"TR-1").digest()


@pytest.mark.parametrize("org", ["org1", "rhine-chem", "a", "0", "a" * 31])
def test_org_id_bytes32_round_trip(org):
    raw = ids.org_id_to_bytes32(org)
    assert len(raw) == 32
    assert raw.startswith(org.encode())
    assert ids.org_id_from_bytes32(raw) == org


@pytest.mark.parametrize(
    "org", ["", "Org1", "-org", "org_1", "org 1", "a" * 32, "örg", "org.1", "org1/x"]
)
def test_invalid_org_ids_raise(org):
    with pytest.raises(InvalidId, match="org id"):
        ids.check_org_id(org)
    with pytest.raises(InvalidId):
        ids.org_id_to_bytes32(org)


@pytest.mark.parametrize("tid", ["TR-1", "a", "x.y_z-1", "A" * 64])
def test_valid_transport_ids(tid):
    assert ids.check_transport_id(tid) == tid


@pytest.mark.parametrize("tid", ["", "-TR", ".TR", "TR 1", "TR/1", "A" * 65, "TR#1", "TRé"])
def test_invalid_transport_ids_raise(tid):
    with pytest.raises(InvalidId, match="transport id"):
        ids.check_transport_id(tid)
    with pytest.raises(InvalidId):
        ids.transport_key(tid)


@pytest.mark.parametrize("check", [ids.check_org_id, ids.check_transport_id])
def test_trailing_newline_is_invalid(check):
    with pytest.raises(InvalidId):
        check("org1\n")


def test_new_guid_and_parse_guid_round_trip():
    g = ids.new_guid()
    assert len(g) == 16
    assert ids.new_guid() != g
    text = ids.guid_hex(g)
    assert len(text) == 32
    assert ids.parse_guid(text) == g
    assert ids.parse_guid("0x" + text) == g
    assert ids.parse_guid(text.upper()) == g


@pytest.mark.parametrize("text", ["", "00", "zz" * 16, "00" * 15, "00" * 17, "0x" + "0" * 30])
def test_parse_guid_rejects_bad_text(text):
    with pytest.raises(InvalidId, match="32 hex digits"):
        ids.parse_guid(text)


# ---- keys --------------------------------------------------------------------------------------


def test_generate_gives_distinct_keys():
    a, b = ParticipantKeys.generate("org1"), ParticipantKeys.generate("org1")
    assert a.participant_id == "org1"
    assert len(a.signing_seed) == len(a.sealing_secret) == len(a.chain_key) == 32
    assert a.signing_seed != b.signing_seed
    assert len(a.signing_public) == len(a.sealing_public) == 32
    assert a.signing_public != a.sealing_public


def test_save_load_round_trip(tmp_path):
    k = ParticipantKeys.generate("org2")
    path = tmp_path / "nested" / "org2.key.json"
    k.save(path)
    assert ParticipantKeys.load(path) == k
    assert ParticipantKeys.load(path).signing_public == k.signing_public


def test_saved_file_is_owner_only(tmp_path):
    path = tmp_path / "k.json"
    ParticipantKeys.generate("org1").save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_saving_over_an_existing_file_makes_it_owner_only(tmp_path):
    path = tmp_path / "k.json"
    path.write_text("{}")
    os.chmod(path, 0o644)
    ParticipantKeys.generate("org1").save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_repr_shows_no_secret():
    k = ParticipantKeys.generate("org1")
    text = repr(k) + str(k)
    assert "org1" in text
    for secret in (k.signing_seed, k.sealing_secret, k.chain_key):
        assert secret.hex() not in text
        assert repr(secret) not in text


def test_load_missing_file(tmp_path):
    path = tmp_path / "missing.json"
    with pytest.raises(KeyFileError, match="does not exist") as info:
        ParticipantKeys.load(path)
    assert str(path) in str(info.value)
    assert "shardline up" in str(info.value)


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        "{}",
        json.dumps(
            {"participant_id": "x", "signing_seed": "zz", "sealing_secret": "", "chain_key": ""}
        ),
        json.dumps({"participant_id": "x", "signing_seed": "00"}),
    ],
)
def test_load_malformed_file(tmp_path, content):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(KeyFileError, match="malformed") as info:
        ParticipantKeys.load(path)
    assert str(path) in str(info.value)


def test_load_json_that_is_not_an_object(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("[]")
    with pytest.raises(KeyFileError):
        ParticipantKeys.load(path)


def test_load_rejects_short_keys(tmp_path):
    path = tmp_path / "short.json"
    path.write_text(
        json.dumps(
            {
                "participant_id": "org1",
                "signing_seed": "00",
                "sealing_secret": "00",
                "chain_key": "00",
            }
        )
    )
    with pytest.raises(KeyFileError, match="malformed"):
        ParticipantKeys.load(path)


# ---- sealing -----------------------------------------------------------------------------------


@pytest.mark.parametrize("message", [b"", b"x", b"hello" * 1000])
def test_seal_unseal_round_trip(message):
    reader = ParticipantKeys.generate("reader")
    box = sealing.seal(message, reader.sealing_public)
    assert len(box) == len(message) + 48  # ephemeral public key + MAC
    if len(message) >= 16:
        assert message not in box
    assert sealing.unseal(box, reader.sealing_key) == message


def test_seal_is_randomised():
    reader = ParticipantKeys.generate("reader")
    assert sealing.seal(b"m", reader.sealing_public) != sealing.seal(b"m", reader.sealing_public)


def test_unseal_with_wrong_key_raises():
    reader, other = ParticipantKeys.generate("reader"), ParticipantKeys.generate("other")
    box = sealing.seal(b"secret", reader.sealing_public)
    with pytest.raises(sealing.SealError, match="does not open"):
        sealing.unseal(box, other.sealing_key)


def test_unseal_tampered_box_raises():
    reader = ParticipantKeys.generate("reader")
    box = bytearray(sealing.seal(b"secret", reader.sealing_public))
    box[-1] ^= 1
    with pytest.raises(sealing.SealError):
        sealing.unseal(bytes(box), reader.sealing_key)


@pytest.mark.parametrize("size", [0, 31, 33])
def test_seal_rejects_wrong_key_size(size):
    with pytest.raises(sealing.SealError, match="32 bytes"):
        sealing.seal(b"m", b"\x01" * size)


def test_ephemeral_keypair_works():
    sk, pk = sealing.ephemeral_keypair()
    assert len(pk) == 32
    assert sealing.unseal(sealing.seal(b"m", pk), sk) == b"m"


def test_sign_verify():
    k = ParticipantKeys.generate("org1")
    sig = sealing.sign(b"message", k.signing_key)
    assert len(sig) == 64
    sealing.verify(b"message", sig, k.signing_public)  # does not raise


def test_verify_rejects_tampered_message_and_signature():
    k = ParticipantKeys.generate("org1")
    sig = sealing.sign(b"message", k.signing_key)
    with pytest.raises(sealing.SignatureInvalid):
        sealing.verify(b"messagE", sig, k.signing_public)
    with pytest.raises(sealing.SignatureInvalid):
        sealing.verify(b"message", bytes([sig[0] ^ 1]) + sig[1:], k.signing_public)
    other = ParticipantKeys.generate("org2")
    with pytest.raises(sealing.SignatureInvalid):
        sealing.verify(b"message", sig, other.signing_public)


@pytest.mark.parametrize(("sig", "pk"), [(b"short", None), (None, b"short")])
def test_verify_rejects_malformed_inputs(sig, pk):
    k = ParticipantKeys.generate("org1")
    good_sig = sealing.sign(b"m", k.signing_key)
    with pytest.raises(sealing.SignatureInvalid):
        sealing.verify(b"m", sig or good_sig, pk or k.signing_public)
