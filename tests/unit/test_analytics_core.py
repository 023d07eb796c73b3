"""The analytics schema, row encoding, job selectors and results, as plain calls.

Statistics are checked against an independent plaintext computation (statistics module), on rows
shared among 4 points at t = 1 and rebuilt with one wrong share.
"""

from __future__ import annotations

import random
import statistics

import pytest

from shardline.core import analytics as an
from shardline.core.field_shares import PRIME, robust_reconstruct, split_vector

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


def rows(n: int, seed: int = 7) -> list[dict]:
    rnd = random.Random(seed)
    return [
        {
            "age": rnd.randint(0, 119),
            "bmi": round(rnd.uniform(10, 60), 1),
            "region": rnd.choice(["north", "south", "east"]),
        }
        for _ in range(n)
    ]


def shared_result(spec: an.JobSpec, data: list[dict], liar: int | None = None) -> an.Result:
    xs = [1, 2, 3, 4]
    agg = {x: [0] * SCHEMA.width for x in xs}
    for r in data:
        for x, vec in split_vector(an.encode_row(SCHEMA, r), 1, xs).items():
            for i, v in enumerate(vec):
                agg[x][i] += v
    sel = an.selectors(SCHEMA, spec)
    outs = {x: an.output_share(agg[x], sel) for x in xs}
    if liar:
        outs[liar][0] = (outs[liar][0] + 1) % PRIME
    decoded = robust_reconstruct(outs, 1)
    assert decoded.bad == ({liar} if liar else set())
    return an.finish(SCHEMA, spec, decoded.values)


DATA = rows(300)


@pytest.mark.parametrize("liar", [None, 3])
def test_every_statistic_matches_plaintext(liar):
    ages = [r["age"] for r in DATA]
    bmis = [r["bmi"] for r in DATA]
    south = [r["age"] for r in DATA if r["region"] in ("south", "east")]
    S = an.JobSpec
    assert shared_result(S("count"), DATA, liar).value == 300
    assert shared_result(S("sum", "age"), DATA, liar).value == sum(ages)
    assert shared_result(S("mean", "bmi"), DATA, liar).value == pytest.approx(
        statistics.fmean(bmis)
    )
    assert shared_result(S("variance", "age"), DATA, liar).value == pytest.approx(
        statistics.pvariance(ages)
    )
    assert shared_result(S("std", "bmi"), DATA, liar).value == pytest.approx(
        statistics.pstdev(bmis)
    )
    filt = shared_result(S("mean", "age", "region", ("south", "east")), DATA, liar)
    assert filt.count == len(south) and filt.value == pytest.approx(statistics.fmean(south))
    hist = shared_result(S("histogram", "age", bins=(0, 30, 60, 120)), DATA, liar)
    assert hist.value == [
        sum(1 for a in ages if lo <= a < hi) for lo, hi in ((0, 30), (30, 60), (60, 120))
    ]


def test_out_of_range_is_rejected_before_sharing_with_the_field_named():
    with pytest.raises(
        an.InputOutOfRange, match=r"row 4: age=130 is outside the allowed range 0 to 119"
    ):
        an.encode_row(SCHEMA, {"age": 130, "bmi": 20, "region": "north"}, "row 4")
    with pytest.raises(an.InputOutOfRange, match="region='west' is not one of north, south, east"):
        an.encode_row(SCHEMA, {"age": 1, "bmi": 20, "region": "west"})
    with pytest.raises(an.InputOutOfRange, match="bmi is missing"):
        an.encode_row(SCHEMA, {"age": 1, "region": "west"})
    with pytest.raises(an.InputOutOfRange, match="not a whole number"):
        an.encode_row(SCHEMA, {"age": 1.5, "bmi": 20, "region": "east"})


def test_bins_off_the_grid_and_bad_filters_are_refused():
    with pytest.raises(an.SchemaError, match="grid"):
        an.selectors(SCHEMA, an.JobSpec("histogram", "age", bins=(0, 15)))
    with pytest.raises(an.SchemaError, match="no bin_width"):
        an.selectors(SCHEMA, an.JobSpec("histogram", "bmi", bins=(10, 20)))
    with pytest.raises(an.SchemaError, match="must be a category"):
        an.selectors(SCHEMA, an.JobSpec("mean", "age", "bmi", ("1",)))
    with pytest.raises(an.SchemaError, match="not one of"):
        an.selectors(SCHEMA, an.JobSpec("median", "age"))


def test_k_anonymity_refuses_small_selections():
    an.check_k(5, 5, an.JobSpec("count"))
    with pytest.raises(an.TooFewProducers, match="fewer than k=5"):
        an.check_k(4, 5, an.JobSpec("count", where_field="region", where_values=("east",)))


def test_schema_and_spec_round_trip():
    assert an.Schema.from_dict(SCHEMA.to_dict()) == SCHEMA
    spec = an.JobSpec("histogram", "age", "region", ("north",), (0.0, 50.0))
    assert an.JobSpec.from_dict(spec.to_dict()) == spec
    # 1 + 3 contexts; each: count + (age: x, x^2, 12 buckets) + (bmi: x, x^2)
    assert SCHEMA.width == 4 * (1 + 14 + 2)


def test_a_field_too_wide_for_the_field_arithmetic_is_refused():
    # sums of squares of MAX_ROWS values must not wrap modulo 2^61 - 1
    ok = {"name": "x", "type": "int", "min": -an.MAX_VALUE, "max": an.MAX_VALUE}
    assert an.Schema.from_dict({"name": "d", "fields": [ok]}).field("x").max == an.MAX_VALUE
    wide = {"name": "income", "type": "float", "min": 0, "max": 10_000, "decimals": 2}
    with pytest.raises(an.SchemaError, match="field income: values up to 10000 are too wide"):
        an.Schema.from_dict({"name": "d", "fields": [wide]})
    assert (an.MAX_VALUE + 1) ** 2 * an.MAX_ROWS >= PRIME // 2 > an.MAX_VALUE**2 * an.MAX_ROWS
