"""`shardline privtx` on a live stack, as a person runs it: executors and facilitators for three
org nodes, a sender, a 2-of-3 group, a private call settled YES, and its status."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from shardline import stack

pytestmark = pytest.mark.e2e

ORGS = ("org1", "org2", "org3")


def privtx(cfg, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "shardline", "privtx", *args, "--config", str(cfg.path)],
        capture_output=True,
        text=True,
        timeout=180,
    )


def said(r: subprocess.CompletedProcess) -> str:
    """stderr with rich's line wrapping undone."""
    return " ".join(r.stderr.split())


def test_create_a_group_send_and_read_the_status(live_stack):
    try:
        r = privtx(live_stack, "up", *(a for o in ORGS for a in ("--org", o)))
        assert r.returncode == 0, r.stdout + r.stderr
        assert all(f"privtx-{o}" in stack.running(live_stack.run_dir) for o in ORGS)
        r = privtx(live_stack, "keygen", "shipper")
        assert r.returncode == 0, r.stderr
        r = privtx(
            live_stack,
            "create-group",
            *(a for o in ORGS for a in ("--member", o)),
            "--sender",
            "shipper",
            "--policy",
            "2-of-3",
            "--no-bls",
        )
        assert r.returncode == 0, r.stderr
        group = r.stdout.strip()
        assert re.fullmatch(r"[0-9a-f]{64}", group)
        r = privtx(live_stack, "send", group, "--as", "shipper", "--sku", "pallet", "--units", "12")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "YES: root 56e81f" in r.stdout
        payload = re.search(r"payload ([0-9a-f]{64})", r.stdout).group(1)
        r = privtx(live_stack, "status", group, payload)
        assert r.returncode == 0, r.stderr
        assert "YES" in r.stdout and "agreed root" in r.stdout
        r = privtx(live_stack, "status", group)
        assert "2-of-3" in r.stdout and "1 transactions submitted" in r.stdout
        # errors a person can act on
        r = privtx(live_stack, "send", group, "--as", "org1")
        assert r.returncode == 1 and "accepts submissions only from" in said(r)
        r = privtx(live_stack, "status", "nope")
        assert r.returncode == 2 and "not a group id" in said(r)
        r = privtx(
            live_stack,
            "create-group",
            "--member",
            "org1",
            "--member",
            "org2",
            "--sender",
            "shipper",
            "--policy",
            "1-of-2",
        )
        assert r.returncode == 2 and "not a majority" in said(r)
    finally:
        for o in ORGS:
            stack.stop(live_stack.run_dir, f"privtx-{o}")
            stack.stop(live_stack.run_dir, f"privtx-exec-{o}")
