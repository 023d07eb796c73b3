"""A block header's logs bloom: which addresses and topics its logs may hold (no I/O).

Every header carries a 2048-bit bloom filter of the addresses and topics of its block's logs
(Ethereum yellow paper, section 4.3.1): for each, three bits chosen by the first six bytes of its
keccak-256 hash. A bloom without all three bits of a value proves no log of the block has that
value; with them, it may. A reader that wants the logs of some contracts with some first topics
can therefore pass over a block whose bloom rules them out without asking the node for its logs.
"""

from __future__ import annotations

from collections.abc import Iterable

from eth_utils import keccak

BLOOM_BYTES = 256


def mask(value: bytes) -> int:
    """The bloom bits of one address (20 bytes) or topic (32 bytes), as an integer."""
    h = keccak(value)
    bits = 0
    for i in (0, 2, 4):
        bits |= 1 << (((h[i] << 8) | h[i + 1]) & 2047)
    return bits


def parse(hex_bloom: str) -> int:
    """A header's ``logsBloom`` as an integer (the big-endian reading of its 256 bytes)."""
    raw = bytes.fromhex(hex_bloom[2:] if hex_bloom.startswith("0x") else hex_bloom)
    if len(raw) != BLOOM_BYTES:
        raise ValueError(f"a logs bloom has {BLOOM_BYTES} bytes, not {len(raw)}")
    return int.from_bytes(raw, "big")


def may_hold(bloom: int, bits: int) -> bool:
    """False only when the block holds no log with the value whose bloom bits are ``bits``."""
    return bloom & bits == bits


def may_match(bloom: int, addresses: Iterable[int], topics0: Iterable[int]) -> bool:
    """Whether the block may hold a log of one of ``addresses`` (any, when none are given) whose
    first topic is one of ``topics0`` (any, when none are given); each given as its ``mask``."""
    topics0 = list(topics0)
    if topics0 and not any(may_hold(bloom, t) for t in topics0):
        return False
    addresses = list(addresses)
    return not addresses or any(may_hold(bloom, a) for a in addresses)
