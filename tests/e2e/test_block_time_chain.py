"""A chain that mines on its own clock (anvil --block-time 1), as a consortium chain or a testnet
does: confirmation waits are real. Keys are in encrypted keystores and fees follow the stack
file's gas policy, as they would past the local stack."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from shardline import audit, servers, stack, transports
from shardline.config import AUDIT_AFTER, StackConfig
from shardline.contracts.rpc import JsonRpc
from shardline.core.gas import GWEI, GasPolicy
from shardline.core.keys import ParticipantKeys
from shardline.workers.store import OrgStore

from .test_lookup import do_lookup

pytestmark = pytest.mark.e2e

TIP_GWEI = 1.5


@pytest.fixture(scope="module")
def block_time_stack(tmp_path_factory, sample_sheets):
    run_dir = tmp_path_factory.mktemp("stack-block-time")
    cfg = stack.up(
        run_dir,
        orgs=4,
        threshold=2,
        ports=stack.Ports.free(),
        deadline_s=6.0,
        block_time=1,
        say=lambda _m: None,
    )
    try:
        asyncio.run(transports.register(cfg, sample_sheets[:4]))
        left = asyncio.run(transports.wait_stored(cfg))
        assert all(v == 0 for v in left.values()), f"shares not stored: {left}"
        # As on a host of a real consortium: org1's and the responder's keys encrypted at rest,
        # the password in a file the key file names; fees from a configured policy.
        password = run_dir / "keys" / "password"
        password.write_text("a long passphrase for the test\n")
        for holder in (cfg.orgs[0], cfg.gateway.responders[0]):
            plain = holder.key_file
            enc = plain.with_suffix(".keystore.json")
            ParticipantKeys.load(plain).save_encrypted(
                enc,
                "a long passphrase for the test",
                password_source={"file": str(password)},
                iterations=1 << 14,  # scrypt n: opens in 0.2 s (the default takes ~4 s a secret)
            )
            plain.unlink()
            holder.key_file = enc
        cfg.gas = GasPolicy(priority_fee_gwei=TIP_GWEI, max_fee_gwei=1000)
        cfg.save()
        names = ["node-org1", "gateway"]
        for n in names:
            stack.stop(cfg.run_dir, n)
        stack.start_workers(cfg, names)
    except BaseException:
        stack.down(run_dir, say=lambda _m: None)
        raise
    yield cfg
    stack.down(run_dir, say=lambda _m: None)


def _triggers(cfg: StackConfig, guid: str, want: int) -> dict[str, str]:
    deadline = time.monotonic() + 10
    while True:
        found = {
            o.id: r.trigger
            for o in cfg.orgs
            if (r := OrgStore(o.database_url).served(guid)) is not None
        }
        if len(found) >= want or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def _tx(cfg: StackConfig, tx_hash: str) -> dict:
    async def go():
        rpc = JsonRpc(cfg.chain_rpc)
        try:
            return await rpc.call("eth_getTransactionByHash", [tx_hash])
        finally:
            await rpc.close()

    return asyncio.run(go())


def _after_next_block(cfg: StackConfig) -> None:
    async def go():
        rpc = JsonRpc(cfg.chain_rpc)
        try:
            first = await rpc.call("eth_blockNumber", [])
            while True:  # poll: anvil pushes heads only over a websocket
                if await rpc.call("eth_blockNumber", []) != first:
                    return
                await asyncio.sleep(0.005)
        finally:
            await rpc.close()

    asyncio.run(go())


def _audit_rows(cfg: StackConfig, guid: str) -> list:
    deadline = time.monotonic() + 15
    while True:
        report = asyncio.run(audit.run(cfg, grace_s=0))
        rows = [r for r in report.rows if r.guid == guid]
        if (rows and all(r.status == "matched" for r in rows)) or time.monotonic() > deadline:
            return rows
        time.sleep(0.5)


def test_the_chain_mines_on_its_clock_not_per_transaction(block_time_stack):
    async def height():
        rpc = JsonRpc(block_time_stack.chain_rpc)
        try:
            return int(await rpc.call("eth_blockNumber", []), 16)
        finally:
            await rpc.close()

    first = asyncio.run(height())
    time.sleep(2.5)
    assert 2 <= asyncio.run(height()) - first <= 4  # a block a second, empty or not


def test_chain_confirmed_lookup_waits_for_the_block_and_pays_the_configured_tip(
    block_time_stack, sample_sheets
):
    cfg = block_time_stack
    out = asyncio.run(do_lookup(cfg, sample_sheets[1].transport_id))
    assert out.status == 200, out.body
    assert out.body["sheet"] == json.loads(sample_sheets[1].canonical_bytes())
    guid = out.body["guid"]
    triggers = _triggers(cfg, guid, cfg.threshold)
    # every node served on the LookupRequested it read from its chain: none before the block
    assert len(triggers) >= cfg.threshold and set(triggers.values()) == {"chain"}, triggers
    on_chain = [e for e in out.events if e["event"] == "on_chain"]
    assert on_chain, [e["event"] for e in out.events]
    tx = _tx(cfg, on_chain[0]["tx"])
    assert int(tx["maxPriorityFeePerGas"], 16) == int(TIP_GWEI * GWEI)
    assert int(tx["maxFeePerGas"], 16) <= 1000 * GWEI
    rows = _audit_rows(cfg, guid)
    assert rows and all(r.status == "matched" for r in rows), rows


def test_audit_after_serves_before_the_block_and_its_audit_matches_later(
    block_time_stack, sample_sheets
):
    cfg = block_time_stack
    for o in cfg.orgs:
        o.policy = AUDIT_AFTER
    cfg.save()
    names = [f"node-{o.id}" for o in cfg.orgs]
    for n in names:
        stack.stop(cfg.run_dir, n)
    stack.start_workers(cfg, names)
    warm = asyncio.run(do_lookup(cfg, sample_sheets[3].transport_id))  # caches of new processes
    assert warm.status == 200, warm.body
    # Start just after a block, so that the next one is a block time away: the nodes serve on
    # the intent long before it (a lookup started just before a block may see both at once).
    _after_next_block(cfg)
    out = asyncio.run(do_lookup(cfg, sample_sheets[2].transport_id))
    assert out.status == 200, out.body
    guid = out.body["guid"]
    triggers = _triggers(cfg, guid, cfg.threshold)
    assert set(triggers.values()) == {"intent"}, triggers
    # once its block is there, every share served for it matches the chain
    rows = _audit_rows(cfg, guid)
    assert rows and all(r.status == "matched" for r in rows), rows
    assert {r.org for r in rows} >= {o for o, t in triggers.items() if t == "intent"}


def test_a_chain_with_another_id_is_refused_by_name(block_time_stack):
    from shardline.contracts.client import Chain, ChainError

    async def go():
        await Chain.connect(block_time_stack.chain_rpc, expected_chain_id=11155111)

    with pytest.raises(ChainError, match="not the expected 11155111"):
        asyncio.run(go())
    assert servers.port_open(int(block_time_stack.chain_rpc.rsplit(":", 1)[1]))
