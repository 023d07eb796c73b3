"""Duplicate detection inside one org: blocking, Fellegi-Sunter scoring, clustering.

Pure and deterministic: the same contacts give the same candidate pairs in the same order, the
same scores and the same groups, so a job can be cut into chunks, stopped, and resumed.

- Blocking: a pair is compared only when the two contacts share a blocking key: phonetic codes
  of the names with the birth year or the postcode, the whole birth date, the id number. A key
  shared by more than ``max_block`` contacts (an empty or very common value) makes no pairs.
- Scoring: each field is compared into a level (agree, close, disagree, missing) and the level's
  Fellegi-Sunter weight ``log2(m/u)`` is added; ``m`` and ``u`` start from the priors below and
  are re-estimated by expectation-maximisation on the candidate pairs of the job.
- Clustering: pairs at or above the threshold, plus pairs a reviewer accepted, minus pairs a
  reviewer rejected, joined into groups (connected components).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import jellyfish

from shardline.core.contact_keys import jaro_winkler, metaphone, nysiis
from shardline.core.contacts import ContactRecord

MAX_BLOCK = 60
# Levels: 0 disagree, 1 close, 2 agree; -1 missing (adds nothing).
LEVELS = 3


@dataclass(frozen=True)
class Prepared:
    """A contact with what blocking and scoring need, computed once."""

    id: int
    given: str
    family: str
    birth: str
    id_number: str
    street_number: str
    address: str
    locality: str
    postcode: str
    phone: str
    email: str
    g_meta: str
    f_meta: str
    g_nys: str
    f_nys: str


def prepare(cid: int, c: ContactRecord) -> Prepared:
    g, f = c.given_name.replace(" ", ""), c.family_name.replace(" ", "")
    return Prepared(
        cid,
        g,
        f,
        c.birth_date,
        c.id_number,
        c.street_number,
        c.address,
        c.locality,
        c.postcode,
        c.phone,
        c.email,
        metaphone(g),
        metaphone(f),
        nysiis(g),
        nysiis(f),
    )


def blocking_keys(p: Prepared) -> list[str]:
    year = p.birth[:4]
    keys = []

    def add(tag: str, *parts: str) -> None:
        if all(parts):
            keys.append(tag + ":" + "|".join(parts))

    add("fy", p.f_meta, year)
    add("gy", p.g_meta, year)
    add("gf", *sorted((p.g_meta, p.f_meta)))
    add("fp", p.f_nys, p.postcode)
    add("gp", p.g_nys, p.postcode)
    add("d", p.birth)
    add("i", p.id_number)
    add("fl", p.f_meta, p.locality)
    add("ph", p.phone)
    add("em", p.email)
    return keys


def candidate_pairs(
    records: Sequence[Prepared], max_block: int = MAX_BLOCK
) -> list[tuple[int, int]]:
    """Every pair of contact ids that share a blocking key, sorted, each once."""
    blocks: dict[str, list[int]] = defaultdict(list)
    for p in records:
        for k in blocking_keys(p):
            blocks[k].append(p.id)
    pairs: set[tuple[int, int]] = set()
    for ids in blocks.values():
        if len(ids) < 2 or len(ids) > max_block:
            continue
        ids = sorted(set(ids))
        for i, a in enumerate(ids):
            for b in ids[i + 1 :]:
                pairs.add((a, b))
    return sorted(pairs)


# ---- comparison ---------------------------------------------------------------------------
def _string_level(a: str, b: str, high: float = 0.94, low: float = 0.84) -> int:
    if not a or not b:
        return -1
    if a == b:
        return 2
    s = jaro_winkler(a, b)
    return 2 if s >= high else 1 if s >= low else 0


def _exact_level(a: str, b: str) -> int:
    if not a or not b:
        return -1
    if a == b:
        return 2
    return 1 if jellyfish.damerau_levenshtein_distance(a, b) <= 1 else 0


def _date_level(a: str, b: str) -> int:
    if not a or not b:
        return -1
    if a == b:
        return 2
    ya, ma, da = a.split("-")
    yb, mb, db = b.split("-")
    if (ya, ma, da) == (yb, da, ma) or jellyfish.damerau_levenshtein_distance(a, b) <= 1:
        return 1
    same = (ya == yb) + (ma == mb) + (da == db)
    return 1 if same == 2 else 0


COMPARISONS = (
    "given",
    "family",
    "birth",
    "id_number",
    "street_number",
    "address",
    "locality",
    "postcode",
    "phone",
    "email",
)


def compare(a: Prepared, b: Prepared) -> tuple[int, ...]:
    given = _string_level(a.given, b.given)
    family = _string_level(a.family, b.family)
    if given < 2 and family < 2 and a.given and a.family:
        # names written the wrong way round in one of the two registrations
        swapped = min(_string_level(a.given, b.family), _string_level(a.family, b.given))
        if swapped == 2:
            given = family = 1
    return (
        given,
        family,
        _date_level(a.birth, b.birth),
        _exact_level(a.id_number, b.id_number),
        _exact_level(a.street_number, b.street_number)
        if a.street_number != b.street_number or a.street_number
        else -1,
        _string_level(a.address, b.address, 0.92, 0.80),
        _string_level(a.locality, b.locality, 0.92, 0.80),
        _exact_level(a.postcode, b.postcode),
        _exact_level(a.phone, b.phone),
        _exact_level(a.email, b.email),
    )


# ---- the Fellegi-Sunter model -------------------------------------------------------------
# Prior m (among true matches) and u (among non-matches) per field and level (disagree, close,
# agree). The u values are low because blocking already made the pairs look alike.
PRIOR_M = {
    "given": (0.05, 0.10, 0.85),
    "family": (0.05, 0.10, 0.85),
    "birth": (0.05, 0.10, 0.85),
    "id_number": (0.05, 0.10, 0.85),
    "street_number": (0.10, 0.10, 0.80),
    "address": (0.10, 0.15, 0.75),
    "locality": (0.10, 0.15, 0.75),
    "postcode": (0.10, 0.10, 0.80),
    "phone": (0.10, 0.05, 0.85),
    "email": (0.10, 0.05, 0.85),
}
PRIOR_U = {
    "given": (0.80, 0.15, 0.05),
    "family": (0.70, 0.15, 0.15),
    "birth": (0.90, 0.08, 0.02),
    "id_number": (0.97, 0.025, 0.005),
    "street_number": (0.85, 0.10, 0.05),
    "address": (0.85, 0.12, 0.03),
    "locality": (0.75, 0.15, 0.10),
    "postcode": (0.75, 0.15, 0.10),
    "phone": (0.97, 0.02, 0.01),
    "email": (0.98, 0.01, 0.01),
}


@dataclass
class Model:
    """Fellegi-Sunter parameters; ``weights[f][level]`` is ``log2(m/u)``."""

    m: dict[str, tuple[float, ...]] = field(default_factory=lambda: dict(PRIOR_M))
    u: dict[str, tuple[float, ...]] = field(default_factory=lambda: dict(PRIOR_U))
    match_share: float = 0.3

    def weights(self) -> list[tuple[float, ...]]:
        return [
            tuple(math.log2(m / u) for m, u in zip(self.m[f], self.u[f], strict=True))
            for f in COMPARISONS
        ]

    def score(
        self, levels: tuple[int, ...], weights: list[tuple[float, ...]] | None = None
    ) -> float:
        w = weights or self.weights()
        return sum(w[i][lv] for i, lv in enumerate(levels) if lv >= 0)

    def to_dict(self) -> dict:
        return {"m": self.m, "u": self.u, "match_share": self.match_share}


def estimate(
    patterns: dict[tuple[int, ...], int], model: Model | None = None, rounds: int = 15
) -> Model:
    """Expectation-maximisation of m, u and the match share over counted level patterns."""
    model = model or Model()
    eps = 1e-4
    for _ in range(rounds):
        weights = model.weights()
        prior = math.log2(model.match_share / (1 - model.match_share))
        m_acc = {f: [eps] * LEVELS for f in COMPARISONS}
        u_acc = {f: [eps] * LEVELS for f in COMPARISONS}
        total_m = total_u = 0.0
        for levels, count in patterns.items():
            s = prior + model.score(levels, weights)
            g = 1.0 / (1.0 + 2.0 ** (-max(min(s, 60.0), -60.0)))
            total_m += g * count
            total_u += (1 - g) * count
            for i, lv in enumerate(levels):
                if lv >= 0:
                    f = COMPARISONS[i]
                    m_acc[f][lv] += g * count
                    u_acc[f][lv] += (1 - g) * count
        model = Model(
            m={f: _norm(m_acc[f]) for f in COMPARISONS},
            u={f: _norm(u_acc[f]) for f in COMPARISONS},
            match_share=min(max(total_m / max(total_m + total_u, 1.0), 1e-4), 1 - 1e-4),
        )
    return model


def _norm(values: list[float]) -> tuple[float, ...]:
    s = sum(values)
    return tuple(v / s for v in values)


def default_threshold(model: Model) -> float:
    """The weight at which a pair is as likely a match as not, given the match share."""
    return -math.log2(model.match_share / (1 - model.match_share))


# ---- clustering ---------------------------------------------------------------------------
def cluster(
    matched: Iterable[tuple[int, int]],
    accepted: Iterable[tuple[int, int]] = (),
    rejected: Iterable[tuple[int, int]] = (),
) -> list[list[int]]:
    """Groups of two or more ids, each sorted, the list sorted by first id."""
    no = {tuple(sorted(p)) for p in rejected}
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in [*matched, *accepted]:
        if (min(a, b), max(a, b)) in no:
            continue
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = defaultdict(list)
    for x in parent:
        groups[find(x)].append(x)
    return sorted(sorted(g) for g in groups.values() if len(g) > 1)


def pairs_of(groups: Iterable[Sequence[int]]) -> set[tuple[int, int]]:
    out = set()
    for g in groups:
        g = sorted(g)
        for i, a in enumerate(g):
            for b in g[i + 1 :]:
                out.add((a, b))
    return out


def f1(found: set[tuple[int, int]], truth: set[tuple[int, int]]) -> tuple[float, float, float]:
    tp = len(found & truth)
    p = tp / len(found) if found else 0.0
    r = tp / len(truth) if truth else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def dedup(
    records: Sequence[Prepared], threshold: float | None = None, em: bool = True
) -> tuple[list[list[int]], Model, float]:
    """The whole pipeline in one call (what a job does in chunks)."""
    by_id = {p.id: p for p in records}
    pairs = candidate_pairs(records)
    levels = [compare(by_id[a], by_id[b]) for a, b in pairs]
    patterns: dict[tuple[int, ...], int] = defaultdict(int)
    for lv in levels:
        patterns[lv] += 1
    model = estimate(patterns) if em else Model()
    t = default_threshold(model) if threshold is None else threshold
    w = model.weights()
    matched = [p for p, lv in zip(pairs, levels, strict=True) if model.score(lv, w) >= t]
    return cluster(matched), model, t
