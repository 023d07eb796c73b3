"""The `shardline contacts` verbs on a live stack, as a person runs them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e

CSV = (
    "First,Last,Born\nMohammad,Nasser,1975-02-01\nMohamed,Naser,1975-02-01\nAna,Silva,31/02/1990\n"
)


def shardline(cfg, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "shardline", "contacts", *args, "--config", str(cfg.path)],
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_import_dedup_and_match_from_the_command_line(live_stack, tmp_path):
    f = tmp_path / "people.csv"
    f.write_text(CSV)
    mapping = json.dumps({"given_name": "First", "family_name": "Last", "birth_date": "Born"})
    r = shardline(live_stack, "import", str(f), "--org", "org3", "--mapping", mapping)
    assert r.returncode == 0, r.stderr
    assert "imported 2 of 3 rows" in r.stdout
    assert "birth_date" in r.stderr and "4" in r.stderr  # the refused row, by line and field
    r = shardline(live_stack, "dedup", "--org", "org3")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "done" in r.stdout and "duplicate groups" in r.stdout
    r = shardline(live_stack, "match", "--org", "org3", "--with", "org4", "--timeout", "60")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "contacts are shared with org4" in r.stdout
    r = shardline(live_stack, "match", "--org", "org3", "--with", "nobody")
    assert r.returncode == 1 and "cannot start" in r.stderr
