"""Typed async helpers over RecordsRegistry: parties, records, grants and their events.

Party ids and org ids travel as ``bytes32`` (ASCII, zero-padded); record ids as ``bytes16``.
"""

from __future__ import annotations

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from web3 import Web3

from ..core.ids import org_id_from_bytes32, org_id_to_bytes32
from ..core.records import Grant, Party, RecordInfo, UnknownRecord
from .client import Chain, ChainRevert, TxResult
from .cursor import RawLog, Rpc
from .deploy import Deployment

ACCESS_GRANTED = (
    "0x" + keccak(text="AccessGranted(bytes16,bytes32,uint32,uint8,bytes32[],uint64)").hex()
)
ACCESS_REVOKED = "0x" + keccak(text="AccessRevoked(bytes16,bytes32,uint32)").hex()

PARTY_GAS = 300_000
RECORD_GAS = 300_000


class RecordsNotDeployed(RuntimeError):
    pass


def _address(deployment: Deployment) -> str:
    if not deployment.records_registry:
        raise RecordsNotDeployed(
            "this deployment has no RecordsRegistry (it predates records): redeploy with "
            "`shardline down && shardline up`"
        )
    return deployment.records_registry


def _registry(chain: Chain, deployment: Deployment):
    return chain.contract("RecordsRegistry", _address(deployment))


def _rid(record_id: str) -> bytes:
    return bytes.fromhex(record_id)


# -- parties -------------------------------------------------------------------------------
async def register_party(
    chain: Chain,
    account: LocalAccount,
    deployment: Deployment,
    party_id: str,
    signing_pk: bytes,
    sealing_pk: bytes,
    umbral_pk: bytes,
    verifying_pk: bytes,
) -> TxResult:
    fn = _registry(chain, deployment).functions.registerParty(
        org_id_to_bytes32(party_id), signing_pk, sealing_pk, umbral_pk, verifying_pk
    )
    return await chain.transact(account, fn, gas=PARTY_GAS)


async def get_party(chain: Chain, deployment: Deployment, party_id: str) -> Party | None:
    raw = await chain.read(
        _registry(chain, deployment).functions.party(org_id_to_bytes32(party_id))
    )
    signing, sealing, umbral_key, verifying, account = raw
    if int(account, 16) == 0:
        return None
    return Party(
        party_id,
        Web3.to_checksum_address(account),
        bytes(signing),
        bytes(sealing),
        bytes(umbral_key),
        bytes(verifying),
    )


# -- records -------------------------------------------------------------------------------
async def register_record(
    chain: Chain,
    owner_account: LocalAccount,
    deployment: Deployment,
    info: RecordInfo,
) -> TxResult:
    fn = _registry(chain, deployment).functions.registerRecord(
        _rid(info.record_id),
        org_id_to_bytes32(info.owner),
        info.content_hash,
        info.capsule,
        info.size,
    )
    return await chain.transact(owner_account, fn, gas=RECORD_GAS)


async def get_record(chain: Chain, deployment: Deployment, record_id: str) -> RecordInfo:
    try:
        owner, content_hash, capsule, size = await chain.read(
            _registry(chain, deployment).functions.record(_rid(record_id))
        )
    except ChainRevert as exc:
        if exc.reason == "record not registered":
            raise UnknownRecord(
                f"no record {record_id} is registered on chain; check the id "
                "(`shardline records list`)",
                record_id=record_id,
            ) from None
        raise
    return RecordInfo(
        record_id, org_id_from_bytes32(bytes(owner)), bytes(content_hash), bytes(capsule), int(size)
    )


async def records_of(chain: Chain, deployment: Deployment, owner: str) -> list[str]:
    fn = _registry(chain, deployment).functions.recordsOf(org_id_to_bytes32(owner))
    return [bytes(r).hex() for r in await chain.read(fn)]


async def granted_to(chain: Chain, deployment: Deployment, reader: str) -> list[str]:
    fn = _registry(chain, deployment).functions.grantedTo(org_id_to_bytes32(reader))
    return [bytes(r).hex() for r in await chain.read(fn)]


async def readers_of(chain: Chain, deployment: Deployment, record_id: str) -> list[str]:
    fn = _registry(chain, deployment).functions.readersOf(_rid(record_id))
    return [org_id_from_bytes32(bytes(r)) for r in await chain.read(fn)]


# -- grants --------------------------------------------------------------------------------
def _grant_gas(proxies: int) -> int:
    return 260_000 + 60_000 * max(proxies, 1)


async def grant(
    chain: Chain,
    owner_account: LocalAccount,
    deployment: Deployment,
    record_id: str,
    reader: str,
    threshold: int,
    proxies: list[str],
    expires_at: int,
) -> TxResult:
    fn = _registry(chain, deployment).functions.grant(
        _rid(record_id),
        org_id_to_bytes32(reader),
        threshold,
        [org_id_to_bytes32(p) for p in proxies],
        expires_at,
    )
    return await chain.transact(owner_account, fn, gas=_grant_gas(len(proxies)))


async def revoke(
    chain: Chain, owner_account: LocalAccount, deployment: Deployment, record_id: str, reader: str
) -> TxResult:
    fn = _registry(chain, deployment).functions.revoke(_rid(record_id), org_id_to_bytes32(reader))
    return await chain.transact(owner_account, fn)


async def grant_of(
    chain: Chain,
    deployment: Deployment,
    record_id: str,
    reader: str,
    *,
    block: int | str = "latest",
) -> tuple[Grant, int]:
    """The grant (version 0 when none) and the chain's time at ``block``."""
    fn = _registry(chain, deployment).functions.grantOf(_rid(record_id), org_id_to_bytes32(reader))
    (threshold, proxies, expires_at, version, revoked), chain_time = await chain.read(
        fn, block=block
    )
    return _grant(record_id, reader, threshold, proxies, expires_at, version, revoked), int(
        chain_time
    )


def _grant(record_id, reader, threshold, proxies, expires_at, version, revoked) -> Grant:
    """A grant from the fields ``grantOf`` returns."""
    return Grant(
        record_id,
        reader,
        int(threshold),
        tuple(org_id_from_bytes32(bytes(p)) for p in proxies),
        int(expires_at),
        int(version),
        bool(revoked),
    )


GRANT_OF = keccak(text="grantOf(bytes16,bytes32)")[:4]
GRANT_OF_OUT = ["(uint8,bytes32[],uint64,uint32,bool)", "uint64"]


async def read_grant(
    rpc: Rpc, deployment: Deployment, record_id: str, reader: str
) -> tuple[Grant, int]:
    """``grant_of`` as one bare eth_call: it sits on every read's path, at every proxy."""
    data = GRANT_OF + abi_encode(
        ["bytes16", "bytes32"], [_rid(record_id), org_id_to_bytes32(reader)]
    )
    raw = await rpc.call(
        "eth_call", [{"to": _address(deployment), "data": "0x" + data.hex()}, "latest"]
    )
    (threshold, proxies, expires_at, version, revoked), chain_time = abi_decode(
        GRANT_OF_OUT, bytes.fromhex(str(raw)[2:])
    )
    return _grant(record_id, reader, threshold, proxies, expires_at, version, revoked), int(
        chain_time
    )


# -- events --------------------------------------------------------------------------------
def decode_access_event(lg: RawLog) -> tuple[str, str, str, int]:
    """(kind, record id, reader, version) of an AccessGranted or AccessRevoked log."""
    topic = "0x" + lg.topics[0].hex()
    record_id = lg.topics[1][:16].hex()
    reader = org_id_from_bytes32(lg.topics[2])
    if topic == ACCESS_REVOKED:
        (version,) = abi_decode(["uint32"], lg.data)
        return "revoked", record_id, reader, int(version)
    if topic == ACCESS_GRANTED:
        version = abi_decode(["uint32", "uint8", "bytes32[]", "uint64"], lg.data)[0]
        return "granted", record_id, reader, int(version)
    raise ValueError(f"not a RecordsRegistry access event: topic {topic}")


def grant_from_event(lg: RawLog) -> Grant:
    """The whole grant an AccessGranted log announces (revoked: False)."""
    if "0x" + lg.topics[0].hex() != ACCESS_GRANTED:
        raise ValueError("not an AccessGranted log")
    version, threshold, proxies, expires_at = abi_decode(
        ["uint32", "uint8", "bytes32[]", "uint64"], lg.data
    )
    return _grant(
        lg.topics[1][:16].hex(),
        org_id_from_bytes32(lg.topics[2]),
        threshold,
        proxies,
        expires_at,
        version,
        False,
    )
