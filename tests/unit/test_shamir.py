"""Shamir secret sharing over GF(2^521 - 1): round trips, thresholds, malformed shares."""

from __future__ import annotations

import itertools
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardline.core import shamir
from shardline.core.shamir import ELEMENT, MAX_SHARES, PRIME, ShamirError, Share


@pytest.mark.parametrize("length", [0, 1, 59, 60, 61, 63, 64, 65, 128, 1000])
def test_round_trip_for_many_lengths(length):
    secret = os.urandom(length)
    shares = shamir.split(secret, 3, 5)
    assert len(shares) == 5
    assert [s.x for s in shares] == [1, 2, 3, 4, 5]
    assert shamir.combine(shares[:3]) == secret
    assert shamir.combine(shares) == secret  # more than t also works


def test_width_grows_with_secret_length():
    # 4 bytes of length frame + secret, cut into 64-byte chunks
    assert len(shamir.split(b"", 2, 3)[0].ys) == 1
    assert len(shamir.split(b"a" * 60, 2, 3)[0].ys) == 1
    assert len(shamir.split(b"a" * 61, 2, 3)[0].ys) == 2
    assert len(shamir.split(b"a" * 1000, 2, 3)[0].ys) == 16


@pytest.mark.parametrize(("t", "n"), [(t, n) for n in range(2, 6) for t in range(2, 5) if t <= n])
def test_every_t_subset_rebuilds(t, n):
    secret = os.urandom(100)
    shares = shamir.split(secret, t, n)
    for subset in itertools.combinations(shares, t):
        assert shamir.combine(list(subset)) == secret
    # order does not matter
    assert shamir.combine(list(reversed(shares[:t]))) == secret


def test_threshold_one_means_every_share_alone_rebuilds():
    secret = b"solo"
    for share in shamir.split(secret, 1, 4):
        assert shamir.combine([share]) == secret


@pytest.mark.parametrize("length", [0, 1, 64, 1000])
def test_share_serialisation_round_trip(length):
    for share in shamir.split(os.urandom(length), 2, 3):
        raw = share.to_bytes()
        assert len(raw) == 2 + ELEMENT * len(share.ys)
        assert Share.from_bytes(raw) == share


def test_rebuild_from_deserialised_shares():
    secret = os.urandom(200)
    raws = [s.to_bytes() for s in shamir.split(secret, 3, 4)]
    assert shamir.combine([Share.from_bytes(r) for r in raws[1:]]) == secret


@pytest.mark.parametrize(("t", "n"), [(2, 3), (3, 5), (4, 5), (5, 7)])
def test_fewer_than_threshold_do_not_give_the_secret(t, n):
    secret = os.urandom(80)
    shares = shamir.split(secret, t, n)
    for subset in itertools.combinations(shares, t - 1):
        try:
            rebuilt = shamir.combine(list(subset))
        except ShamirError:
            continue
        assert rebuilt != secret


def test_shares_of_different_secrets_of_same_length_do_not_rebuild_either():
    a = shamir.split(b"A" * 40, 2, 3)
    b = shamir.split(b"B" * 40, 2, 3)
    try:
        rebuilt = shamir.combine([a[0], b[1]])
    except ShamirError:
        return
    assert rebuilt not in (b"A" * 40, b"B" * 40)


def test_combine_nothing_raises():
    with pytest.raises(ShamirError, match="no shares"):
        shamir.combine([])


def test_duplicate_x_raises():
    shares = shamir.split(b"secret", 2, 3)
    with pytest.raises(ShamirError, match="duplicate"):
        shamir.combine([shares[0], shares[0]])
    with pytest.raises(ShamirError, match="duplicate"):
        shamir.combine([shares[1], Share(shares[1].x, shares[2].ys)])


def test_mixed_lengths_raise():
    short = shamir.split(b"short", 2, 3)
    long = shamir.split(b"x" * 500, 2, 3)
    with pytest.raises(ShamirError, match="mixed"):
        shamir.combine([short[0], long[1]])


@pytest.mark.parametrize(
    ("t", "n"),
    [(0, 3), (-1, 3), (4, 3), (2, 0), (1, MAX_SHARES + 1), (2, 1), (0, 0)],
)
def test_invalid_parameters_raise(t, n):
    with pytest.raises(ShamirError, match="cannot split"):
        shamir.split(b"secret", t, n)


def test_max_shares_is_allowed():
    shares = shamir.split(b"k", 2, MAX_SHARES)
    assert shares[-1].x == MAX_SHARES
    assert shamir.combine([shares[0], shares[-1]]) == b"k"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\x01",
        b"\x00\x01" + b"\x00" * (ELEMENT - 1),  # one byte short of an element
        b"\x00\x01" + b"\x00" * (ELEMENT + 1),  # one byte past an element
    ],
)
def test_malformed_share_bytes_raise(raw):
    with pytest.raises(ShamirError, match="malformed"):
        Share.from_bytes(raw)


@pytest.mark.parametrize("x", [0, MAX_SHARES + 1, 65535])
def test_share_index_out_of_range_raises(x):
    raw = x.to_bytes(2, "big") + (5).to_bytes(ELEMENT, "big")
    with pytest.raises(ShamirError, match="outside the field"):
        Share.from_bytes(raw)


def test_share_value_outside_field_raises():
    raw = (1).to_bytes(2, "big") + PRIME.to_bytes(ELEMENT, "big")
    with pytest.raises(ShamirError, match="outside the field"):
        Share.from_bytes(raw)
    ok = (1).to_bytes(2, "big") + (PRIME - 1).to_bytes(ELEMENT, "big")
    assert Share.from_bytes(ok).ys == (PRIME - 1,)


def test_splits_are_randomised():
    a = shamir.split(b"same secret", 2, 3)
    b = shamir.split(b"same secret", 2, 3)
    assert a[0].ys != b[0].ys


@settings(max_examples=60, deadline=None)
@given(
    secret=st.binary(min_size=0, max_size=300),
    n=st.integers(min_value=1, max_value=7),
    data=st.data(),
)
def test_property_any_t_shares_rebuild(secret, n, data):
    t = data.draw(st.integers(min_value=1, max_value=n), label="t")
    shares = shamir.split(secret, t, n)
    chosen = data.draw(
        st.lists(st.sampled_from(shares), min_size=t, max_size=n, unique_by=lambda s: s.x),
        label="chosen",
    )
    assert shamir.combine(chosen) == secret
    assert shamir.combine([Share.from_bytes(s.to_bytes()) for s in chosen[:t]]) == secret
