"""The assignment rule: deterministic, balanced by capacity, the same digest on both sides."""

from __future__ import annotations

import secrets
from collections import Counter

import pytest

from shardline.core import assignment


def test_both_sides_agree_and_shares_follow_capacity():
    handles = [secrets.token_hex(32) for _ in range(6000)]
    caps = {"org1": 2.0, "org2": 1.0}
    got = Counter(assignment.assign("list-a", h, caps) for h in handles)
    assert abs(got["org1"] / len(handles) - 2 / 3) < 0.03
    # the other org computes the same from the same handles, in any order
    assert assignment.digest("list-a", caps, handles) == assignment.digest(
        "list-a", dict(reversed(caps.items())), list(reversed(handles))
    )
    assert assignment.digest("list-a", caps, handles) != assignment.digest("list-b", caps, handles)


def test_a_capacity_must_be_positive():
    with pytest.raises(ValueError, match="positive capacity"):
        assignment.assign("l", "h", {"org1": 0})
