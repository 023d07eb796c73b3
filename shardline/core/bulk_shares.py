"""Shamir sharing and adding of many field elements at once, over GF(2^127 - 1), without a Python
step per element.

``field_shares.share_rows`` does one Python multiply-add per element and share point: 100,000
producers' rows take seconds. Here every element of a batch sits in its own 256-bit slot of one
big integer, so a polynomial step for all elements is one big-integer multiply by the share point
and one add (a few passes over memory in C), and reduction modulo the Mersenne prime is two
masked shift-and-adds (2^127 = 1 mod p). NumPy moves the bytes between the slot layout and the
16-byte big-endian elements the servers store (``field_shares.pack``'s layout).

The shares are the same polynomials as ``field_shares``: degree ``threshold``, the secret at 0,
coefficients uniform from ``secrets``; any ``threshold + 1`` shares rebuild, fewer reveal nothing.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import numpy as np

from .field_shares import ELEMENT_BYTES, PRIME

MASK32 = np.uint64(0xFFFFFFFF)
MASK31 = np.uint64(0x7FFFFFFF)
MAX_POINT = 2**16


def _limbs(elements: bytes | np.ndarray) -> np.ndarray:
    """16-byte big-endian elements -> (4, count) uint64: a row per 32-bit limb, most significant
    first (limb-major, so that each step runs over contiguous memory)."""
    raw = elements.tobytes() if isinstance(elements, np.ndarray) else elements
    return np.ascontiguousarray(np.frombuffer(raw, dtype=">u4").reshape(-1, 4).T, dtype=np.uint64)


def _bytes(limbs: np.ndarray) -> bytes:
    return limbs.T.astype(">u4").tobytes()


_32 = np.uint64(32)
_31 = np.uint64(31)
_1 = np.uint64(1)


def _carry(v: np.ndarray, carry: np.ndarray) -> np.ndarray:
    """Carry each limb's excess into the next, in place; ``carry`` gets what leaves the top
    (multiples of 2^128). In-place NumPy steps: no array is allocated per step."""
    np.right_shift(v[3], _32, out=carry)
    v[3] &= MASK32
    for k in (2, 1, 0):
        v[k] += carry
        np.right_shift(v[k], _32, out=carry)
        v[k] &= MASK32
    return carry


def _reduce(v: np.ndarray) -> np.ndarray:
    """Limbs below 2^63 each -> the canonical element modulo p, in place (2^127 = 1 mod p)."""
    carry = np.empty(v.shape[1], dtype=np.uint64)
    top = np.empty_like(carry)
    _carry(v, carry)
    while True:
        np.right_shift(v[0], _31, out=top)
        np.left_shift(carry, _1, out=carry)  # 2^128 = 2 mod p
        top += carry
        v[0] &= MASK31
        v[3] += top
        _carry(v, carry)  # now below 2^128: nothing leaves the top
        if not (v[0] > MASK31).any():  # only values within 2^18 of 2^127 go round again
            break
    if (v[0] == MASK31).any():
        v[:, _is_p(v)] = 0
    return v


def _is_p(v: np.ndarray) -> np.ndarray:
    return (v[0] == MASK31) & (v[1] == MASK32) & (v[2] == MASK32) & (v[3] == MASK32)


def elements_of(values: np.ndarray) -> np.ndarray:
    """Signed integers below 2^63 in size -> (count, 16) big-endian field elements (x mod p)."""
    v = np.ascontiguousarray(values, dtype=np.int64).ravel()
    count = v.shape[0]
    out = np.zeros((count, 2), dtype=">u8")
    neg = v < 0
    out[~neg, 1] = v[~neg].astype(np.uint64)
    # p - |v| = (2^63 - 1) * 2^64 + (2^64 - 1 - |v|): no borrow for |v| < 2^63
    out[neg, 0] = np.uint64(2**63 - 1)
    out[neg, 1] = np.uint64(2**64 - 1) - (-v[neg]).astype(np.uint64)
    return out.view(np.uint8).reshape(count, ELEMENT_BYTES)


def random_field(count: int) -> np.ndarray:
    """(4, count) limbs of uniform field elements from ``secrets`` (127 random bits; the one
    value 2^127 - 1 is 0, a bias of 2^-127)."""
    v = _limbs(secrets.token_bytes(count * ELEMENT_BYTES))
    v[0] &= MASK31
    v[:, _is_p(v)] = 0
    return v


def share_elements(
    secret: np.ndarray | bytes, threshold: int, xs: Sequence[int], degree: int | None = None
) -> dict[int, bytes]:
    """Share every element of ``secret`` (packed 16-byte elements) with its own random
    polynomial of degree ``degree`` (default ``threshold``); each share point gets the packed
    concatenation of its shares (``field_shares.unpack`` reads it)."""
    degree = threshold if degree is None else degree
    if threshold < 0 or len(xs) <= threshold:
        raise ValueError(f"{len(xs)} shares cannot hide values at threshold {threshold}")
    if len(set(xs)) != len(xs) or any(not 0 < x < MAX_POINT for x in xs):
        raise ValueError(f"share points {list(xs)} must be distinct, between 1 and {MAX_POINT}")
    s0 = _limbs(secret)
    coeffs = [random_field(s0.shape[1]) for _ in range(degree)]
    out: dict[int, bytes] = {}
    for x in xs:
        px = np.uint64(x)
        if not coeffs:
            out[x] = _bytes(s0)
            continue
        acc = coeffs[-1] * px  # Horner, highest coefficient first: limbs stay below 2^49
        terms = [*reversed(coeffs[:-1]), s0]
        for i, c in enumerate(terms):
            acc += c
            _reduce(acc)
            if i < len(terms) - 1:
                acc *= px
        out[x] = _bytes(acc)
    return out


def share_matrix(values: np.ndarray, threshold: int, xs: Sequence[int]) -> dict[int, bytes]:
    """Rows of small signed integers (rows x width) shared t-of-n, row after row."""
    return share_elements(elements_of(values), threshold, xs)


def column_sums(blob: bytes, width: int) -> list[int]:
    """The sum modulo p of each column of packed rows of ``width`` elements.

    Each element is split into four 32-bit limbs, summed in 64 bits (exact for fewer than 2^32
    rows), and the limb sums are put back together.
    """
    if len(blob) % (width * ELEMENT_BYTES):
        raise ValueError(f"{len(blob)} bytes is not a whole number of rows of width {width}")
    limbs = np.frombuffer(blob, dtype=">u4").reshape(-1, width, 4)
    sums = limbs.sum(axis=0, dtype=np.uint64)
    return [
        sum(int(s) << (32 * (3 - k)) for k, s in enumerate(col)) % PRIME for col in sums.tolist()
    ]


def to_ints(blob: bytes) -> list[int]:
    """Packed elements as Python integers (two 64-bit halves each, joined)."""
    halves = np.frombuffer(blob, dtype=">u8").reshape(-1, 2)
    return [
        (h << 64) | lo for h, lo in zip(halves[:, 0].tolist(), halves[:, 1].tolist(), strict=True)
    ]


def limbs_of(blob: bytes) -> np.ndarray:
    """Packed elements -> (4, count) uint64 limbs (32 bits each, most significant first)."""
    return _limbs(blob)


CHUNK = 1 << 16  # rows per partial sum: 2^16 products below 2^48 stay below 2^64


def weighted_sum(limbs: np.ndarray, weights: np.ndarray) -> int:
    """sum(weights[i] * element[i]) modulo p, for elements as (4, count) limbs and 64-bit
    weights: the weights are cut into 16-bit limbs and each limb pair summed in 64 bits."""
    w = weights.astype(np.uint64)
    wl = np.stack([(w >> np.uint64(16 * j)) & np.uint64(0xFFFF) for j in range(4)])
    total = 0
    for start in range(0, limbs.shape[1], CHUNK):
        part = limbs[:, start : start + CHUNK] @ wl[:, start : start + CHUNK].T  # (4, 4)
        for k, row in enumerate(part.tolist()):
            for j, v in enumerate(row):
                total += v << (32 * (3 - k) + 16 * j)
    return total % PRIME


PRODUCT_CHUNK = 1 << 12  # rows per partial sum: 4096 terms below 2^51 stay below 2^63


def _limbs16(limbs: np.ndarray) -> np.ndarray:
    """(4, count) 32-bit limbs, most significant first -> (8, count) 16-bit limbs, least first."""
    out = np.empty((8, limbs.shape[1]), dtype=np.uint64)
    for k in range(4):
        src = limbs[3 - k]
        np.bitwise_and(src, np.uint64(0xFFFF), out=out[2 * k])
        np.right_shift(src, np.uint64(16), out=out[2 * k + 1])
    return out


def weighted_products(a: np.ndarray, b: np.ndarray | None, weights: np.ndarray) -> int:
    """sum(weights[i] * a[i] * b[i]) modulo p (b None: a squared), for (4, count) limbs and 64-bit
    weights, without a Python step per element: 16-bit limbs, the product's 15 limb columns
    summed per row in 64 bits, then a matrix product with the weights' 16-bit limbs per chunk."""
    la = _limbs16(a)
    lb = la if b is None else _limbs16(b)
    count = la.shape[1]
    cols = np.zeros((15, count), dtype=np.uint64)
    tmp = np.empty(count, dtype=np.uint64)
    for k in range(8):
        for j in range(8):
            if b is None and j < k:
                continue
            np.multiply(la[k], lb[j], out=tmp)
            if b is None and j > k:
                tmp <<= np.uint64(1)  # the pair (k, j) and (j, k) at once
            cols[k + j] += tmp  # at most 8 terms below 2^33 each: below 2^36
    w = weights.astype(np.uint64)
    wl = np.stack([(w >> np.uint64(16 * j)) & np.uint64(0xFFFF) for j in range(4)])
    total = 0
    for start in range(0, count, PRODUCT_CHUNK):
        part = wl[:, start : start + PRODUCT_CHUNK] @ cols[:, start : start + PRODUCT_CHUNK].T
        for j, row in enumerate(part.tolist()):
            for m, v in enumerate(row):
                total += v << (16 * (j + m))
    return total % PRIME
