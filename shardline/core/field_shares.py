"""Shamir sharing of vectors over GF(2^61 - 1), and robust reconstruction that names bad shares.

Analytics adds shares: a server's output is the sum of the producers' shares it holds, so the
values must live in a field where sums of many inputs do not wrap: 2^61 - 1 leaves room for the
sum of squares of ``analytics.MAX_ROWS`` (10^7) rows of values up to 339,000 in size (the schema
refuses wider fields). A Mersenne prime below 2^64 makes an element one machine word (8 bytes on
the wire, NumPy uint64 arithmetic in ``bulk_shares``), and the Market contract checks it with
``mulmod``.

With ``n`` shares of a degree-``t`` polynomial, Berlekamp-Welch decoding corrects up to
``(n - t - 1) // 2`` wrong shares; with ``n >= 3t + 1`` that is ``t``: any ``t`` lying servers
are outvoted, and the decoder names them. Each coordinate of a vector is its own Reed-Solomon
codeword; a share is bad when any of its coordinates is.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

PRIME = 2**61 - 1
ELEMENT_BYTES = 8


class DecodeError(ValueError):
    """The shares disagree in more places than the redundancy can correct."""


def split_vector(values: Sequence[int], threshold: int, xs: Sequence[int]) -> dict[int, list[int]]:
    """Share each value with its own random polynomial of degree ``threshold``.

    Any ``threshold + 1`` shares rebuild the values; ``threshold`` or fewer reveal nothing.
    """
    if threshold < 0 or len(xs) <= threshold:
        raise ValueError(f"{len(xs)} shares cannot hide values at threshold {threshold}")
    if len(set(xs)) != len(xs) or any(not 0 < x < PRIME for x in xs):
        raise ValueError(f"share points {list(xs)} must be distinct and non-zero")
    out: dict[int, list[int]] = {x: [] for x in xs}
    for v in values:
        coeffs = [v % PRIME] + [secrets.randbelow(PRIME) for _ in range(threshold)]
        for x in xs:
            acc = 0
            for a in reversed(coeffs):
                acc = (acc * x + a) % PRIME
            out[x].append(acc)
    return out


def random_elements(count: int) -> list[int]:
    """``count`` uniform field elements from ``secrets``."""
    return [secrets.randbelow(PRIME) for _ in range(count)]


def share_rows(
    rows: Sequence[Sequence[int]], threshold: int, xs: Sequence[int]
) -> dict[int, bytes]:
    """``split_vector`` for many rows at once, packed: each share point gets the concatenation of
    its shares of every row (the producer's bulk path; the same polynomials, fewer Python steps)."""
    if threshold < 0 or len(xs) <= threshold:
        raise ValueError(f"{len(xs)} shares cannot hide values at threshold {threshold}")
    if len(set(xs)) != len(xs) or any(not 0 < x < PRIME for x in xs):
        raise ValueError(f"share points {list(xs)} must be distinct and non-zero")
    secret = [v % PRIME for row in rows for v in row]
    coeffs = [random_elements(len(secret)) for _ in range(threshold)]
    out: dict[int, bytes] = {}
    for x in xs:
        acc = [0] * len(secret)
        for c in reversed(coeffs):  # Horner, highest coefficient first
            acc = [(a * x + ci) for a, ci in zip(acc, c, strict=True)]
        vals = [(a * x + s0) % PRIME for a, s0 in zip(acc, secret, strict=True)]
        out[x] = b"".join(v.to_bytes(ELEMENT_BYTES, "big") for v in vals)
    return out


def lagrange_at(xs: Sequence[int], at: int) -> list[int]:
    """Weights w_i such that f(at) = sum w_i f(x_i) for any f of degree < len(xs)."""
    weights = []
    for i, xi in enumerate(xs):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if i != j:
                num = num * (at - xj) % PRIME
                den = den * (xi - xj) % PRIME
        weights.append(num * pow(den, -1, PRIME) % PRIME)
    return weights


def interpolate(points: Mapping[int, Sequence[int]], at: int = 0) -> list[int]:
    """The vector at ``at`` of the polynomials through ``points`` (no error checking)."""
    xs = sorted(points)
    w = lagrange_at(xs, at)
    width = len(points[xs[0]])
    return [
        sum(wi * points[x][k] for wi, x in zip(w, xs, strict=True)) % PRIME for k in range(width)
    ]


def _solve(rows: list[list[int]]) -> list[int] | None:
    """One solution of the augmented system ``rows`` over the field (free unknowns 0), or None."""
    m = [r[:] for r in rows]
    n_unknowns = len(m[0]) - 1
    pivots: list[int] = []
    r = 0
    for c in range(n_unknowns):
        pivot = next((i for i in range(r, len(m)) if m[i][c]), None)
        if pivot is None:
            continue
        m[r], m[pivot] = m[pivot], m[r]
        inv = pow(m[r][c], -1, PRIME)
        m[r] = [v * inv % PRIME for v in m[r]]
        for i in range(len(m)):
            if i != r and m[i][c]:
                f = m[i][c]
                m[i] = [(a - f * b) % PRIME for a, b in zip(m[i], m[r], strict=True)]
        pivots.append(c)
        r += 1
        if r == len(m):
            break
    if any(all(v == 0 for v in row[:-1]) and row[-1] for row in m):
        return None
    sol = [0] * n_unknowns
    for i, c in enumerate(pivots):
        sol[c] = m[i][-1]
    return sol


def _poly_divide(num: list[int], den: list[int]) -> tuple[list[int], list[int]]:
    """(quotient, remainder) of polynomials given lowest coefficient first; den is monic."""
    num = num[:]
    q = [0] * max(len(num) - len(den) + 1, 1)
    for i in range(len(num) - len(den), -1, -1):
        coef = num[i + len(den) - 1]
        q[i] = coef
        if coef:
            for j, d in enumerate(den):
                num[i + j] = (num[i + j] - coef * d) % PRIME
    return q, num[: len(den) - 1]


def _eval(poly: Sequence[int], x: int) -> int:
    acc = 0
    for a in reversed(poly):
        acc = (acc * x + a) % PRIME
    return acc


def berlekamp_welch(points: Mapping[int, int], degree: int) -> tuple[list[int], set[int]]:
    """The polynomial (coefficients, lowest first) of ``degree`` through all but a few points,
    and the x of every point off it. Raises DecodeError when too many points disagree."""
    xs = sorted(points)
    n, k = len(xs), degree + 1
    if n < k:
        raise DecodeError(f"{n} shares cannot rebuild a polynomial of degree {degree}")
    e = (n - k) // 2
    # Unknowns: E's e low coefficients (E is monic of degree e), then Q's k + e coefficients.
    # Equation per point: Q(x) - y * (E_low(x)) = y * x^e
    rows = []
    for x in xs:
        y = points[x]
        row = [(-y * pow(x, j, PRIME)) % PRIME for j in range(e)]
        row += [pow(x, j, PRIME) for j in range(k + e)]
        row.append(y * pow(x, e, PRIME) % PRIME)
        rows.append(row)
    sol = _solve(rows)
    if sol is None:
        raise DecodeError(f"more than {e} of {n} shares are wrong: the result cannot be rebuilt")
    err_poly = [*sol[:e], 1]
    q_poly = sol[e:]
    poly, rem = _poly_divide(q_poly, err_poly)
    poly = (poly + [0] * k)[:k]
    bad = {x for x in xs if _eval(poly, x) != points[x]}
    if any(rem) or len(bad) > e:
        raise DecodeError(f"more than {e} of {n} shares are wrong: the result cannot be rebuilt")
    return poly, bad


@dataclass(frozen=True)
class Decoded:
    values: list[int]  # the vector at 0
    bad: frozenset[int]  # share points whose vector is off the decoded polynomials


def robust_reconstruct(points: Mapping[int, Sequence[int]], threshold: int) -> Decoded:
    """Rebuild a shared vector despite up to ``(n - threshold - 1) // 2`` wrong shares.

    The common case (every share consistent) costs one interpolation and one check per share.
    """
    xs = sorted(points)
    if len(xs) < threshold + 1:
        raise DecodeError(f"{len(xs)} shares cannot rebuild values shared at threshold {threshold}")
    width = len(points[xs[0]])
    if any(len(points[x]) != width for x in xs):
        raise DecodeError("the shares hold vectors of different lengths")
    base = xs[: threshold + 1]
    base_pts = {x: points[x] for x in base}
    consistent = all(
        interpolate(base_pts, at=x) == [v % PRIME for v in points[x]] for x in xs[threshold + 1 :]
    )
    if consistent:
        return Decoded(interpolate(base_pts, 0), frozenset())
    bad: set[int] = set()
    for k in range(width):
        _poly, off = berlekamp_welch({x: points[x][k] % PRIME for x in xs}, threshold)
        bad |= off
    good = {x: points[x] for x in xs if x not in bad}
    if len(good) < 2 * threshold + 1 or not is_consistent(good, threshold):
        raise DecodeError(f"shares from {sorted(bad)} disagree: the result cannot be rebuilt")
    return Decoded(
        interpolate({x: good[x] for x in sorted(good)[: threshold + 1]}, 0), frozenset(bad)
    )


def is_consistent(points: Mapping[int, Sequence[int]], threshold: int) -> bool:
    """True when every vector lies on the same degree-``threshold`` polynomials."""
    xs = sorted(points)
    base = {x: points[x] for x in xs[: threshold + 1]}
    return all(
        interpolate(base, at=x) == [v % PRIME for v in points[x]] for x in xs[threshold + 1 :]
    )


def check_cheaters(
    points: Mapping[int, Sequence[int]], cheaters: Iterable[int], threshold: int
) -> str | None:
    """The evidence check the Market contract runs: None when it holds, else why not.

    The others (at least 2t + 1 of them, so at least t + 1 honest whatever the cheaters did) lie
    on one degree-t polynomial, and each named cheater lies off it.
    """
    cheaters = set(cheaters)
    if not cheaters:
        return "no server is named"
    if len(cheaters) > threshold:
        return f"{len(cheaters)} servers named, more than the threshold {threshold}"
    if not cheaters <= set(points):
        return "a named server has no output"
    honest = {x: v for x, v in points.items() if x not in cheaters}
    if len(honest) < 2 * threshold + 1:
        return f"only {len(honest)} other outputs: need {2 * threshold + 1} to outvote"
    if not is_consistent(honest, threshold):
        return "the other outputs do not agree among themselves"
    base = {x: honest[x] for x in sorted(honest)[: threshold + 1]}
    for c in sorted(cheaters):
        if interpolate(base, at=c) == [v % PRIME for v in points[c]]:
            return f"the output at {c} agrees with the others"
    return None


def pack(values: Sequence[int]) -> bytes:
    return b"".join((v % PRIME).to_bytes(ELEMENT_BYTES, "big") for v in values)


def unpack(raw: bytes) -> list[int]:
    if len(raw) % ELEMENT_BYTES:
        raise ValueError(f"{len(raw)} bytes is not a whole number of field elements")
    vals = [
        int.from_bytes(raw[i : i + ELEMENT_BYTES], "big") for i in range(0, len(raw), ELEMENT_BYTES)
    ]
    if any(v >= PRIME for v in vals):
        raise ValueError("a share holds a value outside the field")
    return vals


def add_into(acc: list[int], vec: Sequence[int]) -> None:
    """acc += vec, reduced lazily by the caller (Python ints do not overflow)."""
    for i, v in enumerate(vec):
        acc[i] += v


def reduce(vec: Iterable[int]) -> list[int]:
    return [v % PRIME for v in vec]


def centered(v: int) -> int:
    """A field element read as a signed integer (values above p/2 are negative)."""
    v %= PRIME
    return v - PRIME if v > PRIME // 2 else v
