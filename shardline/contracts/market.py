"""Typed async helpers over the Market contract: servers, data sets, contributions, jobs.

Org, data-set and producer ids travel as ``bytes32`` (ASCII, zero-padded).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from web3 import Web3

from ..core.ids import org_id_from_bytes32, org_id_to_bytes32
from .client import Chain, TxResult
from .deploy import Deployment

OPEN, DONE, FAILED, REFUSED = 1, 2, 3, 4
STATUS_NAMES = {0: "none", OPEN: "open", DONE: "done", FAILED: "failed", REFUSED: "refused"}

JOB_OPENED = (
    "0x"
    + keccak(
        text="JobOpened(uint256,bytes32,address,uint256,bytes32[],uint8[],bytes,bytes[])"
    ).hex()
)
CONTRIBUTED = "0x" + keccak(text="Contributed(bytes32,bytes32,uint32,bytes32,uint32)").hex()


class MarketNotDeployed(RuntimeError):
    pass


def ident(name: str) -> bytes:
    return org_id_to_bytes32(name)


def name_of(raw: bytes) -> str:
    return org_id_from_bytes32(bytes(raw))


def _market(chain: Chain, deployment: Deployment):
    if not deployment.market:
        raise MarketNotDeployed(
            "this deployment has no Market contract (it predates analytics): redeploy with "
            "`shardline down && shardline up`"
        )
    return chain.contract("Market", deployment.market)


def output_commitment(job: int, slot: int, masked: list[int], salt: bytes) -> bytes:
    return keccak(
        abi_encode(["uint256", "uint8", "uint256[]", "bytes32"], [job, slot, masked, salt])
    )


def mask_commitment(consumer_key: bytes, slot: int, mask: list[int], salt: bytes) -> bytes:
    return keccak(
        abi_encode(["bytes32", "uint8", "uint256[]", "bytes32"], [consumer_key, slot, mask, salt])
    )


@dataclass(frozen=True)
class ServerInfo:
    id: str
    stake: int
    reputation: int
    jobs: int
    faults: int
    active: int
    account: str


@dataclass(frozen=True)
class DatasetInfo:
    id: str
    curator: str
    threshold: int
    k: int
    schema: dict
    servers: tuple[str, ...]


@dataclass(frozen=True)
class JobInfo:
    id: int
    dataset: str
    consumer: str
    price: int
    consumer_key: bytes
    commit_deadline: int
    reveal_deadline: int
    accept_deadline: int
    inputs: int
    producers: int
    width: int
    committed: int
    revealed: int
    refused: int
    status: int
    per_producer: int
    spec: dict
    servers: tuple[str, ...]
    xs: tuple[int, ...]
    mask_commits: tuple[bytes, ...]

    @property
    def status_name(self) -> str:
        return STATUS_NAMES.get(self.status, str(self.status))


@dataclass(frozen=True)
class SlotInfo:
    commitment: bytes
    count_share: int
    committed: bool
    revealed: bool
    refused: bool
    cheater: bool
    masked: tuple[int, ...]


# -- servers -----------------------------------------------------------------------------------
async def stake(
    chain: Chain, account: LocalAccount, deployment: Deployment, amount: int
) -> TxResult:
    return await chain.transact(
        account, _market(chain, deployment).functions.stake(), value=amount, gas=200_000
    )


async def server(chain: Chain, deployment: Deployment, org: str) -> ServerInfo:
    s = await chain.read(_market(chain, deployment).functions.server(ident(org)))
    return ServerInfo(org, int(s[0]), int(s[1]), int(s[2]), int(s[3]), int(s[4]), s[5])


async def servers(chain: Chain, deployment: Deployment) -> list[ServerInfo]:
    ids = await chain.read(_market(chain, deployment).functions.serverIds())
    return [await server(chain, deployment, name_of(i)) for i in ids]


async def min_stake(chain: Chain, deployment: Deployment) -> int:
    return int(await chain.read(_market(chain, deployment).functions.minStake()))


# -- data sets ---------------------------------------------------------------------------------
async def create_dataset(
    chain: Chain,
    account: LocalAccount,
    deployment: Deployment,
    dataset_id: str,
    schema_json: str,
    threshold: int,
    k: int,
    server_ids: list[str],
) -> TxResult:
    fn = _market(chain, deployment).functions.createDataset(
        ident(dataset_id), schema_json.encode(), threshold, k, [ident(s) for s in server_ids]
    )
    return await chain.transact(
        account, fn, gas=400_000 + 40 * len(schema_json) + 60_000 * len(server_ids)
    )


async def dataset(chain: Chain, deployment: Deployment, dataset_id: str) -> DatasetInfo | None:
    d = await chain.read(_market(chain, deployment).functions.dataset(ident(dataset_id)))
    curator, threshold, k, schema, srv = d
    if int(curator, 16) == 0:
        return None
    return DatasetInfo(
        dataset_id,
        curator,
        int(threshold),
        int(k),
        json.loads(bytes(schema)),
        tuple(name_of(s) for s in srv),
    )


CONTRIBUTE = keccak(text="contribute(bytes32,bytes32,bytes32,bytes32,uint32)")[:4]
PRODUCER = keccak(text="producer(bytes32)")[:4]


async def send_contribution(
    chain: Chain,
    account: LocalAccount,
    deployment: Deployment,
    dataset_id: str,
    producer_id: str,
    signing_pk: bytes,
    digest: bytes,
    rows: int,
) -> str:
    """``contribute`` on the cheap path (ready calldata, no receipt wait): returns the hash."""
    _market(chain, deployment)
    data = CONTRIBUTE + abi_encode(
        ["bytes32", "bytes32", "bytes32", "bytes32", "uint32"],
        [ident(dataset_id), ident(producer_id), signing_pk, digest, rows],
    )
    return await chain.send_call(account, deployment.market, data, gas=250_000)


async def read_producer(rpc, deployment: Deployment, producer_id: str) -> tuple[str, bytes] | None:
    """``producer`` as one bare eth_call: every server asks it once per producer."""
    data = PRODUCER + abi_encode(["bytes32"], [ident(producer_id)])
    raw = await rpc.call(
        "eth_call", [{"to": deployment.market, "data": "0x" + data.hex()}, "latest"]
    )
    account, signing = abi_decode(["address", "bytes32"], bytes.fromhex(str(raw)[2:]))
    if int(account, 16) == 0:
        return None
    return Web3.to_checksum_address(account), bytes(signing)


async def contribute(
    chain: Chain,
    account: LocalAccount,
    deployment: Deployment,
    dataset_id: str,
    producer_id: str,
    signing_pk: bytes,
    digest: bytes,
    rows: int,
    *,
    wait: bool = True,
) -> TxResult:
    fn = _market(chain, deployment).functions.contribute(
        ident(dataset_id), ident(producer_id), signing_pk, digest, rows
    )
    return await chain.transact(account, fn, gas=250_000, wait=wait)


async def contribution_count(chain: Chain, deployment: Deployment, dataset_id: str) -> int:
    return int(
        await chain.read(_market(chain, deployment).functions.contributionCount(ident(dataset_id)))
    )


async def contribution(
    chain: Chain, deployment: Deployment, dataset_id: str, index: int
) -> tuple[str, bytes, int]:
    p, digest, rows = await chain.read(
        _market(chain, deployment).functions.contribution(ident(dataset_id), index)
    )
    return name_of(p), bytes(digest), int(rows)


async def producer(
    chain: Chain, deployment: Deployment, producer_id: str
) -> tuple[str, bytes] | None:
    account, signing = await chain.read(
        _market(chain, deployment).functions.producer(ident(producer_id))
    )
    if int(account, 16) == 0:
        return None
    return Web3.to_checksum_address(account), bytes(signing)


# -- jobs --------------------------------------------------------------------------------------
async def choose_servers(chain: Chain, deployment: Deployment, dataset_id: str) -> list[str]:
    ids = await chain.read(_market(chain, deployment).functions.chooseServers(ident(dataset_id)))
    return [name_of(i) for i in ids]


async def open_job(
    chain: Chain,
    account: LocalAccount,
    deployment: Deployment,
    *,
    dataset_id: str,
    spec_json: str,
    width: int,
    consumer_key: bytes,
    server_ids: list[str],
    mask_commits: list[bytes],
    mask_boxes: list[bytes],
    price: int,
    commit_window_s: int,
    reveal_window_s: int,
) -> int:
    request = (
        ident(dataset_id),
        spec_json.encode(),
        width,
        consumer_key,
        [ident(s) for s in server_ids],
        mask_commits,
        mask_boxes,
        commit_window_s,
        reveal_window_s,
    )
    fn = _market(chain, deployment).functions.openJob(request)
    gas = (
        700_000
        + 60_000 * len(server_ids)
        + 20 * sum(len(b) for b in mask_boxes)
        + 40 * len(spec_json)
    )
    result = await chain.transact(account, fn, value=price, gas=gas)
    for lg in result.receipt["logs"]:  # type: ignore[index]
        if lg["topics"] and "0x" + bytes(lg["topics"][0]).hex() == JOB_OPENED:
            return int.from_bytes(bytes(lg["topics"][1]), "big")
    raise RuntimeError(f"openJob (transaction {result.tx_hash}) emitted no JobOpened")


async def job(chain: Chain, deployment: Deployment, job_id: int) -> JobInfo | None:
    j = await chain.read(_market(chain, deployment).functions.job(job_id))
    if int(j[13]) == 0:
        return None
    return JobInfo(
        job_id,
        name_of(j[0]),
        j[1],
        int(j[2]),
        bytes(j[3]),
        int(j[4]),
        int(j[5]),
        int(j[6]),
        int(j[7]),
        int(j[8]),
        int(j[9]),
        int(j[10]),
        int(j[11]),
        int(j[12]),
        int(j[13]),
        int(j[14]),
        json.loads(bytes(j[15])),
        tuple(name_of(s) for s in j[16]),
        tuple(int(x) for x in j[17]),
        tuple(bytes(c) for c in j[18]),
    )


async def job_count(chain: Chain, deployment: Deployment) -> int:
    return int(await chain.read(_market(chain, deployment).functions.jobCount()))


async def slot(chain: Chain, deployment: Deployment, job_id: int, index: int) -> SlotInfo:
    s = await chain.read(_market(chain, deployment).functions.slot(job_id, index))
    return SlotInfo(bytes(s[0]), int(s[1]), *map(bool, s[2:6]), tuple(int(v) for v in s[6]))


async def commit(
    chain: Chain,
    account: LocalAccount,
    deployment: Deployment,
    job_id: int,
    commitment: bytes,
    count_share: int,
) -> TxResult:
    fn = _market(chain, deployment).functions.commit(job_id, commitment, count_share)
    return await chain.transact(account, fn, gas=200_000)


async def reveal(
    chain: Chain,
    account: LocalAccount,
    deployment: Deployment,
    job_id: int,
    masked: list[int],
    salt: bytes,
) -> TxResult:
    fn = _market(chain, deployment).functions.reveal(job_id, masked, salt)
    return await chain.transact(account, fn, gas=200_000 + 30_000 * len(masked))


async def refuse(
    chain: Chain, account: LocalAccount, deployment: Deployment, job_id: int
) -> TxResult:
    return await chain.transact(
        account, _market(chain, deployment).functions.refuse(job_id), gas=300_000
    )


async def accuse(
    chain: Chain,
    account: LocalAccount,
    deployment: Deployment,
    job_id: int,
    cheaters: list[int],
    masks: list[list[int]],
    salts: list[bytes],
) -> TxResult:
    fn = _market(chain, deployment).functions.accuse(job_id, cheaters, masks, salts)
    width = len(masks[0]) if masks else 0
    return await chain.transact(account, fn, gas=600_000 + 150_000 * width * len(masks))


async def accept(
    chain: Chain, account: LocalAccount, deployment: Deployment, job_id: int
) -> TxResult:
    return await chain.transact(
        account, _market(chain, deployment).functions.accept(job_id), gas=600_000
    )


async def finalise(
    chain: Chain, account: LocalAccount, deployment: Deployment, job_id: int
) -> TxResult:
    return await chain.transact(
        account, _market(chain, deployment).functions.finalise(job_id), gas=600_000
    )


async def claim(
    chain: Chain,
    account: LocalAccount,
    deployment: Deployment,
    producer_id: str,
    job_ids: list[int],
) -> TxResult:
    fn = _market(chain, deployment).functions.claim(ident(producer_id), job_ids)
    return await chain.transact(account, fn, gas=100_000 + 40_000 * len(job_ids))


async def claimed(chain: Chain, deployment: Deployment, job_id: int, producer_id: str) -> bool:
    fn = _market(chain, deployment).functions.claimed(job_id, ident(producer_id))
    return bool(await chain.read(fn))


async def withdraw(chain: Chain, account: LocalAccount, deployment: Deployment) -> TxResult:
    return await chain.transact(
        account, _market(chain, deployment).functions.withdraw(), gas=100_000
    )


async def balance_of(chain: Chain, deployment: Deployment, address: str) -> int:
    return int(
        await chain.read(
            _market(chain, deployment).functions.balanceOf(Web3.to_checksum_address(address))
        )
    )


def decode_job_opened(lg) -> tuple[int, str, list[str], list[int], dict, list[bytes]]:
    """(job, data set, servers, xs, spec, mask boxes) of a JobOpened log."""
    job_id = int.from_bytes(lg.topics[1], "big")
    dataset_id = name_of(lg.topics[2])
    _consumer, _price, srv, xs, spec, boxes = abi_decode(
        ["address", "uint256", "bytes32[]", "uint8[]", "bytes", "bytes[]"], lg.data
    )
    return (
        job_id,
        dataset_id,
        [name_of(s) for s in srv],
        list(xs),
        json.loads(spec),
        [bytes(b) for b in boxes],
    )
