"""The stack's own commands, as an operator types them."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from shardline import stack
from shardline.cli import app

pytestmark = pytest.mark.e2e


def test_a_worker_stopped_and_started_by_the_run_dir(live_stack):
    """`stop` and `start` both take the stack's --run-dir (start took only --config, so the
    command that stopped a worker could not be repeated to start it). `start` also writes the
    bus permissions this code needs, as after an upgrade whose subjects changed: an older file
    (intents on `lookup.intent.<guid>`) is brought up to date."""
    runner = CliRunner()
    run_dir = str(live_stack.run_dir)
    auth = live_stack.run_dir / "data" / "nats-auth.json"
    current = auth.read_text()
    assert '"lookup.intent.org1.*"' in current
    stopped = runner.invoke(app, ["stop", "combiner", "--run-dir", run_dir])
    assert stopped.exit_code == 0, stopped.output
    assert "combiner" not in stack.running(live_stack.run_dir)
    auth.write_text(current.replace('"lookup.intent.org1.*"', '"lookup.intent.*"'))
    started = runner.invoke(app, ["start", "combiner", "--run-dir", run_dir])
    assert started.exit_code == 0, started.output
    assert "combiner" in stack.running(live_stack.run_dir)
    assert '"lookup.intent.org1.*"' in auth.read_text()
