"""Shamir's secret sharing over the prime field GF(2^521 - 1).

A secret of any length is framed (4-byte length, then the bytes), cut into 64-byte chunks, and
each chunk is shared with its own random polynomial of degree t-1; a share is the evaluation of
every chunk's polynomial at the share's x. Any t shares rebuild the secret; fewer reveal nothing
about it, whatever the attacker's computing power.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

PRIME = 2**521 - 1
CHUNK = 64  # bytes per field element: 512 bits < 521
ELEMENT = 66  # bytes to write one field element
MAX_SHARES = 255


class ShamirError(ValueError):
    """Shares that cannot rebuild a secret (too few, mixed, duplicated or malformed)."""


@dataclass(frozen=True)
class Share:
    x: int
    ys: tuple[int, ...]

    def to_bytes(self) -> bytes:
        return self.x.to_bytes(2, "big") + b"".join(y.to_bytes(ELEMENT, "big") for y in self.ys)

    @classmethod
    def from_bytes(cls, raw: bytes) -> Share:
        if len(raw) < 2 + ELEMENT or (len(raw) - 2) % ELEMENT:
            raise ShamirError(f"a share of {len(raw)} bytes is malformed")
        x = int.from_bytes(raw[:2], "big")
        ys = tuple(int.from_bytes(raw[i : i + ELEMENT], "big") for i in range(2, len(raw), ELEMENT))
        if not 1 <= x <= MAX_SHARES or any(y >= PRIME for y in ys):
            raise ShamirError("a share holds a value outside the field")
        return cls(x, ys)


def _frame(secret: bytes) -> list[int]:
    framed = len(secret).to_bytes(4, "big") + secret
    framed += b"\0" * (-len(framed) % CHUNK)
    return [int.from_bytes(framed[i : i + CHUNK], "big") for i in range(0, len(framed), CHUNK)]


def _unframe(chunks: list[int]) -> bytes:
    raw = b"".join(c.to_bytes(CHUNK, "big") if c < 2 ** (8 * CHUNK) else b"\xff" for c in chunks)
    if len(raw) != CHUNK * len(chunks):
        raise ShamirError("the rebuilt value is not a framed secret: the shares do not match")
    length = int.from_bytes(raw[:4], "big")
    if length > len(raw) - 4 or any(raw[4 + length :]):
        raise ShamirError("the rebuilt value is not a framed secret: the shares do not match")
    return raw[4 : 4 + length]


def split(secret: bytes, threshold: int, count: int) -> list[Share]:
    """Share ``secret`` so that any ``threshold`` of the ``count`` shares rebuild it."""
    if not 1 <= threshold <= count <= MAX_SHARES:
        raise ShamirError(
            f"cannot split {threshold}-of-{count}: need 1 <= threshold <= count <= {MAX_SHARES}"
        )
    polys = [[c] + [secrets.randbelow(PRIME) for _ in range(threshold - 1)] for c in _frame(secret)]
    shares = []
    for x in range(1, count + 1):
        ys = []
        for coeffs in polys:
            acc = 0
            for a in reversed(coeffs):  # Horner
                acc = (acc * x + a) % PRIME
            ys.append(acc)
        shares.append(Share(x, tuple(ys)))
    return shares


def combine(shares: list[Share]) -> bytes:
    """Rebuild the secret from shares (pass exactly the ones to use: at least the threshold)."""
    if not shares:
        raise ShamirError("no shares to combine")
    xs = [s.x for s in shares]
    if len(set(xs)) != len(xs):
        raise ShamirError(f"duplicate share indexes {sorted(xs)}")
    width = len(shares[0].ys)
    if any(len(s.ys) != width for s in shares):
        raise ShamirError("shares of different secrets were mixed")
    # Lagrange basis at 0: l_i = prod_{j != i} x_j / (x_j - x_i)
    basis = []
    for i, xi in enumerate(xs):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if i != j:
                num = num * xj % PRIME
                den = den * (xj - xi) % PRIME
        basis.append(num * pow(den, -1, PRIME) % PRIME)
    chunks = [
        sum(s.ys[k] * b for s, b in zip(shares, basis, strict=True)) % PRIME for k in range(width)
    ]
    return _unframe(chunks)
