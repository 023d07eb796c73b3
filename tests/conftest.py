"""Shared fixtures: real servers and a real local stack, on free ports, in temporary folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from shardline import servers, stack
from shardline.config import CHAIN_CONFIRMED, StackConfig
from shardline.core.cargo import CargoSheet, read_transports, sample_transports_path

E2E_TRANSPORTS = 24


@pytest.fixture(scope="session")
def sample_sheets() -> list[CargoSheet]:
    return read_transports(sample_transports_path())


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory) -> str:
    port, monitor = servers.free_port(), servers.free_port()
    d = tmp_path_factory.mktemp("nats")
    proc = servers.spawn(servers.nats_spec(d / "data", port, monitor), d / "nats.log")
    yield f"nats://127.0.0.1:{port}"
    servers.stop_pid(proc.pid)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> str:
    port = servers.free_port()
    d = tmp_path_factory.mktemp("redis")
    proc = servers.spawn(servers.redis_spec(d / "data", port), d / "redis.log")
    yield f"redis://127.0.0.1:{port}/0"
    servers.stop_pid(proc.pid)


def start_stack(
    run_dir: Path,
    sheets: list[CargoSheet],
    policy: str = CHAIN_CONFIRMED,
    deadline_s: float = 2.0,
) -> StackConfig:
    from shardline import loadgen

    return loadgen.start_sample_stack(run_dir, sheets, deadline_s=deadline_s, policy=policy)


@pytest.fixture(scope="session")
def live_stack(tmp_path_factory, sample_sheets) -> StackConfig:
    """A chain-confirmed stack: 4 org nodes, threshold 2, some sample transports registered."""
    run_dir = tmp_path_factory.mktemp("stack")
    cfg = start_stack(run_dir, sample_sheets[:E2E_TRANSPORTS])
    yield cfg
    stack.down(run_dir, say=lambda _m: None)
