"""The reorg-safe event reader against a real anvil: reorgs are re-read, nothing lost or doubled."""

from __future__ import annotations

import asyncio
import secrets

import pytest
from eth_account import Account

from shardline import servers
from shardline.contracts import registry
from shardline.contracts.client import Chain
from shardline.contracts.cursor import EventReader, HeadWatcher, Rpc
from shardline.contracts.deploy import deploy_all
from shardline.core import bloom, ids
from shardline.core.directory import ORG
from shardline.core.logpoller import Cursor
from shardline.workers.intake import GATEKEEPER_UPGRADED, LOOKUP_REQUESTED, decode_lookup

pytestmark = pytest.mark.integration
ADMIN = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"


@pytest.fixture(scope="module")
def anvil_url(tmp_path_factory):
    d = tmp_path_factory.mktemp("anvil-cursor")
    port = servers.free_port()
    proc = servers.spawn(servers.anvil_spec(d, port), d / "anvil.log")
    yield f"http://127.0.0.1:{port}"
    servers.stop_pid(proc.pid)


async def _setup(url: str):
    chain = await Chain.connect(url)
    admin = Account.from_key(ADMIN)
    org, responder = Account.create(), Account.create()
    for a in (org, responder):
        await chain.w3.provider.make_request("anvil_setBalance", [a.address, hex(10**20)])
    dep = await deploy_all(chain, admin)
    await registry.register_participant(
        chain, admin, dep, "org1", b"\1" * 32, b"\2" * 32, org.address, ORG
    )
    await registry.grant_role(chain, admin, dep, "RESPONDER", responder.address)
    key = ids.transport_key("TR-1")
    await registry.register_transport(chain, org, dep, key, b"\3" * 32, 1, ["org1"])
    return chain, dep, responder, key


def _collector():
    """The guids of the LookupRequested logs a reader hands over, in order."""
    handled: list[str] = []

    async def handle(lg):
        if "0x" + lg.topics[0].hex() == LOOKUP_REQUESTED:
            handled.append(decode_lookup(lg)["guid"])

    return handled, handle


async def _lookup(chain, dep, responder, key) -> str:
    guid = ids.new_guid()
    await registry.request_lookup(chain, responder, dep, guid, key, secrets.token_bytes(32))
    return guid.hex()


async def _heads_caught_up(heads: HeadWatcher | None, rpc: Rpc) -> None:
    """With pushed heads, wait until the node's newest head has arrived over the websocket."""
    if heads is None:
        return
    for _ in range(200):
        if heads.live and heads.latest == await rpc.block_number():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the node did not push its new head within 2 s")


@pytest.mark.parametrize("pushed", [False, True], ids=["read-headers", "pushed-heads"])
async def test_reader_rereads_from_the_common_ancestor_after_a_reorg(anvil_url, pushed):
    chain, dep, responder, key = await _setup(anvil_url)
    rpc = Rpc(chain.rpc)
    handled, handle = _collector()
    heads = HeadWatcher(anvil_url.replace("http://", "ws://")) if pushed else None
    if heads is not None:
        heads.start()

    reader = EventReader(
        rpc,
        Cursor(start=dep.block),
        addresses=lambda: [],
        topics0=[LOOKUP_REQUESTED, GATEKEEPER_UPGRADED],
        heads=heads,
    )
    first = await _lookup(chain, dep, responder, key)
    await _heads_caught_up(heads, rpc)
    while await reader.step(handle) or reader.cursor.next_number <= await rpc.block_number():
        pass
    assert handled == [first]

    snapshot = await rpc.call("evm_snapshot", [])
    orphan = await _lookup(chain, dep, responder, key)  # will be reorganised away
    await _heads_caught_up(heads, rpc)
    await reader.step(handle)
    assert handled == [first, orphan]

    assert await rpc.call("evm_revert", [snapshot]) is True
    await rpc.call("anvil_mine", ["0x2"])  # a different, longer branch
    fresh = await Chain.connect(anvil_url)  # the reverted transaction's nonce is free again
    replacement = await _lookup(fresh, dep, responder, key)
    await fresh.close()
    await _heads_caught_up(heads, rpc)
    for _ in range(5):
        await reader.step(handle)
    if heads is not None:
        await heads.stop()

    assert handled == [first, orphan, replacement]  # the new branch's event read once, none lost
    canonical = {
        n: (await rpc.header(n)).hash for n in range(dep.block, await rpc.block_number() + 1)
    }
    assert all(canonical[b.number] == b.hash for b in reader.cursor.remembered())
    assert reader.cursor.next_number == await rpc.block_number() + 1
    await chain.close()


async def test_reader_waits_for_confirmations(anvil_url):
    chain, dep, responder, key = await _setup(anvil_url)
    rpc = Rpc(chain.rpc)
    handled, handle = _collector()

    start = await rpc.block_number() + 1
    reader = EventReader(
        rpc, Cursor(start=start), addresses=lambda: [], topics0=[LOOKUP_REQUESTED], confirmations=3
    )
    guid = await _lookup(chain, dep, responder, key)
    await reader.step(handle)
    assert handled == []
    await rpc.call("anvil_mine", ["0x3"])
    await reader.step(handle)
    assert handled == [guid]
    await chain.close()


class _CountingRpc(Rpc):
    """The real node's answers, with the eth_getLogs ranges asked for counted."""

    def __init__(self, rpc) -> None:
        super().__init__(rpc)
        self.log_reads: list[tuple[int, int]] = []

    async def logs(self, start, end, addresses, topics0):
        self.log_reads.append((start, end))
        return await super().logs(start, end, addresses, topics0)


async def test_anvils_blooms_name_the_logs_of_their_block(anvil_url):
    chain, dep, responder, key = await _setup(anvil_url)
    rpc = Rpc(chain.rpc)
    await _lookup(chain, dep, responder, key)
    head = await rpc.call("eth_getBlockByNumber", ["latest", False])
    b = bloom.parse(head["logsBloom"])
    gatekeeper = bloom.mask(bytes.fromhex(dep.gatekeeper[2:]))
    requested = bloom.mask(bytes.fromhex(LOOKUP_REQUESTED[2:]))
    assert bloom.may_match(b, [gatekeeper], [requested])
    assert not bloom.may_match(b, [bloom.mask(secrets.token_bytes(20))], [requested])
    await rpc.call("anvil_mine", ["0x1"])  # a block with no transaction, no log
    empty = await rpc.call("eth_getBlockByNumber", ["latest", False])
    assert bloom.parse(empty["logsBloom"]) == 0
    await chain.close()


async def test_reader_passes_over_blocks_whose_bloom_rules_its_logs_out(anvil_url):
    chain, dep, responder, key = await _setup(anvil_url)
    rpc = _CountingRpc(chain.rpc)
    handled, handle = _collector()
    heads = HeadWatcher(anvil_url.replace("http://", "ws://"))
    heads.start()
    start = await rpc.block_number() + 1
    reader = EventReader(
        rpc,
        Cursor(start=start),
        addresses=lambda: [dep.gatekeeper],
        topics0=[LOOKUP_REQUESTED],
        heads=heads,
    )
    guids, lookup_blocks = [], set()
    for i in range(6):
        # blocks with no log (empty, or a plain transfer), then a lookup
        if i % 2:
            await rpc.call("anvil_mine", ["0x2"])
        else:
            await chain.mined(
                await chain.send_call(responder, Account.create().address, b"", gas=30_000)
            )
        await _heads_caught_up(heads, rpc)
        while reader.cursor.next_number <= await rpc.block_number():
            await reader.step(handle)  # blocks with no log: nothing to ask for
        guids.append(await _lookup(chain, dep, responder, key))
        lookup_blocks.add(await rpc.block_number())
        await _heads_caught_up(heads, rpc)
        while reader.cursor.next_number <= await rpc.block_number():
            await reader.step(handle)
    await heads.stop()

    assert handled == guids  # every lookup read, once, in order
    assert reader.cursor.next_number == await rpc.block_number() + 1
    # only ranges holding a lookup's block were asked for; the empty blocks were passed over
    assert rpc.log_reads
    assert all(any(s <= n <= e for n in lookup_blocks) for s, e in rpc.log_reads)
    await chain.close()


async def test_watchers_of_one_node_share_a_subscription_and_a_latecomer_gets_the_head(
    anvil_url,
):
    from shardline.workers.records_proxy import TimedHeads

    ws = anvil_url.replace("http://", "ws://")
    chain = await Chain.connect(anvil_url)
    rpc = Rpc(chain.rpc)
    first = HeadWatcher(ws)
    first.start()
    await _heads_caught_up(first, rpc)
    # joins the live feed, with no block mined since: it has the head, and its time, at once
    late = TimedHeads(ws)
    late.start()
    assert late._feed is first._feed
    assert late.live and late.latest == first.latest
    head = await rpc.call("eth_getBlockByNumber", ["latest", False])
    assert late.latest_time == int(head["timestamp"], 16) > 0
    # each has its own wake-up: one waiting does not take the other's
    first.event.clear()
    late.event.clear()
    await rpc.call("anvil_mine", ["0x1"])
    await first.wait()
    assert late.event.is_set()
    await late.wait()
    assert first.latest == late.latest == await rpc.block_number()
    await first.stop()
    assert late.live  # the feed stays for the one still watching
    await rpc.call("anvil_mine", ["0x1"])
    await late.wait()
    assert late.latest == await rpc.block_number()
    await late.stop()
    await chain.close()
