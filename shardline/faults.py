"""Faults to inject into a running local stack: kill -9 a worker, restart a server, reorg the chain.

Each returns the time the fault struck (``time.time()``) and leaves the stack running again, as
a supervisor would (``Restart=always`` in deploy/): the killed worker or server is started anew
with the same command line, ports and data directory.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request

from shardline import servers, stack
from shardline.config import StackConfig


def kill_worker(cfg: StackConfig, name: str) -> float:
    """SIGKILL a worker (no chance to ack, nak or flush), then start it again."""
    pid = stack.read_pids(cfg.run_dir)[name]["pid"]
    at = time.time()
    os.kill(pid, signal.SIGKILL)
    stack.stop(cfg.run_dir, name)  # reaps it and forgets its pid file
    stack.start_workers(cfg, [name])
    return at


def _server_spec(cfg: StackConfig, name: str) -> servers.ServerSpec:
    data = cfg.run_dir / "data"
    if name == "nats":
        auth = data / "nats-auth.json"
        return servers.nats_spec(
            data / "nats", cfg.nats_port, cfg.nats_monitor_port, auth if auth.exists() else None
        )
    if name == "redis":
        return servers.redis_spec(data / "redis", cfg.redis_port)
    raise ValueError(f"no server {name!r} to restart here: nats or redis")


def restart_server(cfg: StackConfig, name: str, down_s: float = 0.0) -> float:
    """Stop nats-server or redis-server (SIGTERM, as an upgrade would), wait, start it again."""
    spec = _server_spec(cfg, name)
    at = time.time()
    stack.stop(cfg.run_dir, name)
    time.sleep(down_s)
    log = cfg.run_dir / "logs" / f"{name}.log"
    proc = servers.spawn(spec, log)
    stack.write_pid(cfg.run_dir, name, proc, spec.argv, log)
    return at


def _rpc(url: str, method: str, params: list | None = None) -> object:
    payload = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []})
    req = urllib.request.Request(  # noqa: S310 (the local anvil)
        url, data=payload.encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310
        body = json.loads(resp.read())
    if "error" in body:
        raise RuntimeError(f"{method}: {body['error']}")
    return body["result"]


def snapshot(cfg: StackConfig) -> str:
    """Mark the chain's state now (anvil's evm_snapshot)."""
    return str(_rpc(cfg.chain_rpc, "evm_snapshot"))


def reorg(cfg: StackConfig, snapshot_id: str, new_blocks: int = 3) -> float:
    """Drop every block since ``snapshot_id`` and mine ``new_blocks`` others in their place:
    what readers see when the chain they followed is replaced by a longer one."""
    at = time.time()
    if not _rpc(cfg.chain_rpc, "evm_revert", [snapshot_id]):
        raise RuntimeError(f"anvil could not revert to snapshot {snapshot_id}")
    _rpc(cfg.chain_rpc, "anvil_mine", [hex(new_blocks)])
    return at
