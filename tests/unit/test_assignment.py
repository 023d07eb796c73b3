"""The assignment rule: balanced by capacity, the same digest on both sides, and one server per
person across three orgs whose pairs each share different values."""

from __future__ import annotations

import secrets
from collections import Counter

import pytest

from shardline.core import assignment
from shardline.core.assignment import BidEntry, BidTable


def _table(org: str, capacity: int, entries: dict[int, list[str]], bids: dict[int, int]):
    return BidTable(
        org, capacity, tuple(BidEntry(tuple(sorted(v)), bids[c]) for c, v in entries.items())
    )


def test_shares_follow_capacity_and_both_sides_agree():
    n = 6000
    s1, s2 = secrets.token_bytes(32), secrets.token_bytes(32)
    values = {i: [secrets.token_hex(32)] for i in range(n)}  # contact i of org1 ~ i of org2
    b1 = {i: assignment.bid(s1, "list-a", i) for i in range(n)}
    b2 = {i: assignment.bid(s2, "list-a", 10_000 + i) for i in range(n)}
    t1 = _table("org1", 2, values, b1)
    t2 = BidTable("org2", 1, tuple(BidEntry(tuple(values[i]), b2[i]) for i in range(n)))
    got1 = assignment.my_assignments("org1", 2, b1, {"org2": (t1, t2)})
    got2 = assignment.my_assignments("org2", 1, b2, {"org1": (t2, t1)})
    assert got1 == got2  # the same person, the same server, seen from either side
    share = Counter(got1.values())["org1"] / n
    assert abs(share - 2 / 3) < 0.03
    # both sides build the same document, whatever the order they hold the tables in
    d1 = assignment.agreement("list-a", [t1, t2])
    d2 = assignment.agreement("list-a", [t2, t1])
    assert assignment.digest(d1) == assignment.digest(d2)
    assert assignment.digest(d1) != assignment.digest(assignment.agreement("list-b", [t1, t2]))
    # a third party shown the document computes the same assignments
    shown = assignment.assignments_of(d1)
    assert [shown["org1"][values[i][0]] for i in range(n)] == [got1[i] for i in range(n)]


def test_three_orgs_name_one_server_though_each_pair_shares_other_values():
    n = 3000
    orgs = ["org1", "org2", "org3"]
    caps = {"org1": 1, "org2": 1, "org3": 2}
    sec = {o: secrets.token_bytes(32) for o in orgs}
    bids = {o: {i: assignment.bid(sec[o], "L", i) for i in range(n)} for o in orgs}
    # every pair has its own blinded values for the same person
    pair_values = {
        frozenset(p): {i: [secrets.token_hex(32)] for i in range(n)}
        for p in (("org1", "org2"), ("org1", "org3"), ("org2", "org3"))
    }
    # person i is held by all three when i % 3 == 0, else by org1 and org2 only
    held = {i: orgs if i % 3 == 0 else ["org1", "org2"] for i in range(n)}
    tables = {}
    for (a, b), vals in ((tuple(sorted(p)), v) for p, v in pair_values.items()):
        for me, peer in ((a, b), (b, a)):
            mine = {i: vals[i] for i in range(n) if me in held[i] and peer in held[i]}
            tables[(me, peer)] = _table(me, caps[me], mine, bids[me])
    got = {
        o: assignment.my_assignments(
            o, caps[o], bids[o], {p: (tables[(o, p)], tables[(p, o)]) for p in orgs if p != o}
        )
        for o in orgs
    }
    for i in range(n):
        servers = {got[o][i] for o in held[i]}
        assert len(servers) == 1, f"person {i}: holders disagree {servers}"
        assert servers.pop() in held[i]
    triple = Counter(got["org1"][i] for i in range(n) if i % 3 == 0)
    assert abs(triple["org3"] / sum(triple.values()) - 0.5) < 0.06  # capacity 2 of 4


def test_a_false_match_on_one_weak_key_does_not_leave_a_person_unserved():
    # org1's x is org2's y (three values in common); x also shares one value with z, another
    # person of org2 (a common name in the same town). z's bid beats x's, x's beats y's.
    x = BidEntry(("a1", "a2", "a3", "w"), 500)
    y = BidEntry(("a1", "a2", "a3"), 100)
    z = BidEntry(("w",), 900)
    t1, t2 = BidTable("org1", 1, (x,)), BidTable("org2", 1, (y, z))
    assert assignment.links(t1, t2) == [(x, y)]
    got1 = assignment.my_assignments("org1", 1, {7: 500}, {"org2": (t1, t2)})
    got2 = assignment.my_assignments("org2", 1, {3: 100, 4: 900}, {"org1": (t2, t1)})
    assert got1 == {7: "org1"} and got2 == {3: "org1", 4: "org2"}
    shown = assignment.assignments_of(assignment.agreement("L", [t1, t2]))
    assert shown == {"org1": {"a1": "org1"}, "org2": {"a1": "org1", "w": "org2"}}


def test_a_capacity_must_be_positive():
    with pytest.raises(ValueError, match="positive capacity"):
        assignment.winner({"org1": (5, 0), "org2": (7, 1)})
    with pytest.raises(ValueError, match="two different orgs"):
        assignment.agreement("L", [BidTable("org1", 1, ())])
