"""Who serves each shared contact of a distribution list, decided without contact details.

The orgs of a list share, after private matching, the same set of doubly-blinded values; each
shared contact is named by its handle (the smallest value it shares). Weighted rendezvous
hashing of ``(list id, handle, org)`` over the orgs' declared capacities gives every handle one
org, the same on every side, balanced by capacity; each org computes only its own contacts'
assignments. The agreement's digest covers the list, the rule, the capacities and every
``(value, org)``: equal on both sides, so it can be recorded on chain and shown later.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping

RULE = "rendezvous-capacity-v1"


def _unit(list_id: str, handle: str, org: str) -> float:
    h = hashlib.sha256(f"{list_id}|{handle}|{org}".encode()).digest()
    return (int.from_bytes(h[:8], "big") + 1) / (2**64 + 1)  # in (0, 1)


def assign(list_id: str, handle: str, capacities: Mapping[str, float]) -> str:
    """The org that serves this handle: highest ``-capacity / ln(u)`` wins."""
    if not capacities or any(c <= 0 for c in capacities.values()):
        raise ValueError("every org of a list needs a positive capacity")
    return max(
        sorted(capacities), key=lambda o: -capacities[o] / math.log(_unit(list_id, handle, o))
    )


def digest(list_id: str, capacities: Mapping[str, float], values: Iterable[str]) -> str:
    """SHA-256 over the canonical agreement: what both orgs compute alike."""
    doc = {
        "list": list_id,
        "rule": RULE,
        "capacities": {o: capacities[o] for o in sorted(capacities)},
        "assignments": [[v, assign(list_id, v, capacities)] for v in sorted(set(values))],
    }
    return hashlib.sha256(
        json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
