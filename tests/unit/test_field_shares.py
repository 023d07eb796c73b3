"""Vector Shamir over GF(2^61 - 1) and Berlekamp-Welch decoding that names the bad shares."""

from __future__ import annotations

import secrets

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardline.core.field_shares import (
    PRIME,
    DecodeError,
    berlekamp_welch,
    centered,
    check_cheaters,
    interpolate,
    is_consistent,
    pack,
    robust_reconstruct,
    share_rows,
    split_vector,
    unpack,
)


def test_split_and_rebuild_from_any_t_plus_one():
    values = [0, 1, 42, PRIME - 5, 2**60]
    shares = split_vector(values, 2, [1, 2, 3, 4, 5, 6, 7])
    for subset in ([1, 2, 3], [5, 6, 7], [2, 4, 7]):
        assert interpolate({x: shares[x] for x in subset}) == values


def test_t_shares_reveal_nothing_about_a_value():
    # With t = 1 a single share is uniform: the same share is consistent with any secret.
    shares = split_vector([7], 1, [1, 2, 3, 4])
    y1 = shares[1][0]
    for other in (0, 1, 123456):
        # the line through (0, other) and (1, y1) exists for every other value
        slope = (y1 - other) % PRIME
        assert (other + slope * 1) % PRIME == y1


def test_sums_of_shares_are_shares_of_sums():
    xs = [1, 2, 3, 4]
    a, b = split_vector([10, 20], 1, xs), split_vector([5, -7], 1, xs)
    summed = {x: [(p + q) % PRIME for p, q in zip(a[x], b[x], strict=True)] for x in xs}
    assert [centered(v) for v in interpolate({x: summed[x] for x in (2, 4)})] == [15, 13]


@pytest.mark.parametrize(("t", "n"), [(1, 4), (2, 7), (3, 10)])
def test_corrects_t_wrong_shares_and_names_them(t, n):
    xs = list(range(1, n + 1))
    values = [secrets.randbelow(PRIME) for _ in range(6)]
    shares = split_vector(values, t, xs)
    liars = set(secrets.SystemRandom().sample(xs, t))
    for x in liars:
        k = secrets.randbelow(6)
        shares[x][k] = (shares[x][k] + 1 + secrets.randbelow(PRIME - 1)) % PRIME
    got = robust_reconstruct(shares, t)
    assert got.values == values
    assert got.bad == liars


def test_bulk_sharing_of_rows_rebuilds_each_row():
    rows = [[1, 2, 3], [PRIME - 1, 0, 2**60]]
    packed = share_rows(rows, 2, [1, 2, 3, 4, 5, 6, 7])
    per_x = {x: unpack(b) for x, b in packed.items()}
    assert all(len(v) == 6 for v in per_x.values())
    for i, row in enumerate(rows):
        pts = {x: per_x[x][3 * i : 3 * i + 3] for x in (2, 5, 7)}
        assert interpolate(pts) == row
        assert (
            robust_reconstruct({x: v[3 * i : 3 * i + 3] for x, v in per_x.items()}, 2).bad == set()
        )
    # fresh randomness each time: the same rows never give the same shares
    assert share_rows(rows, 1, [1, 2, 3, 4])[1] != share_rows(rows, 1, [1, 2, 3, 4])[1]


def test_no_wrong_share_names_nobody():
    shares = split_vector([3, 4], 1, [1, 2, 3, 4])
    got = robust_reconstruct(shares, 1)
    assert got.values == [3, 4] and got.bad == frozenset()


def test_too_many_wrong_shares_is_an_error_not_a_wrong_answer():
    shares = split_vector([3, 4, 5], 1, [1, 2, 3, 4])
    shares[1][0] += 1
    shares[2][1] += 1
    with pytest.raises(DecodeError, match="cannot be rebuilt"):
        robust_reconstruct(shares, 1)


@settings(max_examples=40, deadline=None)
@given(
    secret=st.integers(min_value=0, max_value=PRIME - 1),
    bad_at=st.integers(min_value=1, max_value=7),
    delta=st.integers(min_value=1, max_value=PRIME - 1),
)
def test_berlekamp_welch_finds_any_single_error_among_seven_at_t2(secret, bad_at, delta):
    shares = split_vector([secret], 2, list(range(1, 8)))
    pts = {x: v[0] for x, v in shares.items()}
    pts[bad_at] = (pts[bad_at] + delta) % PRIME
    poly, bad = berlekamp_welch(pts, 2)
    assert poly[0] == secret and bad == {bad_at}


def test_evidence_check_matches_what_the_contract_checks():
    shares = split_vector([11, 12], 1, [1, 2, 3, 4])
    assert check_cheaters(shares, [3], 1) == "the output at 3 agrees with the others"
    shares[3] = [shares[3][0], (shares[3][1] + 9) % PRIME]
    assert check_cheaters(shares, [3], 1) is None
    # naming an honest server while the liar stays among the others does not hold up
    assert check_cheaters(shares, [2], 1) == "the other outputs do not agree among themselves"
    assert "more than the threshold" in check_cheaters(shares, [2, 3], 1)
    assert is_consistent({x: v for x, v in shares.items() if x != 3}, 1)


def test_pack_round_trip_and_refusals():
    vals = [0, 1, PRIME - 1]
    assert unpack(pack(vals)) == vals
    with pytest.raises(ValueError, match="whole number"):
        unpack(b"\0" * 15)
    with pytest.raises(ValueError, match="outside the field"):
        unpack(b"\xff" * 16)
