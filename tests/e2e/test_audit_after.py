"""Audit-after mode: org nodes serve on the gateway's signed intent; the audit flags what never
reached the chain."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time

import nats
import pytest
from eth_account import Account

from shardline import audit, stack
from shardline.bus import envelope
from shardline.bus.envelope import unb64
from shardline.config import AUDIT_AFTER
from shardline.contracts import registry
from shardline.contracts.client import Chain
from shardline.contracts.deploy import Deployment
from shardline.core import ids, sealing
from shardline.core.keys import ParticipantKeys
from shardline.workers.gateway import SLOW_FOR_S
from shardline.workers.store import OrgStore

from ..conftest import start_stack
from .test_lookup import do_lookup

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def audit_after_stack(tmp_path_factory, sample_sheets):
    run_dir = tmp_path_factory.mktemp("stack-audit-after")
    cfg = start_stack(run_dir, sample_sheets[:6], policy=AUDIT_AFTER)
    yield cfg
    stack.down(run_dir, say=lambda _m: None)


def _asked_first(out) -> list[str]:
    """The org nodes a lookup's first intent named."""
    return next(e for e in out.events if e["event"] == "accepted")["asked"]


def _lookup_until_asked_first(cfg, sample_sheets, org: str):
    """Lookups, a tenth of a second apart, until one asks ``org`` first: that one and its first
    org nodes. An earlier test may have left ``org`` ranked last, which lasts SLOW_FOR_S."""
    give_up = time.monotonic() + SLOW_FOR_S + 10
    i = 0
    while True:
        out = asyncio.run(do_lookup(cfg, sample_sheets[i % 6].transport_id))
        assert out.status == 200, out.body
        if org in (first := _asked_first(out)):
            return out, first
        assert time.monotonic() < give_up, f"{org} was never asked first"
        i += 1
        time.sleep(0.1)


def _served_trigger(cfg, guid: str) -> list[str]:
    return [r.trigger for o in cfg.orgs if (r := OrgStore(o.database_url).served(guid)) is not None]


def test_audit_after_serves_on_the_intent_and_the_audit_matches_it(
    audit_after_stack, sample_sheets
):
    cfg = audit_after_stack
    out = asyncio.run(do_lookup(cfg, sample_sheets[2].transport_id))
    assert out.status == 200
    # the share goes out before its node writes it down: give the log a moment
    deadline = time.monotonic() + 5
    while len(triggers := _served_trigger(cfg, out.body["guid"])) < cfg.threshold:
        assert time.monotonic() < deadline, f"served log holds only {triggers}"
        time.sleep(0.05)
    # on the intent, before the chain (a node whose chain event came first served on that)
    assert "intent" in triggers and set(triggers) <= {"intent", "chain"}
    time.sleep(1.0)  # the chain transaction settles
    report = asyncio.run(audit.run(cfg, grace_s=0))
    mine = [r for r in report.rows if r.guid == out.body["guid"]]
    assert mine and all(r.status == "matched" for r in mine)


def test_a_served_request_that_never_reached_the_chain_is_flagged(audit_after_stack, sample_sheets):
    """A gateway that serves requests off the record (no chain transaction) is caught by the audit."""
    cfg = audit_after_stack
    gw = ParticipantKeys.load(cfg.gateway.key_file)
    responder = Account.from_key(ParticipantKeys.load(cfg.gateway.responders[0].key_file).chain_key)
    guid = secrets.token_hex(16)
    body = {
        "guid": guid,
        "transport_key": ids.transport_key(sample_sheets[3].transport_id).hex(),
        "ephemeral_pk": secrets.token_hex(32),
        "requester": responder.address,
    }

    async def go():
        nc = await nats.connect(cfg.nats_url)
        # a plain message without a reply subject: the shares go to the stream, as on a chain event
        # (to every org: it names none, so all serve)
        intent = envelope.make("lookup.intent", body, gw).to_bytes()
        for org in cfg.orgs:
            await nc.publish(f"lookup.intent.{org.id}.{guid}", intent)
        await nc.flush()
        await nc.close()

    asyncio.run(go())
    deadline = time.monotonic() + 10
    while len(_served_trigger(cfg, guid)) < 4 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _served_trigger(cfg, guid) == ["intent"] * 4

    report = asyncio.run(audit.run(cfg, grace_s=0))
    flagged = {r.org for r in report.unmatched if r.guid == guid}
    assert flagged == {"org1", "org2", "org3", "org4"}
    assert all(r.status == "not_on_chain" for r in report.unmatched if r.guid == guid)

    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "shardline",
            "audit",
            "--config",
            str(cfg.path),
            "--grace",
            "0",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=60,
    )
    assert cli.returncode == 1, cli.stderr
    assert guid in cli.stdout and '"not_on_chain"' in cli.stdout


def test_an_org_node_not_asked_hears_of_the_lookup_once_and_serves_nothing(
    audit_after_stack, sample_sheets
):
    """An audit-after lookup goes at once only to the org nodes it asks. Those left out are
    named once, in the notice to each of them just before the chain request (one per org node for
    every lookup in the transaction), and leave the lookup's chain event to those asked: they
    serve nothing, then or later. (Serving the node's push of the event at once, before the
    notice, they served about one lookup in six; they no longer follow the push.)"""
    cfg = audit_after_stack

    async def go() -> tuple[list, dict[str, list[str]]]:
        nc = await nats.connect(cfg.nats_url)
        heard: dict[str, list[str]] = {}

        async def on(msg) -> None:
            _, _, org, guid = msg.subject.split(".")
            heard.setdefault(guid, []).append(org)

        async def on_left(msg) -> None:
            org = msg.subject.split(".")[2]
            for guid in envelope.parse(msg.data, "lookup.left").body["guids"]:
                heard.setdefault(guid, []).append(org)

        await nc.subscribe("lookup.intent.*.*", cb=on)
        await nc.subscribe("lookup.left.*", cb=on_left)
        await nc.flush()
        outs = [await do_lookup(cfg, sample_sheets[i % 6].transport_id) for i in range(8)]
        # until every asked node has the lookup's chain event (its served row marked on chain)
        deadline = time.monotonic() + 20
        for out in outs:
            guid = out.body["guid"]
            while not all(
                (r := OrgStore(o.database_url).served(guid)) is not None
                and r.on_chain_block is not None
                for o in cfg.orgs
                if o.id in out.body["used_orgs"]
            ):
                assert time.monotonic() < deadline, f"lookup {guid} never marked on chain"
                await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # the node left out read the same blocks
        await nc.close()
        return outs, heard

    checked = 0
    for _round in range(4):  # a loaded machine asks more in some lookups: rounds until 4 did not
        outs, heard = asyncio.run(go())
        for out in outs:
            assert out.status == 200, out.body
            if any(e["event"] == "asked" for e in out.events):
                continue  # slow enough for a later round (a loaded machine): it asked more
            checked += 1
            guid = out.body["guid"]
            asked = _asked_first(out)
            left = [o.id for o in cfg.orgs if o.id not in asked]
            assert left, "every org node was asked: nothing to check"
            assert sorted(heard[guid]) == sorted(o.id for o in cfg.orgs), heard[guid]  # once each
            assert sorted(heard[guid][-len(left) :]) == left  # those left out after those asked
            served = {o.id for o in cfg.orgs if OrgStore(o.database_url).served(guid) is not None}
            assert served and served <= set(asked), f"{served} served, {asked} asked"
        if checked >= 4:
            break
    assert checked >= 4, "too few lookups were done in one round to check"


def test_with_asked_nodes_down_the_gateway_asks_the_others(audit_after_stack, sample_sheets):
    """The gateway asks threshold nodes first, a spare after ``spare_after_s`` and the rest after
    the hedge delay; with two nodes down some lookups asked only dead nodes first, and the later
    rounds still get them their sheet."""
    cfg = audit_after_stack
    down = ["node-org1", "node-org2"]
    for name in down:
        stack.stop(cfg.run_dir, name)
    try:
        outs = [asyncio.run(do_lookup(cfg, sample_sheets[i % 6].transport_id)) for i in range(8)]
        assert [o.status for o in outs] == [200] * 8
        for out in outs:
            assert set(out.body["used_orgs"]) == {"org3", "org4"}
            first = next((e for e in out.events if e["event"] == "accepted"), None)
            assert first, out.events
            first = first["asked"]
            later = [e["orgs"] for e in out.events if e["event"] == "asked"]
            assert len(first) == cfg.threshold
            if not {"org3", "org4"} <= set(first):  # a live node was left for a later round
                assert later and {"org3", "org4"} <= set(first).union(*later)
    finally:
        stack.start_workers(cfg, down)


def test_a_node_asked_first_and_down_is_replaced_by_the_spare_and_asked_last(
    audit_after_stack, sample_sheets
):
    """Only threshold org nodes are asked first (one process fewer woken per lookup); when one of
    them is down, the spare alone is asked after ``spare_after_s``, well before the hedge round
    would ask every other node, and the silent node is ranked last: later lookups leave it out
    while the others answer."""
    cfg = audit_after_stack
    assert 0 < cfg.gateway.spare_after_s < cfg.gateway.hedge_s and cfg.gateway.spare_shares == 1
    stack.stop(cfg.run_dir, "node-org1")
    try:
        out, first = _lookup_until_asked_first(cfg, sample_sheets, "org1")
        assert len(first) == cfg.threshold
        later = [e["orgs"] for e in out.events if e["event"] == "asked"]
        # the spare round: one org node, neither asked first nor the one down
        assert later and len(later[0]) == 1 and later[0][0] not in first, out.events
        assert "org1" not in out.body["used_orgs"]
        assert set(out.body["used_orgs"]) <= set(first).union(*later)
        # ranked last now: with three live nodes, the next lookups ask two of them first (one
        # of them at most might be marked too on a busy machine, and org1 drawn among them)
        nxt = [asyncio.run(do_lookup(cfg, sample_sheets[i % 6].transport_id)) for i in range(10)]
        assert [o.status for o in nxt] == [200] * 10
        asked_first = [_asked_first(o) for o in nxt]
        assert sum("org1" in a for a in asked_first) <= 1, asked_first
    finally:
        stack.start_workers(cfg, ["node-org1"])


def test_a_node_asked_first_and_late_is_ranked_as_before_once_its_share_comes(
    audit_after_stack, sample_sheets
):
    """An org node paused (SIGSTOP) while asked first is silent at the spare round and ranked
    last; resumed, it serves the intent it had queued, its share comes after the sheet, and that
    share (signed by it) ranks it as before: the next lookups ask it first again in turn."""
    cfg = audit_after_stack
    pid = stack.read_pids(cfg.run_dir)["node-org1"]["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        out, _first = _lookup_until_asked_first(cfg, sample_sheets, "org1")
        assert "org1" not in out.body["used_orgs"]
        assert any(e["event"] == "asked" for e in out.events), out.events  # the spare round
    finally:
        os.kill(pid, signal.SIGCONT)
    guid = out.body["guid"]
    deadline = time.monotonic() + 10
    org1 = next(o for o in cfg.orgs if o.id == "org1")
    while OrgStore(org1.database_url).served(guid) is None:  # its late share went out
        assert time.monotonic() < deadline, "org1 did not serve the intent it had queued"
        time.sleep(0.05)
    time.sleep(0.3)  # the share reaches the gateway
    nxt = [asyncio.run(do_lookup(cfg, sample_sheets[j % 6].transport_id)) for j in range(10)]
    assert [o.status for o in nxt] == [200] * 10
    asked_first = [_asked_first(o) for o in nxt]
    # ranked last (for SLOW_FOR_S) it would be asked first in none of them; as before, in about
    # half (none of ten: one chance in a thousand)
    assert any("org1" in a for a in asked_first), asked_first


def test_concurrent_lookups_all_reach_the_chain(audit_after_stack, sample_sheets):
    """Lookups arriving together share Gatekeeper transactions; each still has its own event,
    and the audit matches every share served to a request on chain."""
    cfg = audit_after_stack

    async def many():
        return await asyncio.gather(
            *(do_lookup(cfg, sample_sheets[i % 6].transport_id) for i in range(12))
        )

    outs = asyncio.run(many())
    assert [o.status for o in outs] == [200] * 12
    guids = {o.body["guid"] for o in outs}
    time.sleep(1.0)  # the chain transactions settle
    report = asyncio.run(audit.run(cfg, grace_s=0))
    rows = [r for r in report.rows if r.guid in guids]
    assert {r.guid for r in rows} == guids
    assert all(r.status == "matched" for r in rows), [r for r in rows if r.status != "matched"]


async def _rpc(cfg, method: str, *params):
    """One JSON-RPC call to the stack's node (anvil's own methods among them)."""
    from shardline.contracts.rpc import JsonRpc

    client = JsonRpc(cfg.chain_rpc)
    try:
        return await client.call(method, list(params))
    finally:
        await client.close()


def _matched(cfg, guids: set[str]) -> dict[str, str]:
    report = asyncio.run(audit.run(cfg, grace_s=0))
    return {r.guid: r.status for r in report.rows if r.guid in guids}


def test_a_request_a_reorg_drops_is_sent_again_and_the_audit_matches(
    audit_after_stack, sample_sheets
):
    """The chain drops a mined Gatekeeper request (anvil reverts to a snapshot taken before it):
    the gateway sees its request gone, counts the account's nonce afresh and sends it again, so
    the shares served for it stay matched; a lookup made in the meantime, whose transaction waits
    behind the dropped nonce, reaches the chain too."""
    cfg = audit_after_stack

    snapshot = asyncio.run(_rpc(cfg, "evm_snapshot"))
    first = asyncio.run(do_lookup(cfg, sample_sheets[1].transport_id))
    assert first.status == 200
    deadline = time.monotonic() + 10
    while _matched(cfg, {first.body["guid"]}).get(first.body["guid"]) != "matched":
        assert time.monotonic() < deadline, "the first lookup never reached the chain"
        time.sleep(0.2)
    assert asyncio.run(_rpc(cfg, "evm_revert", snapshot)) is True
    second = asyncio.run(do_lookup(cfg, sample_sheets[2].transport_id))
    assert second.status == 200
    guids = {first.body["guid"], second.body["guid"]}
    deadline = time.monotonic() + 60
    while (status := _matched(cfg, guids)) != dict.fromkeys(guids, "matched"):
        assert time.monotonic() < deadline, f"not back on chain after the reorg: {status}"
        time.sleep(0.5)
    # and it was the gateway that sent the first again, not the node that kept it
    gateway_log = (cfg.run_dir / "logs" / "gateway.log").read_text()
    resent = [ln for ln in gateway_log.splitlines() if '"lookup.tx_resent"' in ln]
    assert any(first.body["guid"] in ln for ln in resent), resent


def test_a_request_the_node_refuses_at_first_is_sent_again_and_the_audit_matches(
    audit_after_stack, sample_sheets
):
    """The responder's chain account runs dry: the node refuses the lookup's Gatekeeper request
    ("insufficient funds") after the shares went out on the intent. The gateway sends it again
    a little later, and again, so that once the account is funded the request is on chain and
    the audit matches it (before, one refusal was the end of it: the audit flagged the lookup
    for good)."""
    cfg = audit_after_stack
    keys = ParticipantKeys.load(cfg.gateway.responders[0].key_file)
    account = Account.from_key(keys.chain_key).address

    funds = asyncio.run(_rpc(cfg, "eth_getBalance", account, "latest"))
    asyncio.run(_rpc(cfg, "anvil_setBalance", account, "0x0"))
    try:
        out = asyncio.run(do_lookup(cfg, sample_sheets[4].transport_id))
        assert out.status == 200, out.body  # served on the intent, before the chain
        guid = out.body["guid"]
        time.sleep(1.0)  # the first send and a retry or two are refused meanwhile
        assert _matched(cfg, {guid}).get(guid) != "matched", "on chain with no funds?"
    finally:
        asyncio.run(_rpc(cfg, "anvil_setBalance", account, funds))
    deadline = time.monotonic() + 30
    while _matched(cfg, {guid}).get(guid) != "matched":
        assert time.monotonic() < deadline, "the refused request never reached the chain"
        time.sleep(0.3)
    gateway_log = (cfg.run_dir / "logs" / "gateway.log").read_text()
    retried = [ln for ln in gateway_log.splitlines() if '"lookup.chain_retry"' in ln]
    assert any(guid in ln and "insufficient funds" in ln.lower() for ln in retried), retried[-3:]


def test_an_org_node_asked_again_sends_its_share_again_to_the_same_key_only(
    audit_after_stack, sample_sheets
):
    """An org node writes its served row before its reply goes, and the row stops any later
    serve: a reply lost on the way (a bus restart drops what is in flight) was gone for good.
    Asked again for the same lookup (same ephemeral key and requester), it sends the same share
    again, with no second row; asked for the same guid with another key, it sends nothing."""
    cfg = audit_after_stack
    gw = ParticipantKeys.load(cfg.gateway.key_file)
    responder = Account.from_key(ParticipantKeys.load(cfg.gateway.responders[0].key_file).chain_key)
    esk, epk = sealing.ephemeral_keypair()
    guid = secrets.token_hex(16)
    body = {
        "guid": guid,
        "transport_key": ids.transport_key(sample_sheets[5].transport_id).hex(),
        "ephemeral_pk": epk.hex(),
        "requester": responder.address,
        "orgs": ["org1"],
    }
    store = OrgStore(cfg.org("org1").database_url)

    async def go() -> tuple[list[dict], list[dict]]:
        nc = await nats.connect(cfg.nats_url)
        got: asyncio.Queue = asyncio.Queue()

        async def take(msg) -> None:
            await got.put(envelope.parse(msg.data, "lookup.share").body)

        inbox = nc.new_inbox()
        await nc.subscribe(f"{inbox}.*", cb=take)
        subject = f"lookup.intent.org1.{guid}"
        # the first reply goes where nobody listens: lost
        await nc.publish(
            subject, envelope.make("lookup.intent", body, gw).to_bytes(), reply=f"lost.{guid}"
        )
        await nc.flush()
        deadline = time.monotonic() + 10
        while store.served(guid) is None:
            assert time.monotonic() < deadline, "org1 never served the first intent"
            await asyncio.sleep(0.05)
        again = envelope.make("lookup.intent", body, gw)  # a new intent, the same lookup
        await nc.publish(subject, again.to_bytes(), reply=f"{inbox}.{guid}")
        first = [await asyncio.wait_for(got.get(), 10)]
        other_key = {**body, "ephemeral_pk": secrets.token_hex(32)}
        await nc.publish(
            subject,
            envelope.make("lookup.intent", other_key, gw).to_bytes(),
            reply=f"{inbox}.{guid}",
        )
        await asyncio.sleep(1.0)
        rest = []
        while not got.empty():
            rest.append(got.get_nowait())
        await nc.close()
        return first, rest

    first, rest = asyncio.run(go())
    assert [b["org"] for b in first] == ["org1"]
    sealing.unseal(unb64(first[0]["sealed"]), esk)  # the same lookup's key opens it
    assert rest == [], "sent to another key"
    row = store.served(guid)
    assert row is not None and row.trigger == "intent"
    assert [r.guid for r in store.served_since(row.served_at - 1) if r.guid == guid] == [guid]


def test_a_lookup_no_intent_reached_is_served_from_the_chain_reader(
    audit_after_stack, sample_sheets
):
    """The gateway's chain request goes out even when its intents could not (the bus away a
    moment). Audit-after org nodes that heard neither an intent nor a notice for the lookup serve
    its chain event from their reorg-safe reader (they do not follow the node's push), through
    the stream: each share is sealed to the request's key and logged as served on the chain's
    trigger, with the block that carried the request."""
    cfg = audit_after_stack
    responder = Account.from_key(ParticipantKeys.load(cfg.gateway.responders[0].key_file).chain_key)
    esk, epk = sealing.ephemeral_keypair()
    guid = ids.new_guid()

    async def go() -> list[dict]:
        nc = await nats.connect(cfg.nats_url)
        got: list[dict] = []

        async def take(msg) -> None:
            got.append(envelope.parse(msg.data, "lookup.share").body)

        await nc.subscribe(f"lookup.share.{guid.hex()}", cb=take)
        await nc.flush()
        async with await Chain.connect(cfg.chain_rpc, expected_chain_id=cfg.chain_id) as chain:
            await registry.request_lookup(
                chain,
                responder,
                Deployment.from_dict(cfg.deployment),
                guid,
                ids.transport_key(sample_sheets[3].transport_id),
                epk,
            )
        deadline = time.monotonic() + 20
        while len({b["org"] for b in got}) < cfg.threshold:
            assert time.monotonic() < deadline, f"shares from {[b['org'] for b in got]} only"
            await asyncio.sleep(0.05)
        await nc.close()
        return got

    shares = asyncio.run(go())
    for b in shares:
        sealing.unseal(unb64(b["sealed"]), esk)  # sealed to the request's key
        assert b["trigger"] == "chain", b
        row = OrgStore(cfg.org(b["org"]).database_url).served(guid.hex())
        assert row is not None and row.trigger == "chain" and row.on_chain_block is not None
