"""The servers' range check on shares (core/shared_checks.py): an honest batch passes at every
threshold; a producer that skips the client's check (a value out of range, a wrong square, two
categories at once, a share off its polynomial) is caught; the opened values hide the rows."""

from __future__ import annotations

import random

import numpy as np
import pytest

from shardline.core import analytics as an
from shardline.core import analytics_batch as ab
from shardline.core import bulk_shares as bs
from shardline.core import field_shares as fs
from shardline.core import shared_checks as sc

SCHEMA = an.Schema.from_dict(
    {
        "name": "clinic",
        "fields": [
            {"name": "age", "type": "int", "min": 0, "max": 119, "bin_width": 10},
            {"name": "bmi", "type": "float", "min": 10, "max": 60, "decimals": 1},
            {"name": "region", "type": "category", "values": ["north", "south", "east"]},
        ],
    }
)
LAY = sc.layout(SCHEMA)
SEED = sc.seed(b"\x01" * 32, b"\x02" * 32)


def rows(n: int, seed: int = 5) -> list[dict]:
    rnd = random.Random(seed)
    return [
        {
            "age": rnd.randint(0, 119),
            "bmi": round(rnd.uniform(10, 60), 1),
            "region": rnd.choice(["north", "south", "east"]),
        }
        for _ in range(n)
    ]


def points(
    parts: dict[int, bytes], n_rows: int, seed: bytes = SEED, seeded: frozenset[int] = frozenset()
) -> dict[int, sc.CheckPoint]:
    out = {}
    for x, part in parts.items():
        body, w, eta = ab.split_part(LAY, part, n_rows, x in seeded)
        out[x] = sc.evaluate(LAY, body, n_rows, x, w, eta, seed)
    return out


def forged(matrix: np.ndarray, t: int, xs: list[int]) -> dict[int, bytes]:
    """What a producer that skips the client's check sends: its own matrix, shared properly."""
    ext = ab.extended_elements(SCHEMA, matrix)
    shares = bs.share_elements(ext, t, xs)
    w = bs.share_elements(fs.pack([7]), t, xs)
    eta = bs.share_elements(fs.pack([9]), t, xs, degree=2 * t - 1)
    return {x: shares[x] + w[x] + eta[x] for x in xs}


def test_bit_weights_express_exactly_the_range():
    for span in (1, 2, 3, 7, 8, 119, 500, 1000):
        w = sc.bit_weights(span)
        vals = np.arange(span + 1)
        bits = sc.to_bits(vals, span)
        assert (bits @ np.array(w) == vals).all()
        assert set(np.unique(bits)) <= {0, 1}
        assert sum(w) == span  # all bits set is the top of the range, nothing above


@pytest.mark.parametrize(("t", "n"), [(1, 4), (2, 7), (3, 10)])
def test_an_honest_batch_passes(t, n):
    xs = list(range(1, n + 1))
    batch = ab.share_batch(SCHEMA, rows(60), t, xs)
    assert sc.verdict(points(batch.parts, 60), t) is None


def test_a_value_out_of_range_is_rejected():
    m = ab.encode_matrix(SCHEMA, rows(40))
    ix, isq, _ = SCHEMA.offsets("age")
    m[9, ix], m[9, isq] = 130, 130 * 130  # what the client check would have refused
    reason = sc.verdict(points(forged(m, 1, [1, 2, 3, 4]), 40), 1)
    assert reason and "breaks the schema" in reason


def test_a_negative_value_is_rejected():
    m = ab.encode_matrix(SCHEMA, rows(40))
    ix, isq, _ = SCHEMA.offsets("age")
    m[3, ix], m[3, isq] = -1, 1
    assert sc.verdict(points(forged(m, 1, [1, 2, 3, 4]), 40), 1)


def test_a_wrong_square_is_rejected():
    m = ab.encode_matrix(SCHEMA, rows(40))
    _, isq, _ = SCHEMA.offsets("bmi")
    m[0, isq] += 1
    assert sc.verdict(points(forged(m, 1, [1, 2, 3, 4]), 40), 1)


def test_a_row_counted_twice_or_in_two_regions_is_rejected():
    m = ab.encode_matrix(SCHEMA, rows(40))
    m[5, 0] = 2  # the row's count entry
    assert sc.verdict(points(forged(m, 1, [1, 2, 3, 4]), 40), 1)
    m = ab.encode_matrix(SCHEMA, rows(40))
    cw = SCHEMA.context_width
    north, south = (SCHEMA.context_index(("region", v)) * cw for v in ("north", "south"))
    m[6, north : north + cw] = m[6, :cw]
    m[6, south : south + cw] = m[6, :cw]
    assert sc.verdict(points(forged(m, 1, [1, 2, 3, 4]), 40), 1)


def test_a_share_off_its_polynomial_is_rejected():
    xs = [1, 2, 3, 4]
    batch = ab.share_batch(SCHEMA, rows(30), 1, xs)
    parts = dict(batch.parts)
    bad = bytearray(parts[3])
    bad[15] ^= 1  # one share of one entry, one bit
    parts[3] = bytes(bad)
    assert sc.verdict(points(parts, 30), 1)


def test_the_weights_depend_on_the_block():
    xs = [1, 2, 3, 4]
    m = ab.encode_matrix(SCHEMA, rows(10))
    ix, isq, _ = SCHEMA.offsets("age")
    m[0, ix], m[0, isq] = 200, 40000
    parts = forged(m, 1, xs)
    for block in (b"\x03" * 32, b"\x04" * 32):
        assert sc.verdict(points(parts, 10, sc.seed(block, b"\x02" * 32)), 1)


def test_the_opened_values_of_an_honest_batch_are_fresh_each_time():
    """The rules polynomial vanishes at 0 and is re-randomised by eta; the consistency value is
    masked by w: two sharings of the same rows open to unrelated values."""
    data = rows(20)
    xs = [1, 2, 3, 4]
    a = points(ab.share_batch(SCHEMA, data, 1, xs).parts, 20)
    b = points(ab.share_batch(SCHEMA, data, 1, xs).parts, 20)
    assert all(a[x].rules != b[x].rules and a[x].consistency != b[x].consistency for x in xs)
    assert fs.interpolate({x: [a[x].rules] for x in xs[:3]}, 0) == [0]


def test_the_small_and_the_bulk_evaluation_agree():
    n = sc.SMALL_BATCH + 3
    batch = ab.share_batch(SCHEMA, rows(n), 1, [1, 2, 3, 4])
    for x in (1, 4):
        body, w, eta = ab.split_part(LAY, batch.parts[x], n, x in batch.seeded)
        bulk = sc.evaluate(LAY, body, n, x, w, eta, SEED)
        assert bulk == sc._evaluate_small(LAY, body, n, x, w, eta, SEED)


@pytest.mark.parametrize(("t", "n"), [(1, 4), (2, 7)])
def test_a_seeded_batch_passes_and_its_seeded_parts_are_small(t, n):
    xs = list(range(1, n + 1))
    batch = ab.share_batch(SCHEMA, rows(300), t, xs)
    assert batch.seeded == frozenset(xs[:t])
    assert all(len(batch.parts[x]) == 32 + 16 for x in batch.seeded)
    assert sc.verdict(points(batch.parts, 300, seeded=batch.seeded), t) is None
    # a seeded part read as plain shares, or cut short, is refused by size
    with pytest.raises(ValueError, match="do not fill"):
        ab.split_part(LAY, batch.parts[1], 300)
    with pytest.raises(ValueError, match="a seed and two check values"):
        ab.split_part(LAY, batch.parts[1][:-1], 300, seeded=True)


def test_a_seeded_batch_with_a_bad_row_is_rejected():
    m = ab.encode_matrix(SCHEMA, rows(300))
    ix, isq, _ib = SCHEMA.offsets("age")
    m[5, ix], m[5, isq] = 130, 130 * 130  # out of range, square consistent
    ext = np.concatenate([m, sc.aux_bits(SCHEMA, m)], axis=1)
    xs = [1, 2, 3, 4]
    seeds, rest = bs.share_seeded(bs.elements_of(ext), 1, xs)
    w = bs.share_elements(fs.pack([7]), 1, xs)
    eta = bs.share_elements(fs.pack([9]), 1, xs, degree=1)
    parts = {x: seeds[x] + w[x] + eta[x] for x in seeds}
    parts |= {x: bs.packed(rest[x]) + w[x] + eta[x] for x in rest}
    assert sc.verdict(points(parts, 300, seeded=frozenset(seeds)), 1)
