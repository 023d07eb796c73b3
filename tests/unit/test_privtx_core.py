"""The pure core of private transactions: sealing and wrapping, the policy, BLS on BN254."""

from __future__ import annotations

import secrets

import pytest
from nacl import bindings as sodium

from shardline.core import bls
from shardline.core import privtx as pt

GROUP = bytes(range(32))


def members(n: int = 3) -> tuple[list[bytes], list[bytes]]:
    sks = [secrets.token_bytes(32) for _ in range(n)]
    return sks, [sodium.crypto_scalarmult_base(k) for k in sks]


def test_every_member_opens_its_wrap_and_reads_the_payload() -> None:
    sks, pks = members()
    sealed = pt.seal_payload(b"\x12\x34call", GROUP, pks)
    assert sealed.payload_hash == pt.payload_hash(sealed.ciphertext)
    assert b"call" not in sealed.ciphertext
    for i, sk in enumerate(sks):
        key = pt.unwrap_key(sealed.wraps[i], sealed.ephemeral_pk, sk, GROUP, sealed.payload_hash, i)
        assert (
            pt.open_payload(sealed.ciphertext, key, GROUP, sealed.payload_hash) == b"\x12\x34call"
        )


def test_two_seals_of_one_payload_differ() -> None:
    _, pks = members()
    a, b = pt.seal_payload(b"same", GROUP, pks), pt.seal_payload(b"same", GROUP, pks)
    assert a.payload_hash != b.payload_hash and a.ephemeral_pk != b.ephemeral_pk


def test_a_wrap_opens_only_for_its_member_its_index_and_its_payload() -> None:
    sks, pks = members()
    sealed = pt.seal_payload(b"x", GROUP, pks)
    eph, h = sealed.ephemeral_pk, sealed.payload_hash
    with pytest.raises(pt.WrapError, match="member 1"):
        pt.unwrap_key(sealed.wraps[1], eph, sks[0], GROUP, h, 1)  # another member's key
    with pytest.raises(pt.WrapError):
        pt.unwrap_key(sealed.wraps[0], eph, sks[0], GROUP, h, 1)  # moved to another index
    with pytest.raises(pt.WrapError):
        pt.unwrap_key(sealed.wraps[0], eph, sks[0], GROUP, bytes(32), 0)  # another payload
    with pytest.raises(pt.WrapError):
        pt.unwrap_key(sealed.wraps[0], eph, sks[0], bytes(32), h, 0)  # another group
    with pytest.raises(pt.WrapError, match="malformed"):
        pt.unwrap_key(sealed.wraps[0][:-1], eph, sks[0], GROUP, h, 0)


def test_a_swapped_or_damaged_ciphertext_is_refused_before_decryption() -> None:
    sks, pks = members()
    sealed = pt.seal_payload(b"x", GROUP, pks)
    key = pt.unwrap_key(sealed.wraps[0], sealed.ephemeral_pk, sks[0], GROUP, sealed.payload_hash, 0)
    damaged = bytes([sealed.ciphertext[0] ^ 1]) + sealed.ciphertext[1:]
    with pytest.raises(pt.PayloadHashMismatch, match=sealed.payload_hash.hex()):
        pt.open_payload(damaged, key, GROUP, sealed.payload_hash)
    # right hash, wrong key (e.g. a wrap of another transaction): the AEAD refuses
    with pytest.raises(pt.PayloadError):
        pt.open_payload(sealed.ciphertext, bytes(32), GROUP, sealed.payload_hash)


def test_bad_keys_and_groups_are_named() -> None:
    with pytest.raises(pt.PrivTxError, match="member 1's sealing key"):
        pt.seal_payload(b"x", GROUP, [bytes(32), b"short"])
    with pytest.raises(pt.PrivTxError, match="group id"):
        pt.seal_payload(b"x", b"g", [bytes(32)])


R0, R1, R2 = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32


def test_unanimous_agreement_is_yes_and_one_diverging_is_no_naming_it() -> None:
    assert pt.decide({0: (R0, R1), 1: (R0, R1), 2: (R0, R1)}, 3, 3, R0).status == pt.Status.YES
    d = pt.decide({0: (R0, R1), 1: (R0, R1), 2: (R0, R2)}, 3, 3, R0)
    assert d.status == pt.Status.NO and d.odd == (2,)
    # decided at the first differing vote: it cannot be unanimous any more
    assert pt.decide({0: (R0, R1), 2: (R0, R2)}, 3, 3, R0).status == pt.Status.NO
    assert pt.decide({0: (R0, R1), 1: (R0, R1)}, 3, 3, R0).status == pt.Status.PENDING


def test_k_of_n_settles_without_the_silent_one_and_names_the_odd_one() -> None:
    d = pt.decide({0: (R0, R1), 2: (R0, R1)}, 3, 2, R0)
    assert d.status == pt.Status.YES and d.silent == (1,) and d.new_root == R1
    d = pt.decide({0: (R0, R1), 1: (R0, R2), 2: (R0, R1)}, 3, 2, R0)
    assert d.status == pt.Status.YES and d.odd == (1,)
    assert pt.decide({0: (R0, R1), 1: (R0, R2)}, 3, 2, R0).status == pt.Status.PENDING
    assert pt.decide({0: (R0, R1), 1: (R0, R2), 2: (R0, R0)}, 3, 2, R0).status == pt.Status.NO


def test_agreement_on_a_state_the_group_never_agreed_is_no() -> None:
    d = pt.decide({0: (R1, R2), 1: (R1, R2), 2: (R1, R2)}, 3, 3, R0)
    assert d.status == pt.Status.NO


def test_policies_must_be_a_majority() -> None:
    pt.check_policy(3, 2)
    pt.check_policy(3, 3)
    with pytest.raises(pt.PrivTxError, match="not a majority"):
        pt.check_policy(4, 2)
    with pytest.raises(pt.PrivTxError, match="out of range"):
        pt.check_policy(3, 4)


def test_vote_digest_binds_every_field() -> None:
    base = (31337, "0x" + "11" * 20, GROUP, R0, R1, R2)
    d = pt.vote_digest(*base)
    assert d == pt.vote_digest(*base)
    for i, other in enumerate((1, "0x" + "22" * 20, bytes(32), R1, R2, R0)):
        changed = list(base)
        changed[i] = other
        assert pt.vote_digest(*changed) != d


def test_bls_aggregate_verifies_for_the_signers_only() -> None:
    keys = [bls.BlsKey.generate() for _ in range(3)]
    msg = secrets.token_bytes(32)
    agg = bls.aggregate([k.sign(msg) for k in keys[:2]])
    assert bls.verify_aggregate(agg, msg, [k.public for k in keys[:2]])
    assert not bls.verify_aggregate(agg, msg, [k.public for k in keys])


def test_bls_hash_lands_on_the_curve_and_keys_round_trip() -> None:
    x, y = bls.hash_to_g1(secrets.token_bytes(32))
    assert (y * y - x * x * x - 3) % bls.P == 0
    k = bls.BlsKey.generate()
    assert bls.BlsKey.from_bytes(k.to_bytes()) == k
    with pytest.raises(bls.BlsError):
        bls.BlsKey.from_bytes(bytes(32))
    with pytest.raises(bls.BlsError):
        bls.hash_to_g1(b"short")


def test_refusals_never_agree_on_an_outcome() -> None:
    refused = (R0, pt.ZERO_ROOT)
    d = pt.decide({0: refused, 1: refused, 2: refused}, 3, 2, R0)
    assert d.status == pt.Status.NO and d.odd == (0, 1, 2)
    d = pt.decide({0: refused, 1: (R0, R1), 2: (R0, R1)}, 3, 2, R0)
    assert d.status == pt.Status.YES and d.odd == (0,)


def test_pre_vote_digest_is_the_mediators_abi_encoding_and_binds_every_field() -> None:
    from eth_abi import encode as abi_encode
    from eth_utils import keccak

    mediator = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
    g, h, seal, old, new = (secrets.token_bytes(32) for _ in range(5))
    args = (31337, mediator, g, h, 7, seal, old, new)
    types = ["string", "uint256", "address", "bytes32", "bytes32", "uint64"] + ["bytes32"] * 3
    assert pt.pre_vote_digest(*args) == keccak(
        abi_encode(types, ["shardline.privtx.prevote", *args])
    )
    base = pt.pre_vote_digest(*args)
    for i, other in enumerate((1, "0x" + "11" * 20, *[bytes(32)] * 2, 8, *[bytes(32)] * 3)):
        changed = list(args)
        changed[i] = other
        assert pt.pre_vote_digest(*changed) != base
    with pytest.raises(ValueError, match="32 bytes"):
        pt.pre_vote_digest(31337, mediator, g[:31], h, 7, seal, old, new)
    # the seal hash chains the ephemeral key and each wrap, in order
    w = [b"a" * 48, b"b" * 48]
    assert pt.seal_hash(b"e" * 32, w) == keccak(keccak(b"e" * 32 + w[0]) + w[1])
    assert pt.seal_hash(b"e" * 32, w) != pt.seal_hash(b"e" * 32, w[::-1])


def test_a_pre_vote_signature_names_its_signer_and_nothing_else() -> None:
    from eth_account import Account

    key = secrets.token_bytes(32)
    digest = secrets.token_bytes(32)
    sig = pt.sign_pre_vote(key, digest)
    assert len(sig) == 65 and sig[64] in (0, 1)
    # low s (EIP-2), as the mediator requires
    assert (
        int.from_bytes(sig[32:64], "big")
        <= 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0
    )
    assert pt.pre_vote_signer(digest, sig) == Account.from_key(key).address
    assert pt.pre_vote_signer(secrets.token_bytes(32), sig) != Account.from_key(key).address
    assert pt.pre_vote_signer(digest, bytes(65)) is None
    assert pt.pre_vote_signer(digest, sig[:64] + b"\x05") is None
    vote = pt.PreVote(1, bytes(32), bytes(32), sig)
    assert vote.vrs() == (27 + sig[64], sig[:32], sig[32:64])


def test_a_push_that_asks_for_votes_ahead_carries_all_of_it_or_is_refused() -> None:
    import json

    from shardline.bus.envelope import BadMessage
    from shardline.workers import privtx_messages as pm

    subject = "privtx.payload." + "ab" * 32
    ahead = pm.Ahead(4, b"r" * 32, b"e" * 32, (b"w" * 48,) * 3)
    push = pm.parse_push(subject, pm.push_body(b"c" * 60, ahead))
    assert push.ahead == ahead
    assert pm.parse_push(subject, pm.push_body(b"c" * 60)).ahead is None
    body = json.loads(pm.push_body(b"c" * 60, ahead))
    for missing in ("seq", "root", "ephemeral", "wraps"):
        partial = {k: v for k, v in body.items() if k != missing}
        with pytest.raises(BadMessage, match=r"privtx\.payload: .*missing dependency"):
            pm.parse_push(subject, json.dumps(partial).encode())
    with pytest.raises(BadMessage, match="whole bytes"):
        pm.parse_push(subject, json.dumps({**body, "wraps": ["abc"]}).encode())
    vote = pt.PreVote(2, b"o" * 32, b"n" * 32, pt.sign_pre_vote(secrets.token_bytes(32), b"d" * 32))
    msg = pm.parse_prevote("_INBOX.x", pm.prevote_body(b"h" * 32, 4, vote))
    assert (msg.payload_hash, msg.seq, msg.vote) == (b"h" * 32, 4, vote)
    with pytest.raises(BadMessage, match=r"privtx\.prevote: "):
        pm.parse_prevote("_INBOX.x", json.dumps({"hash": "00" * 32}).encode())
