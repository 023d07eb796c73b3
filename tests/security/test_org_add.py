"""`shardline org add`: a new org gets its keys, its place in the registry, its own bus user
(its subjects only) and a running node, on a stack that is up."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import nats
import pytest

from shardline import stack
from shardline.config import StackConfig
from shardline.contracts import registry
from shardline.runtime import chain_view

from .test_bus_permissions import Client, heard

pytestmark = pytest.mark.e2e


def test_org_add_admits_a_new_org_with_its_own_bus_user(live_stack):
    cfg = StackConfig.load(live_stack.path)  # a copy: the session's object keeps its four orgs
    done = subprocess.run(
        [sys.executable, "-m", "shardline", "org", "add", "org5", "--config", str(cfg.path)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "org5 added" in done.stdout
    cfg = StackConfig.load(live_stack.path)
    org5 = cfg.org("org5")
    assert org5.nats_seed_file is not None and org5.nats_seed_file.stat().st_mode & 0o077 == 0
    assert "node-org5" in stack.running(cfg.run_dir)

    async def go():
        view = await chain_view(cfg.chain_rpc, cfg)
        ids = [p.id for p in await registry.list_participants(view.chain, view.deployment)]
        await view.chain.close()
        operator = await nats.connect(cfg.nats_url)
        status = await operator.request("shardline.status.share-node.org5", b"", timeout=5)
        c = await Client().connect(cfg, "org5", org5.nats_seed_file)

        async def send() -> None:
            await c.nc.publish("lookup.requested.org1", b"forged")

        got = await heard(operator, "lookup.requested.*", send, c.nc, "lookup.requested.org5")
        refused = await c.violation("publish", "lookup.requested.org1")
        await c.nc.close()
        await operator.close()
        return ids, status.data, got, refused

    ids, status, got, refused = asyncio.run(go())
    assert "org5" in ids
    assert b"share-node.org5" in status
    assert len(got) == 1 and refused

    again = subprocess.run(
        [sys.executable, "-m", "shardline", "org", "add", "org5", "--config", str(cfg.path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert again.returncode == 1 and "already in this stack" in again.stderr
