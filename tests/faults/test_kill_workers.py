"""A worker killed with SIGKILL under a steady stream of lookups loses none and repeats none.

The stack is real and its own (kills would disturb the shared one). The gateway's deadline is long
enough for a supervisor's restart, as ``Restart=always`` in deploy/ would do; the test restarts
each killed worker at once. Org node kills take the share node and the chain intake together (one
process); the combiner is the gateway side's worker.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time

import nats
import pytest
from sqlalchemy import create_engine, text

from shardline import faults, gateways, loadgen, stack
from shardline.bus import envelope
from shardline.config import StackConfig
from shardline.core.keys import ParticipantKeys

from ..conftest import start_stack
from ..security.test_forged_and_replayed import dead_letters

pytestmark = pytest.mark.e2e

TRANSPORTS = 8


@pytest.fixture(scope="module")
def fault_stack(tmp_path_factory, sample_sheets) -> StackConfig:
    run_dir = tmp_path_factory.mktemp("faults")
    cfg = start_stack(run_dir, sample_sheets[:TRANSPORTS], deadline_s=20.0)
    yield cfg
    stack.down(run_dir, say=lambda _m: None)


@pytest.mark.parametrize("worker", ["node-org2", "combiner"])
def test_a_killed_worker_loses_and_repeats_no_lookup(fault_stack, sample_sheets, worker):
    sheets = sample_sheets[:TRANSPORTS]
    load = loadgen.Load(
        fault_stack,
        [s.transport_id for s in sheets],
        {s.transport_id: json.loads(s.canonical_bytes()) for s in sheets},
        rate=8.0,
    ).start()
    try:
        time.sleep(1.5)
        faults.kill_worker(fault_stack, worker)
        time.sleep(2.0)
        if worker == "node-org2":  # then org1: each org node of the first pair, in turn
            faults.kill_worker(fault_stack, "node-org1")
            time.sleep(1.0)
    finally:
        shots = load.stop()
    assert len(shots) >= 20
    lost = loadgen.lost(shots)
    assert not lost, f"{len(lost)} of {len(shots)} lost, e.g. {lost[0]}"
    twice = asyncio.run(loadgen.served_twice(fault_stack, {s.guid for s in shots}, load.replies))
    assert twice.results == {}, f"results published more than once: {twice.results}"
    assert twice.shares == {}, f"shares served more than once: {twice.shares}"


def test_an_envelope_replayed_across_a_restart_is_refused(fault_stack):
    """The seen ids survive a kill -9: org3's share node, restarted, still refuses a copy of an
    intent it took before."""
    gateway = ParticipantKeys.load(fault_stack.gateway.key_file)
    guid = secrets.token_hex(16)
    body = {
        "guid": guid,
        "transport_key": "00" * 32,
        "ephemeral_pk": "11" * 32,
        "requester": "0x" + "22" * 20,
        "orgs": ["org3"],
    }
    intent = envelope.make("lookup.intent", body, gateway)
    subject = f"lookup.intent.org3.{guid}"  # as the gateway sends it: to org3 alone

    async def publish() -> None:
        # a plain message, as the gateway sends it (no stream keeps intents)
        async with await nats.connect(fault_stack.nats_url) as nc:
            await nc.publish(subject, intent.to_bytes())
            await nc.flush()

    def taken_by_org3() -> str | None:
        """Where org3's durable seen-id store says it took the intent (None: not yet)."""
        org3 = next(o for o in fault_stack.orgs if o.id == "org3")
        engine = create_engine(org3.database_url)
        try:
            for _ in range(150):
                with engine.connect() as c:
                    found = c.execute(
                        text("SELECT position FROM envelopes_seen WHERE id = :id"),
                        {"id": intent.id},
                    ).scalar()
                if found:
                    return found
                time.sleep(0.1)
        finally:
            engine.dispose()
        return None

    async def refusals() -> list[str]:
        async with await nats.connect(fault_stack.nats_url) as nc:
            found = await dead_letters(nc.jetstream(), subject, 1, within=60.0)
        return [
            m.headers["Shardline-Reason"]
            for m in found
            if m.headers["Shardline-Worker"] == "share-node.org3"
        ]

    asyncio.run(publish())
    first = taken_by_org3()
    assert first and first.startswith("intent:"), "org3 never took the first copy"
    faults.kill_worker(fault_stack, "node-org3")
    asyncio.run(publish())  # the same envelope again, after org3's restart
    reasons = asyncio.run(refusals())
    assert len(reasons) == 1, reasons
    assert reasons[0].startswith(f"replayed envelope {intent.id} from gateway")
    assert first in reasons[0]


def test_a_killed_gateway_loses_no_lookup_when_the_client_knows_another(fault_stack, sample_sheets):
    """kill -9 the gateway the client asks under load: the lookups it held and those asked while
    it restarts go to a second gateway at once (new lookups there); none lost, none served twice
    by any org, and the client counted the failovers."""
    if not fault_stack.gateway_replicas:
        assert gateways.add(fault_stack, 1) == ["gateway-2"]
    urls = gateways.urls(fault_stack)
    assert len(urls) == 2
    sheets = sample_sheets[:TRANSPORTS]
    load = loadgen.Load(
        fault_stack,
        [s.transport_id for s in sheets],
        {s.transport_id: json.loads(s.canonical_bytes()) for s in sheets},
        rate=8.0,
        gateway_urls=urls,
    ).start()
    try:
        time.sleep(1.5)
        faults.kill_worker(fault_stack, "gateway")  # and its restart, as a supervisor would
        time.sleep(2.0)
    finally:
        shots = load.stop()
    assert len(shots) >= 20
    lost = loadgen.lost(shots)
    assert not lost, f"{len(lost)} of {len(shots)} lost, e.g. {lost[0]}"
    moved = [s for s in shots if s.failovers]
    assert moved, "no lookup found the killed gateway down: the kill missed the load"
    assert all(s.gateway == urls[1] for s in moved), {s.gateway for s in moved}
    assert {s.gateway for s in shots} == set(urls)  # the first gateway served until the kill
    twice = asyncio.run(loadgen.served_twice(fault_stack, {s.guid for s in shots}, load.replies))
    assert twice.results == {}, f"results published more than once: {twice.results}"
    assert twice.shares == {}, f"shares served more than once: {twice.shares}"


def test_the_cli_lookup_asks_the_next_gateway_when_the_first_is_down(fault_stack, sample_sheets):
    """`shardline lookup` with a stack whose first gateway does not answer (nothing listens on
    its port): the lookup goes to the next gateway of the list and comes back with the sheet."""
    from shardline import servers
    from shardline.cli import _lookup

    cfg = fault_stack.model_copy(deep=True)
    cfg.gateway_replicas = [cfg.gateway.port]
    cfg.gateway.port = servers.free_port()  # a gateway that is down
    sheet = sample_sheets[0]
    outcome = asyncio.run(_lookup(cfg, sheet.transport_id, "responder", quiet=True))
    assert outcome.status == 200, outcome.body
    assert outcome.body["sheet"] == json.loads(sheet.canonical_bytes())
