"""Commitments that let a combiner name a wrong share and check the rebuilt record.

The on-chain commitment binds, for one transport version, the threshold, the share count, a
commitment to the record and one hash per share. Each org node keeps the opening (the record
commitment and the share hashes) beside its share and sends it with the share; the combiner
checks the opening against the chain, then each share against its hash. The record commitment
covers a 32-byte random salt that travels inside the shared secret, so a guessable cargo sheet
cannot be confirmed by hashing candidates.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

SALT_BYTES = 32


def _h(*parts: bytes) -> bytes:
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(4, "big"))
        h.update(p)
    return h.digest()


def record_commitment(transport_key: bytes, secret: bytes) -> bytes:
    return _h(b"shardline.record.v1", transport_key, secret)


def share_hash(transport_key: bytes, share_bytes: bytes) -> bytes:
    return _h(b"shardline.share.v1", transport_key, share_bytes)


@dataclass(frozen=True)
class Opening:
    """What an org node holds beside its share to prove it against the on-chain commitment."""

    record: bytes
    leaves: tuple[bytes, ...]

    def to_dict(self) -> dict:
        return {"record": self.record.hex(), "leaves": [leaf.hex() for leaf in self.leaves]}

    @classmethod
    def from_dict(cls, d: dict) -> Opening:
        return cls(bytes.fromhex(d["record"]), tuple(bytes.fromhex(x) for x in d["leaves"]))


def commitment(transport_key: bytes, threshold: int, opening: Opening) -> bytes:
    return _h(
        b"shardline.commit.v1",
        transport_key,
        threshold.to_bytes(1, "big"),
        len(opening.leaves).to_bytes(2, "big"),
        opening.record,
        *opening.leaves,
    )


def opening_matches(transport_key: bytes, threshold: int, opening: Opening, onchain: bytes) -> bool:
    return hmac.compare_digest(commitment(transport_key, threshold, opening), onchain)


def share_matches(transport_key: bytes, opening: Opening, x: int, share_bytes: bytes) -> bool:
    if not 1 <= x <= len(opening.leaves):
        return False
    return hmac.compare_digest(share_hash(transport_key, share_bytes), opening.leaves[x - 1])


def secret_matches(transport_key: bytes, opening: Opening, secret: bytes) -> bool:
    return hmac.compare_digest(record_commitment(transport_key, secret), opening.record)
