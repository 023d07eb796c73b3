"""Signing EIP-1559 transactions: RLP and keccak as the spec lays them out, secp256k1 by libsecp256k1.

eth-account does the same with several layers of validation and formatting around it, which is
most of the cost when a gateway sends a transaction per lookup. The bytes are identical (RFC 6979
signatures are deterministic); a unit test holds the two to it.
"""

from __future__ import annotations

from functools import lru_cache

import coincurve
import rlp
from eth_utils import keccak, to_canonical_address

EIP1559 = b"\x02"


@lru_cache(maxsize=64)
def _key(secret: bytes) -> coincurve.PrivateKey:
    return coincurve.PrivateKey(secret)


def sign_eip1559(secret: bytes, tx: dict) -> tuple[bytes, str]:
    """(raw transaction, its 0x hash) for ``tx`` with chainId, nonce, fees, gas, to, value, data."""
    fields = [
        tx["chainId"],
        tx["nonce"],
        tx["maxPriorityFeePerGas"],
        tx["maxFeePerGas"],
        tx["gas"],
        to_canonical_address(tx["to"]),
        tx.get("value", 0),
        tx.get("data", b""),
        [],  # access list
    ]
    digest = keccak(EIP1559 + rlp.encode(fields))
    sig = _key(secret).sign_recoverable(digest, hasher=None)
    r, s, y_parity = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:64], "big"), sig[64]
    raw = EIP1559 + rlp.encode([*fields, y_parity, r, s])
    return raw, "0x" + keccak(raw).hex()
