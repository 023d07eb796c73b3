"""Who serves each shared contact of a distribution list, decided without contact details.

After private matching, two orgs name a person they share by the doubly-blinded values their
two contacts have in common. Each org draws, for each of its own shared contacts, a secret
pseudo-random *bid* ``u`` (HMAC of the list and the contact under the org's own secret) and
sends the pair partner the bid beside that contact's shared values. The contact's *score* is
``-capacity / ln(u)``: an exponential race, so an org wins a person with probability
``capacity / sum of the holders' capacities`` (least loaded by declared capacity). The holder
with the highest score serves; a tie goes to the smaller org id.

Why bids and not a hash of the shared values: with three or more orgs the pairs run their own
sessions, and the values a pair shares are different in every pair. A bid is one number per
contact and list, the same in every pair the org takes part in, so every holder of a person
compares the same numbers and they all name the same winner; each org computes only "do I
serve this contact of mine". A bid is the output of a keyed hash: it tells the partner nothing
about the contact.

The pair's agreement is the two bid tables (each org's capacity and its bids); both sides hold
the same two tables, so their digests are equal, can be recorded on chain, and anyone later
shown the tables can recompute the digest and every assignment in them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

RULE = "bid-capacity-v1"
_SPAN = 2**64


@dataclass(frozen=True)
class BidEntry:
    """One shared contact of one org in a pair: the values it shares and its bid."""

    values: tuple[str, ...]  # hex doubly-blinded values, sorted
    u: int  # 64-bit bid


@dataclass(frozen=True)
class BidTable:
    org: str
    capacity: int
    entries: tuple[BidEntry, ...]

    def canonical(self) -> dict:
        rows = sorted([list(e.values), f"{e.u:016x}"] for e in self.entries)
        return {"capacity": self.capacity, "bids": rows}

    @classmethod
    def from_canonical(cls, org: str, doc: dict) -> BidTable:
        return cls(
            org,
            int(doc["capacity"]),
            tuple(BidEntry(tuple(sorted(v)), int(u, 16)) for v, u in doc["bids"]),
        )


def bid(secret: bytes, list_id: str, contact_id: int) -> int:
    """The org's bid for one of its contacts in one list: same in every pair, secret-keyed."""
    h = hmac.new(secret, f"shardline list bid v1|{list_id}|{contact_id}".encode(), "sha256")
    return int.from_bytes(h.digest()[:8], "big")


def score(u: int, capacity: int) -> float:
    if capacity <= 0:
        raise ValueError("every org of a list needs a positive capacity")
    return -capacity / math.log((u + 1) / (_SPAN + 1))  # (u+1)/(2^64+1) is in (0, 1)


def winner(bids: Mapping[str, tuple[int, int]]) -> str:
    """The org that serves, from ``org -> (u, capacity)`` of every holder."""
    if not bids:
        raise ValueError("no bids to compare")
    return min(sorted(bids), key=lambda o: -score(*bids[o]))  # min keeps the first of a tie


def pair_id(list_id: str, org_a: str, org_b: str) -> str:
    """The name of a pair of orgs inside a list (32 bytes hex), the same from either side."""
    a, b = sorted((org_a, org_b))
    return hashlib.sha256(f"shardline list pair v1|{list_id}|{a}|{b}".encode()).hexdigest()


def agreement(list_id: str, tables: Iterable[BidTable]) -> dict:
    """The canonical agreement of one pair: both sides build the same document."""
    tables = sorted(tables, key=lambda t: t.org)
    if len(tables) != 2 or tables[0].org == tables[1].org:
        raise ValueError("an agreement is between two different orgs")
    return {
        "list": list_id,
        "rule": RULE,
        "pair": [t.org for t in tables],
        "tables": {t.org: t.canonical() for t in tables},
    }


def digest(doc: dict) -> str:
    """SHA-256 of the canonical JSON of an agreement document."""
    return hashlib.sha256(
        json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def links(a: BidTable, b: BidTable) -> list[tuple[BidEntry, BidEntry]]:
    """Which entry of ``a`` is which person of ``b``: a one-to-one linkage both sides compute
    alike from the two tables alone.

    Fuzzy keys can make one contact share a value with several contacts of the partner (a
    common name in the same town); counting each of them as a holder of the same person would
    let two contacts both defer, and nobody serve. So entries are linked greedily by how many
    values they share, most first, ties broken by the values themselves; each entry is linked
    at most once, and an entry left unlinked has no holder on the other side.
    """
    by_value: dict[str, list[int]] = {}
    eb = sorted(b.entries, key=lambda e: (e.values, e.u))
    for j, e in enumerate(eb):
        for v in e.values:
            by_value.setdefault(v, []).append(j)
    ea = sorted(a.entries, key=lambda e: (e.values, e.u))
    edges = []
    for i, e in enumerate(ea):
        shared: dict[int, list[str]] = {}
        for v in e.values:
            for j in by_value.get(v, ()):
                shared.setdefault(j, []).append(v)
        edges += [(-len(vs), min(vs), i, j) for j, vs in shared.items()]
    edges.sort()
    used_a: set[int] = set()
    used_b: set[int] = set()
    out = []
    for _w, _v, i, j in edges:
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            out.append((ea[i], eb[j]))
    return out


def my_assignments(
    me: str,
    capacity: int,
    my_bids: Mapping[int, int],
    tables: Mapping[str, tuple[BidTable, BidTable]],
) -> dict[int, str]:
    """For each of my contacts in any pair's agreement: the org that serves it.

    ``my_bids`` is ``my contact id -> my bid`` (a bid names its contact: it is a keyed hash of
    it) and ``tables`` is ``peer -> (my table, the peer's table)`` of each agreed pair.
    """
    contact_of = {u: c for c, u in my_bids.items()}
    rivals: dict[int, dict[str, tuple[int, int]]] = {}
    for peer, (mine, theirs) in tables.items():
        for e in mine.entries:
            rivals.setdefault(contact_of[e.u], {})
        for e_mine, e_theirs in links(mine, theirs):
            rivals[contact_of[e_mine.u]][peer] = (e_theirs.u, theirs.capacity)
    return {
        c: winner({me: (my_bids[c], capacity), **others}) for c, others in sorted(rivals.items())
    }


def assignments_of(doc: dict) -> dict[str, dict[str, str]]:
    """Every entry of a recorded agreement and who serves it, as anyone shown it can compute:
    ``org -> {first shared value of its entry -> serving org}`` (for the pair alone)."""
    (a, ta), (b, tb) = sorted((o, BidTable.from_canonical(o, t)) for o, t in doc["tables"].items())
    out: dict[str, dict[str, str]] = {
        a: {e.values[0]: a for e in ta.entries},
        b: {e.values[0]: b for e in tb.entries},
    }
    for ea, eb in links(ta, tb):
        w = winner({a: (ea.u, ta.capacity), b: (eb.u, tb.capacity)})
        out[a][ea.values[0]] = out[b][eb.values[0]] = w
    return out
