"""The emergency-lookup protocol and its commitments: register, check shares, rebuild."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from shardline.core import commitment as cm
from shardline.core import ids, shamir
from shardline.core.cargo import CargoSheet, read_transports, sample_transports_path
from shardline.core.protocol import (
    BadShare,
    RebuildError,
    Registration,
    Terms,
    check_share,
    rebuild,
    register,
)

ORGS = ["org1", "org2", "org3", "org4"]


@pytest.fixture(scope="module")
def sheet() -> CargoSheet:
    return read_transports(sample_transports_path())[0]


@pytest.fixture(scope="module")
def key(sheet) -> bytes:
    return ids.transport_key(sheet.transport_id)


@pytest.fixture
def reg(sheet, key) -> Registration:
    return register(sheet, key, ORGS, 2)


def terms_of(reg: Registration) -> Terms:
    return Terms(reg.transport_key, reg.threshold, reg.org_ids, reg.commitment)


def flip(raw: bytes, i: int) -> bytes:
    return raw[:i] + bytes([raw[i] ^ 0x01]) + raw[i + 1 :]


def test_register_shape(reg, key):
    assert reg.transport_key == key
    assert reg.threshold == 2
    assert reg.org_ids == tuple(ORGS)
    assert len(reg.commitment) == 32
    assert [s.org_id for s in reg.shares] == ORGS
    assert [s.x for s in reg.shares] == [1, 2, 3, 4]
    assert len({s.opening for s in reg.shares}) == 1
    assert len(reg.shares[0].opening.leaves) == len(ORGS)


def test_org_share_repr_hides_the_share(reg):
    s = reg.shares[0]
    assert s.share.hex() not in repr(s)


def test_register_rejects_duplicate_orgs(sheet, key):
    with pytest.raises(ValueError, match="twice"):
        register(sheet, key, ["org1", "org2", "org1"], 2)


def test_register_rejects_bad_threshold(sheet, key):
    with pytest.raises(shamir.ShamirError):
        register(sheet, key, ORGS, 5)
    with pytest.raises(shamir.ShamirError):
        register(sheet, key, ORGS, 0)


def test_each_honest_share_is_accepted(reg):
    terms = terms_of(reg)
    for s in reg.shares:
        parsed = check_share(terms, s.org_id, s.x, s.share, s.opening)
        assert parsed.x == s.x
        assert parsed.to_bytes() == s.share


@pytest.mark.parametrize("pos", [0, 1, 2, 40, -1])
def test_flipped_byte_is_bad_share_naming_the_org(reg, pos):
    terms = terms_of(reg)
    s = reg.shares[2]
    tampered = flip(s.share, pos % len(s.share))
    with pytest.raises(BadShare, match="org3") as info:
        check_share(terms, s.org_id, s.x, tampered, s.opening)
    assert info.value.org_id == "org3"
    assert "org3" in str(info.value)


def test_share_sent_by_wrong_org_is_rejected(reg):
    terms = terms_of(reg)
    s = reg.shares[0]  # org1's share, x=1
    with pytest.raises(BadShare, match="org2") as info:
        check_share(terms, "org2", s.x, s.share, s.opening)
    assert info.value.org_id == "org2"
    assert "index" in info.value.reason


def test_share_claimed_under_the_right_place_but_other_bytes_is_rejected(reg):
    terms = terms_of(reg)
    # org2 claims its own place but sends org1's bytes: the hash check catches it
    with pytest.raises(BadShare, match="org2") as info:
        check_share(terms, "org2", 2, reg.shares[0].share, reg.shares[1].opening)
    assert "hash" in info.value.reason


def test_org_outside_the_set_is_rejected(reg):
    s = reg.shares[0]
    with pytest.raises(BadShare, match="not in the transport's org set"):
        check_share(terms_of(reg), "org9", s.x, s.share, s.opening)


def test_forged_opening_fails_against_the_commitment(reg):
    s = reg.shares[1]
    leaves = list(s.opening.leaves)
    leaves[1] = cm.share_hash(reg.transport_key, b"forged share")
    forged = cm.Opening(s.opening.record, tuple(leaves))
    assert not cm.opening_matches(reg.transport_key, reg.threshold, forged, reg.commitment)
    assert cm.opening_matches(reg.transport_key, reg.threshold, s.opening, reg.commitment)
    with pytest.raises(BadShare, match="on-chain commitment"):
        check_share(terms_of(reg), s.org_id, s.x, s.share, forged)


def test_forged_record_in_opening_fails(reg):
    s = reg.shares[0]
    forged = cm.Opening(bytes(32), s.opening.leaves)
    with pytest.raises(BadShare, match="on-chain commitment"):
        check_share(terms_of(reg), s.org_id, s.x, s.share, forged)


def test_opening_with_wrong_leaf_count_is_rejected(reg):
    s = reg.shares[0]
    short = cm.Opening(s.opening.record, s.opening.leaves[:-1])
    with pytest.raises(BadShare, match="wrong number"):
        check_share(terms_of(reg), s.org_id, s.x, s.share, short)


def test_commitment_binds_threshold_and_key(reg):
    op = reg.shares[0].opening
    assert not cm.opening_matches(reg.transport_key, 3, op, reg.commitment)
    other_key = ids.transport_key("TR-OTHER")
    assert not cm.opening_matches(other_key, reg.threshold, op, reg.commitment)


def test_opening_dict_round_trip(reg):
    op = reg.shares[0].opening
    assert cm.Opening.from_dict(op.to_dict()) == op


def test_share_matches_rejects_out_of_range_index(reg):
    s = reg.shares[0]
    assert cm.share_matches(reg.transport_key, s.opening, 1, s.share)
    assert not cm.share_matches(reg.transport_key, s.opening, 0, s.share)
    assert not cm.share_matches(reg.transport_key, s.opening, 5, s.share)


def test_rebuild_with_any_t_good_shares(reg, sheet):
    terms = terms_of(reg)
    checked = [check_share(terms, s.org_id, s.x, s.share, s.opening) for s in reg.shares]
    for subset in itertools.combinations(checked, 2):
        assert rebuild(terms, list(subset), reg.shares[0].opening) == sheet


def test_rebuild_with_three_of_four_at_threshold_three(sheet, key):
    reg = register(sheet, key, ORGS, 3)
    terms = terms_of(reg)
    checked = [check_share(terms, s.org_id, s.x, s.share, s.opening) for s in reg.shares[1:]]
    assert rebuild(terms, checked, reg.shares[1].opening) == sheet


def test_rebuild_with_too_few_shares(reg):
    terms = terms_of(reg)
    s = reg.shares[0]
    with pytest.raises(RebuildError, match="1 good shares, 2 needed"):
        rebuild(terms, [check_share(terms, s.org_id, s.x, s.share, s.opening)], s.opening)


def test_rebuild_rejects_a_record_that_does_not_match_the_opening(reg, sheet, key):
    # shares of a different registration of the same sheet, checked against another opening
    other = register(sheet, key, ORGS, 2)
    shares = [shamir.Share.from_bytes(s.share) for s in other.shares[:2]]
    with pytest.raises(RebuildError, match="does not match"):
        rebuild(terms_of(reg), shares, reg.shares[0].opening)


def _inconsistent_dealer(sheet, key) -> Registration:
    """Share 1 from one split, share 2 from another; an opening that hashes both honestly."""
    a = register(sheet, key, ORGS[:2], 2)
    b = register(sheet, key, ORGS[:2], 2)
    share_bytes = [a.shares[0].share, b.shares[1].share]
    opening = cm.Opening(
        a.shares[0].opening.record,
        tuple(cm.share_hash(key, raw) for raw in share_bytes),
    )
    return Registration(
        transport_key=key,
        threshold=2,
        org_ids=tuple(ORGS[:2]),
        commitment=cm.commitment(key, 2, opening),
        shares=tuple(
            dataclasses.replace(s, share=raw, opening=opening)
            for s, raw in zip(a.shares, share_bytes, strict=True)
        ),
    )


def test_inconsistent_dealer_shares_pass_their_hashes_but_do_not_rebuild(sheet, key):
    bad = _inconsistent_dealer(sheet, key)
    terms = terms_of(bad)
    checked = [check_share(terms, s.org_id, s.x, s.share, s.opening) for s in bad.shares]
    # combine() notices garbage before the commitment check (ShamirError) or the commitment
    # check does (RebuildError): both are ValueErrors, and neither returns a sheet.
    with pytest.raises(ValueError, match=r"(does|do) not match"):
        rebuild(terms, checked, bad.shares[0].opening)


def test_inconsistent_dealer_raises_rebuild_error(sheet, key):
    bad = _inconsistent_dealer(sheet, key)
    terms = terms_of(bad)
    checked = [check_share(terms, s.org_id, s.x, s.share, s.opening) for s in bad.shares]
    with pytest.raises(RebuildError):
        rebuild(terms, checked, bad.shares[0].opening)


def test_record_commitment_is_salted(sheet, key):
    a = register(sheet, key, ORGS, 2)
    b = register(sheet, key, ORGS, 2)
    assert a.commitment != b.commitment
    assert a.shares[0].opening.record != b.shares[0].opening.record
    # the bare sheet cannot be confirmed by hashing a guess
    guess = cm.record_commitment(key, sheet.canonical_bytes())
    assert guess != a.shares[0].opening.record


def test_rebuilt_secret_carries_the_salt(reg, sheet):
    secret = shamir.combine([shamir.Share.from_bytes(s.share) for s in reg.shares[:2]])
    assert len(secret) == cm.SALT_BYTES + len(sheet.canonical_bytes())
    assert secret[cm.SALT_BYTES :] == sheet.canonical_bytes()
    assert cm.secret_matches(reg.transport_key, reg.shares[0].opening, secret)
    assert not cm.secret_matches(reg.transport_key, reg.shares[0].opening, secret[1:])
