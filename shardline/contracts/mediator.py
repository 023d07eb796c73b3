"""Typed async helpers over the Mediator: groups, submissions, votes, expiry and their events.

Calls that sit on the private transaction's hot path (submit, voteMany, voteAggregate, expire)
are ABI-encoded here once and sent with ``Chain.send_call`` (local nonce, cached fees, no
estimate); the rest go through web3 for its clear errors.
"""

from __future__ import annotations

from dataclasses import dataclass

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from web3 import Web3
from web3.exceptions import ContractLogicError, Web3RPCError

from ..core.privtx import Status
from .artifacts import event_topic
from .client import Chain, ChainRevert, TxResult
from .cursor import RawLog, raw_log

GROUP_CREATED = event_topic("Mediator", "GroupCreated")
TX_INIT = event_topic("Mediator", "PrivateTxInit")
TX_VOTE = event_topic("Mediator", "PrivateTxVote")
TX_FINI = event_topic("Mediator", "PrivateTxFini")

SUBMIT = keccak(text="submit(bytes32,bytes32,bytes32,bytes[])")[:4]
SUBMIT_MANY = keccak(text="submitMany(bytes32,bytes32[],bytes32[],bytes[][])")[:4]
_PRE_VOTE = "(uint8,bytes32,bytes32,bytes32,bytes32,uint8)"
SUBMIT_VOTED = keccak(text=f"submitVoted(bytes32,bytes32[],bytes32[],bytes[][],{_PRE_VOTE}[][])")[
    :4
]
VOTE_MANY = keccak(text="voteMany(bytes32,bytes32[],bytes32[],bytes32[])")[:4]
VOTE_AGGREGATE = keccak(text="voteAggregate(bytes32,bytes32,bytes32,bytes32,uint256,uint256[2])")[
    :4
]
EXPIRE = keccak(text="expire(bytes32,bytes32)")[:4]

SUBMIT_GAS = 200_000
VOTE_GAS_BASE = 60_000
VOTE_GAS_EACH = 90_000
AGGREGATE_GAS_BASE = 220_000
AGGREGATE_GAS_EACH = 90_000
EXPIRE_GAS = 80_000
CREATE_GAS_BASE = 400_000
CREATE_GAS_EACH = 200_000  # with a BLS key: one pairing check for its proof of possession


def submit_gas(payloads: int, members: int) -> int:
    """Gas for submitting ``payloads`` at once (measured ~65k for one with three members)."""
    return 40_000 + payloads * (40_000 + 15_000 * members)


def submit_voted_gas(payloads: int, members: int, votes: int) -> int:
    """Gas for ``submitVoted``: the submissions, and per vote carried its signature check
    (ecrecover, 3,000) and the vote's own bookkeeping (as in ``voteMany``)."""
    return submit_gas(payloads, members) + votes * VOTE_GAS_EACH


class UnknownGroup(LookupError):
    pass


@dataclass(frozen=True)
class GroupInfo:
    group: bytes
    sender: str
    members: tuple[str, ...]
    seal_keys: tuple[bytes, ...]
    threshold: int
    timeout: int
    root: bytes
    submitted: int

    @property
    def policy(self) -> str:
        n = len(self.members)
        return "unanimous" if self.threshold == n else f"{self.threshold}-of-{n}"

    def index_of(self, account: str) -> int | None:
        lowered = [m.lower() for m in self.members]
        return lowered.index(account.lower()) if account.lower() in lowered else None


@dataclass(frozen=True)
class TxInfo:
    status: Status
    votes: int
    deadline: int
    seq: int
    old_root: bytes
    new_root: bytes


@dataclass(frozen=True)
class TxInit:
    group: bytes
    payload_hash: bytes
    seq: int
    ephemeral_pk: bytes
    wraps: tuple[bytes, ...]
    deadline: int


@dataclass(frozen=True)
class TxVote:
    group: bytes
    payload_hash: bytes
    member: int
    old_root: bytes
    new_root: bytes


@dataclass(frozen=True)
class TxFini:
    group: bytes
    payload_hash: bytes
    status: Status
    old_root: bytes
    new_root: bytes


def _mediator(chain: Chain, address: str):
    return chain.contract("Mediator", address)


async def create_group(
    chain: Chain,
    account: LocalAccount,
    mediator: str,
    group: bytes,
    sender: str,
    members: list[str],
    seal_keys: list[bytes],
    threshold: int,
    timeout_s: int,
    initial_root: bytes,
    bls_keys: list[tuple[int, int, int, int]] | None = None,
    pops: list[tuple[int, int]] | None = None,
) -> TxResult:
    fn = _mediator(chain, mediator).functions.createGroup(
        group,
        Web3.to_checksum_address(sender),
        [Web3.to_checksum_address(m) for m in members],
        seal_keys,
        (threshold, timeout_s, initial_root),
        [list(k) for k in bls_keys or []],
        [list(p) for p in pops or []],
    )
    gas = CREATE_GAS_BASE + CREATE_GAS_EACH * len(members)
    # Hashing each proof of possession to G1 takes a varying number of tries, so the fixed
    # figure can fall short (out of gas now and then): ask the node, with headroom.
    try:
        gas = max(gas, int(await fn.estimate_gas({"from": account.address}) * 1.25))
    except (ContractLogicError, Web3RPCError, ValueError):
        pass  # it would revert: sent anyway, so that the mediator's reason is reported
    return await chain.transact(account, fn, gas=gas)


async def group_of(chain: Chain, mediator: str, group: bytes) -> GroupInfo:
    try:
        sender, members, seal_keys, threshold, timeout, root, submitted = await chain.read(
            _mediator(chain, mediator).functions.groupOf(group)
        )
    except ChainRevert as exc:
        if exc.reason == "unknown group":
            raise UnknownGroup(
                f"no private group {group.hex()} on the mediator {mediator}; create it with "
                "`shardline privtx create-group`"
            ) from None
        raise
    return GroupInfo(
        group,
        Web3.to_checksum_address(sender),
        tuple(Web3.to_checksum_address(m) for m in members),
        tuple(bytes(k) for k in seal_keys),
        int(threshold),
        int(timeout),
        bytes(root),
        int(submitted),
    )


async def tx_of(chain: Chain, mediator: str, group: bytes, payload_hash: bytes) -> TxInfo | None:
    try:
        status, votes, deadline, seq, old, new = await chain.read(
            _mediator(chain, mediator).functions.txOf(group, payload_hash)
        )
    except ChainRevert as exc:
        if exc.reason == "unknown transaction":
            return None
        raise
    return TxInfo(Status(status), int(votes), int(deadline), int(seq), bytes(old), bytes(new))


def submit_data(group: bytes, payload_hash: bytes, ephemeral_pk: bytes, wraps) -> bytes:
    return SUBMIT + abi_encode(
        ["bytes32", "bytes32", "bytes32", "bytes[]"],
        [group, payload_hash, ephemeral_pk, list(wraps)],
    )


def submit_many_data(group: bytes, sealed) -> bytes:
    """``submitMany`` of several sealed payloads (``core.privtx.SealedPayload``) to one group."""
    return SUBMIT_MANY + abi_encode(
        ["bytes32", "bytes32[]", "bytes32[]", "bytes[][]"],
        [
            group,
            [s.payload_hash for s in sealed],
            [s.ephemeral_pk for s in sealed],
            [list(s.wraps) for s in sealed],
        ],
    )


def _pre_vote_tuple(vote) -> tuple:
    """A ``PreVote`` as the Mediator's struct: (member, oldRoot, newRoot, r, s, v)."""
    v, r, s = vote.vrs()
    return (vote.member, vote.old_root, vote.new_root, r, s, v)


def submit_voted_data(group: bytes, items) -> bytes:
    """``submitVoted`` of ``(SealedPayload, [PreVote, ...])`` pairs to one group, in order."""
    return SUBMIT_VOTED + abi_encode(
        [
            "bytes32",
            "bytes32[]",
            "bytes32[]",
            "bytes[][]",
            f"{_PRE_VOTE}[][]",
        ],
        [
            group,
            [s.payload_hash for s, _ in items],
            [s.ephemeral_pk for s, _ in items],
            [list(s.wraps) for s, _ in items],
            [[_pre_vote_tuple(v) for v in votes] for _, votes in items],
        ],
    )


def vote_many_data(group: bytes, votes: list[tuple[bytes, bytes, bytes]]) -> bytes:
    return VOTE_MANY + abi_encode(
        ["bytes32", "bytes32[]", "bytes32[]", "bytes32[]"],
        [group, [v[0] for v in votes], [v[1] for v in votes], [v[2] for v in votes]],
    )


def vote_aggregate_data(
    group: bytes,
    payload_hash: bytes,
    old_root: bytes,
    new_root: bytes,
    signers: int,
    signature: tuple[int, int],
) -> bytes:
    return VOTE_AGGREGATE + abi_encode(
        ["bytes32", "bytes32", "bytes32", "bytes32", "uint256", "uint256[2]"],
        [group, payload_hash, old_root, new_root, signers, list(signature)],
    )


def expire_data(group: bytes, payload_hash: bytes) -> bytes:
    return EXPIRE + abi_encode(["bytes32", "bytes32"], [group, payload_hash])


# -- events --------------------------------------------------------------------------------
def decode_event(lg: RawLog) -> GroupInfo | TxInit | TxVote | TxFini | None:
    topic = topic_of(lg)
    if topic == GROUP_CREATED:
        sender, members, seal_keys, threshold, timeout, root = abi_decode(
            ["address", "address[]", "bytes32[]", "uint8", "uint32", "bytes32"], lg.data
        )
        return GroupInfo(
            lg.topics[1],
            Web3.to_checksum_address(sender),
            tuple(Web3.to_checksum_address(m) for m in members),
            tuple(bytes(k) for k in seal_keys),
            int(threshold),
            int(timeout),
            bytes(root),
            0,
        )
    if topic == TX_INIT:
        seq, eph, wraps, deadline = abi_decode(["uint64", "bytes32", "bytes[]", "uint64"], lg.data)
        return TxInit(
            lg.topics[1],
            lg.topics[2],
            int(seq),
            bytes(eph),
            tuple(bytes(w) for w in wraps),
            int(deadline),
        )
    if topic == TX_VOTE:
        member, old, new = abi_decode(["uint8", "bytes32", "bytes32"], lg.data)
        return TxVote(lg.topics[1], lg.topics[2], int(member), bytes(old), bytes(new))
    if topic == TX_FINI:
        status, old, new = abi_decode(["uint8", "bytes32", "bytes32"], lg.data)
        return TxFini(lg.topics[1], lg.topics[2], Status(status), bytes(old), bytes(new))
    return None


def receipt_logs(receipt: dict | None, mediator: str) -> list[RawLog]:
    """The Mediator's logs in a transaction receipt (JSON-RPC form), in order, not decoded
    (``topic_of`` and the indexed group and payload hash in ``topics[1:3]`` pick them)."""
    return [
        raw_log(lg)
        for lg in (receipt or {}).get("logs") or []
        if lg["topics"] and lg["address"].lower() == mediator.lower()
    ]


def receipt_events(receipt: dict | None, mediator: str) -> list:
    """The Mediator's events in a transaction receipt, decoded, in order."""
    return [decode_event(lg) for lg in receipt_logs(receipt, mediator)]


def topic_of(lg: RawLog) -> str:
    """A log's event topic as the ``GROUP_CREATED`` ... ``TX_FINI`` constants spell it."""
    return "0x" + lg.topics[0].hex()
