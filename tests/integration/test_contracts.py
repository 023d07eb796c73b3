"""shardline's contracts on a real anvil, through the package's own async client."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from shardline.contracts import (
    KIND_GATEWAY,
    KIND_ORG,
    Chain,
    ChainError,
    ChainRevert,
    Deployment,
    current_gatekeeper,
    deploy_all,
    deploy_contract,
    get_transport,
    grant_role,
    list_participants,
    register_participant,
    register_transport,
    request_lookup,
    retire_transport,
    update_transport,
)
from shardline.contracts.registry import request_lookups_calldata
from shardline.core.ids import new_guid, org_id_to_bytes32, transport_key
from shardline.servers import anvil_spec, free_port, spawn, stop_pid

pytestmark = pytest.mark.integration

# anvil's well-known dev account 0: for local test chains only.
ANVIL_KEY_0 = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
ORG_IDS = ["org1", "org2", "org3"]


@pytest.fixture(scope="module")
def anvil_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data_dir: Path = tmp_path_factory.mktemp("anvil")
    port = free_port()
    proc = spawn(anvil_spec(data_dir, port), data_dir / "anvil.log")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_pid(proc.pid)


@pytest_asyncio.fixture(scope="module")
async def chain(anvil_url: str) -> AsyncIterator[Chain]:
    c = await Chain.connect(anvil_url, expected_chain_id=31337)
    yield c
    await c.close()


@pytest.fixture(scope="module")
def admin() -> LocalAccount:
    return Account.from_key(ANVIL_KEY_0)


async def funded(chain: Chain) -> LocalAccount:
    account = Account.create()
    await chain.w3.provider.make_request("anvil_setBalance", [account.address, hex(10**20)])
    return account


@pytest_asyncio.fixture(scope="module")
async def deployment(chain: Chain, admin: LocalAccount) -> Deployment:
    return await deploy_all(chain, admin)


@pytest_asyncio.fixture(scope="module")
async def orgs(
    chain: Chain, admin: LocalAccount, deployment: Deployment
) -> dict[str, LocalAccount]:
    accounts = {}
    for org_id in ORG_IDS:
        account = await funded(chain)
        await register_participant(
            chain,
            admin,
            deployment,
            org_id,
            os.urandom(32),
            os.urandom(32),
            account.address,
            KIND_ORG,
        )
        accounts[org_id] = account
    return accounts


@pytest_asyncio.fixture(scope="module")
async def responder(chain: Chain, admin: LocalAccount, deployment: Deployment) -> LocalAccount:
    account = await funded(chain)
    await grant_role(chain, admin, deployment, "RESPONDER", account.address)
    return account


def fresh_key() -> bytes:
    return transport_key(f"T-{uuid.uuid4().hex[:12]}")


async def registered_transport(
    chain: Chain, deployment: Deployment, company: LocalAccount
) -> bytes:
    key = fresh_key()
    await register_transport(chain, company, deployment, key, os.urandom(32), 2, ORG_IDS)
    return key


async def storage_written(chain: Chain, tx_hash: str) -> dict[str, set[str]]:
    """Storage slots each contract's storage had changed by a mined transaction (the node's
    prestate tracer in diff mode), by checksummed address; contracts with none are left out."""
    diff = await chain.rpc.call(
        "debug_traceTransaction",
        [tx_hash, {"tracer": "prestateTracer", "tracerConfig": {"diffMode": True}}],
    )
    written: dict[str, set[str]] = {}
    for side in ("pre", "post"):
        for address, account in diff[side].items():
            if account.get("storage"):
                written.setdefault(Web3.to_checksum_address(address), set()).update(
                    account["storage"]
                )
    return written


# -- deployment and participants -------------------------------------------------------------


async def test_deploy_all_points_the_governor_at_the_gatekeeper(
    chain: Chain, deployment: Deployment
) -> None:
    assert await current_gatekeeper(chain, deployment) == deployment.gatekeeper
    assert deployment.chain_id == 31337
    assert Deployment.from_dict(deployment.to_dict()) == deployment
    gk = chain.contract("Gatekeeper", deployment.gatekeeper)
    assert await gk.functions.governor().call() == deployment.governor
    assert await gk.functions.registry().call() == deployment.transport_registry


async def test_participants_are_listed_and_duplicates_revert(
    chain: Chain, admin: LocalAccount, deployment: Deployment, orgs: dict[str, LocalAccount]
) -> None:
    gateway = await funded(chain)
    sign, seal = os.urandom(32), os.urandom(32)
    await register_participant(
        chain, admin, deployment, "gw-main", sign, seal, gateway.address, KIND_GATEWAY
    )
    listed = {p.id: p for p in await list_participants(chain, deployment)}
    assert set(ORG_IDS) | {"gw-main"} <= set(listed)
    gw = listed["gw-main"]
    assert (gw.signing_pk, gw.sealing_pk, gw.account, gw.kind, gw.active) == (
        sign,
        seal,
        gateway.address,
        KIND_GATEWAY,
        True,
    )
    assert listed["org1"].account == orgs["org1"].address

    registry = chain.contract("OrgRegistry", deployment.org_registry)
    assert await registry.functions.isActiveOrgAccount(orgs["org2"].address).call()
    assert not await registry.functions.isActiveOrgAccount(gateway.address).call()

    with pytest.raises(ChainRevert) as exc:
        await register_participant(
            chain, admin, deployment, "gw-main", sign, seal, (await funded(chain)).address, 2
        )
    assert exc.value.reason == "participant already registered"
    with pytest.raises(ChainRevert) as exc:
        await register_participant(
            chain, admin, deployment, "org9", sign, seal, gateway.address, KIND_ORG
        )
    assert exc.value.reason == "account already bound to another participant"
    with pytest.raises(ChainRevert) as exc:
        await register_participant(
            chain, admin, deployment, "org9", sign, seal, (await funded(chain)).address, 3
        )
    assert exc.value.reason == "kind must be 1 (org) or 2 (gateway)"
    outsider = await funded(chain)
    with pytest.raises(ChainRevert) as exc:
        await register_participant(
            chain, outsider, deployment, "org9", sign, seal, outsider.address, KIND_ORG
        )
    assert exc.value.reason == "only the registry owner may do this"


# -- transports ------------------------------------------------------------------------------


async def test_an_org_registers_a_transport(
    chain: Chain, deployment: Deployment, orgs: dict[str, LocalAccount]
) -> None:
    key, commitment = fresh_key(), os.urandom(32)
    assert await get_transport(chain, deployment, key) is None
    result = await register_transport(chain, orgs["org1"], deployment, key, commitment, 2, ORG_IDS)
    assert result.receipt is not None and result.receipt["status"] == 1
    registry = chain.contract("TransportRegistry", deployment.transport_registry)
    (event,) = registry.events.TransportRegistered().process_receipt(result.receipt)
    assert event["args"]["key"] == key
    assert event["args"]["company"] == orgs["org1"].address
    assert list(event["args"]["orgIds"]) == [org_id_to_bytes32(o) for o in ORG_IDS]

    info = await get_transport(chain, deployment, key)
    assert info is not None
    assert (info.commitment, info.threshold, info.org_ids) == (commitment, 2, ORG_IDS)
    assert (info.company, info.version, info.active) == (orgs["org1"].address, 1, True)

    with pytest.raises(ChainRevert) as exc:
        await register_transport(chain, orgs["org2"], deployment, key, commitment, 2, ORG_IDS)
    assert exc.value.reason == "transport already registered"


async def test_a_transport_takes_two_new_storage_slots_once_its_org_set_is_known(
    chain: Chain, deployment: Deployment, orgs: dict[str, LocalAccount]
) -> None:
    """A transport stores its commitment and one packed word; its org set is stored once for
    all the transports that share it, in its order (a share's x is its org's place). Gas is
    the chain's own count, the same on every run: a new storage slot costs 22,100, so with the
    transaction's base, the checks and the event a transport stays under 100,000 gas (87,329;
    when it took eight slots, 173,140)."""
    sets = [["org3", "org1"], ["org1", "org3"]]  # the same orgs, another order: another set
    for org_ids in sets:  # each set known after its first transport
        await register_transport(
            chain, orgs["org1"], deployment, fresh_key(), os.urandom(32), 1, org_ids
        )
    for org_ids in sets:
        key, commitment = fresh_key(), os.urandom(32)
        result = await register_transport(
            chain, orgs["org1"], deployment, key, commitment, 2, org_ids
        )
        assert result.receipt is not None
        assert result.receipt["gasUsed"] < 100_000, result.receipt["gasUsed"]
        info = await get_transport(chain, deployment, key)
        assert info is not None
        assert (info.commitment, info.threshold, info.org_ids) == (commitment, 2, org_ids)
        assert (info.company, info.version, info.active) == (orgs["org1"].address, 1, True)


@pytest.mark.parametrize(
    ("threshold", "org_ids", "reason"),
    [
        (0, ORG_IDS, "threshold must be between 1 and the number of orgs"),
        (4, ORG_IDS, "threshold must be between 1 and the number of orgs"),
        (2, ["org1", "org7"], "unknown or inactive org in the org set"),
        (2, ["org1", "org2", "org1"], "duplicate org in the org set"),
    ],
)
async def test_bad_transport_shapes_revert(
    chain: Chain,
    deployment: Deployment,
    orgs: dict[str, LocalAccount],
    threshold: int,
    org_ids: list[str],
    reason: str,
) -> None:
    with pytest.raises(ChainRevert) as exc:
        await register_transport(
            chain, orgs["org1"], deployment, fresh_key(), os.urandom(32), threshold, org_ids
        )
    assert exc.value.reason == reason
    assert exc.value.tx_hash is not None  # mined and reverted; the reason came from a replay


async def test_only_orgs_register_transports(
    chain: Chain, deployment: Deployment, orgs: dict[str, LocalAccount]
) -> None:
    stranger = await funded(chain)
    with pytest.raises(ChainRevert) as exc:
        await register_transport(
            chain, stranger, deployment, fresh_key(), os.urandom(32), 2, ORG_IDS
        )
    assert exc.value.reason == "only a registered org may register transports"


async def test_only_the_company_updates_or_retires(
    chain: Chain, deployment: Deployment, orgs: dict[str, LocalAccount]
) -> None:
    key = await registered_transport(chain, deployment, orgs["org1"])
    new_commitment = os.urandom(32)
    only_company = "only the registering company may update or retire this transport"

    with pytest.raises(ChainRevert) as exc:
        await update_transport(chain, orgs["org2"], deployment, key, new_commitment, 1, ["org2"])
    assert exc.value.reason == only_company
    with pytest.raises(ChainRevert) as exc:
        await retire_transport(chain, orgs["org2"], deployment, key)
    assert exc.value.reason == only_company

    result = await update_transport(
        chain, orgs["org1"], deployment, key, new_commitment, 1, ["org2", "org3"]
    )
    registry = chain.contract("TransportRegistry", deployment.transport_registry)
    (event,) = registry.events.TransportUpdated().process_receipt(result.receipt)
    assert event["args"]["version"] == 2
    info = await get_transport(chain, deployment, key)
    assert info is not None
    assert (info.commitment, info.threshold, info.org_ids, info.version) == (
        new_commitment,
        1,
        ["org2", "org3"],
        2,
    )

    await retire_transport(chain, orgs["org1"], deployment, key)
    info = await get_transport(chain, deployment, key)
    assert info is not None and not info.active
    with pytest.raises(ChainRevert) as exc:
        await update_transport(chain, orgs["org1"], deployment, key, new_commitment, 1, ["org2"])
    assert exc.value.reason == "transport is retired"
    with pytest.raises(ChainRevert) as exc:
        await retire_transport(chain, orgs["org1"], deployment, fresh_key())
    assert exc.value.reason == "transport not registered"


# -- lookups ---------------------------------------------------------------------------------


async def test_authorised_lookup_emits_lookup_requested(
    chain: Chain, deployment: Deployment, orgs: dict[str, LocalAccount], responder: LocalAccount
) -> None:
    key = await registered_transport(chain, deployment, orgs["org1"])
    guid, ephemeral = new_guid(), os.urandom(32)
    result = await request_lookup(chain, responder, deployment, guid, key, ephemeral, wait=True)
    gk = chain.contract("Gatekeeper", deployment.gatekeeper)
    (event,) = gk.events.LookupRequested().process_receipt(result.receipt)
    assert event["address"] == deployment.gatekeeper
    assert event["args"]["guid"] == guid
    assert event["args"]["transportKey"] == key
    assert event["args"]["requester"] == responder.address
    assert event["args"]["ephemeralPk"] == ephemeral
    assert event["args"]["transportVersion"] == 1

    # No state per lookup: a request writes no storage anywhere (a slot per guid made a node's
    # work per block grow with every lookup ever made). The same guid again is just another
    # event; org nodes serve a guid once, to its first requester (tests/e2e/test_lookup.py).
    assert await storage_written(chain, result.tx_hash) == {}
    again = await request_lookup(chain, responder, deployment, guid, key, ephemeral, wait=True)
    assert len(gk.events.LookupRequested().process_receipt(again.receipt)) == 1
    assert await storage_written(chain, again.tx_hash) == {}
    assert "lookupUsed" not in {f["name"] for f in gk.abi if f["type"] == "function"}


async def test_storage_written_sees_a_registration_write(
    chain: Chain, deployment: Deployment, orgs: dict[str, LocalAccount]
) -> None:
    """The check above would pass on a tracer that reports nothing: here it must report the
    TransportRegistry's slots that a registration fills."""
    result = await register_transport(
        chain, orgs["org1"], deployment, fresh_key(), os.urandom(32), 2, ORG_IDS, wait=True
    )
    written = await storage_written(chain, result.tx_hash)
    assert Web3.to_checksum_address(deployment.transport_registry) in written
    assert written[Web3.to_checksum_address(deployment.transport_registry)]


async def test_a_batch_of_lookups_emits_one_event_each_or_reverts_whole(
    chain: Chain, deployment: Deployment, orgs: dict[str, LocalAccount], responder: LocalAccount
) -> None:
    gk = chain.contract("Gatekeeper", deployment.gatekeeper)
    keys = [await registered_transport(chain, deployment, orgs["org1"]) for _ in range(3)]
    items = [(new_guid(), k, os.urandom(32)) for k in keys]
    tx = await chain.send_call(
        responder, deployment.gatekeeper, request_lookups_calldata(items), gas=600_000
    )
    result = await chain.wait(tx)
    events = gk.events.LookupRequested().process_receipt(result.receipt)
    assert [(e["args"]["guid"], e["args"]["transportKey"]) for e in events] == [
        (g, k) for g, k, _ in items
    ]

    # one unknown transport in a batch: the whole batch reverts with that entry's reason
    bad = [(new_guid(), keys[0], os.urandom(32)), (new_guid(), fresh_key(), os.urandom(32))]
    tx = await chain.send_call(
        responder, deployment.gatekeeper, request_lookups_calldata(bad), gas=600_000
    )
    with pytest.raises(ChainRevert) as exc:
        await chain.wait(tx)
    assert exc.value.reason == "transport not registered"
    logs = await chain.w3.eth.get_logs(
        {
            "fromBlock": 0,
            "address": deployment.gatekeeper,
            "topics": [None, "0x" + bad[0][0].hex() + "00" * 16],
        }
    )
    assert logs == []  # the good entry of the reverted batch left no event

    stranger = await funded(chain)
    with pytest.raises(ChainRevert) as exc:
        await chain.simulate_call(
            stranger.address, deployment.gatekeeper, request_lookups_calldata(items[:1])
        )
    assert "requester not authorised" in exc.value.reason


async def test_lookup_refusals_carry_the_contract_reason(
    chain: Chain, deployment: Deployment, orgs: dict[str, LocalAccount], responder: LocalAccount
) -> None:
    key = await registered_transport(chain, deployment, orgs["org1"])
    gk = chain.contract("Gatekeeper", deployment.gatekeeper)
    stranger = await funded(chain)

    # Simulated (eth_call) and mined (receipt status 0, reason replayed) refusals agree.
    call = gk.functions.requestLookup(new_guid(), key, os.urandom(32))
    with pytest.raises(ChainRevert) as exc:
        await chain.simulate(stranger.address, call)
    assert "requester not authorised" in exc.value.reason
    with pytest.raises(ChainRevert) as exc:
        await request_lookup(chain, stranger, deployment, new_guid(), key, os.urandom(32))
    assert "requester not authorised" in exc.value.reason

    with pytest.raises(ChainRevert) as exc:
        await request_lookup(chain, responder, deployment, new_guid(), fresh_key(), os.urandom(32))
    assert exc.value.reason == "transport not registered"

    await retire_transport(chain, orgs["org1"], deployment, key)
    with pytest.raises(ChainRevert) as exc:
        await chain.simulate(
            responder.address, gk.functions.requestLookup(new_guid(), key, os.urandom(32))
        )
    assert exc.value.reason == "transport is retired"


async def test_governor_upgrade_retires_the_old_gatekeeper(
    chain: Chain, admin: LocalAccount, orgs: dict[str, LocalAccount]
) -> None:
    # A deployment of its own, so the upgrade does not change what other tests see.
    dep = await deploy_all(chain, admin)
    responder = await funded(chain)
    await grant_role(chain, admin, dep, "RESPONDER", responder.address)
    for org_id, account in (("up-org1", await funded(chain)), ("up-org2", await funded(chain))):
        await register_participant(
            chain, admin, dep, org_id, os.urandom(32), os.urandom(32), account.address, KIND_ORG
        )
        company = account
    key = fresh_key()
    await register_transport(chain, company, dep, key, os.urandom(32), 1, ["up-org1", "up-org2"])

    governor = chain.contract("Governor", dep.governor)
    new_gk = await deploy_contract(chain, admin, "Gatekeeper", dep.governor, dep.transport_registry)
    stranger = await funded(chain)
    with pytest.raises(ChainRevert) as exc:
        await chain.transact(stranger, governor.functions.upgrade(new_gk))
    assert exc.value.reason == "only the governor owner may upgrade"

    result = await chain.transact(admin, governor.functions.upgrade(new_gk))
    (event,) = governor.events.GatekeeperUpgraded().process_receipt(result.receipt)
    assert (event["args"]["previous"], event["args"]["current"]) == (dep.gatekeeper, new_gk)
    assert await current_gatekeeper(chain, dep) == new_gk

    with pytest.raises(ChainRevert) as exc:
        await request_lookup(
            chain, responder, dep, new_guid(), key, os.urandom(32), gatekeeper=dep.gatekeeper
        )
    assert exc.value.reason.startswith("gatekeeper retired")

    # Roles live on each gatekeeper: the new one needs its own grant, then lookups work again.
    with pytest.raises(ChainRevert) as exc:
        await request_lookup(chain, responder, dep, new_guid(), key, os.urandom(32))
    assert "requester not authorised" in exc.value.reason
    await grant_role(chain, admin, dep, "RESPONDER", responder.address)
    result = await request_lookup(chain, responder, dep, new_guid(), key, os.urandom(32))
    (event,) = (
        chain.contract("Gatekeeper", new_gk)
        .events.LookupRequested()
        .process_receipt(result.receipt)
    )
    assert event["address"] == new_gk


# -- the client ------------------------------------------------------------------------------


async def test_fifty_concurrent_transactions_from_one_account(
    chain: Chain, deployment: Deployment, orgs: dict[str, LocalAccount], responder: LocalAccount
) -> None:
    key = await registered_transport(chain, deployment, orgs["org1"])
    gatekeeper = await current_gatekeeper(chain, deployment)
    guids = [new_guid() for _ in range(50)]
    sent = await asyncio.gather(
        *(
            request_lookup(
                chain,
                responder,
                deployment,
                g,
                key,
                os.urandom(32),
                wait=False,
                gatekeeper=gatekeeper,
            )
            for g in guids
        )
    )
    assert all(r.receipt is None for r in sent)
    assert len({r.tx_hash for r in sent}) == 50
    mined = await asyncio.gather(*(chain.wait(r) for r in sent))
    assert all(r.receipt is not None and r.receipt["status"] == 1 for r in mined)
    gk = chain.contract("Gatekeeper", gatekeeper)
    requested = {
        e["args"]["guid"]
        for r in mined
        for e in gk.events.LookupRequested().process_receipt(r.receipt)
    }
    assert requested == set(guids)


async def test_nonce_manager_resyncs_after_a_foreign_transaction(
    chain: Chain, anvil_url: str, deployment: Deployment
) -> None:
    account = await funded(chain)
    # A view function sent as a transaction: harmless; the point is the nonce.
    fn = chain.contract("Governor", deployment.governor).functions.gatekeeper
    await chain.transact(account, fn())
    other = await Chain.connect(anvil_url)
    try:
        await other.transact(account, fn())  # `chain`'s locally counted nonce is now stale
    finally:
        await other.close()
    result = await chain.transact(account, fn())
    assert result.receipt is not None and result.receipt["status"] == 1
    assert await chain.w3.eth.get_transaction_count(account.address) == 3


async def test_connect_to_nothing_names_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ChainError) as exc:
        await Chain.connect(url, connect_timeout=5)
    assert url in str(exc.value)
    assert "shardline up" in str(exc.value)


async def test_addresses_are_checksummed(deployment: Deployment) -> None:
    for address in (deployment.governor, deployment.gatekeeper, deployment.org_registry):
        assert Web3.is_checksum_address(address)


async def test_list_agreements_keep_each_orgs_digest_once(
    chain: Chain, admin: LocalAccount, deployment: Deployment, orgs: dict[str, LocalAccount]
) -> None:
    from shardline.contracts import lists

    list_id, pair, digest = os.urandom(16).hex(), os.urandom(32).hex(), os.urandom(32).hex()
    await lists.record_agreement(chain, orgs["org1"], deployment, list_id, pair, digest)
    assert await lists.recorded_digest(chain, deployment, list_id, pair, "org1") == digest
    assert await lists.recorded_digest(chain, deployment, list_id, pair, "org2") is None
    with pytest.raises(ChainRevert, match="already recorded"):
        await lists.record_agreement(chain, orgs["org1"], deployment, list_id, pair, digest)
    stranger = await funded(chain)
    with pytest.raises(ChainRevert, match="only an active org may record"):
        await lists.record_agreement(chain, stranger, deployment, list_id, pair, digest)


ARTIFACT_OF = {
    "governor": "Governor",
    "org_registry": "OrgRegistry",
    "transport_registry": "TransportRegistry",
    "gatekeeper": "Gatekeeper",
    "records_registry": "RecordsRegistry",
    "list_agreements": "ListAgreements",
    "mediator": "Mediator",
    "market": "Market",
}


def sample_args(inputs: list[dict], pick: int, known: dict[str, list]) -> list:
    """Arguments for a view function: values the fixtures registered (``pick`` 0) or ones
    nobody did (``pick`` 1), so that both answers and reverts are compared."""

    def one(param: dict):
        kind = param["type"]
        if kind.endswith("]"):
            cut = kind.rindex("[")
            inner = dict(param, type=kind[:cut])
            return [one(inner) for _ in range(int(kind[cut + 1 : -1] or 2))]
        if kind == "tuple":
            return tuple(one(c) for c in param["components"])
        choices = known.get(kind)
        if choices is None and kind.startswith("uint"):
            choices = [1, 200]
        if choices is None and kind.startswith("bytes") and kind != "bytes":
            choices = [b"\x01" * int(kind[5:]), b"\x00" * int(kind[5:])]
        assert choices is not None, f"no sample for ABI type {kind}"
        return choices[pick % len(choices)]

    return [one(p) for p in inputs]


def same(a, b) -> bool:
    """Equal, and of the same types all the way down (a list is not a tuple here)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


async def web3_read(fn):
    """What ``Chain.read`` answered before it made its own eth_call: web3's call path."""
    from web3.exceptions import ContractLogicError

    from shardline.contracts.client import revert_reason

    try:
        return "ok", await fn.call()
    except ContractLogicError as exc:
        return "revert", revert_reason(exc)


async def no_web3_call(*_args, **_kwargs):
    raise AssertionError("Chain.read went through web3's call path")


async def test_read_answers_every_view_function_as_web3_does(
    monkeypatch: pytest.MonkeyPatch,
    chain: Chain,
    admin: LocalAccount,
    deployment: Deployment,
    orgs: dict[str, LocalAccount],
    responder: LocalAccount,
) -> None:
    """``Chain.read`` encodes and decodes view calls itself (``contracts.views``): on every view
    function of every deployed contract, with arguments that exist and ones that do not, it
    answers as web3's own call path did: the same values of the same types, or the same revert
    reason."""
    from shardline.contracts.artifacts import load_artifact

    company = orgs["org1"]
    transport = await registered_transport(chain, deployment, company)
    known = {
        "bytes32": [org_id_to_bytes32("org2"), transport],
        "address": [company.address, responder.address, "0x" + "00" * 20],
        "string": ["org1", "nobody"],
        "bytes": [b"", b"\x01\x02"],
        "bool": [True, False],
    }
    compared = reverted = 0
    for field, name in ARTIFACT_OF.items():
        address = getattr(deployment, field)
        contract = chain.contract(name, address)
        for entry in load_artifact(name).abi:
            if entry.get("type") != "function" or entry["stateMutability"] not in (
                "view",
                "pure",
            ):
                continue
            for pick in (0, 1):
                args = sample_args(entry.get("inputs", []), pick, known)
                fn = contract.get_function_by_signature(
                    f"{entry['name']}({','.join(collapse(p) for p in entry['inputs'])})"
                )(*args)
                expected = await web3_read(fn)
                with monkeypatch.context() as m:  # read must not fall back to web3's call
                    m.setattr(type(fn), "call", no_web3_call)
                    try:
                        got = ("ok", await chain.read(fn))
                    except ChainRevert as exc:
                        got = ("revert", exc.reason)
                assert got[0] == expected[0] and same(got[1], expected[1]), (
                    f"{name}.{entry['name']}{tuple(args)}: read {got!r}, web3 {expected!r}"
                )
                compared += 1
                reverted += got[0] == "revert"
    assert compared > 60 and 0 < reverted < compared, (compared, reverted)


def collapse(param: dict) -> str:
    from eth_utils.abi import collapse_if_tuple

    return collapse_if_tuple(param)


async def test_read_lets_web3_convert_what_eth_abi_will_not_take(
    chain: Chain, deployment: Deployment, orgs: dict[str, LocalAccount]
) -> None:
    """A hex string where the ABI says bytes32 is web3's to convert: the read still answers."""
    from shardline.contracts import market as mk

    market = chain.contract("Market", deployment.market)
    as_bytes = await chain.read(market.functions.server(mk.ident("org1")))
    as_hex = await chain.read(market.functions.server("0x" + mk.ident("org1").hex()))
    assert same(as_bytes, as_hex)


async def test_transact_signs_what_web3_would_build(
    chain: Chain, admin: LocalAccount, orgs: dict[str, LocalAccount]
) -> None:
    """``Chain.transact`` encodes a contract call itself and signs it with ``txsign``: for every
    state-changing function of every contract (a deployment of this test's own, so that what
    the calls change touches no other test), the raw transaction it sends is byte for byte the
    one web3's build_transaction and eth-account's signing make of the same call."""
    import rlp

    from shardline.contracts.artifacts import load_artifact
    from shardline.contracts.client import _calldata

    own = await deploy_all(chain, admin)
    account = await funded(chain)
    known = {
        "bytes32": [org_id_to_bytes32("org2")],
        "address": [account.address],
        "string": ["org1"],
        "bytes": [b"\x01\x02"],
        "bool": [True],
    }
    sent: list[str] = []
    real_call = chain.rpc.call

    async def recording(method: str, params: list):
        if method == "eth_sendRawTransaction":
            sent.append(params[0])
        return await real_call(method, params)

    chain.rpc.call = recording  # type: ignore[method-assign]
    signed = 0
    try:
        for field, name in ARTIFACT_OF.items():
            contract = chain.contract(name, getattr(own, field))
            for entry in load_artifact(name).abi:
                if entry.get("type") != "function" or entry["stateMutability"] in ("view", "pure"):
                    continue
                signature = f"{entry['name']}({','.join(collapse(p) for p in entry['inputs'])})"
                fn = contract.get_function_by_signature(signature)(
                    *sample_args(entry.get("inputs", []), 0, known)
                )
                value = 7 if entry["stateMutability"] == "payable" else 0
                before = len(sent)
                await chain.transact(account, fn, gas=300_000, value=value, wait=False)
                assert len(sent) == before + 1, signature
                raw = bytes.fromhex(sent[-1].removeprefix("0x"))
                # the nonce and the fees are the chain's of the moment: taken from what was sent
                _chain_id, nonce, priority, max_fee, *_rest = rlp.decode(raw[1:])
                params = {
                    "from": account.address,
                    "gas": 300_000,
                    "value": value,
                    "maxFeePerGas": int.from_bytes(max_fee, "big"),
                    "maxPriorityFeePerGas": int.from_bytes(priority, "big"),
                    "chainId": chain.chain_id,
                    "nonce": int.from_bytes(nonce, "big"),
                }
                web3s = account.sign_transaction(await fn.build_transaction(params))
                assert raw == bytes(web3s.raw_transaction), f"{name}.{signature}"
                signed += 1
    finally:
        chain.rpc.call = real_call  # type: ignore[method-assign]
    assert signed > 30, signed
    # value sent to a function that is not payable is web3's to refuse, as before
    fn = chain.contract("Market", own.market).functions.withdraw()
    assert _calldata(fn, 1) is None


async def test_a_read_the_node_cannot_run_is_the_nodes_error_not_a_revert(
    chain: Chain, deployment: Deployment
) -> None:
    """A block the node does not have is no answer of the contract's: ChainError, which
    callers retry, naming the node; never ChainRevert, which they take as final."""
    from shardline.contracts import market as mk

    fn = chain.contract("Market", deployment.market).functions.server(mk.ident("org1"))
    with pytest.raises(ChainError) as exc:
        await chain.read(fn, block=10**9)
    assert not isinstance(exc.value, ChainRevert)
    assert chain.rpc_url in str(exc.value)


# EIP-2935's block-hash history contract (prague): where a prague chain stores each block's parent
# hash, in slot (number - 1) % 8191.
HISTORY_STORAGE = "0x0000F90827F1C53a10cb7A02335B175320002935"


async def test_the_chain_keeps_no_block_hash_history_in_state(chain: Chain) -> None:
    """The embedded chain runs cancun (servers.ANVIL_HARDFORK): no history contract, so its
    state, which anvil hashes whole at every block, does not grow by a slot with each block."""
    rpc = chain.w3.provider.make_request
    await rpc("anvil_mine", ["0x4"])
    head = int((await rpc("eth_blockNumber", []))["result"], 16)
    code = (await rpc("eth_getCode", [HISTORY_STORAGE, "latest"]))["result"]
    kept = (await rpc("eth_getStorageAt", [HISTORY_STORAGE, hex((head - 1) % 8191), "latest"]))[
        "result"
    ]
    assert code in ("0x", "0x0"), f"a history contract is deployed at {HISTORY_STORAGE}"
    assert int(kept, 16) == 0, f"block {head - 1}'s hash is kept in state"
