"""Private contracts on real servers: nats-server, a public anvil with the Mediator, and one anvil
per stakeholder as its private EVM; three facilitators run in this process.

Each facilitator speaks on the bus as its own org's nkey user, with the org's permissions (the
sender and the probes are the bus operator). Agreement settles YES with equal roots; a diverging executor under unanimity settles NO and all
three are back at the old root; 2-of-3 settles with one stakeholder down, which catches up when
it returns; BLS aggregate votes settle on chain; bad payloads are refused with a named reason;
a replayed submit is refused; malformed privtx messages go to the dead letters with their
reason; no plaintext on the bus or on the public chain.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import secrets
import signal
from dataclasses import dataclass, field
from pathlib import Path

import nats
import pytest
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_utils import keccak

from shardline import bus_access, servers
from shardline import privtx_local as pl
from shardline.bus.blobs import BlobNotFound
from shardline.bus.credentials import ClientAuth
from shardline.bus.payloads import PayloadStore
from shardline.bus.streams import ensure_streams
from shardline.contracts import mediator as med
from shardline.contracts.artifacts import load_artifact
from shardline.contracts.client import Chain, ChainRevert
from shardline.contracts.cursor import raw_log
from shardline.contracts.deploy import deploy_contract
from shardline.core import privtx as pt
from shardline.ops import dlq
from shardline.workers import privtx_messages as pm
from shardline.workers.privtx_facilitator import Facilitator
from shardline.workers.privtx_sender import PrivateSender

pytestmark = pytest.mark.integration

ADMIN = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
SECRET_SKU = b"sku:secret-widget-7Q".ljust(32, b"\0")


def receive_goods(units: int, sku: bytes = SECRET_SKU) -> bytes:
    return keccak(text="receiveGoods(bytes32,uint256)")[:4] + abi_encode(
        ["bytes32", "uint256"], [sku, units]
    )


NAMES = ("acme", "bolt", "crane")


@dataclass
class Env:
    nats_url: str  # the operator's
    seeds: dict[str, Path]  # each stakeholder's org nkey seed
    chain_rpc: str
    mediator: str
    start_block: int
    tmp: Path
    stakeholders: list[pl.Stakeholder]
    executors: list[str]
    sender_key: str
    chain: Chain
    running: dict[int, Facilitator] = field(default_factory=dict)
    exec_procs: list = field(default_factory=list)

    async def restart_executor(self, i: int) -> None:
        """Kill stakeholder i's private EVM (SIGKILL: no state kept) and start a fresh one at the
        same address."""
        p = self.exec_procs[i]
        os.kill(p.pid, signal.SIGKILL)
        await asyncio.to_thread(p.wait)
        port = int(self.executors[i].rsplit(":", 1)[1])
        fresh = self.tmp / f"executor-{i}-{secrets.token_hex(4)}"
        self.exec_procs[i], url = await asyncio.to_thread(pl.start_executor, fresh, port)
        assert url == self.executors[i]

    async def start(self, i: int, *, bls: bool = False) -> Facilitator:
        f = pl.facilitator(
            self.stakeholders[i],
            executor_url=self.executors[i],
            chain_rpc=self.chain_rpc,
            mediator=self.mediator,
            start_block=self.start_block,
            nats_url=self.nats_url,
            db_path=self.tmp / f"facilitator-{i}.db",
            bls_votes=bls,
            bus_auth=ClientAuth(self.stakeholders[i].name, self.seeds[self.stakeholders[i].name]),
        )
        await f.start()
        self.running[i] = f
        return f

    async def stop(self, i: int) -> None:
        await self.running.pop(i).stop()

    async def group(self, threshold: int | None = None, timeout_s: int = 30, bls: bool = False):
        admin = Account.from_key(ADMIN)
        sender = Account.from_key(self.sender_key).address
        group = await pl.create_group(
            self.chain,
            admin,
            self.mediator,
            sender,
            self.stakeholders,
            threshold=threshold,
            timeout_s=timeout_s,
            bls=bls,
        )
        # every running facilitator joins (deploys its private contract) before we send
        for _ in range(200):
            if all(group in f.groups for f in self.running.values()):
                return group
            await asyncio.sleep(0.05)
        raise AssertionError("facilitators did not join the group")

    def contract(self, i: int, group: bytes) -> str:
        f = self.running.get(i)
        if f is not None:
            return f.groups[group].contract
        return pl_store_contract(self.tmp / f"facilitator-{i}.db", group)

    async def root(self, i: int, group: bytes) -> bytes:
        from shardline.workers.privtx_executor import Executor

        ex = Executor(self.executors[i])
        try:
            return await ex.root(self.contract(i, group))
        finally:
            await ex.close()


def pl_store_contract(db: Path, group: bytes) -> str:
    from shardline.workers.privtx_store import FacilitatorStore

    return FacilitatorStore(f"sqlite:///{db}").groups()[group.hex()][1]


@pytest.fixture(scope="module")
async def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("privtx")
    # a bus with users: the operator, and one nkey user per stakeholder's org
    setup = bus_access.provision(tmp / "bus", list(NAMES))
    port, monitor = servers.free_port(), servers.free_port()
    bus = servers.spawn(
        servers.nats_spec(tmp / "bus" / "nats", port, monitor, setup.config_file),
        tmp / "nats.log",
    )
    procs = [bus]
    nats_url = setup.url("127.0.0.1", port)
    nc = await nats.connect(nats_url)
    await ensure_streams(nc.jetstream())  # the DLQ stream among them: the operator's to make
    await nc.close()
    await pl.ensure_payload_store(nats_url)
    pub_proc, chain_rpc = pl.start_executor(tmp / "public")  # the public chain: a plain anvil
    procs.append(pub_proc)
    executors, exec_procs = [], []
    for i in range(3):
        p, url = pl.start_executor(tmp / f"executor-{i}")
        exec_procs.append(p)
        executors.append(url)
    chain = await Chain.connect(chain_rpc)
    admin = Account.from_key(ADMIN)
    mediator = await deploy_contract(chain, admin, "Mediator")
    start = int(await chain.rpc.call("eth_blockNumber", []), 16)
    stakeholders = [pl.Stakeholder.generate(n) for n in NAMES]
    sender_key = "0x" + secrets.token_bytes(32).hex()
    await pl.fund(chain, Account.from_key(sender_key).address, *(s.address for s in stakeholders))
    e = Env(
        nats_url,
        setup.org_seeds,
        chain_rpc,
        mediator,
        start,
        tmp,
        stakeholders,
        executors,
        sender_key,
        chain,
        exec_procs=exec_procs,
    )
    for i in range(3):
        await e.start(i)
    yield e
    for i in list(e.running):
        await e.stop(i)
    await chain.close()
    for p in procs + e.exec_procs:
        servers.stop_pid(p.pid)


@pytest.fixture
async def sender(env):
    s = await PrivateSender.connect(
        env.nats_url,
        env.chain_rpc,
        env.mediator,
        env.sender_key,
        chain_ws=env.chain_rpc.replace("http://", "ws://"),
    )
    yield s
    await s.close()


async def settled_everywhere(env: Env, phash: bytes) -> None:
    """Wait until every running facilitator has handled the transaction's PrivateTxFini."""
    for _ in range(400):
        rows = [f.rows.get(phash.hex()) for f in env.running.values()]
        # (executed ahead, or undone, and not yet past its Init: not handled either)
        if all(
            r is not None and r.state not in ("executed", "refused", "pre", "abandoned")
            for r in rows
        ):
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"not settled at every facilitator: {rows}")


# -- stakeholders made to fail, lag or keep quiet (for the tests below) --------------------------
async def no_vote_ahead(push, reply) -> None:
    """Stands in for ``Facilitator._execute_ahead``: the member executes on the Init only."""
    return None


def first_fetch_fails(f: Facilitator) -> tuple[object, list[bytes]]:
    """A ``_ciphertext`` for ``f`` whose first fetch fails (the store unreachable for a
    moment) and later ones work; and the list of what failed."""
    fetch, failed = f._ciphertext, []

    async def unreachable_once(phash: bytes) -> bytes:
        if not failed:
            failed.append(phash)
            raise BlobNotFound(f"payload {phash.hex()} (the store is unreachable for a moment)")
        return await fetch(phash)

    return unreachable_once, failed


def hold_reader_back(m: pytest.MonkeyPatch, f: Facilitator, reading: asyncio.Event) -> None:
    """``f``'s reorg-safe reader reads nothing (no outcome reaches it) until ``reading`` is set
    (set it on the way out, too: a read already waiting goes on waiting); pushed
    PrivateTxInits still come."""
    step = f.reader.step

    async def held_back(handle):
        await reading.wait()
        return await step(handle)

    m.setattr(f.reader, "step", held_back)


async def row_when(f: Facilitator, phash: bytes, done=lambda r: True):
    """``f``'s row for a payload once it has one for which ``done`` holds (else the last seen)."""
    row = None
    for _ in range(400):
        row = f.rows.get(phash.hex())
        if row is not None and done(row):
            break
        await asyncio.sleep(0.025)
    return row


async def test_agreement_settles_yes_with_equal_roots(env, sender):
    group = await env.group()
    sent = await sender.send(group, receive_goods(40))
    info = await sender.outcome(group, sent.payload_hash)
    assert info.status == pt.Status.YES
    assert info.old_root == pt.EMPTY_ROOT and info.new_root != pt.EMPTY_ROOT
    await settled_everywhere(env, sent.payload_hash)
    roots = [await env.root(i, group) for i in range(3)]
    assert roots == [info.new_root] * 3
    g = await med.group_of(env.chain, env.mediator, group)
    assert g.root == info.new_root
    # a second one builds on the first
    sent2 = await sender.send(group, receive_goods(2))
    info2 = await sender.outcome(group, sent2.payload_hash)
    assert info2.status == pt.Status.YES and info2.old_root == info.new_root


async def test_unanimous_with_a_diverging_executor_settles_no_and_all_revert(env, sender):
    group = await env.group()
    first = await sender.send(group, receive_goods(5))
    agreed = await sender.outcome(group, first.payload_hash)
    assert agreed.status == pt.Status.YES
    await settled_everywhere(env, first.payload_hash)
    # Stakeholder 2 runs other code under the group's contract (an operator's mistake): its
    # execution of the next call differs from the others'.
    other = load_artifact("Governor").deployed_bytecode
    f2 = env.running[2]
    await f2.executor.rpc.call("anvil_setCode", [env.contract(2, group), other])
    sent = await sender.send(group, receive_goods(7))
    info = await sender.outcome(group, sent.payload_hash)
    assert info.status == pt.Status.NO
    await settled_everywhere(env, sent.payload_hash)
    assert [await env.root(i, group) for i in range(3)] == [agreed.new_root] * 3
    assert [f.rows[sent.payload_hash.hex()].state for f in env.running.values()][:2] == [
        "reverted",
        "reverted",
    ]
    # NO is decided at the first differing vote, so a third vote may never land.
    votes = await vote_logs(env, group, sent.payload_hash)
    assert votes[2] == (agreed.new_root, agreed.new_root)  # its call did nothing
    others = [v for i, v in votes.items() if i != 2]
    assert others and all(v[0] == agreed.new_root and v[1] != agreed.new_root for v in others)
    assert pt.decide(votes, 3, 3, agreed.new_root).status == pt.Status.NO


async def vote_logs(env: Env, group: bytes, phash: bytes) -> dict[int, tuple[bytes, bytes]]:
    raw = await env.chain.rpc.call(
        "eth_getLogs",
        [
            {
                "address": env.mediator,
                "fromBlock": hex(env.start_block),
                "toBlock": "latest",
                "topics": [med.TX_VOTE, "0x" + group.hex(), "0x" + phash.hex()],
            }
        ],
    )
    votes = {}
    for r in raw:
        v = med.decode_event(raw_log(r))
        votes[v.member] = (v.old_root, v.new_root)
    return votes


async def test_k_of_n_settles_with_one_down_and_it_catches_up(env, sender):
    group = await env.group(threshold=2)
    await env.stop(1)
    try:
        sent = [await sender.send(group, receive_goods(u)) for u in (3, 4, 5)]
        outcomes = [await sender.outcome(group, s.payload_hash) for s in sent]
        assert [o.status for o in outcomes] == [pt.Status.YES] * 3
    finally:
        f1 = await env.start(1)
    for _ in range(400):
        row = f1.rows.get(sent[-1].payload_hash.hex())
        if row is not None and row.state == "final":
            break
        await asyncio.sleep(0.025)
    assert await env.root(1, group) == outcomes[-1].new_root
    assert await env.root(0, group) == outcomes[-1].new_root


async def test_unanimous_with_one_down_fails_at_the_timeout_and_everyone_reverts(env, sender):
    group = await env.group(timeout_s=2)
    await env.stop(2)
    try:
        sent = await sender.send(group, receive_goods(9))
        info = await sender.outcome(group, sent.payload_hash, timeout_s=30)
        assert info.status == pt.Status.FAILED
        await settled_everywhere(env, sent.payload_hash)
        assert await env.root(0, group) == pt.EMPTY_ROOT
        assert await env.root(1, group) == pt.EMPTY_ROOT
    finally:
        f2 = await env.start(2)
    for _ in range(400):
        row = f2.rows.get(sent.payload_hash.hex())
        if row is not None and row.state not in ("executed", "refused"):
            break
        await asyncio.sleep(0.025)
    assert await env.root(2, group) == pt.EMPTY_ROOT


async def dead_letters(env: Env, subject: str, at_least: int) -> list:
    """The dead letters of ``subject`` once there are ``at_least`` of them."""
    nc = await nats.connect(env.nats_url)
    try:
        for _ in range(200):
            found = await dlq.listing(nc.jetstream(), subject=subject)
            if len(found) >= at_least:
                return found
            await asyncio.sleep(0.05)
        return found
    finally:
        await nc.close()


async def test_malformed_pushes_go_to_the_dead_letters_with_their_reason(env):
    group = await env.group()
    subject = f"privtx.payload.{group.hex()}"
    ciphertext = secrets.token_bytes(80)
    name = hashlib.sha3_256(ciphertext).hexdigest()
    b64 = base64.b64encode(ciphertext).decode()
    bad = [
        (b"raw ciphertext, not JSON", "is JSON"),
        (json.dumps({"hash": name}).encode(), "privtx.payload: "),  # no ciphertext
        (json.dumps({"hash": "00" * 32, "ciphertext": b64}).encode(), f"hashes to {name}"),
    ]
    nc = await nats.connect(env.nats_url)  # the sender's side: the operator
    try:
        for data, _ in bad:
            await nc.publish(subject, data)
        await nc.publish("privtx.payload.not-a-group", pm.push_body(ciphertext))
        await nc.publish(subject, pm.push_body(ciphertext))  # a good one, after the bad
        await nc.flush()
    finally:
        await nc.close()
    for _ in range(200):  # every facilitator hears pushes under its org's permissions
        if all(name in f.pushed for f in env.running.values()):
            break
        await asyncio.sleep(0.025)
    assert all(f.pushed.get(name) == ciphertext for f in env.running.values())
    letters = await dead_letters(env, subject, len(bad))
    # three facilitators, one letter per bad message (the same message is kept once)
    assert len(letters) == len(bad), letters
    for letter, (_, why) in zip(letters, bad, strict=True):
        assert why in letter.reason and letter.worker.startswith("privtx-facilitator.")
    other = await dead_letters(env, "privtx.payload.not-a-group", 1)
    assert len(other) == 1 and "not a 32-byte group id" in other[0].reason


async def test_bls_aggregate_vote_settles(env, sender):
    for i in list(env.running):
        await env.stop(i)
    try:
        for i in range(3):
            await env.start(i, bls=True)
        group = await env.group(bls=True)
        # a malformed vote share goes to the dead letters and changes nothing
        subject = f"privtx.vote.{group.hex()}"
        share = json.loads(pm.vote_body(b"\1" * 32, 0, b"\2" * 32, b"\3" * 32, (1, 2)))
        share["sig"] = ["0x1", "2"]
        nc = await nats.connect(env.nats_url)
        await nc.publish(subject, json.dumps(share).encode())
        await nc.close()
        letters = await dead_letters(env, subject, 1)
        assert len(letters) == 1 and letters[0].reason.startswith(f"{subject}: privtx.vote: ")
        sent = await sender.send(group, receive_goods(11))
        info = await sender.outcome(group, sent.payload_hash)
        assert info.status == pt.Status.YES
        votes = await vote_logs(env, group, sent.payload_hash)
        assert len(votes) == 3 and len(set(votes.values())) == 1
    finally:
        for i in list(env.running):
            await env.stop(i)
        for i in range(3):
            await env.start(i)


async def test_replayed_submit_is_refused(env, sender):
    group = await env.group()
    info = await sender.group(group)
    sealed = pt.seal_payload(receive_goods(1), group, list(info.seal_keys))
    await sender.payloads.put(sealed.ciphertext)
    data = med.submit_data(group, sealed.payload_hash, sealed.ephemeral_pk, sealed.wraps)
    tx = await env.chain.send_call(sender.account, env.mediator, data, gas=300_000)
    await env.chain.wait(tx)
    with pytest.raises(ChainRevert, match="replayed submit"):
        await env.chain.simulate_call(sender.account.address, env.mediator, data)


async def test_a_wrap_that_does_not_open_is_refused_and_named(env, sender):
    group = await env.group(threshold=2)
    info = await sender.group(group)
    keys = list(info.seal_keys)
    keys[0] = secrets.token_bytes(32)  # stakeholder 0's wrap is made to a wrong key
    sealed = pt.seal_payload(receive_goods(8), group, keys)
    await sender.payloads.put(sealed.ciphertext)
    data = med.submit_data(group, sealed.payload_hash, sealed.ephemeral_pk, sealed.wraps)
    await env.chain.wait(await env.chain.send_call(sender.account, env.mediator, data, gas=300_000))
    out = await sender.outcome(group, sealed.payload_hash)
    assert out.status == pt.Status.YES  # 2-of-3: the other two agree
    assert out.new_root != pt.EMPTY_ROOT
    await settled_everywhere(env, sealed.payload_hash)
    row = env.running[0].rows[sealed.payload_hash.hex()]
    assert row.state == "diverged" and "does not open" in row.note
    assert env.running[0].groups[group].out_of_sync == row.note
    votes = await vote_logs(env, group, sealed.payload_hash)
    assert votes[0] == (pt.EMPTY_ROOT, pt.ZERO_ROOT)  # the refusal, named on chain
    assert pt.decide(votes, 3, 2, pt.EMPTY_ROOT).odd == (0,)


async def test_a_payload_nobody_can_fetch_is_refused_by_all_and_settles_no(env, sender):
    group = await env.group(threshold=2)
    info = await sender.group(group)
    sealed = pt.seal_payload(receive_goods(6), group, list(info.seal_keys))
    # submitted, but neither pushed nor stored: no stakeholder can fetch the ciphertext
    data = med.submit_data(group, sealed.payload_hash, sealed.ephemeral_pk, sealed.wraps)
    await env.chain.wait(await env.chain.send_call(sender.account, env.mediator, data, gas=300_000))
    out = await sender.outcome(group, sealed.payload_hash, timeout_s=60)
    assert out.status == pt.Status.NO
    await settled_everywhere(env, sealed.payload_hash)
    for f in env.running.values():
        row = f.rows[sealed.payload_hash.hex()]
        assert "no payload" in row.note
    assert [await env.root(i, group) for i in range(3)] == [pt.EMPTY_ROOT] * 3
    g = await med.group_of(env.chain, env.mediator, group)
    assert g.root == pt.EMPTY_ROOT


async def test_no_plaintext_on_the_bus_or_the_public_chain(env, sender):
    seen: list[bytes] = []
    nc = await nats.connect(env.nats_url)

    async def grab(msg):
        seen.append(bytes(msg.data))

    await nc.subscribe(">", cb=grab)
    await nc.flush()
    try:
        group = await env.group()
        sku = b"sku:plaintext-probe-" + secrets.token_hex(6).encode()
        sku = sku.ljust(32, b"\0")
        call = receive_goods(123_456, sku)
        sent = await sender.send(group, call)
        assert (await sender.outcome(group, sent.payload_hash)).status == pt.Status.YES
        await settled_everywhere(env, sent.payload_hash)
        await nc.flush()
    finally:
        await nc.close()
    assert seen, "the subscriber saw nothing on the bus: the test would prove nothing"
    probe = sku.rstrip(b"\0")
    assert not any(probe in m or call in m for m in seen)
    # the public chain: every transaction input and every log since the mediator was deployed
    head = int(await env.chain.rpc.call("eth_blockNumber", []), 16)
    chunks = []
    for n in range(env.start_block, head + 1):
        block = await env.chain.rpc.call("eth_getBlockByNumber", [hex(n), True])
        chunks += [bytes.fromhex(t["input"][2:]) for t in block["transactions"]]
    logs = await env.chain.rpc.call(
        "eth_getLogs", [{"fromBlock": hex(env.start_block), "toBlock": "latest"}]
    )
    chunks += [bytes.fromhex(lg["data"][2:]) for lg in logs]
    chunks += [bytes.fromhex(t[2:]) for lg in logs for t in lg["topics"]]
    assert chunks and not any(probe in c or call in c for c in chunks)


async def test_an_executor_that_lost_its_state_is_rebuilt_at_the_agreed_root(env, sender):
    group = await env.group()  # unanimous: nothing settles YES without every stakeholder
    for units in (2, 3):
        sent = await sender.send(group, receive_goods(units))
        agreed = await sender.outcome(group, sent.payload_hash)
        assert agreed.status == pt.Status.YES
    await settled_everywhere(env, sent.payload_hash)
    # 1. killed and started afresh under its running facilitator
    f1 = env.running[1]
    await env.restart_executor(1)
    sent = await sender.send(group, receive_goods(4))
    out = await sender.outcome(group, sent.payload_hash)
    assert out.status == pt.Status.YES and out.old_root == agreed.new_root
    await settled_everywhere(env, sent.payload_hash)
    assert f1.rebuilds == 1 and not f1.groups[group].out_of_sync
    assert [await env.root(i, group) for i in range(3)] == [out.new_root] * 3
    # 2. both the facilitator and its executor gone, both started as fresh processes
    await env.stop(1)
    await env.restart_executor(1)
    f1 = await env.start(1)
    assert f1.rebuilds == 1  # at start, before reading on
    assert await env.root(1, group) == out.new_root
    assert all(not g.out_of_sync for g in f1.groups.values())
    sent = await sender.send(group, receive_goods(5))
    last = await sender.outcome(group, sent.payload_hash)
    assert last.status == pt.Status.YES and last.old_root == out.new_root
    await settled_everywhere(env, sent.payload_hash)
    assert [await env.root(i, group) for i in range(3)] == [last.new_root] * 3


async def test_an_outcome_settled_while_the_senders_feed_was_down_is_read_once_it_is_back(
    env, sender
):
    """The sender reads txOf only when its PrivateTxFini feed broke since the transaction was
    sent: here the outcome is decided while the feed is down, and must be found as soon as the
    feed is back, well before the 10 s check (timeout 5 s). (No votes ahead: with them the
    outcome would come in the submission's own receipt.)"""
    group = await env.group()
    await sender.watch.stop()  # the feed drops
    sender.votes_ahead = False
    try:
        sent = await sender.send(group, receive_goods(13))
    finally:
        sender.votes_ahead = True
    for _ in range(400):  # decided on chain meanwhile, unheard by the sender
        info = await med.tx_of(env.chain, env.mediator, group, sent.payload_hash)
        if info is not None and info.status != pt.Status.PENDING:
            break
        await asyncio.sleep(0.025)
    assert info is not None and info.status == pt.Status.YES
    assert sent.payload_hash not in sender._finis
    sender.watch.start()  # the feed is back (a new subscription)
    for _ in range(200):
        if sender.watch.live:
            break
        await asyncio.sleep(0.025)
    assert sender.watch.live
    out = await sender.outcome(group, sent.payload_hash, timeout_s=5)
    assert out.status == pt.Status.YES and out.new_root == info.new_root


async def mediator_txs(env: Env, first: int, last: int) -> list[tuple[bytes, dict]]:
    """(selector, receipt) of every Mediator transaction in blocks first..last."""
    out = []
    for n in range(first, last + 1):
        block = await env.chain.rpc.call("eth_getBlockByNumber", [hex(n), True])
        for t in block["transactions"]:
            if (t.get("to") or "").lower() == env.mediator.lower():
                receipt = await env.chain.rpc.call("eth_getTransactionReceipt", [t["hash"]])
                out.append((bytes.fromhex(t["input"][2:10]), receipt))
    return out


async def push_ahead(env: Env, group: bytes, x: pt.SealedPayload, seq: int, root: bytes) -> list:
    """Push X as the sender would, asking for votes ahead at ``seq`` on ``root``; the three
    answers."""
    votes: list[pm.PreVoteMsg] = []
    nc = await nats.connect(env.nats_url)
    try:
        # stored too, as the sender does: what is executed afresh later is fetched from there
        await (await PayloadStore.open(nc.jetstream())).put(x.ciphertext)
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        await nc.publish(
            pm.PAYLOAD_SUBJECT.format(group=group.hex()),
            pm.push_body(x.ciphertext, pm.Ahead(seq, root, x.ephemeral_pk, tuple(x.wraps))),
            reply=inbox,
        )
        for _ in range(3):
            msg = await sub.next_msg(timeout=10)
            votes.append(pm.parse_prevote(msg.subject, msg.data))
    finally:
        await nc.close()
    return votes


def events_of(receipt: dict) -> list:
    return [med.decode_event(raw_log(lg)) for lg in receipt["logs"]]


async def test_a_transaction_sent_alone_settles_in_one_public_transaction_with_votes_cast_ahead(
    env, sender
):
    """Each stakeholder executes the pushed payload, signs its vote for the position the
    sender expects, and the sender carries the three votes in ``submitVoted``: Init, three
    votes and Fini YES in that one transaction, and no vote transaction after it."""
    group = await env.group()
    before = int(await env.chain.rpc.call("eth_blockNumber", []), 16)
    sent = await sender.send(group, receive_goods(21))
    info = await sender.outcome(group, sent.payload_hash)
    assert info.status == pt.Status.YES
    await settled_everywhere(env, sent.payload_hash)
    await asyncio.sleep(0.5)  # a vote transaction, were one sent, would be mined by now
    after = int(await env.chain.rpc.call("eth_blockNumber", []), 16)
    txs = await mediator_txs(env, before + 1, after)
    assert [sel for sel, _ in txs] == [med.SUBMIT_VOTED]
    evs = events_of(txs[0][1])
    assert [type(e).__name__ for e in evs] == ["TxInit", "TxVote", "TxVote", "TxVote", "TxFini"]
    assert sorted(e.member for e in evs if isinstance(e, med.TxVote)) == [0, 1, 2]
    assert evs[-1].status == pt.Status.YES and evs[-1].new_root == info.new_root
    assert [await env.root(i, group) for i in range(3)] == [info.new_root] * 3
    assert all(f.rows[sent.payload_hash.hex()].state == "final" for f in env.running.values())


async def test_an_execution_ahead_whose_position_goes_to_another_transaction_is_undone(env, sender):
    """A push asks the stakeholders to execute X ahead as the group's next transaction, but X
    is not submitted; Y is, and takes that position. Every stakeholder goes back to the state
    before X and runs Y; X's votes, cast for the position Y took, never count; when X is
    submitted after all, it is executed afresh where it lands and settles like any other."""
    group = await env.group()
    info = await med.group_of(env.chain, env.mediator, group)
    seq = info.submitted + 1
    x = pt.seal_payload(receive_goods(500), group, list(info.seal_keys))
    votes = await push_ahead(env, group, x, seq, info.root)
    assert sorted(v.vote.member for v in votes) == [0, 1, 2] and {v.seq for v in votes} == {seq}
    for f in env.running.values():
        assert f.rows[x.payload_hash.hex()].state == "pre"
    # Y is sent: the stakeholders are one ahead of it (X holds its position), so none votes
    # ahead; it is submitted without votes and executed on its PrivateTxInit.
    sent = await sender.send(group, receive_goods(7))
    out = await sender.outcome(group, sent.payload_hash)
    assert out.status == pt.Status.YES
    assert out.old_root == pt.EMPTY_ROOT  # built on the group's state, not on X's
    await settled_everywhere(env, sent.payload_hash)
    for f in env.running.values():
        assert f.rows[x.payload_hash.hex()].state == "abandoned"
    assert [await env.root(i, group) for i in range(3)] == [out.new_root] * 3
    # X submitted now, with the votes cast for the position Y took: they do not count.
    account = Account.from_key(env.sender_key)
    data = med.submit_voted_data(group, [(x, [v.vote for v in votes])])
    tx = await env.chain.send_call(account, env.mediator, data, gas=med.submit_voted_gas(1, 3, 3))
    receipt = await env.chain.mined(tx)
    assert int(receipt["status"], 16) == 1
    assert [type(e).__name__ for e in events_of(receipt)] == ["TxInit"]
    # ...and X, executed afresh where it landed, settles YES on top of Y everywhere.
    for _ in range(400):
        xi = await med.tx_of(env.chain, env.mediator, group, x.payload_hash)
        if xi.status != pt.Status.PENDING:
            break
        await asyncio.sleep(0.025)
    assert xi.status == pt.Status.YES and xi.old_root == out.new_root
    await settled_everywhere(env, x.payload_hash)
    assert [await env.root(i, group) for i in range(3)] == [xi.new_root] * 3


async def test_a_vote_ahead_that_does_not_verify_is_left_out_and_its_member_votes_on_chain(
    env, sender
):
    """The mediator counts a vote carried by ``submitVoted`` only if the member's account
    signed it for that position: a vote signed by another key is left out (no revert), and
    that member's own vote on chain completes the unanimous YES."""
    group = await env.group()
    info = await med.group_of(env.chain, env.mediator, group)
    seq = info.submitted + 1
    x = pt.seal_payload(receive_goods(9), group, list(info.seal_keys))
    # the roots every stakeholder will reach (the fresh contract's, then after the call)
    old = info.root
    votes = sorted(
        (m.vote for m in await push_ahead(env, group, x, seq, info.root)), key=lambda v: v.member
    )
    assert all(v.old_root == old for v in votes)
    digest = pt.pre_vote_digest(
        env.chain.chain_id,
        env.mediator,
        group,
        x.payload_hash,
        seq,
        pt.seal_hash(x.ephemeral_pk, x.wraps),
        votes[2].old_root,
        votes[2].new_root,
    )
    forged = pt.PreVote(
        2, votes[2].old_root, votes[2].new_root, pt.sign_pre_vote(secrets.token_bytes(32), digest)
    )
    account = Account.from_key(env.sender_key)
    data = med.submit_voted_data(group, [(x, [votes[0], votes[1], forged])])
    tx = await env.chain.send_call(account, env.mediator, data, gas=med.submit_voted_gas(1, 3, 3))
    receipt = await env.chain.mined(tx)
    assert int(receipt["status"], 16) == 1
    evs = events_of(receipt)
    assert [type(e).__name__ for e in evs] == ["TxInit", "TxVote", "TxVote"]
    assert [e.member for e in evs[1:]] == [0, 1]
    # member 2 (whose facilitator executed ahead and was not counted) votes on chain; members 0
    # and 1 may send theirs too, which the mediator skips (voted already) without reverting
    for _ in range(400):
        xi = await med.tx_of(env.chain, env.mediator, group, x.payload_hash)
        if xi.status != pt.Status.PENDING:
            break
        await asyncio.sleep(0.025)
    assert xi.status == pt.Status.YES and xi.votes == 3
    await settled_everywhere(env, x.payload_hash)
    assert [await env.root(i, group) for i in range(3)] == [xi.new_root] * 3


async def test_a_member_that_missed_an_agreed_transaction_does_not_vote_ahead_and_catches_up(
    env, sender, monkeypatch
):
    """2-of-3: crane cannot fetch transaction N's payload (its store is unreachable for a
    moment) and refuses it; acme and bolt settle it YES. N+1 is then sent alone: crane's state
    is not the agreed root the push names, so it does not execute ahead; it runs N+1 on the
    chain's PrivateTxInit, on its stale state, and when it reads N's YES it takes N+1 back, runs
    N, and then N+1 again: all three end at the same agreed root, crane's rows caught up."""
    group = await env.group(threshold=2)
    crane = env.running[2]

    fetch, failed = first_fetch_fails(crane)  # its first fetch: for N's PrivateTxInit
    with monkeypatch.context() as m:
        m.setattr(crane, "_ciphertext", fetch)
        m.setattr(crane, "_execute_ahead", no_vote_ahead)
        n = await sender.send(group, receive_goods(31))
        out_n = await sender.outcome(group, n.payload_hash)
        assert out_n.status == pt.Status.YES
        await row_when(crane, n.payload_hash)
        assert failed == [n.payload_hash]
        assert crane.rows[n.payload_hash.hex()].state in ("refused", "final")
    n1 = await sender.send(group, receive_goods(32))
    out_n1 = await sender.outcome(group, n1.payload_hash)
    assert out_n1.status == pt.Status.YES and out_n1.old_root == out_n.new_root
    rows = [await row_when(crane, s.payload_hash, lambda r: r.state == "final") for s in (n, n1)]
    assert [r.state for r in rows] == ["final", "final"], [(r.state, r.note) for r in rows]
    assert not crane.groups[group].out_of_sync
    assert [await env.root(i, group) for i in range(3)] == [out_n1.new_root] * 3


async def test_a_refusal_whose_vote_was_lost_is_voted_again_as_a_refusal_after_a_restart(
    env, sender, monkeypatch
):
    """2-of-3 with acme down: crane refuses N (its fetch fails) but stops before its vote is
    sent. Started again, it votes for every undecided execution it holds: for N a refusal
    (old root, 0), never "executed, state unchanged". bolt's vote and crane's refusal leave N
    open; acme, back, settles it YES with bolt, and crane catches up."""
    group = await env.group(threshold=2)
    await env.stop(0)
    crane = env.running[2]

    async def lost(batch) -> None:  # stopped before the vote transaction went out
        return None

    try:
        with monkeypatch.context() as m:
            m.setattr(crane, "_ciphertext", first_fetch_fails(crane)[0])
            m.setattr(crane, "_execute_ahead", no_vote_ahead)
            m.setattr(crane, "_vote_many", lost)
            sent = await sender.send(group, receive_goods(77))
            row = await row_when(crane, sent.payload_hash, lambda r: r.state == "refused")
            assert row.state == "refused"
            await env.stop(2)
        await env.start(2)
        votes: dict[int, med.TxVote] = {}
        for _ in range(400):
            logs = await env.chain.rpc.call(
                "eth_getLogs",
                [
                    {
                        "address": env.mediator,
                        "fromBlock": hex(env.start_block),
                        "toBlock": "latest",
                        "topics": [med.TX_VOTE, "0x" + group.hex(), "0x" + sent.payload_hash.hex()],
                    }
                ],
            )
            votes = {v.member: v for v in map(med.decode_event, map(raw_log, logs))}
            if 2 in votes:
                break
            await asyncio.sleep(0.025)
        assert votes[2].new_root == pt.ZERO_ROOT  # a refusal, as before the restart
        assert sorted(votes) == [1, 2]
        info = await med.tx_of(env.chain, env.mediator, group, sent.payload_hash)
        assert info.status == pt.Status.PENDING
    finally:
        if 0 not in env.running:
            await env.start(0)
    out = await sender.outcome(group, sent.payload_hash)
    assert out.status == pt.Status.YES
    await settled_everywhere(env, sent.payload_hash)
    assert [await env.root(i, group) for i in range(3)] == [out.new_root] * 3


async def test_a_member_behind_its_own_undecided_refusal_holds_its_vote_until_it_catches_up(
    env, sender, monkeypatch
):
    """2-of-3: crane cannot fetch N's payload once and refuses it; acme and bolt settle N YES,
    and bolt goes down. N+1 then needs crane's vote. crane runs N+1 on its PrivateTxInit before
    it has read N's outcome (its reader is held back here), on a state without N: it holds
    that vote. Once it reads N's YES it catches up, runs N+1 again and votes: N+1 settles YES
    with acme, where a vote from the stale state would have counted and left N+1 one matching
    vote short until its timeout."""
    group = await env.group(threshold=2)
    crane = env.running[2]
    reading = asyncio.Event()
    try:
        with monkeypatch.context() as m:
            m.setattr(crane, "_ciphertext", first_fetch_fails(crane)[0])
            m.setattr(crane, "_execute_ahead", no_vote_ahead)
            hold_reader_back(m, crane, reading)
            n = await sender.send(group, receive_goods(41))
            out_n = await sender.outcome(group, n.payload_hash)
            assert out_n.status == pt.Status.YES
            row = await row_when(crane, n.payload_hash)
            assert row.state == "refused"  # from the pushed PrivateTxInit; N's YES not read
            await env.stop(1)
            n1 = await sender.send(group, receive_goods(42))
            row1 = await row_when(crane, n1.payload_hash)
            assert row1.state == "executed" and row1.old_root != out_n.new_root  # stale
            assert n1.payload_hash.hex() in crane.groups[group].held
            for _ in range(400):  # acme's vote: ahead, or on the Init if it came too late
                info = await med.tx_of(env.chain, env.mediator, group, n1.payload_hash)
                if info is not None and info.votes:
                    break
                await asyncio.sleep(0.025)
            assert info.status == pt.Status.PENDING and info.votes == 1  # acme's alone
            reading.set()  # crane reads N's YES now
            out_n1 = await sender.outcome(group, n1.payload_hash, timeout_s=20)
        assert out_n1.status == pt.Status.YES and out_n1.old_root == out_n.new_root
        rows = [
            await row_when(crane, s.payload_hash, lambda r: r.state == "final") for s in (n, n1)
        ]
        assert [r.state for r in rows] == ["final", "final"], [(r.state, r.note) for r in rows]
        assert not crane.groups[group].held
        assert [await env.root(i, group) for i in (0, 2)] == [out_n1.new_root] * 2
    finally:
        reading.set()
        if 1 not in env.running:
            await env.start(1)
    await row_when(env.running[1], n1.payload_hash, lambda r: r.state == "final")
    assert await env.root(1, group) == out_n1.new_root


async def test_a_held_vote_goes_out_as_it_is_when_the_refusal_before_it_settles_no(
    env, sender, monkeypatch
):
    """2-of-3: nobody can fetch N's payload, so all three refuse it and it settles NO. crane,
    whose reader is held back, runs N+1 before it reads that and holds its vote; the NO means
    its state was right all along, so once it reads it, the vote goes out as it is, and N+1
    settles YES with acme while bolt is down."""
    group = await env.group(threshold=2)
    crane = env.running[2]
    reading = asyncio.Event()
    try:
        with monkeypatch.context() as m:
            hold_reader_back(m, crane, reading)
            for f in env.running.values():
                m.setattr(f, "_execute_ahead", no_vote_ahead)
            with monkeypatch.context() as fetches:
                for f in env.running.values():
                    fetches.setattr(f, "_ciphertext", first_fetch_fails(f)[0])  # N's
                n = await sender.send(group, receive_goods(51))
                out_n = await sender.outcome(group, n.payload_hash)
                assert out_n.status == pt.Status.NO
                row = await row_when(crane, n.payload_hash)
                assert row.state == "refused"
            await env.stop(1)
            n1 = await sender.send(group, receive_goods(52))
            row1 = await row_when(crane, n1.payload_hash)
            assert row1.state == "executed" and n1.payload_hash.hex() in crane.groups[group].held
            reading.set()  # crane reads N's NO now
            out_n1 = await sender.outcome(group, n1.payload_hash, timeout_s=20)
        assert out_n1.status == pt.Status.YES and out_n1.old_root == out_n.old_root
        assert crane.rows[n1.payload_hash.hex()].new_root == out_n1.new_root
        assert not crane.groups[group].held
    finally:
        reading.set()
        if 1 not in env.running:
            await env.start(1)
    await settled_everywhere(env, n1.payload_hash)
    assert [await env.root(i, group) for i in range(3)] == [out_n1.new_root] * 3


async def test_one_groups_wait_for_votes_ahead_holds_up_no_other_group(env, sender, monkeypatch):
    """Each group's submissions go in their own turn: a transaction of one group waiting for
    its votes ahead (none come here, and the wait is made long) does not hold up another
    group's, sent just after it: that one is mined while the first still waits."""
    from shardline.workers import privtx_sender

    first, second = await env.group(threshold=2), await env.group(threshold=2)
    with monkeypatch.context() as m:
        for f in env.running.values():
            m.setattr(f, "_execute_ahead", no_vote_ahead)  # nobody votes ahead
        # the second group's members did not answer its last push: it waits for no votes
        warm = await sender.send(second, receive_goods(61))
        assert (await sender.outcome(second, warm.payload_hash)).status == pt.Status.YES
        m.setattr(privtx_sender, "PREVOTE_WAIT_S", 3.0)
        waiting = asyncio.create_task(sender.send(first, receive_goods(62)))
        for _ in range(2000):  # until it is pushed (and queued, in the same step)
            if first in sender._tips:
                break
            await asyncio.sleep(0.001)
        other = await sender.send(second, receive_goods(63))
        assert not waiting.done()  # mined while the first group's still waits for votes
        held = await waiting
        outs = [
            await sender.outcome(g, s.payload_hash) for g, s in ((first, held), (second, other))
        ]
    assert [o.status for o in outs] == [pt.Status.YES] * 2


async def test_a_submission_that_fails_before_the_chain_is_asked_fails_its_send(
    env, sender, monkeypatch
):
    """Whatever stops a submission, the send waiting on it hears it (it would have waited for
    ever when the failure came before the chain was asked)."""
    group = await env.group(threshold=2)

    async def broken(group, items) -> None:
        raise RuntimeError("the submission could not be built")

    monkeypatch.setattr(sender, "_submit_group", broken)
    with pytest.raises(RuntimeError, match="could not be built"):
        async with asyncio.timeout(30):  # a guard against the hang, not a measurement
            await sender.send(group, receive_goods(71))
