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


def _index(table: BidTable) -> dict[str, int]:
    best: dict[str, int] = {}
    for e in table.entries:
        for v in e.values:
            best[v] = max(best.get(v, -1), e.u)
    return best


def my_assignments(
    me: str,
    capacity: int,
    my_bids: Mapping[int, int],
    shared: Mapping[str, Mapping[int, Iterable[str]]],
    partner_tables: Mapping[str, BidTable],
) -> dict[int, str]:
    """For each of my contacts shared with any partner: the org that serves it.

    ``shared`` is ``peer -> {my contact id -> values it shares with that peer}`` and
    ``partner_tables`` the bid table each peer sent me. A contact whose partner bid is missing
    (the peer's table names none of its values) does not count that peer as a holder.
    """
    indexes = {p: _index(t) for p, t in partner_tables.items()}
    out: dict[int, str] = {}
    contacts = sorted({c for per in shared.values() for c in per})
    for c in contacts:
        bids: dict[str, tuple[int, int]] = {me: (my_bids[c], capacity)}
        for peer, per in shared.items():
            if c not in per or peer not in partner_tables:
                continue
            idx = indexes[peer]
            us = [idx[v] for v in per[c] if v in idx]
            if us:
                bids[peer] = (max(us), partner_tables[peer].capacity)
        out[c] = winner(bids)
    return out


def assignments_of(doc: dict) -> dict[str, dict[str, str]]:
    """Every entry of a recorded agreement and who serves it, as anyone shown it can compute:
    ``org -> {first shared value of its entry -> serving org}`` (for the pair alone)."""
    tables = {o: BidTable.from_canonical(o, t) for o, t in doc["tables"].items()}
    out: dict[str, dict[str, str]] = {}
    for org, t in tables.items():
        (other,) = [o for o in tables if o != org]
        idx = _index(tables[other])
        rows: dict[str, str] = {}
        for e in t.entries:
            us = [idx[v] for v in e.values if v in idx]
            bids = {org: (e.u, t.capacity)}
            if us:
                bids[other] = (max(us), tables[other].capacity)
            rows[e.values[0]] = winner(bids)
        out[org] = rows
    return out
