"""The emergency lookup end to end on a real local stack (nats-server, redis-server, anvil)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import httpx
import nats
import pytest
from sqlalchemy.orm import Session

from shardline import stack
from shardline.bus import envelope
from shardline.bus.envelope import b64, unb64
from shardline.config import StackConfig
from shardline.core.keys import ParticipantKeys
from shardline.lookup_client import api_key, base_url, lookup
from shardline.workers.store import OrgStore, StoredShare

pytestmark = pytest.mark.e2e


def run(coro):
    return asyncio.run(coro)


async def do_lookup(
    cfg: StackConfig, transport_id: str, responder: str = "responder", events: bool = True
):
    async with httpx.AsyncClient(base_url=base_url(cfg), timeout=30) as client:
        return await lookup(
            client,
            transport_id,
            api_key(cfg, responder),
            on_event=(lambda _e: None) if events else None,
        )


def test_lookup_returns_the_registered_sheet(live_stack, sample_sheets):
    sheet = sample_sheets[3]
    out = run(do_lookup(live_stack, sheet.transport_id))
    assert out.status == 200, out.body
    assert out.body["sheet"] == json.loads(sheet.canonical_bytes())
    assert len(out.body["used_orgs"]) == 2 and out.body["bad_orgs"] == []
    kinds = [e["event"] for e in out.events]
    assert kinds[0] == "accepted" and kinds[-1] == "result"
    assert kinds.count("share") >= 2


def test_unknown_transport_is_404(live_stack):
    out = run(do_lookup(live_stack, "TR-999999"))
    assert out.status == 404
    assert out.body["detail"] == "no transport TR-999999 is registered; check the id on the label"


def test_unknown_api_key_is_401(live_stack, sample_sheets):
    async def go():
        async with httpx.AsyncClient(base_url=base_url(live_stack)) as c:
            return await c.post(
                "/lookups",
                json={"transport_id": sample_sheets[0].transport_id},
                headers={"Authorization": "Bearer not-a-key"},
            )

    assert run(go()).status_code == 401


def test_unauthorised_requester_gets_403_and_no_share_leaves(live_stack, sample_sheets):
    async def go():
        nc = await nats.connect(live_stack.nats_url)
        seen: list[str] = []

        async def grab(m):
            seen.append(m.subject)

        sub = await nc.subscribe("lookup.>", cb=grab)
        out = await do_lookup(live_stack, sample_sheets[1].transport_id, responder="visitor")
        await asyncio.sleep(1.0)
        await sub.unsubscribe()
        await nc.close()
        return out, seen

    out, seen = run(go())
    assert out.status == 403
    assert "requester not authorised" in out.body["detail"]
    assert seen == []  # no intent, no request, no share: nothing about this lookup on the bus


def test_no_plaintext_sheet_crosses_the_bus(live_stack, sample_sheets):
    """Record every payload on `>` while lookups run; no sheet's text may appear in any of them."""
    targets = sample_sheets[5:9]

    async def go():
        nc = await nats.connect(live_stack.nats_url)
        payloads: list[bytes] = []

        async def grab(m):
            payloads.append(m.data + json.dumps(m.headers or {}).encode())

        sub = await nc.subscribe(">", cb=grab)
        outs = [await do_lookup(live_stack, s.transport_id) for s in targets]
        await asyncio.sleep(0.5)
        await sub.unsubscribe()
        await nc.close()
        return outs, payloads

    outs, payloads = run(go())
    assert all(o.status == 200 for o in outs)
    # the recorder saw each lookup's traffic: its intent and the shares it was built from
    for o in outs:
        guid = o.body["guid"].encode()
        mine = [p for p in payloads if guid in p]
        assert sum(b'"type":"lookup.intent"' in p for p in mine) >= 1, o.body["guid"]
        assert sum(b'"type":"lookup.share"' in p for p in mine) >= live_stack.threshold
    blob = b"\n".join(payloads)
    for s in targets:
        for secret in (
            s.emergency_contact.phone,
            s.emergency_contact.name,
            s.vehicle,
            s.carrier,
            s.canonical_bytes()[:40],
        ):
            needle = secret.encode() if isinstance(secret, str) else secret
            assert needle not in blob, f"{needle!r} of {s.transport_id} crossed the bus in clear"


def _tamper_share(cfg: StackConfig, org_id: str, transport_id: str) -> None:
    """Make one org node hold a wrong share, as a faulty or malicious node would."""
    org = cfg.org(org_id)
    keys = ParticipantKeys.load(org.key_file)
    store = OrgStore(org.database_url)
    with Session(store.engine) as s, s.begin():
        row = s.query(StoredShare).filter_by(transport_id=transport_id).one()
        env = envelope.parse(row.sealed, "transport.share")
        body = envelope.open_body(env, keys)
        share = bytearray(unb64(body["share"]))
        share[-1] ^= 0x01
        body["share"] = b64(bytes(share))
        row.sealed = envelope.make(
            "transport.share", body, keys, seal_to=(org_id, keys.sealing_public)
        ).to_bytes()


def test_a_wrong_share_is_named_and_not_used(live_stack, sample_sheets):
    sheet = sample_sheets[10]
    _tamper_share(live_stack, "org1", sheet.transport_id)
    out = run(do_lookup(live_stack, sheet.transport_id))
    assert out.status == 200, out.body
    assert out.body["sheet"] == json.loads(sheet.canonical_bytes())
    assert "org1" not in out.body["used_orgs"]
    bad = [e for e in out.events if e["event"] == "bad_share"]
    if (
        bad
    ):  # org1 may answer after the sheet is already rebuilt; when it answers first, it is named
        assert bad[0]["org"] == "org1" and "does not match its committed hash" in bad[0]["detail"]


def test_a_wrong_share_is_always_named_when_needed(live_stack, sample_sheets):
    """With only org1 (bad) and org2 online, org1's share is needed: it is named, and 504 follows."""
    sheet = sample_sheets[11]
    _tamper_share(live_stack, "org1", sheet.transport_id)
    for name in ("node-org3", "node-org4"):
        stack.stop(live_stack.run_dir, name)
    try:
        out = run(do_lookup(live_stack, sheet.transport_id))
    finally:
        stack.start_workers(live_stack, ["node-org3", "node-org4"])
    assert out.status == 504
    assert out.body["bad"].keys() == {"org1"}
    assert out.body["answered"] == ["org2"]
    assert "bad: org1" in out.body["detail"]


def test_fewer_than_threshold_online_is_504_naming_who_answered(live_stack, sample_sheets):
    for name in ("node-org2", "node-org3", "node-org4"):
        stack.stop(live_stack.run_dir, name)
    try:
        t = time.monotonic()
        out = run(do_lookup(live_stack, sample_sheets[12].transport_id))
        waited = time.monotonic() - t
    finally:
        stack.start_workers(live_stack, ["node-org2", "node-org3", "node-org4"])
    assert out.status == 504
    assert out.body["answered"] == ["org1"]
    assert sorted(out.body["missing"]) == ["org2", "org3", "org4"]
    assert "1 good share(s) of 2 needed" in out.body["detail"]
    assert waited >= live_stack.gateway.deadline_s


def test_two_of_four_online_still_succeeds(live_stack, sample_sheets):
    for name in ("node-org3", "node-org4"):
        stack.stop(live_stack.run_dir, name)
    try:
        out = run(do_lookup(live_stack, sample_sheets[13].transport_id))
    finally:
        stack.start_workers(live_stack, ["node-org3", "node-org4"])
    assert out.status == 200
    assert sorted(out.body["used_orgs"]) == ["org1", "org2"]


def test_a_node_killed_mid_request_serves_once_after_restart(live_stack, sample_sheets):
    """Freeze org2's node, look up, kill -9 it with the work in flight, restart: it serves once."""
    pid = stack.read_pids(live_stack.run_dir)["node-org2"]["pid"]
    guid = None
    os.kill(pid, signal.SIGSTOP)
    try:
        out = run(do_lookup(live_stack, sample_sheets[14].transport_id))
        guid = out.body["guid"]
        assert out.status == 200  # org1, org3, org4 are enough
    finally:
        os.kill(pid, signal.SIGKILL)
        stack.stop(live_stack.run_dir, "node-org2")
        stack.start_workers(live_stack, ["node-org2"])

    async def shares_in_stream(js, org: str) -> list:
        sub = await js.subscribe(f"lookup.share.{guid}", ordered_consumer=True)
        found = []
        while True:
            try:
                m = await sub.next_msg(timeout=0.5)
            except Exception:
                break
            if json.loads(m.data)["sender"] == org:
                found.append(m)
        await sub.unsubscribe()
        return found

    async def shares_from(org: str, within: float) -> list:
        nc = await nats.connect(live_stack.nats_url)
        js = nc.jetstream()
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if await shares_in_stream(js, org):
                break
            await asyncio.sleep(0.5)
        await asyncio.sleep(2)  # a second copy, if any, would arrive now
        found = await shares_in_stream(js, org)
        await nc.close()
        return found

    found = run(shares_from("org2", 30))
    assert len(found) == 1, f"org2 served {len(found)} times"
    assert OrgStore(live_stack.org("org2").database_url).served(guid) is not None


def test_past_its_limit_the_gateway_refuses_at_once_with_retry_after(live_stack, sample_sheets):
    """Admission: lookups that cannot finish (one org node online, threshold 2) stay in flight
    until the deadline; past ``max_in_flight`` a new one is a 503 with Retry-After, not a wait."""
    cfg = live_stack
    original = cfg.gateway.max_in_flight
    down = ["node-org2", "node-org3", "node-org4"]

    async def burst(n: int) -> list[httpx.Response]:
        headers = {"Authorization": f"Bearer {api_key(cfg)}"}
        async with httpx.AsyncClient(base_url=base_url(cfg), timeout=30) as client:
            return [
                await client.post(
                    "/lookups",
                    json={"transport_id": sample_sheets[14].transport_id},
                    headers=headers,
                )
                for _ in range(n)
            ]

    cfg.gateway.max_in_flight = 2
    cfg.save()
    stack.stop(cfg.run_dir, "gateway")
    stack.start_workers(cfg, ["gateway"])
    for name in down:
        stack.stop(cfg.run_dir, name)
    try:
        replies = run(burst(5))
    finally:
        cfg.gateway.max_in_flight = original
        cfg.save()
        stack.stop(cfg.run_dir, "gateway")
        stack.start_workers(cfg, ["gateway", *down])
    assert [r.status_code for r in replies] == [202, 202, 503, 503, 503]
    refused = replies[2]
    assert refused.headers["Retry-After"] == "1"
    assert "2 lookups in flight" in refused.json()["detail"]


def test_chain_confirmed_nodes_answer_the_inbox_and_the_unasked_serve_when_named(
    live_stack, sample_sheets
):
    """Chain-confirmed org nodes serve on the chain event, straight back to the reply subject of
    the intent that named them; a later round naming only others leaves them asked. One never
    named keeps the event and serves it only when a round names it (the first were slow), and
    none of it goes through the LOOKUPS stream."""
    from eth_account import Account

    from shardline.contracts import registry
    from shardline.contracts.client import Chain
    from shardline.core import ids, sealing
    from shardline.runtime import chain_view

    cfg = live_stack
    gw = ParticipantKeys.load(cfg.gateway.key_file)
    acct = Account.from_key(ParticipantKeys.load(cfg.gateway.responders[0].key_file).chain_key)
    guid, (esk, epk) = ids.new_guid(), sealing.ephemeral_keypair()
    g, key = guid.hex(), ids.transport_key(sample_sheets[4].transport_id)
    body = {
        "guid": g,
        "transport_key": key.hex(),
        "ephemeral_pk": epk.hex(),
        "requester": acct.address,
    }

    async def go() -> tuple[set, set, dict, int]:
        nc = await nats.connect(cfg.nats_url)
        inbox, shares, streamed = nc.new_inbox(), asyncio.Queue(), []

        async def take(msg) -> None:
            await shares.put(envelope.parse(msg.data, "lookup.share").body)

        async def stream_copy(msg) -> None:
            streamed.append(msg)

        await nc.subscribe(f"{inbox}.*", cb=take)
        await nc.subscribe(f"lookup.share.{g}", cb=stream_copy)

        async def ask(orgs: list[str], to: list[str] | None = None) -> None:
            """As the gateway asks: each org on its own subject; the first round to every
            chain-confirmed org (those it does not name learn so), a later one to those named."""
            intent = envelope.make("lookup.intent", {**body, "orgs": orgs}, gw)
            for org in to or orgs:
                await nc.publish(
                    f"lookup.intent.{org}.{g}", intent.to_bytes(), reply=f"{inbox}.{g}"
                )
            await nc.flush()

        async def collect(n: int) -> dict[str, dict]:
            got = {}
            async with asyncio.timeout(15):
                while len(got) < n:
                    b = await shares.get()
                    got[b["org"]] = b
            return got

        await ask(["org1", "org2"], to=[o.id for o in cfg.orgs])
        await ask(["org3"])  # a second round before the block, naming only the newcomer
        view = await chain_view(cfg.chain_rpc, cfg)
        chain: Chain = view.chain
        gatekeeper = await registry.current_gatekeeper(chain, view.deployment)
        try:  # as the gateway would send it (the account the gateway uses for this responder)
            tx = await chain.send_call(
                acct,
                gatekeeper,
                registry.request_lookup_calldata(guid, key, epk),
                gas=registry.LOOKUP_GAS,
            )
            await chain.wait(tx)
        finally:
            await chain.close()
        first = await collect(3)
        await asyncio.sleep(1.0)  # the one never named keeps the event to itself
        early = set()
        while not shares.empty():
            early.add((await shares.get())["org"])
        await ask(["org4"])
        last = await collect(1)
        await nc.close()
        return set(first), early, {**first, **last}, len(streamed)

    first, early, got, streamed = run(go())
    assert first == {"org1", "org2", "org3"}
    assert early == set()
    assert set(got) == {"org1", "org2", "org3", "org4"}
    for org, b in got.items():
        assert b["trigger"] == "chain", org
        sealing.unseal(unb64(b["sealed"]), esk)  # sealed to this lookup's key
    assert streamed == 0  # every share went to the inbox, none to the stream
    served = [OrgStore(o.database_url).served(g) for o in cfg.orgs]
    assert all(r is not None and r.trigger == "chain" for r in served)


def test_a_guid_requested_again_is_served_nothing(live_stack, sample_sheets):
    """The chain keeps no set of used guids (a lookup is its event, and a slot per guid made the
    node's work grow with every lookup ever made); org nodes serve a guid once. The same guid
    requested again, with another ephemeral key, gets no share from any org node, and their
    served logs keep the first request's block."""
    from eth_account import Account

    from shardline.contracts import registry
    from shardline.core import ids, sealing
    from shardline.runtime import chain_view

    cfg = live_stack
    out = run(do_lookup(cfg, sample_sheets[5].transport_id))
    assert out.status == 200, out.body
    g = out.body["guid"]
    key = ids.transport_key(sample_sheets[5].transport_id)
    stores = [OrgStore(o.database_url) for o in cfg.orgs]
    before = {o.id: s.served(g) for o, s in zip(cfg.orgs, stores, strict=True)}
    assert sum(r is not None for r in before.values()) >= 2
    acct = Account.from_key(ParticipantKeys.load(cfg.gateway.responders[0].key_file).chain_key)

    async def go() -> list[str]:
        nc = await nats.connect(cfg.nats_url)
        seen: list[str] = []

        async def take(msg) -> None:
            env = json.loads(msg.data)
            if env.get("type") == "lookup.share" and env["body"]["guid"] == g:
                seen.append(env["sender"])

        await nc.subscribe(f"lookup.share.{g}", cb=take)
        await nc.subscribe("lookup.reply.>", cb=take)
        view = await chain_view(cfg.chain_rpc, cfg)
        try:
            gatekeeper = await registry.current_gatekeeper(view.chain, view.deployment)
            _esk, epk = sealing.ephemeral_keypair()
            tx = await view.chain.send_call(
                acct,
                gatekeeper,
                registry.request_lookup_calldata(bytes.fromhex(g), key, epk),
                gas=registry.LOOKUP_GAS,
            )
            result = await view.chain.wait(tx)
            assert result.receipt["status"] == 1  # the chain takes it: no state per guid
        finally:
            await view.chain.close()
        await asyncio.sleep(2.0)  # an org node serving it again would have done so by now
        await nc.close()
        return seen

    assert run(go()) == []
    after = {o.id: s.served(g) for o, s in zip(cfg.orgs, stores, strict=True)}
    assert after == before
