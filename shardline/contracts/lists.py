"""Typed async helpers over ListAgreements: record a pair's agreement digest, read it back.

List ids travel as ``bytes16``, pair ids and digests as ``bytes32``, org ids as ``bytes32``
(ASCII, zero-padded).
"""

from __future__ import annotations

from eth_account.signers.local import LocalAccount

from ..core.ids import org_id_to_bytes32
from .client import Chain, TxResult
from .deploy import Deployment

RECORD_GAS = 120_000


class ListsNotDeployed(RuntimeError):
    pass


def _contract(chain: Chain, deployment: Deployment):
    if not deployment.list_agreements:
        raise ListsNotDeployed(
            "this deployment has no ListAgreements contract (it predates distribution lists): "
            "redeploy with `shardline down && shardline up`"
        )
    return chain.contract("ListAgreements", deployment.list_agreements)


async def record_agreement(
    chain: Chain,
    account: LocalAccount,
    deployment: Deployment,
    list_id: str,
    pair_id: str,
    digest: str,
) -> TxResult:
    fn = _contract(chain, deployment).functions.record(
        bytes.fromhex(list_id), bytes.fromhex(pair_id), bytes.fromhex(digest)
    )
    return await chain.transact(account, fn, gas=RECORD_GAS)


async def recorded_digest(
    chain: Chain, deployment: Deployment, list_id: str, pair_id: str, org: str
) -> str | None:
    """The digest ``org`` recorded for the pair, or None when it recorded none."""
    raw = await chain.read(
        _contract(chain, deployment).functions.digestOf(
            bytes.fromhex(list_id), bytes.fromhex(pair_id), org_id_to_bytes32(org)
        )
    )
    value = bytes(raw)
    return None if value == b"\0" * 32 else value.hex()
