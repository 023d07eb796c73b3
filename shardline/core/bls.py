"""BLS signatures on BN254 (alt_bn128), the curve the EVM's pairing precompile checks.

Signatures live in G1 and public keys in G2, so the mediator verifies an aggregate vote with
one call to the pairing precompile (``ecPairing``, EIP-197): e(sig, -g2) * prod e(H(m), pk_i)
== 1. H is try-and-increment onto G1 (x = keccak(m || ctr) mod p until x^3 + 3 is a square),
bit for bit what ``Mediator.hashToG1`` computes; the message is public, so its variable time
leaks nothing. A member proves possession of its key by signing the key itself (checked on chain
when the group is created), which defeats rogue-key aggregates. Arithmetic is py_ecc's.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from eth_abi import encode as abi_encode
from eth_utils import keccak
from py_ecc import optimized_bn128 as bn

P = bn.field_modulus
ORDER = bn.curve_order

G1Point = tuple[int, int]
G2Point = tuple[int, int, int, int]  # x.im, x.re, y.im, y.re: the precompile's order


class BlsError(ValueError):
    """A BLS key or signature that is malformed or does not verify."""


def hash_to_g1(message: bytes) -> G1Point:
    if len(message) != 32:
        raise BlsError(f"BLS messages are 32-byte digests, not {len(message)} bytes")
    ctr = 0
    while True:
        x = int.from_bytes(keccak(message + ctr.to_bytes(32, "big")), "big") % P
        y2 = (x * x * x + 3) % P
        y = pow(y2, (P + 1) // 4, P)
        if y * y % P == y2:
            return (x, y)
        ctr += 1


def _g1(p: G1Point):
    return (bn.FQ(p[0]), bn.FQ(p[1]), bn.FQ.one())


def _g2(k: G2Point):
    return (bn.FQ2([k[1], k[0]]), bn.FQ2([k[3], k[2]]), bn.FQ2.one())


def _enc_g1(p) -> G1Point:
    x, y = bn.normalize(p)
    return (int(x), int(y))


def _enc_g2(p) -> G2Point:
    x, y = bn.normalize(p)
    return (int(x.coeffs[1]), int(x.coeffs[0]), int(y.coeffs[1]), int(y.coeffs[0]))


@dataclass(frozen=True)
class BlsKey:
    secret: int

    @classmethod
    def generate(cls) -> BlsKey:
        return cls(secrets.randbelow(ORDER - 1) + 1)

    @classmethod
    def from_bytes(cls, raw: bytes) -> BlsKey:
        sk = int.from_bytes(raw, "big")
        if not 0 < sk < ORDER:
            raise BlsError("a BLS secret key is a nonzero scalar below the group order")
        return cls(sk)

    def to_bytes(self) -> bytes:
        return self.secret.to_bytes(32, "big")

    @property
    def public(self) -> G2Point:
        return _enc_g2(bn.multiply(bn.G2, self.secret))

    def sign(self, message: bytes) -> G1Point:
        return _enc_g1(bn.multiply(_g1(hash_to_g1(message)), self.secret))

    def proof_of_possession(self) -> G1Point:
        return self.sign(pop_message(self.public))


def pop_message(public: G2Point) -> bytes:
    """What a member signs to prove it holds its key: keccak(abi.encode(uint256[4] key))."""
    return keccak(abi_encode(["uint256[4]"], [list(public)]))


def aggregate(signatures: list[G1Point]) -> G1Point:
    if not signatures:
        raise BlsError("nothing to aggregate")
    acc = None
    for s in signatures:
        point = _g1(s)
        if not bn.is_on_curve(point, bn.b):
            raise BlsError("a signature is not a point on the curve")
        acc = point if acc is None else bn.add(acc, point)
    return _enc_g1(acc)


def verify_aggregate(signature: G1Point, message: bytes, publics: list[G2Point]) -> bool:
    """The check the mediator makes, repeated off chain (slow in pure Python: ~2 s per pairing)."""
    if not publics:
        return False
    acc = None
    for k in publics:
        point = _g2(k)
        if not bn.is_on_curve(point, bn.b2):
            return False
        acc = point if acc is None else bn.add(acc, point)
    sig = _g1(signature)
    if not bn.is_on_curve(sig, bn.b):
        return False
    return bn.pairing(bn.G2, sig) == bn.pairing(acc, _g1(hash_to_g1(message)))
