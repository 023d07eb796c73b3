"""Threshold proxy re-encryption of records, as plain function calls (no servers)."""

from __future__ import annotations

import os

import pytest

from shardline.core import records as rc
from shardline.core.keys import KeyFileError


@pytest.fixture(scope="module")
def world():
    owner, reader, other = (rc.PartyKeys.generate(n) for n in ("alice", "st-marys", "mallory"))
    plaintext = b"blood type O-, allergic to penicillin\n" + os.urandom(2000)
    capsule, ciphertext = rc.encrypt(owner.umbral_pk, plaintext)
    record = rc.RecordInfo(
        "ab" * 16, owner.id, rc.content_hash(ciphertext), capsule, len(plaintext)
    )

    def party(k: rc.PartyKeys) -> rc.Party:
        return rc.Party(k.id, "0x0", b"", b"", k.umbral_pk, k.verifying_pk)

    ctx = rc.ReadContext(record, party(owner), party(reader), threshold=2)
    kfrags = rc.make_kfrags(owner, reader.umbral_pk, 2, 3)
    return owner, reader, other, plaintext, ciphertext, ctx, kfrags


def cfrag(world, i: int) -> bytes:
    owner, reader, _o, _p, _c, ctx, kfrags = world
    vk = rc.verify_kfrag(kfrags[i], owner.verifying_pk, owner.umbral_pk, reader.umbral_pk)
    return rc.reencrypt(ctx.record.capsule, vk)


def test_two_of_three_proxies_open_the_record_for_the_reader(world):
    _owner, reader, _o, plaintext, ciphertext, ctx, _k = world
    c = rc.CfragCollector(ctx)
    assert c.add("org1", cfrag(world, 0))
    assert not c.ready
    assert c.add("org3", cfrag(world, 2))
    assert c.ready
    assert c.decrypt(reader, ciphertext) == plaintext


def test_the_owner_opens_their_own_record(world):
    owner, _r, _o, plaintext, ciphertext, ctx, _k = world
    assert rc.decrypt_own(owner, ctx.record.capsule, ciphertext) == plaintext


def test_one_fragment_is_not_enough(world):
    ctx = world[5]
    c = rc.CfragCollector(ctx)
    c.add("org1", cfrag(world, 0))
    c.refuse("org2", "revoked")
    err = c.shortfall(("org1", "org2", "org3"))
    assert isinstance(err, rc.NotEnoughProxies)
    text = str(err)
    assert ctx.record.record_id in text and "st-marys" in text
    assert "1 good capsule fragment(s) of 2" in text
    assert "org2 (revoked)" in text and "no answer: org3" in text


def test_a_corrupted_fragment_is_named_and_skipped(world):
    _owner, reader, _o, plaintext, ciphertext, ctx, _k = world
    good = cfrag(world, 1)
    corrupted = good[:-5] + bytes(b ^ 0xFF for b in good[-5:])
    c = rc.CfragCollector(ctx)
    assert not c.add("org2", corrupted)
    assert "does not verify" in c.bad["org2"]
    assert not c.add("org2", good)  # a proxy that lied once is not asked again
    assert not c.add("org9", b"garbage")
    c.add("org1", cfrag(world, 0))
    c.add("org3", cfrag(world, 2))
    assert c.decrypt(reader, ciphertext) == plaintext
    assert set(c.bad) == {"org2", "org9"}


def test_a_fragment_for_another_reader_does_not_verify(world):
    owner, _r, other, _p, _c, ctx, _k = world
    foreign = rc.make_kfrags(owner, other.umbral_pk, 2, 3)
    with pytest.raises(rc.BadFragment):
        rc.verify_kfrag(foreign[0], owner.verifying_pk, owner.umbral_pk, ctx.reader.umbral_pk)
    vk = rc.verify_kfrag(foreign[0], owner.verifying_pk, owner.umbral_pk, other.umbral_pk)
    c = rc.CfragCollector(ctx)
    assert not c.add("org1", rc.reencrypt(ctx.record.capsule, vk))


def test_a_kfrag_not_signed_by_the_owner_is_refused(world):
    owner, reader, other, _p, _c, _ctx, _k = world
    forged = rc.make_kfrags(other, reader.umbral_pk, 2, 3)
    with pytest.raises(rc.BadFragment, match="does not verify"):
        rc.verify_kfrag(forged[0], owner.verifying_pk, owner.umbral_pk, reader.umbral_pk)


def test_tampered_ciphertext_gives_no_plaintext(world):
    _owner, reader, _o, _p, ciphertext, ctx, _k = world
    c = rc.CfragCollector(ctx)
    c.add("org1", cfrag(world, 0))
    c.add("org2", cfrag(world, 1))
    tampered = ciphertext[:100] + bytes([ciphertext[100] ^ 1]) + ciphertext[101:]
    with pytest.raises(rc.TamperedCiphertext, match=ctx.record.record_id):
        c.decrypt(reader, tampered)
    # even if the hash were forged to match, the DEM's MAC refuses it whole
    forged = rc.ReadContext(
        rc.RecordInfo(
            ctx.record.record_id, "alice", rc.content_hash(tampered), ctx.record.capsule, 0
        ),
        ctx.owner,
        ctx.reader,
        2,
    )
    c2 = rc.CfragCollector(forged)
    c2.add("org1", cfrag(world, 0))
    c2.add("org2", cfrag(world, 1))
    with pytest.raises(rc.TamperedCiphertext, match="does not decrypt"):
        c2.decrypt(reader, tampered)


def test_grant_status_and_refusals():
    g = rc.Grant("cd" * 16, "st-marys", 2, ("org1", "org2", "org3"), 1000, 1, False)
    assert g.status(999) == rc.LIVE and g.refusal(999) is None
    assert g.status(1000) == rc.EXPIRED
    err = g.refusal(1000)
    assert err.reason == rc.EXPIRED and "cd" * 16 in str(err) and "st-marys" in str(err)
    revoked = rc.Grant(g.record_id, g.reader, 2, g.proxies, 1000, 1, True)
    assert revoked.refusal(0).reason == rc.REVOKED
    never = rc.Grant(g.record_id, g.reader, 0, (), 0, 0, False)
    assert never.refusal(0).reason == rc.NOT_GRANTED


def test_record_ids():
    rid = rc.new_record_id()
    assert rc.check_record_id(rid) == rid
    for bad in ("xyz", rid.upper(), rid[:-2]):
        with pytest.raises(rc.UnknownRecord, match="32 lower-case hex"):
            rc.check_record_id(bad)


def test_party_keys_round_trip_and_stay_private(tmp_path):
    k = rc.PartyKeys.generate("alice")
    path = tmp_path / "alice.json"
    k.save(path)
    assert path.stat().st_mode & 0o777 == 0o600
    again = rc.PartyKeys.load(path)
    assert again.umbral_pk == k.umbral_pk and again.verifying_pk == k.verifying_pk
    assert len(k.umbral_pk) == rc.UMBRAL_PK_BYTES
    assert k.umbral_secret.hex() not in repr(k)
    path.write_text('{"participant_id": "alice"}')
    with pytest.raises(KeyFileError):
        rc.PartyKeys.load(path)


def test_fragments_taken_unverified_open_the_record_without_a_verification(world):
    _owner, reader, _o, plaintext, ciphertext, ctx, _k = world
    c = rc.CfragCollector(ctx)
    assert c.take("org1", cfrag(world, 0)) and c.take("org3", cfrag(world, 2))
    assert c.ready and set(c.unchecked) == {"org1", "org3"}
    assert c.open(reader, ciphertext) == plaintext
    assert c.bad == {}


def test_a_bad_fragment_taken_unverified_is_named_when_the_record_does_not_open(world):
    _owner, reader, _o, plaintext, ciphertext, ctx, _k = world
    good = cfrag(world, 1)
    # a point of the re-encryption changed: it parses, and the combination fails umbral's check
    bent = bytearray(good)
    bent[38] ^= 1
    c = rc.CfragCollector(ctx)
    assert c.take("org1", cfrag(world, 0))
    assert c.take("org2", bytes(bent))
    assert c.ready
    assert c.open(reader, ciphertext) is None  # nothing decrypted; org2 named, org1 verified
    assert "does not verify" in c.bad["org2"] and not c.ready
    assert list(c.good) == ["org1"] and not c.unchecked
    assert not c.take("org2", good)  # a proxy that lied once is not asked again
    assert c.take("org3", cfrag(world, 2))
    assert c.open(reader, ciphertext) == plaintext


def test_garbage_and_copies_are_named_as_they_come(world):
    ctx = world[5]
    c = rc.CfragCollector(ctx)
    assert not c.take("org9", os.urandom(381))
    assert "does not verify" in c.bad["org9"]
    first = cfrag(world, 0)
    assert c.take("org1", first)
    assert not c.take("org2", first)  # another proxy's fragment sent again
    assert "copy of org1" in c.bad["org2"] and not c.ready


def test_good_fragments_and_a_tampered_ciphertext_give_no_plaintext(world):
    _owner, reader, _o, _p, ciphertext, ctx, _k = world
    c = rc.CfragCollector(ctx)
    c.take("org1", cfrag(world, 0))
    c.take("org2", cfrag(world, 1))
    tampered = ciphertext[:100] + bytes([ciphertext[100] ^ 1]) + ciphertext[101:]
    with pytest.raises(rc.TamperedCiphertext, match=ctx.record.record_id):
        c.open(reader, tampered)
    assert c.bad == {} and not c.unchecked  # both were verified before blaming the ciphertext
