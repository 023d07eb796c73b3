"""Range checks the MPC servers run on the shares themselves, so that a producer that skips the
client's check cannot make a row count that the schema forbids.

The producer appends to each row's vector (``core.analytics``' linear sketch) a few *aux* bits:
for every numeric field, x - min written in L bits with the weights 1, 2, ..., 2^(L-2) and
R - 2^(L-1) + 1 (R = max - min, L = R's bit length), which can express exactly 0..R; and for a
field with histogram buckets, x's offset inside its bucket, the same way. Every rule the schema
sets is then a polynomial of degree at most 2 in the entries of the extended row:

- count: the row's count entry is 1;
- a numeric field: x = min + sum(weight_j * bit_j), every bit_j * bit_j = bit_j, the x^2 entry
  equals x * x; its buckets are bits, exactly one is 1, and x = min + width * (its index) +
  (the offset bits);
- a category field: the indicator of each value is a bit, exactly one is 1, and each of the
  value's context entries equals the indicator times the same entry of the all-rows context.

Each server evaluates, on its shares, a random combination of all these rules over all rows of a
contribution (degree 2t in the share point), plus x_i * eta(x_i) for a random polynomial eta of
degree 2t - 1 that the producer shared with the rows; and a random combination of every shared
entry plus a random degree-t sharing w from the producer. The servers exchange the two numbers
and accept the contribution when the first points lie on one polynomial of degree 2t that is 0
at 0 and the second on one of degree t. The weights come from the hash of the block that put the
contribution's digest on chain: the producer fixed its shares before it could know them.

Soundness: if any rule fails for any row (or a sharing is not of degree t), the combination is
not 0 (or not of degree t) except with probability about 2^-60 per contribution (64-bit
weights reduced modulo p = 2^61 - 1: each residue has at most 9 preimages); with all n >=
3t + 1 points the 2t + 1 honest ones decide. Privacy: for an honest producer every rule is 0, so
the opened degree-2t polynomial is, beyond what a coalition of t servers computes from its own
shares, uniform among those vanishing at 0 (x * eta(x) hides it), and the second number is
masked by w(0): the opening says "valid" and nothing else.
"""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from . import bulk_shares as bs
from .analytics import Field, Schema
from .field_shares import PRIME, interpolate, is_consistent

SMALL_BATCH = 256  # below this many rows, Python integers beat NumPy's per-call cost
Term = tuple[int, int, int]  # coefficient * entry_a * entry_b
Lin = tuple[int, int]  # coefficient * entry_a


@dataclass(frozen=True)
class Rule:
    quad: tuple[Term, ...] = ()
    lin: tuple[Lin, ...] = ()
    const: int = 0


def bit_weights(span: int) -> list[int]:
    """Weights of bits that express exactly the integers 0..span."""
    if span <= 0:
        return []
    bits = span.bit_length()
    return [1 << j for j in range(bits - 1)] + [span - (1 << (bits - 1)) + 1]


def to_bits(values: np.ndarray, span: int) -> np.ndarray:
    """(count, bits) 0/1 matrix with sum(weights * bits) = values (0 <= values <= span)."""
    w = bit_weights(span)
    out = np.zeros((values.shape[0], len(w)), dtype=np.int64)
    if not w:
        return out
    top = values >= w[-1]
    out[:, -1] = top
    rest = values - top * w[-1]
    for j in range(len(w) - 1):
        out[:, j] = (rest >> j) & 1
    return out


@dataclass(frozen=True)
class Layout:
    """Where the aux bits sit after the sketch, and the rules over the extended row."""

    width: int  # the sketch
    aux: int
    rules: tuple[Rule, ...]

    @property
    def extended(self) -> int:
        return self.width + self.aux


def _span(f: Field) -> int:
    return f.scaled(f.max) - f.scaled(f.min)


def layout(schema: Schema) -> Layout:
    rules: list[Rule] = [Rule(lin=((1, 0),), const=-1)]  # the all-rows count entry is 1
    at = schema.width
    for f in schema.fields:
        if not f.numeric:
            continue
        ix, isq, ib = schema.offsets(f.name)
        lo = f.scaled(f.min)
        w = bit_weights(_span(f))
        bits = list(range(at, at + len(w)))
        at += len(w)
        rules.append(
            Rule(lin=((1, ix), *((-c, b) for c, b in zip(w, bits, strict=True))), const=-lo)
        )
        rules += [Rule(quad=((1, b, b),), lin=((-1, b),)) for b in bits]
        rules.append(Rule(quad=((1, ix, ix),), lin=((-1, isq),)))
        if f.buckets:
            width = f.scaled(f.bin_width)
            buckets = list(range(ib, ib + f.buckets))
            rules += [Rule(quad=((1, b, b),), lin=((-1, b),)) for b in buckets]
            rules.append(Rule(lin=tuple((1, b) for b in buckets), const=-1))
            ow = bit_weights(width - 1)
            obits = list(range(at, at + len(ow)))
            at += len(ow)
            rules += [Rule(quad=((1, b, b),), lin=((-1, b),)) for b in obits]
            lin = [(1, ix), *((-width * k, b) for k, b in enumerate(buckets))]
            lin += [(-c, b) for c, b in zip(ow, obits, strict=True)]
            rules.append(Rule(lin=tuple(lin), const=-lo))
    cw = schema.context_width
    contexts = schema.contexts
    for f in schema.fields:
        if f.type != "category":
            continue
        inds = [schema.context_index((f.name, v)) * cw for v in f.values]
        rules += [Rule(quad=((1, i, i),), lin=((-1, i),)) for i in inds]
        rules.append(Rule(lin=tuple((1, i) for i in inds), const=-1))
        for i in inds:
            rules += [Rule(quad=((1, i, k),), lin=((-1, i + k),)) for k in range(1, cw)]
    assert len(contexts) * cw == schema.width
    return Layout(schema.width, at - schema.width, tuple(rules))


def aux_bits(schema: Schema, matrix: np.ndarray) -> np.ndarray:
    """The aux bits of encoded rows (the sketch matrix, rows x width)."""
    parts = []
    for f in schema.fields:
        if not f.numeric:
            continue
        ix, _isq, _ib = schema.offsets(f.name)
        d = matrix[:, ix] - f.scaled(f.min)
        parts.append(to_bits(d, _span(f)))
        if f.buckets:
            width = f.scaled(f.bin_width)
            parts.append(to_bits(d % width, width - 1))
    if not parts:
        return np.zeros((matrix.shape[0], 0), dtype=np.int64)
    return np.concatenate(parts, axis=1)


# ---- what each server computes ----------------------------------------------------------------
def seed(block_hash: bytes, digest: bytes) -> bytes:
    return hashlib.sha256(b"shardline.analytics.check" + block_hash + digest).digest()


def weights(seed_: bytes, label: bytes, count: int) -> np.ndarray:
    """``count`` 64-bit weights from the seed: the AES-256-CTR keystream under
    SHA-256(seed, label) (a vetted PRF, and fast where SHAKE over megabytes is not)."""
    key = hashlib.sha256(seed_ + label).digest()
    enc = Cipher(algorithms.AES(key), modes.CTR(b"\x00" * 16)).encryptor()
    return np.frombuffer(enc.update(bytes(8 * count)) + enc.finalize(), dtype="<u8")


@dataclass(frozen=True)
class CheckPoint:
    consistency: int  # sum(tau * entry) + w(x): on a degree-t polynomial
    rules: int  # sum(sigma * rule(row)) + x * eta(x): on a degree-2t polynomial, 0 at 0


def evaluate(
    lay: Layout, entries: bytes, rows: int, x: int, w: int, eta: int, seed_: bytes
) -> CheckPoint:
    """One server's point: ``entries`` are its shares of the extended rows, packed, row after
    row. Weighted sums and products in NumPy uint64: no Python step per element."""
    if rows < SMALL_BATCH:
        return _evaluate_small(lay, entries, rows, x, w, eta, seed_)
    return evaluate_array(lay, bs.elements(entries), rows, x, w, eta, seed_)


def evaluate_array(
    lay: Layout, v: np.ndarray, rows: int, x: int, w: int, eta: int, seed_: bytes
) -> CheckPoint:
    """``evaluate`` on canonical uint64 elements (``bulk_shares.elements``)."""
    e = lay.extended
    if v.shape[0] != rows * e:
        raise ValueError(f"{v.shape[0]} shares are not {rows} rows of {e}")
    tau = bs.field_weights(weights(seed_, b"C", rows * e))
    consistency = (bs.weighted_sum(v, tau) + w) % PRIME
    sigma = bs.field_weights(weights(seed_, b"R", rows * len(lay.rules))).reshape(
        len(lay.rules), rows
    )
    cols: dict[int, np.ndarray] = {}
    col_limbs: dict[int, np.ndarray] = {}

    def column(a: int) -> np.ndarray:
        if a not in cols:
            cols[a] = np.ascontiguousarray(v[a::e])
        return cols[a]

    def column_limbs(a: int) -> np.ndarray:
        if a not in col_limbs:
            col_limbs[a] = bs.limbs(column(a))
        return col_limbs[a]

    total = 0
    for r, rule in enumerate(lay.rules):
        sig = bs.limbs(sigma[r])
        for coef, a in rule.lin:
            total += coef * bs.weighted_sum(column_limbs(a), sig)
        if rule.const:
            total += rule.const * bs.element_sum(sigma[r])
        for coef, a, b in rule.quad:
            total += coef * bs.weighted_products(column(a), None if a == b else column(b), sig)
    return CheckPoint(consistency, (total + x * eta) % PRIME)


def _evaluate_small(
    lay: Layout, entries: bytes, rows: int, x: int, w: int, eta: int, seed_: bytes
) -> CheckPoint:
    """``evaluate`` in Python integers: for a few rows, NumPy's per-call cost dominates."""
    e = lay.extended
    vals = bs.to_ints(entries)
    if len(vals) != rows * e:
        raise ValueError(f"{len(vals)} shares are not {rows} rows of {e}")
    tau = [t % PRIME for t in weights(seed_, b"C", rows * e).tolist()]
    consistency = (sum(map(operator.mul, tau, vals)) + w) % PRIME
    sigma = [s % PRIME for s in weights(seed_, b"R", rows * len(lay.rules)).tolist()]
    total = 0
    for r in range(rows):
        row = vals[r * e : (r + 1) * e]
        for i, rule in enumerate(lay.rules):
            v = rule.const
            for coef, a, b in rule.quad:
                v += coef * row[a] * row[b]
            for coef, a in rule.lin:
                v += coef * row[a]
            total += sigma[i * rows + r] * v
    return CheckPoint(consistency, (total + x * eta) % PRIME)


def verdict(points: Mapping[int, CheckPoint], threshold: int) -> str | None:
    """None when the contribution passes, else why not (from every server's point)."""
    cons = {x: [p.consistency] for x, p in points.items()}
    rules = {x: [p.rules] for x, p in points.items()}
    if not is_consistent(cons, threshold):
        return "the shares are not all of degree t (an inconsistent sharing)"
    if len(rules) < 2 * threshold + 2 or not is_consistent(rules, 2 * threshold):
        return "the range check does not decode"
    xs = sorted(rules)[: 2 * threshold + 1]
    if interpolate({x: rules[x] for x in xs}, 0)[0] != 0:
        return "a row breaks the schema (a value out of range, or a malformed row)"
    return None
