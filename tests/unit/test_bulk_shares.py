"""Bulk sharing and summing (core/bulk_shares.py, core/analytics_batch.py) against the
element-by-element reference in core/field_shares.py and core/analytics.py."""

from __future__ import annotations

import random

import numpy as np
import pytest

from shardline.core import analytics as an
from shardline.core import analytics_batch as ab
from shardline.core import bulk_shares as bs
from shardline.core import field_shares as fs

SCHEMA = an.Schema.from_dict(
    {
        "name": "clinic",
        "fields": [
            {"name": "age", "type": "int", "min": -5, "max": 119, "bin_width": 10},
            {"name": "bmi", "type": "float", "min": 10, "max": 60, "decimals": 1},
            {"name": "region", "type": "category", "values": ["north", "south", "east"]},
        ],
    }
)


def rows(n: int, seed: int = 7) -> list[dict]:
    rnd = random.Random(seed)
    return [
        {
            "age": rnd.randint(-5, 119),
            "bmi": round(rnd.uniform(10, 60), 1),
            "region": rnd.choice(["north", "south", "east"]),
        }
        for _ in range(n)
    ]


@pytest.mark.parametrize(("t", "n"), [(1, 4), (2, 7), (3, 10)])
def test_any_t_plus_one_shares_rebuild_the_elements(t, n):
    values = [0, 1, -1, fs.PRIME - 1, 2**60, 1234567890123456789, -(2**60)]
    packed = fs.pack(values)
    xs = list(range(1, n + 1))
    shares = bs.share_elements(packed, t, xs)
    pts = {x: fs.unpack(shares[x]) for x in xs}
    assert fs.robust_reconstruct(pts, t).values == [v % fs.PRIME for v in values]
    for subset in (xs[: t + 1], xs[-(t + 1) :]):
        assert fs.interpolate({x: pts[x] for x in subset}, 0) == [v % fs.PRIME for v in values]
    # t shares alone are not the values, and a second sharing differs
    assert shares[1] != bs.share_elements(packed, t, xs)[1]


def test_the_mersenne_reduction_handles_the_edges():
    # values near p exercise the fold and the p == 0 case; points 7 and 8 sit on either side of
    # the one multiply-add Horner step, 65535 is the largest point
    edge = [fs.PRIME - 1, fs.PRIME - 2, 2**60, 1, 0]
    packed = fs.pack(edge)
    for x in (1, 2, 3, 7, 8, 65535):
        got = fs.unpack(bs.share_elements(packed, 0, [x])[x])  # degree 0: the value itself
        assert got == [v % fs.PRIME for v in edge]
    top = np.array([fs.PRIME - 1, 2**64 - 1, fs.PRIME, 2**61, 0], dtype=np.uint64)
    assert bs.reduce(top.copy()).tolist() == [int(v) % fs.PRIME for v in top.tolist()]
    a = np.array([fs.PRIME - 1, fs.PRIME - 1, 2**32 - 1, 2**60 + 12345], dtype=np.uint64)
    b = np.array([fs.PRIME - 1, 2, 2**32 + 1, fs.PRIME - 2], dtype=np.uint64)
    expect = [int(p) * int(q) % fs.PRIME for p, q in zip(a.tolist(), b.tolist(), strict=True)]
    assert bs.mulmod(a, b).tolist() == expect
    assert bs.mulmod(a, np.uint64(65535)).tolist() == [
        int(p) * 65535 % fs.PRIME for p in a.tolist()
    ]


@pytest.mark.parametrize("x", [7, 8, 13, 65535])
def test_horner_with_large_points_matches_the_reference(x):
    rnd = random.Random(x)
    vals = [rnd.randrange(fs.PRIME) for _ in range(50)] + [fs.PRIME - 1]
    shares = bs.share_elements(fs.pack(vals), 3, [x, x - 1, x - 2, x - 3, x - 4])
    pts = {p: fs.unpack(v) for p, v in shares.items()}
    assert fs.interpolate(pts, 0) == vals
    assert fs.is_consistent(pts, 3)


def test_a_value_outside_the_field_is_refused():
    with pytest.raises(ValueError, match="outside the field"):
        bs.elements((fs.PRIME).to_bytes(8, "big") + bytes(8))
    with pytest.raises(ValueError, match="whole number"):
        bs.elements(bytes(12))


def test_column_sums_equal_python_sums():
    rnd = random.Random(3)
    vals = [rnd.randrange(fs.PRIME) for _ in range(5 * 700)]
    blob = fs.pack(vals)
    expect = [sum(vals[c::5]) % fs.PRIME for c in range(5)]
    assert bs.column_sums(blob, 5) == expect
    assert bs.to_ints(blob) == vals


def test_weighted_sum_equals_the_python_sum():
    rnd = random.Random(4)
    n = 70_000
    vals = [rnd.randrange(fs.PRIME) for _ in range(n)]
    vals[0] = fs.PRIME - 1
    w = np.array([rnd.randrange(2**64) for _ in range(n)], dtype=np.uint64)
    w[0] = 2**64 - 1
    expect = sum(a * b for a, b in zip(vals, w.tolist(), strict=True)) % fs.PRIME
    assert bs.weighted_sum(bs.elements(fs.pack(vals)), bs.field_weights(w)) == expect


def test_the_batch_encoding_is_the_row_encoding():
    data = rows(300)
    matrix = ab.encode_matrix(SCHEMA, data)
    expect = [[fs.centered(v) for v in an.encode_row(SCHEMA, r)] for r in data]
    assert matrix.tolist() == expect


def test_a_bad_row_in_a_batch_is_named_like_a_single_row():
    data = rows(50)
    data[17]["age"] = 130
    with pytest.raises(an.InputOutOfRange, match="row 18: age=130 is outside"):
        ab.encode_matrix(SCHEMA, data)
    data[17]["age"] = 30
    data[40]["region"] = "west"
    with pytest.raises(an.InputOutOfRange, match="row 41: region='west'"):
        ab.encode_matrix(SCHEMA, data)
    data[40] = {"age": 1, "bmi": 20}
    with pytest.raises(an.InputOutOfRange, match="row 41: field region is missing"):
        ab.encode_matrix(SCHEMA, data)


def test_a_shared_batch_sums_to_the_plaintext_sketch():
    data = rows(400)
    xs = [1, 2, 3, 4, 5]
    batch = ab.share_batch(SCHEMA, data, 1, xs)
    from shardline.core import shared_checks as sc

    lay = sc.layout(SCHEMA)
    sums = {}
    for x in xs:
        body, _w, _eta = ab.split_part(lay, batch.parts[x], batch.rows, x in batch.seeded)
        sums[x] = bs.column_sums(body, lay.extended)[: lay.width]
    decoded = fs.robust_reconstruct(sums, 1)
    plain = np.array([[fs.centered(v) for v in an.encode_row(SCHEMA, r)] for r in data])
    assert [fs.centered(v) for v in decoded.values] == plain.sum(axis=0).tolist()


def test_weighted_products_equal_python_sums():
    rnd = random.Random(5)
    n = 8209
    a = [rnd.randrange(fs.PRIME) for _ in range(n)]
    b = [rnd.randrange(fs.PRIME) for _ in range(n)]
    a[0] = b[0] = fs.PRIME - 1
    a[1] = 2**61 - 2
    w = np.array([rnd.randrange(2**64) for _ in range(n)], dtype=np.uint64)
    w[0] = 2**64 - 1
    la, lb = bs.elements(fs.pack(a)), bs.elements(fs.pack(b))
    ws = w.tolist()
    w = bs.field_weights(w)
    assert (
        bs.weighted_products(la, lb, w)
        == sum(x * y * z for x, y, z in zip(a, b, ws, strict=True)) % fs.PRIME
    )
    assert (
        bs.weighted_products(la, None, w)
        == sum(x * x * z for x, z in zip(a, ws, strict=True)) % fs.PRIME
    )


@pytest.mark.parametrize(("t", "n"), [(1, 4), (2, 7), (3, 10)])
def test_seeded_shares_are_shamir_shares(t, n):
    rnd = random.Random(t)
    vals = [rnd.randrange(fs.PRIME) for _ in range(200)] + [0, fs.PRIME - 1]
    xs = list(range(1, n + 1))
    seeds, rest = bs.share_seeded(bs.elements(fs.pack(vals)), t, xs)
    assert sorted(seeds) == xs[:t] and all(len(s) == bs.SEED_BYTES for s in seeds.values())
    pts = {x: bs.expand_seed(seeds[x], len(vals)).tolist() for x in seeds}
    pts |= {x: v.tolist() for x, v in rest.items()}
    assert fs.is_consistent(pts, t)
    assert fs.robust_reconstruct(pts, t).values == vals
    assert fs.interpolate({x: pts[x] for x in xs[-(t + 1) :]}, 0) == vals


def test_a_seed_expands_the_same_way_every_time_and_differently_from_another():
    seed = bytes(range(32))
    a = bs.expand_seed(seed, 1000)
    assert a.tolist() == bs.expand_seed(seed, 1000).tolist()
    assert a[:10].tolist() == bs.expand_seed(seed, 10).tolist()
    assert a.tolist() != bs.expand_seed(bytes(32), 1000).tolist()
    assert int(a.max()) < fs.PRIME
    with pytest.raises(ValueError, match="32 bytes"):
        bs.expand_seed(b"short", 3)


@pytest.mark.parametrize("c", [0, 1, 7, 8, fs.PRIME - 1, fs.PRIME - 7, fs.PRIME - 8, 12345])
def test_scaling_by_a_constant(c):
    v = np.array([0, 1, fs.PRIME - 1, 2**60 + 3], dtype=np.uint64)
    assert bs.scale(v, c).tolist() == [int(e) * c % fs.PRIME for e in v.tolist()]
