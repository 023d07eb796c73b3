"""The stack's own commands, as an operator types them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

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
    # still listed, as stopped (it dropped out of `status` with its pid file), and how to start it
    listed = runner.invoke(app, ["status", "--run-dir", run_dir, "--json"])
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert rows["combiner"]["running"] is False and rows["combiner"]["pid"] is None, rows
    assert rows["gateway"]["running"] is True
    shown = runner.invoke(app, ["status", "--run-dir", run_dir], env={"COLUMNS": "200"})
    # (other tests' processes, stopped since, may be named with it)
    hint = " ".join(shown.output.split()).partition("to start what stopped: `shardline start ")[2]
    assert "combiner" in hint.partition("`")[0].split(), shown.output
    auth.write_text(current.replace('"lookup.intent.org1.*"', '"lookup.intent.*"'))
    started = runner.invoke(app, ["start", "combiner", "--run-dir", run_dir])
    assert started.exit_code == 0, started.output
    assert "combiner" in stack.running(live_stack.run_dir)
    assert '"lookup.intent.org1.*"' in auth.read_text()
    # up to date now: started again, the file is left alone and the server is not reloaded
    written = auth.stat().st_mtime_ns
    assert runner.invoke(app, ["stop", "combiner", "--run-dir", run_dir]).exit_code == 0
    assert runner.invoke(app, ["start", "combiner", "--run-dir", run_dir]).exit_code == 0
    assert auth.stat().st_mtime_ns == written


def test_commands_say_what_to_do_when_the_stack_is_not_there(tmp_path, live_stack):
    """A command run against a stack that is down says which server it cannot reach and what
    to do, in one line and soon; it neither hangs retrying the bus nor shows a traceback.
    (`dlq list`, `tail` and `monitor --json` retried the bus for ever; `lookup` and `audit` raised
    tracebacks; an unknown responder and a --config naming the run directory raised too.)"""
    down = tmp_path / "down"
    down.mkdir()
    # the same stack file, every server moved to a port nothing listens on
    dead = _dead_ports(live_stack)
    text = (live_stack.run_dir / "stack.json").read_text()
    for live_port, dead_port in dead.items():  # in URLs, and as a "port": N field
        text = text.replace(f":{live_port}", f":{dead_port}")
        text = text.replace(f": {live_port}", f": {dead_port}")
    (down / "stack.json").write_text(text)
    conf = ["--config", str(down / "stack.json")]

    def shardline(*args: str) -> subprocess.CompletedProcess:
        """As the user runs it: the console entry point, in a process of its own."""
        return subprocess.run(
            [sys.executable, "-m", "shardline", *args],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "COLUMNS": "200"},
        )

    for args, says in (
        (["dlq", "list", *conf], "cannot reach the NATS bus"),
        (["tail", "lookup.>", "--seconds", "1", *conf], "cannot reach the NATS bus"),
        (["monitor", "--json", *conf], "cannot reach the bus"),
        (["lookup", "TR-100001", *conf], "cannot reach the gateway"),
        (["audit", *conf], "cannot reach the Ethereum node"),
    ):
        out = shardline(*args)
        said = " ".join((out.stdout + out.stderr).split())
        assert out.returncode != 0, (args, said)
        assert says in said, (args, said)
        assert "Traceback" not in said, (args, said)
    # against the live stack: an unknown responder, and --config naming the run directory
    out = shardline(
        "lookup", "TR-100001", "--responder", "nobody", "--config", str(live_stack.run_dir)
    )
    said = " ".join((out.stdout + out.stderr).split())
    assert out.returncode == 2, said
    assert "no API key for responder 'nobody'" in said and "responder, visitor" in said, said
    out = shardline("start", "node-org9", "--run-dir", str(live_stack.run_dir))
    said = " ".join((out.stdout + out.stderr).split())
    assert out.returncode == 1 and "no worker called 'node-org9'" in said, said
    assert "node-org9" not in stack.read_pids(live_stack.run_dir)


def _dead_ports(cfg) -> dict[int, int]:
    """Each server port of ``cfg`` -> a free port nothing listens on."""
    from shardline import servers

    return {
        p: servers.free_port()
        for p in (cfg.nats_port, cfg.redis_port, cfg.anvil_port, cfg.gateway.port)
    }
