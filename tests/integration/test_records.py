"""Records on the real stack: nats-server, anvil and three org nodes, each with its proxy.

Put, grant 2-of-3 and read; read with one proxy down; revoke and expire; a proxy that returns
garbage is named; and no plaintext on the bus or in any proxy's database.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import nats
import pytest

from shardline import stack
from shardline.bus.connect import connect
from shardline.config import StackConfig
from shardline.contracts import records as chain_records
from shardline.contracts.client import Chain
from shardline.contracts.deploy import Deployment
from shardline.core import records as rc
from shardline.core.keys import ParticipantKeys
from shardline.workers.records_client import RecordsClient, account_of
from shardline.workers.records_proxy import PartyDirectory, RecordsProxy
from shardline.workers.records_store import ProxyStore

pytestmark = pytest.mark.integration

DAY = 24 * 3600
PROXIES = ["org1", "org2", "org3"]


@pytest.fixture(scope="module")
def records_stack(tmp_path_factory) -> StackConfig:
    run_dir = tmp_path_factory.mktemp("records-stack")
    cfg = stack.up(run_dir, orgs=3, threshold=2, ports=stack.Ports.free(), say=lambda _m: None)
    yield cfg
    stack.down(run_dir, say=lambda _m: None)


@pytest.fixture
async def client(records_stack):
    c = await RecordsClient.connect(
        records_stack.nats_url,
        records_stack.chain_rpc,
        records_stack.deployment,
        name="records-test",
        timeout_s=2.0,
    )
    yield c
    await c.close()


async def party(client: RecordsClient, name: str) -> rc.PartyKeys:
    keys = rc.PartyKeys.generate(f"{name}-{os.urandom(3).hex()}")
    await client.register(keys)
    return keys


async def granted_record(client, plaintext: bytes, *, expires_in: float = DAY):
    owner, reader = await party(client, "alice"), await party(client, "st-marys")
    info = await client.put(owner, plaintext)
    g = await client.grant(
        owner,
        info.record_id,
        reader.id,
        threshold=2,
        proxies=PROXIES,
        expires_at=int(time.time() + expires_in),
    )
    assert await client.wait_held(g) == []
    return owner, reader, info, g


async def book_reads(client: RecordsClient) -> int:
    """How many access requests the proxies have answered from their grant books."""
    states = [await client.held_by(org) for org in PROXIES]
    return sum(s["grant_reads"]["book"] for s in states if s)


async def restart(cfg: StackConfig, name: str) -> None:
    """Start an org node again and wait for its records proxy, which starts after the node's
    other workers (the stack's readiness check asks only the first)."""
    if name not in stack.running(cfg.run_dir):
        await asyncio.to_thread(stack.start_workers, cfg, [name])
    org = name.removeprefix("node-")
    async with await nats.connect(cfg.nats_url) as nc:
        for _ in range(200):
            try:
                await nc.request(f"records.state.{org}", b"", timeout=0.5)
                return
            except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
                await asyncio.sleep(0.05)
    pytest.fail(f"the records proxy of {org} did not start")


async def test_put_grant_two_of_three_and_read(client, records_stack):
    text = b"Patient: A. Example\nAllergy: penicillin\n" + os.urandom(1024)
    owner, reader, info, g = await granted_record(client, text)
    assert (g.threshold, g.proxies, g.version) == (2, tuple(PROXIES), 1)
    from_book = await book_reads(client)
    got = await client.get(reader, info.record_id)
    assert got.plaintext == text
    assert len(got.used) == 2 and set(got.used) <= set(PROXIES)
    assert got.bad == {} and got.refused == {}
    # the proxies took the grant from the book their event readers keep, not from a chain call
    assert await book_reads(client) >= from_book + 2
    # and each proxy used wrote down whom it re-encrypted for (in batches, off the reply's path)
    for org in got.used:
        store = ProxyStore(records_stack.org(org).database_url)
        for _ in range(100):
            if store.reencrypted(info.record_id):
                break
            await asyncio.sleep(0.02)
        assert [(rd, v) for _q, rd, v in store.reencrypted(info.record_id)] == [(reader.id, 1)]
    listing = await client.listing(owner.id)
    assert listing["owned"][0]["record_id"] == info.record_id
    assert listing["owned"][0]["grants"][0]["status"] == rc.LIVE
    mine = await client.listing(reader.id)
    assert [r["record_id"] for r in mine["granted"]] == [info.record_id]


async def test_a_large_record_reads_whole(client):
    text = os.urandom(1024 * 1024)
    _owner, reader, info, _g = await granted_record(client, text)
    got = await client.get(reader, info.record_id)
    assert got.plaintext == text


async def test_one_proxy_down_is_enough_two_down_is_a_clear_error(client, records_stack):
    text = b"discharge letter " * 50
    _owner, reader, info, _g = await granted_record(client, text)
    try:
        stack.stop(records_stack.run_dir, "node-org3")
        got = await client.get(reader, info.record_id)
        assert got.plaintext == text and "org3" not in got.used
        stack.stop(records_stack.run_dir, "node-org2")
        with pytest.raises(rc.NotEnoughProxies) as err:
            await client.get(reader, info.record_id)
        msg = str(err.value)
        assert info.record_id in msg and reader.id in msg
        assert "1 good capsule fragment(s) of 2" in msg and "org2" in msg and "org3" in msg
    finally:
        await restart(records_stack, "node-org2")
        await restart(records_stack, "node-org3")


async def test_a_restarted_proxy_answers_from_its_book_before_the_next_block(client, records_stack):
    """A proxy restarted on a quiet chain (no block mined after it starts) takes the chain's
    head when its subscription is confirmed: one grant read from the chain fills its book, and
    the requests after it are answered from the book, not each from the chain."""
    text = b"x-ray, left wrist"
    _owner, reader, info, _g = await granted_record(client, text)
    stack.stop(records_stack.run_dir, "node-org2")
    await restart(records_stack, "node-org2")
    block = await client.chain.w3.eth.block_number
    for _ in range(100):  # until its event reader has caught up (refusals meanwhile are fine)
        answers = await client.ask_all(reader, info.record_id, ("org2",))
        if answers["org2"].outcome == "cfrag":
            break
        await asyncio.sleep(0.05)
    before = (await client.held_by("org2"))["grant_reads"]
    for _ in range(5):
        answers = await client.ask_all(reader, info.record_id, ("org2",))
        assert answers["org2"].outcome == "cfrag", answers["org2"]
    after = (await client.held_by("org2"))["grant_reads"]
    assert await client.chain.w3.eth.block_number == block, "a block was mined meanwhile"
    assert after["book"] - before["book"] == 5 and after["chain"] == before["chain"]


async def test_revoke_every_proxy_refuses_from_the_revoking_block(client):
    owner, reader, info, g = await granted_record(client, b"HIV status: negative")
    assert (await client.get(reader, info.record_id)).plaintext == b"HIV status: negative"
    block = await client.revoke(owner, info.record_id, reader.id)
    # revoke returns once the proxies have read its block; no new block is mined after it: the
    # proxies must refuse at the block itself (an exact proxy without that wait: further down)
    answers = await client.ask_all(reader, info.record_id, g.proxies)
    assert {o: a.outcome for o, a in answers.items()} == dict.fromkeys(PROXIES, "refusal")
    assert all(a.reason == rc.REVOKED for a in answers.values())
    with pytest.raises(rc.AccessRefused) as err:
        await client.get(reader, info.record_id)
    assert err.value.reason == rc.REVOKED
    assert info.record_id in str(err.value) and reader.id in str(err.value)
    # and each proxy has dropped its fragment, having read the revoking block
    for org in PROXIES:
        for _ in range(100):
            state = await client.held_by(org)
            if state["block"] >= block and not any(
                k["record_id"] == info.record_id for k in state["kfrags"]
            ):
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail(f"{org} still holds the fragment of {info.record_id}: {state}")


async def test_an_expired_grant_is_refused_by_every_proxy(client):
    _owner, reader, info, g = await granted_record(client, b"x-ray report", expires_in=3)
    assert (await client.get(reader, info.record_id)).plaintext == b"x-ray report"
    await asyncio.sleep(max(0.0, g.expires_at - time.time()) + 0.2)
    answers = await client.ask_all(reader, info.record_id, g.proxies)
    assert {a.reason for a in answers.values()} == {rc.EXPIRED}
    with pytest.raises(rc.AccessRefused, match="expired"):
        await client.get(reader, info.record_id)


async def test_unknown_reader_and_unknown_record_are_clear(client):
    owner = await party(client, "alice")
    info = await client.put(owner, b"note")
    with pytest.raises(rc.UnknownReader, match=f"unknown reader 'nobody-here'.*{info.record_id}"):
        await client.grant(
            owner, info.record_id, "nobody-here", threshold=2, expires_at=int(time.time()) + DAY
        )
    reader = await party(client, "reader")
    with pytest.raises(rc.AccessRefused, match="has no grant") as err:
        await client.get(reader, info.record_id)
    assert err.value.reason == rc.NOT_GRANTED
    with pytest.raises(rc.UnknownRecord, match="no record"):
        await client.get(reader, rc.new_record_id())
    stranger = await party(client, "mallory")
    with pytest.raises(rc.RecordError, match="belongs to"):
        await client.grant(
            stranger, info.record_id, reader.id, threshold=1, expires_at=int(time.time()) + DAY
        )


async def test_tampered_ciphertext_is_refused_whole(client):
    _owner, reader, info, _g = await granted_record(client, b"lab results " * 100)
    # someone with write access to the bucket replaces the object under the record's hash
    await client.blobs.store.put(info.content_hash.hex(), b"not the record at all")
    with pytest.raises(rc.TamperedCiphertext) as err:
        await client.get(reader, info.record_id)
    assert info.record_id in str(err.value) and reader.id in str(err.value)


class GarbageProxy(RecordsProxy):
    """A proxy that answers at once with random bytes for a capsule fragment, without looking
    at the chain: only ever started by this test, in the test process."""

    async def answer(self, env):
        from shardline.bus import envelope
        from shardline.bus.envelope import b64

        reader = await self.parties.party(env.body["reader"])
        body = {k: env.body[k] for k in ("request_id", "record_id", "reader")}
        body |= {"org": self.org_id, "version": 1, "cfrag": b64(os.urandom(381))}
        return envelope.make(
            "records.cfrag", body, self.keys, seal_to=(reader.id, reader.sealing_pk)
        )


async def test_a_proxy_returning_garbage_is_named_and_the_read_succeeds(client, records_stack):
    text = b"MRI: no findings"
    _owner, reader, info, _g = await granted_record(client, text)
    cfg = records_stack
    org = cfg.org("org1")
    dep = Deployment.from_dict(cfg.deployment)
    stack.stop(cfg.run_dir, "node-org1")
    chain = await Chain.connect(cfg.chain_rpc)
    nc = await connect(cfg.nats_url, "garbage-org1")
    bad = GarbageProxy(
        nc,
        ParticipantKeys.load(org.key_file),
        PartyDirectory(chain, dep),
        instance="org1",
        concurrency=1,
        org_id="org1",
        store=ProxyStore(org.database_url),
        chain=chain,
        deployment=dep,
        ws_url=cfg.chain_rpc.replace("http://", "ws://"),
    )
    await bad.start()
    try:
        # with org3 down the reader must look at org1's answer: named, never used
        stack.stop(cfg.run_dir, "node-org3")
        with pytest.raises(
            rc.NotEnoughProxies, match=r"bad: org1 \(capsule fragment does not verify"
        ):
            await client.get(reader, info.record_id)
        await restart(cfg, "node-org3")
        seen_bad = False
        for _ in range(10):  # the read succeeds from org2 and org3; org1 is named when seen
            got = await client.get(reader, info.record_id)
            assert got.plaintext == text
            assert sorted(got.used) == ["org2", "org3"]
            if "org1" in got.bad:
                seen_bad = True
                assert "does not verify" in got.bad["org1"]
        assert seen_bad, "org1 answers first, without a chain read, yet was never looked at"
    finally:
        await bad.stop()
        await nc.drain()
        await chain.close()
        await restart(cfg, "node-org1")
        await restart(cfg, "node-org3")


async def test_an_exact_proxy_refuses_in_the_revoking_block_before_anyone_waits(
    client, records_stack
):
    """An org node whose stack config says ``records_freshness: exact`` runs a proxy that reads
    the chain's block number after each request arrives: a revoke sent straight to the chain
    (the owner does not wait for the proxies) is refused by it from the revoking block on, with
    no block mined after it."""
    text = b"genetic panel"
    owner, reader, info, _g = await granted_record(client, text)
    cfg = records_stack
    assert cfg.org("org1").records_freshness == "pushed"  # the default
    assert (await client.held_by("org1"))["freshness"] == "pushed"
    stack.stop(cfg.run_dir, "node-org1")
    cfg.org("org1").records_freshness = "exact"
    cfg.save()
    chain = await Chain.connect(cfg.chain_rpc)
    try:
        await restart(cfg, "node-org1")
        assert (await client.held_by("org1"))["freshness"] == "exact"
        for _ in range(100):  # its event reader catches up and the head subscription is live
            answers = await client.ask_all(reader, info.record_id, ("org1",))
            state = await client.held_by("org1")
            if state["grant_reads"]["book"] and answers["org1"].outcome == "cfrag":
                break
            await chain.w3.provider.make_request("evm_mine", [])
            await asyncio.sleep(0.05)
        else:
            pytest.fail(f"org1 never answered from its book: {state['grant_reads']}")
        tx = await chain_records.revoke(
            client.chain, account_of(owner), client.deployment, info.record_id, reader.id
        )
        answers = await client.ask_all(reader, info.record_id, ("org1",))
        assert answers["org1"].outcome == "refusal" and answers["org1"].reason == rc.REVOKED
        for _ in range(100):  # and its reader has the revoking block (it waited for it)
            if (await client.held_by("org1"))["block"] >= tx.block_number:
                break
            await asyncio.sleep(0.05)
        assert (await client.held_by("org1"))["block"] >= tx.block_number
        assert await chain.w3.eth.block_number == tx.block_number  # no block after the revoke
    finally:
        await chain.close()
        stack.stop(cfg.run_dir, "node-org1")
        cfg.org("org1").records_freshness = "pushed"
        cfg.save()
        await restart(cfg, "node-org1")


async def test_no_plaintext_on_the_bus_or_in_any_proxy_store(client, records_stack):
    marker = b"PLAINTEXT-MARKER-" + os.urandom(8).hex().encode()
    text = (marker + b" diagnosis: type 1 diabetes\n") * 40
    seen: list[bytes] = []
    spy = await nats.connect(records_stack.nats_url)

    async def keep(msg) -> None:
        seen.append(msg.subject.encode() + b" " + bytes(msg.data))

    sub = await spy.subscribe(">", cb=keep)
    try:
        _owner, reader, info, _g = await granted_record(client, text)
        got = await client.get(reader, info.record_id)
        assert got.plaintext == text
        await spy.flush()
        await asyncio.sleep(0.2)
    finally:
        await sub.unsubscribe()
        await spy.close()
    kinds = {m[:40] for m in seen}
    assert len(seen) > 10, kinds  # the spy did see the traffic: requests, replies, chunks
    assert any(info.content_hash.hex().encode() in m for m in seen)
    assert not any(marker in m for m in seen)
    for org in records_stack.orgs:
        db = Path(org.database_url.removeprefix("sqlite:///"))
        for f in db.parent.glob(db.name + "*"):  # the database, its WAL and shared memory
            assert marker not in f.read_bytes(), f
        assert ProxyStore(org.database_url).kfrags(), org.id  # the proxies did store something


def _cli(cfg: StackConfig, *args: str, stdin: bytes | None = None):
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "shardline", "records", *args, "--config", str(cfg.path)],
        capture_output=True,
        input=stdin,
        timeout=120,
        check=False,
    )


async def test_cli_and_rest_api_tell_the_same_story(records_stack, tmp_path):
    import httpx

    cfg = records_stack
    suffix = os.urandom(2).hex()
    owner, reader = f"pat-{suffix}", f"hosp-{suffix}"
    for who in (owner, reader):
        p = await asyncio.to_thread(_cli, cfg, "keygen", who)
        assert p.returncode == 0, p.stderr.decode()
    keys = cfg.run_dir / "keys" / "records"
    auth = {
        n: {"Authorization": f"Bearer {(keys / f'{n}.apikey').read_text().strip()}"}
        for n in (owner, reader)
    }
    text = b"vaccination record\n" + os.urandom(300)
    base = f"http://{cfg.gateway.host}:{cfg.gateway.port}"
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        assert (await http.post("/records", content=text)).status_code == 401
        r = await http.post("/records", content=text, headers=auth[owner])
        assert r.status_code == 201, r.text
        rid = r.json()["record_id"]
        p = await asyncio.to_thread(
            _cli, cfg, "grant", rid, reader, "--as", owner, "--threshold", "2", "--expires", "1d"
        )
        assert p.returncode == 0, p.stderr.decode()
        assert f"granted record {rid} to {reader}: 2 of org1, org2, org3" in " ".join(
            p.stdout.decode().split()
        )
        r = await http.get(f"/records/{rid}", headers=auth[reader])
        assert r.status_code == 200, r.text
        assert r.content == text
        assert len(r.headers["X-Shardline-Used-Proxies"].split(",")) == 2
        out = tmp_path / "copy.bin"
        p = await asyncio.to_thread(_cli, cfg, "get", rid, "--as", reader, "--out", str(out))
        assert p.returncode == 0, p.stderr.decode()
        assert out.read_bytes() == text
        listing = (await http.get("/records", headers=auth[owner])).json()
        assert listing["owned"][0]["grants"][0]["reader"] == reader
        r = await http.post(
            f"/records/{rid}/grants", json={"reader": "no-such-reader"}, headers=auth[owner]
        )
        assert r.status_code == 404 and "unknown reader" in r.json()["detail"]["detail"]
        r = await http.delete(f"/records/{rid}/grants/{reader}", headers=auth[owner])
        assert r.status_code == 200, r.text
        r = await http.get(f"/records/{rid}", headers=auth[reader])
        assert r.status_code == 403
        body = r.json()["detail"]
        assert body["record_id"] == rid and body["reader"] == reader and "revoked" in body["detail"]
        p = await asyncio.to_thread(_cli, cfg, "get", rid, "--as", reader)
        assert p.returncode == 1 and b"revoked" in p.stderr and p.stdout == b""
        spec = (await http.get("/openapi.json")).json()
        assert "/records/{record_id}/grants" in spec["paths"]
