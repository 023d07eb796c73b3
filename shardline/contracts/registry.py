"""Typed async helpers over the contracts, for the workers, the gateway and the CLI.

Org ids travel as ``bytes32`` (see :mod:`shardline.core.ids`); transport keys, commitments and
keys as 32 raw bytes; lookup guids as 16 raw bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from web3 import Web3

from ..core.directory import GATEWAY, ORG, Participant
from ..core.ids import org_id_from_bytes32, org_id_to_bytes32
from .client import Chain, ChainRevert, TxResult
from .deploy import Deployment

KIND_ORG = ORG
KIND_GATEWAY = GATEWAY
ROLE_NAMES = ("RESPONDER", "AUDITOR")

REGISTER_PARTICIPANT_GAS = 300_000
LOOKUP_GAS = 200_000


@dataclass(frozen=True)
class TransportInfo:
    """What the chain holds about a transport."""

    commitment: bytes
    threshold: int
    org_ids: list[str]
    company: str
    version: int
    active: bool


def _bytes32(value: bytes, what: str) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != 32:
        raise ValueError(f"{what} must be 32 bytes, got {_describe(value)}")
    return bytes(value)


def _bytes16(value: bytes, what: str) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != 16:
        raise ValueError(f"{what} must be 16 bytes, got {_describe(value)}")
    return bytes(value)


def _describe(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return f"{len(value)} bytes"
    return type(value).__name__


def role_id(role_name: str) -> bytes:
    """The on-chain id of a Gatekeeper role name ("RESPONDER" or "AUDITOR")."""
    if role_name not in ROLE_NAMES:
        raise ValueError(f"unknown role {role_name!r}: use one of {', '.join(ROLE_NAMES)}")
    return bytes(Web3.keccak(text=role_name))


def _transport_gas(org_count: int) -> int:
    # A limit, not the cost: each org is a registry check, and an org set no transport had
    # before is stored once, a slot per org (a transport itself takes two slots).
    return 150_000 + 60_000 * max(org_count, 1)


# -- participants --------------------------------------------------------------------------


async def register_participant(
    chain: Chain,
    admin: LocalAccount,
    deployment: Deployment,
    org_id: str,
    signing_pk: bytes,
    sealing_pk: bytes,
    account: str,
    kind: int,
    *,
    wait: bool = True,
) -> TxResult:
    """Admit an org node (kind 1) or gateway (kind 2); ``admin`` must own the registry."""
    fn = chain.contract("OrgRegistry", deployment.org_registry).functions.register(
        org_id_to_bytes32(org_id),
        _bytes32(signing_pk, "signing public key"),
        _bytes32(sealing_pk, "sealing public key"),
        Web3.to_checksum_address(account),
        kind,
    )
    return await chain.transact(admin, fn, gas=REGISTER_PARTICIPANT_GAS, wait=wait)


async def update_participant(
    chain: Chain,
    admin: LocalAccount,
    deployment: Deployment,
    org_id: str,
    signing_pk: bytes,
    sealing_pk: bytes,
    account: str,
    *,
    wait: bool = True,
) -> TxResult:
    """Rotate a participant's keys or account."""
    fn = chain.contract("OrgRegistry", deployment.org_registry).functions.update(
        org_id_to_bytes32(org_id),
        _bytes32(signing_pk, "signing public key"),
        _bytes32(sealing_pk, "sealing public key"),
        Web3.to_checksum_address(account),
    )
    return await chain.transact(admin, fn, gas=REGISTER_PARTICIPANT_GAS, wait=wait)


async def deactivate_participant(
    chain: Chain, admin: LocalAccount, deployment: Deployment, org_id: str, *, wait: bool = True
) -> TxResult:
    """Retire a participant."""
    fn = chain.contract("OrgRegistry", deployment.org_registry).functions.deactivate(
        org_id_to_bytes32(org_id)
    )
    return await chain.transact(admin, fn, wait=wait)


def _participant(raw_id: bytes, raw: tuple) -> Participant:
    signing, sealing, account, kind, active = raw
    return Participant(
        id=org_id_from_bytes32(bytes(raw_id)),
        signing_pk=bytes(signing),
        sealing_pk=bytes(sealing),
        account=Web3.to_checksum_address(account),
        kind=int(kind),
        active=bool(active),
    )


async def get_participant(chain: Chain, deployment: Deployment, org_id: str) -> Participant | None:
    """One participant, or None when the id was never registered."""
    raw_id = org_id_to_bytes32(org_id)
    registry = chain.contract("OrgRegistry", deployment.org_registry)
    raw = await chain.read(registry.functions.get(raw_id))
    if int(raw[3]) == 0:
        return None
    return _participant(raw_id, raw)


async def list_participants(chain: Chain, deployment: Deployment) -> list[Participant]:
    """Every registered participant (active or not), in order of registration."""
    registry = chain.contract("OrgRegistry", deployment.org_registry)
    raw_ids = await chain.read(registry.functions.ids())
    out = []
    for raw_id in raw_ids:
        out.append(_participant(raw_id, await chain.read(registry.functions.get(raw_id))))
    return out


# -- roles and the gatekeeper ----------------------------------------------------------------


async def current_gatekeeper(chain: Chain, deployment: Deployment) -> str:
    """The Gatekeeper the governor currently names (it changes on an upgrade)."""
    governor = chain.contract("Governor", deployment.governor)
    return Web3.to_checksum_address(await chain.read(governor.functions.gatekeeper()))


async def _gatekeeper(chain: Chain, deployment: Deployment, gatekeeper: str | None) -> str:
    return gatekeeper if gatekeeper is not None else await current_gatekeeper(chain, deployment)


async def grant_role(
    chain: Chain,
    admin: LocalAccount,
    deployment: Deployment,
    role_name: str,
    account: str,
    *,
    gatekeeper: str | None = None,
    wait: bool = True,
) -> TxResult:
    """Grant a Gatekeeper role; by default on the gatekeeper the governor names now."""
    address = await _gatekeeper(chain, deployment, gatekeeper)
    fn = chain.contract("Gatekeeper", address).functions.grantRole(
        role_id(role_name), Web3.to_checksum_address(account)
    )
    return await chain.transact(admin, fn, wait=wait)


async def revoke_role(
    chain: Chain,
    admin: LocalAccount,
    deployment: Deployment,
    role_name: str,
    account: str,
    *,
    gatekeeper: str | None = None,
    wait: bool = True,
) -> TxResult:
    """Revoke a Gatekeeper role."""
    address = await _gatekeeper(chain, deployment, gatekeeper)
    fn = chain.contract("Gatekeeper", address).functions.revokeRole(
        role_id(role_name), Web3.to_checksum_address(account)
    )
    return await chain.transact(admin, fn, wait=wait)


async def has_role(
    chain: Chain,
    deployment: Deployment,
    role_name: str,
    account: str,
    *,
    gatekeeper: str | None = None,
) -> bool:
    address = await _gatekeeper(chain, deployment, gatekeeper)
    fn = chain.contract("Gatekeeper", address).functions.hasRole(
        role_id(role_name), Web3.to_checksum_address(account)
    )
    return bool(await chain.read(fn))


REQUEST_LOOKUP_SELECTOR = keccak(text="requestLookup(bytes16,bytes32,bytes32)")[:4]


def request_lookup_calldata(guid: bytes, key: bytes, ephemeral_pk: bytes) -> bytes:
    """ABI-encoded ``requestLookup(guid, key, ephemeralPk)``: three static words."""
    return (
        REQUEST_LOOKUP_SELECTOR
        + _bytes16(guid, "lookup guid").ljust(32, b"\0")
        + _bytes32(key, "transport key")
        + _bytes32(ephemeral_pk, "ephemeral public key")
    )


REQUEST_LOOKUPS_SELECTOR = keccak(text="requestLookups(bytes16[],bytes32[],bytes32[])")[:4]


def request_lookups_calldata(items: list[tuple[bytes, bytes, bytes]]) -> bytes:
    """ABI-encoded ``requestLookups`` for (guid, key, ephemeral key) triples of one requester."""
    guids = [_bytes16(g, "lookup guid") for g, _, _ in items]
    keys = [_bytes32(k, "transport key") for _, k, _ in items]
    epks = [_bytes32(e, "ephemeral public key") for _, _, e in items]
    return REQUEST_LOOKUPS_SELECTOR + abi_encode(
        ["bytes16[]", "bytes32[]", "bytes32[]"], [guids, keys, epks]
    )


async def request_lookup(
    chain: Chain,
    requester_account: LocalAccount,
    deployment: Deployment,
    guid: bytes,
    key: bytes,
    ephemeral_pk: bytes,
    wait: bool = True,
    *,
    gatekeeper: str | None = None,
) -> TxResult:
    """Ask the Gatekeeper for a lookup; it emits ``LookupRequested`` for the org nodes.

    Pass ``gatekeeper`` (from :func:`current_gatekeeper`) to save a read per lookup.
    """
    address = await _gatekeeper(chain, deployment, gatekeeper)
    fn = chain.contract("Gatekeeper", address).functions.requestLookup(
        _bytes16(guid, "lookup guid"),
        _bytes32(key, "transport key"),
        _bytes32(ephemeral_pk, "ephemeral public key"),
    )
    return await chain.transact(requester_account, fn, gas=LOOKUP_GAS, wait=wait)


# -- transports ----------------------------------------------------------------------------


ZERO_ADDRESS = "0x" + "00" * 20
TRANSPORT_GET = keccak(text="get(bytes32)")[:4]
TRANSPORT_GET_OUT = ["bytes32", "uint8", "bytes32[]", "address", "uint32", "bool"]


async def get_transport(chain: Chain, deployment: Deployment, key: bytes) -> TransportInfo | None:
    """The transport registered under ``key``, or None when there is none.

    One bare eth_call, not exists() then get() through the contract object: it sits on the path
    of a lookup of any transport the gateway has not seen yet, which is most of them."""
    data = TRANSPORT_GET + _bytes32(key, "transport key")
    try:
        raw = await chain.simulate_call(ZERO_ADDRESS, deployment.transport_registry, data)
    except ChainRevert as exc:
        if exc.reason == "transport not registered":
            return None
        raise
    commitment, threshold, org_ids, company, version, active = abi_decode(
        TRANSPORT_GET_OUT, bytes.fromhex(str(raw)[2:])
    )
    return transport_info(commitment, threshold, org_ids, company, version, active)


def transport_info(commitment, threshold, org_ids, company, version, active) -> TransportInfo:
    return TransportInfo(
        commitment=bytes(commitment),
        threshold=int(threshold),
        org_ids=[org_id_from_bytes32(bytes(o)) for o in org_ids],
        company=Web3.to_checksum_address(company),
        version=int(version),
        active=bool(active),
    )


async def register_transport(
    chain: Chain,
    company_account: LocalAccount,
    deployment: Deployment,
    key: bytes,
    commitment: bytes,
    threshold: int,
    org_ids: list[str],
    wait: bool = True,
) -> TxResult:
    """Register a transport; ``company_account`` must be an active org's account."""
    fn = chain.contract("TransportRegistry", deployment.transport_registry).functions.register(
        _bytes32(key, "transport key"),
        _bytes32(commitment, "commitment"),
        threshold,
        [org_id_to_bytes32(o) for o in org_ids],
    )
    return await chain.transact(company_account, fn, gas=_transport_gas(len(org_ids)), wait=wait)


async def update_transport(
    chain: Chain,
    company_account: LocalAccount,
    deployment: Deployment,
    key: bytes,
    commitment: bytes,
    threshold: int,
    org_ids: list[str],
    wait: bool = True,
) -> TxResult:
    """Replace a transport's commitment and org set (only the registering company may)."""
    fn = chain.contract("TransportRegistry", deployment.transport_registry).functions.update(
        _bytes32(key, "transport key"),
        _bytes32(commitment, "commitment"),
        threshold,
        [org_id_to_bytes32(o) for o in org_ids],
    )
    return await chain.transact(company_account, fn, gas=_transport_gas(len(org_ids)), wait=wait)


async def retire_transport(
    chain: Chain,
    company_account: LocalAccount,
    deployment: Deployment,
    key: bytes,
    wait: bool = True,
) -> TxResult:
    """Retire a transport (only the registering company may); lookups for it then fail."""
    fn = chain.contract("TransportRegistry", deployment.transport_registry).functions.retire(
        _bytes32(key, "transport key")
    )
    return await chain.transact(company_account, fn, wait=wait)
