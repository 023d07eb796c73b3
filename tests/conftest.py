"""Shared fixtures: real servers and a real local stack, on free ports, in temporary folders."""

from __future__ import annotations

import itertools
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


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory) -> servers.PostgresServer:
    """A real PostgreSQL server (Debian's package, which `make test` installs when missing), on
    a unix socket in its own folder only; its log is kept in the session's tmp folder. Not
    durable: fsync off."""
    d = tmp_path_factory.mktemp("postgres")
    try:
        server = servers.start_postgres(
            d / "cluster",
            servers.free_port(),
            settings={
                "fsync": "off",
                "synchronous_commit": "off",
                "full_page_writes": "off",
                "max_connections": "300",  # engines of many short tests, each with a pool
            },
        )
    except servers.PostgresMissing as exc:
        pytest.skip(f"no PostgreSQL server for the SQL stores' tests: {exc}")
    yield server
    server.stop(keep_log=d / "postgres.log")


_databases = itertools.count(1)


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """A new, empty database of its own for one test: ``postgresql://`` with no driver named."""
    return postgres_server.create_database(f"test_{next(_databases)}")


def start_stack(
    run_dir: Path,
    sheets: list[CargoSheet],
    policy: str = CHAIN_CONFIRMED,
    deadline_s: float = 2.0,
    database_url: str | None = None,
) -> StackConfig:
    """``database_url``: the orgs' databases, a ``{org}`` template (default: SQLite files)."""
    from shardline import loadgen

    return loadgen.start_sample_stack(
        run_dir, sheets, deadline_s=deadline_s, policy=policy, database_url=database_url
    )


@pytest.fixture(scope="session")
def live_stack(tmp_path_factory, sample_sheets) -> StackConfig:
    """A chain-confirmed stack: 4 org nodes, threshold 2, some sample transports registered."""
    run_dir = tmp_path_factory.mktemp("stack")
    cfg = start_stack(run_dir, sample_sheets[:E2E_TRANSPORTS])
    yield cfg
    stack.down(run_dir, say=lambda _m: None)
