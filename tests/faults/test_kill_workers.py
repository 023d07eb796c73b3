"""A worker killed with SIGKILL under a steady stream of lookups loses none and repeats none.

The stack is real and its own (kills would disturb the shared one). The gateway's deadline is long
enough for a supervisor's restart, as ``Restart=always`` in deploy/ would do; the test restarts
each killed worker at once. Org node kills take the share node and the chain intake together (one
process); the combiner is the gateway side's worker.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from shardline import faults, loadgen, stack
from shardline.config import StackConfig

from ..conftest import start_stack

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
