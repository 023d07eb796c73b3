"""Shamir sharing and adding of many field elements at once, over GF(2^61 - 1), in NumPy uint64
arrays without a Python step per element.

An element is one machine word: reduction modulo the Mersenne prime p = 2^61 - 1 is a mask, a
shift and an add (2^61 = 1 mod p), a product of two elements is four 32-bit partial products
folded the same way (2^64 = 8 mod p), and a Horner step with a share point below 8 (every point
of n <= 7 servers) is one multiply-add that stays below 2^64. On the wire and in the servers'
tables an element is 8 bytes big-endian (``field_shares.pack``'s layout).

The shares are the same polynomials as ``field_shares``: degree ``threshold``, the secret at 0,
coefficients uniform from ``secrets``; any ``threshold + 1`` shares rebuild, fewer reveal nothing.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .field_shares import ELEMENT_BYTES, PRIME, lagrange_at

P = np.uint64(PRIME)
MASK32 = np.uint64(0xFFFFFFFF)
MASK29 = np.uint64((1 << 29) - 1)
MAX_POINT = 2**16
WIRE = np.dtype(">u8")
_61 = np.uint64(61)
_32 = np.uint64(32)
_29 = np.uint64(29)
_3 = np.uint64(3)
SMALL_POINT = 8  # x * acc + c < 8p < 2^64: one multiply-add per Horner step


def reduce(v: np.ndarray) -> np.ndarray:
    """Any uint64 values -> canonical elements modulo p, in place."""
    top = v >> _61
    v &= P
    v += top  # below 2^61 + 8
    np.subtract(v, P, out=v, where=v >= P)
    return v


def mulmod(a: np.ndarray, b: np.ndarray | np.uint64) -> np.ndarray:
    """a * b mod p for canonical elements (a new canonical array)."""
    a0, a1 = a & MASK32, a >> _32
    b0, b1 = b & MASK32, b >> _32
    mid = a0 * b1
    mid += a1 * b0  # below 2^62
    out = a1 * b1  # below 2^58: times 2^64 = 8 mod p
    out <<= _3
    out += mid >> _29  # mid * 2^32 = (mid >> 29) * 2^61 + (mid & (2^29 - 1)) * 2^32
    mid &= MASK29
    mid <<= _32
    out += mid
    lo = a0 * b0
    out += lo >> _61
    lo &= P
    out += lo  # below 2^63
    return reduce(out)


def elements(blob: bytes) -> np.ndarray:
    """Packed 8-byte big-endian elements -> native uint64; ValueError if one is not below p."""
    if len(blob) % ELEMENT_BYTES:
        raise ValueError(f"{len(blob)} bytes is not a whole number of field elements")
    v = np.frombuffer(blob, dtype=WIRE).astype(np.uint64)
    if v.size and v.max() >= P:
        raise ValueError("a share holds a value outside the field")
    return v


def packed(v: np.ndarray) -> bytes:
    return v.astype(WIRE).tobytes()


def elements_of(values: np.ndarray) -> np.ndarray:
    """Signed 64-bit integers -> canonical elements (x mod p), uint64."""
    v = np.ascontiguousarray(values, dtype=np.int64).ravel()
    neg = v < 0
    mag = reduce(np.abs(v).astype(np.uint64))  # |v| < 2^63: no overflow in abs except -2^63
    out = mag.copy()
    nz = neg & (mag != 0)
    out[nz] = P - mag[nz]
    return out


def random_bytes(count: int) -> bytes:
    """``count`` random bytes: AES-256-CTR under a fresh 32-byte key from ``secrets`` (a
    vetted keystream generator; megabytes at memory speed where ``os.urandom`` is slower)."""
    if count <= 4096:
        return secrets.token_bytes(count)
    enc = Cipher(algorithms.AES(secrets.token_bytes(32)), modes.CTR(bytes(16))).encryptor()
    return enc.update(bytes(count)) + enc.finalize()


def random_field(count: int) -> np.ndarray:
    """``count`` uniform elements (61 random bits each, the one value p redrawn)."""
    v = np.frombuffer(random_bytes(count * 8), dtype=np.uint64) & P
    while True:
        bad = np.flatnonzero(v == P)
        if not bad.size:
            return v
        v[bad] = np.frombuffer(secrets.token_bytes(bad.size * 8), dtype=np.uint64) & P


def share_elements(
    secret: np.ndarray | bytes, threshold: int, xs: Sequence[int], degree: int | None = None
) -> dict[int, bytes]:
    """Share every element of ``secret`` (packed bytes, or canonical uint64) with its own random
    polynomial of degree ``degree`` (default ``threshold``); each share point gets the packed
    concatenation of its shares (``field_shares.unpack`` reads it)."""
    return {x: packed(v) for x, v in share_arrays(secret, threshold, xs, degree).items()}


def share_arrays(
    secret: np.ndarray | bytes, threshold: int, xs: Sequence[int], degree: int | None = None
) -> dict[int, np.ndarray]:
    """``share_elements`` as uint64 arrays."""
    degree = threshold if degree is None else degree
    if threshold < 0 or len(xs) <= threshold:
        raise ValueError(f"{len(xs)} shares cannot hide values at threshold {threshold}")
    if len(set(xs)) != len(xs) or any(not 0 < x < MAX_POINT for x in xs):
        raise ValueError(f"share points {list(xs)} must be distinct, between 1 and {MAX_POINT}")
    s0 = elements(secret) if isinstance(secret, bytes | bytearray) else secret
    coeffs = [random_field(s0.shape[0]) for _ in range(degree)]
    out: dict[int, np.ndarray] = {}
    for x in xs:
        px = np.uint64(x)
        acc = s0.copy()
        if coeffs:
            acc = coeffs[-1].copy()  # Horner, highest coefficient first
            for c in [*reversed(coeffs[:-1]), s0]:
                if x < SMALL_POINT:
                    acc *= px
                else:
                    acc = mulmod(acc, px)
                acc += c
                reduce(acc)
        out[x] = acc
    return out


SEED_BYTES = 32


def expand_seed(seed: bytes, count: int) -> np.ndarray:
    """``count`` uniform elements determined by ``seed``: the AES-256-CTR keystream under it,
    61 bits per word, words equal to p skipped (so every value is equally likely)."""
    if len(seed) != SEED_BYTES:
        raise ValueError(f"a share seed is {SEED_BYTES} bytes, not {len(seed)}")
    enc = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()
    v = np.frombuffer(enc.update(bytes(8 * count)), dtype=np.uint64) & P
    if not (v == P).any():
        return v
    keep = v[v != P]
    while keep.shape[0] < count:
        more = np.frombuffer(enc.update(bytes(8 * (count - keep.shape[0]))), dtype=np.uint64) & P
        keep = np.concatenate([keep, more[more != P]])
    return keep


def scale(v: np.ndarray, c: int) -> np.ndarray:
    """v * c mod p (a new array): one multiply when c or -c is below 8, else ``mulmod``."""
    c %= PRIME
    if c < SMALL_POINT:
        return reduce(v * np.uint64(c))
    if PRIME - c < SMALL_POINT:
        out = reduce(v * np.uint64(PRIME - c))
        np.subtract(P, out, out=out, where=out != 0)
        return out
    return mulmod(v, np.uint64(c))


def share_seeded(
    secret: np.ndarray, threshold: int, xs: Sequence[int]
) -> tuple[dict[int, bytes], dict[int, np.ndarray]]:
    """Shamir shares of ``secret`` where the first ``threshold`` points' shares are the expansion
    of a fresh seed each (pseudo-random secret sharing): those servers get 32 bytes instead of
    their shares. With the secret at 0, the t seeded values fix the polynomial of degree t, a
    uniform one as with ``share_arrays`` (the seeds are uniform; AES-CTR stands for randomness);
    every other share is its Lagrange combination. Returns (seeds, shares of the rest)."""
    if threshold < 1 or len(xs) <= threshold:
        raise ValueError(f"{len(xs)} shares cannot hide values at threshold {threshold}")
    if len(set(xs)) != len(xs) or any(not 0 < x < MAX_POINT for x in xs):
        raise ValueError(f"share points {list(xs)} must be distinct, between 1 and {MAX_POINT}")
    seeded, rest = list(xs[:threshold]), list(xs[threshold:])
    seeds = {x: secrets.token_bytes(SEED_BYTES) for x in seeded}
    values = [secret, *(expand_seed(seeds[x], secret.shape[0]) for x in seeded)]
    nodes = [0, *seeded]
    out: dict[int, np.ndarray] = {}
    for x in rest:
        acc = None
        for weight, v in zip(lagrange_at(nodes, x), values, strict=True):
            term = scale(v, weight)
            if acc is None:
                acc = term
            else:
                acc += term
                reduce(acc)
        out[x] = acc  # type: ignore[assignment]
    return seeds, out


def column_sums(blob: bytes, width: int) -> list[int]:
    """The sum modulo p of each column of packed rows of ``width`` elements (exact: the low 32
    and high 29 bits of each element are summed apart, in 64 bits, for fewer than 2^32 rows)."""
    if len(blob) % (width * ELEMENT_BYTES):
        raise ValueError(f"{len(blob)} bytes is not a whole number of rows of width {width}")
    return array_column_sums(np.frombuffer(blob, dtype=WIRE).astype(np.uint64), width)


def array_column_sums(v: np.ndarray, width: int) -> list[int]:
    m = v.reshape(-1, width)
    lo = (m & MASK32).sum(axis=0, dtype=np.uint64).tolist()
    hi = (m >> _32).sum(axis=0, dtype=np.uint64).tolist()
    return [((h << 32) + lo_) % PRIME for h, lo_ in zip(hi, lo, strict=True)]


def element_sum(v: np.ndarray) -> int:
    """The exact sum of canonical elements, as a Python integer modulo p."""
    lo = int((v & MASK32).sum(dtype=np.uint64))
    hi = int((v >> _32).sum(dtype=np.uint64))
    return ((hi << 32) + lo) % PRIME


def to_ints(blob: bytes) -> list[int]:
    return np.frombuffer(blob, dtype=WIRE).tolist()


def field_weights(weights: np.ndarray) -> np.ndarray:
    """64-bit weights -> elements (reduced modulo p)."""
    return reduce(weights.astype(np.uint64, copy=True))


LIMB = 21
MASK21 = np.uint64((1 << LIMB) - 1)
DOT_CHUNK = 1 << 22  # 21-bit limb products are below 2^42: 2^22 of them sum below 2^64


def limbs(v: np.ndarray) -> np.ndarray:
    """Canonical elements -> (3, count) 21-bit limbs, least significant first."""
    out = np.empty((3, v.shape[0]), dtype=np.uint64)
    np.bitwise_and(v, MASK21, out=out[0])
    np.right_shift(v, np.uint64(LIMB), out=out[1])
    out[1] &= MASK21
    np.right_shift(v, np.uint64(2 * LIMB), out=out[2])
    return out


def weighted_sum(v: np.ndarray, weights: np.ndarray) -> int:
    """sum(weights[i] * v[i]) modulo p, for canonical elements (or their ``limbs``) and weights
    already reduced (``field_weights``, or their ``limbs``): nine dot products of 21-bit limbs,
    exact in 64 bits, then the limbs put together."""
    lv = v if v.ndim == 2 else limbs(v)
    lw = weights if weights.ndim == 2 else limbs(weights)
    total = 0
    for start in range(0, lv.shape[1], DOT_CHUNK):
        end = start + DOT_CHUNK
        for j in range(3):
            for k in range(3):
                total += int(np.dot(lv[j, start:end], lw[k, start:end])) << (LIMB * (j + k))
    return total % PRIME


def weighted_products(a: np.ndarray, b: np.ndarray | None, weights: np.ndarray) -> int:
    """sum(weights[i] * a[i] * b[i]) modulo p (b None: a squared), weights reduced (or limbs)."""
    return weighted_sum(mulmod(a, a if b is None else b), weights)
