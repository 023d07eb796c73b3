"""The whole local stack with each org's stores on PostgreSQL (`shardline up --database-url`).

One stack whose 4 org nodes each keep their stores in a database of their own on a real
PostgreSQL server (the `postgres_server` fixture): transports registered, a lookup through the
gateway, `shardline audit`, then the databases read directly. And what `up` refuses before it
starts anything: a URL without `{org}`, a database that is missing, unreachable or not empty.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import psycopg
import pytest

from shardline import servers, stack
from shardline.config import StackConfig
from shardline.db import shown_url

from ..conftest import start_stack
from .test_lookup import do_lookup
from .test_ops import asked_orgs, cli

pytestmark = pytest.mark.e2e

PG_TRANSPORTS = 6
_names = itertools.count(1)


def databases(server: servers.PostgresServer, prefix: str, orgs: list[str]) -> str:
    """A database ``<prefix>_<org>`` for each of ``orgs``; the ``{org}`` template of them all."""
    for org in orgs:
        server.create_database(f"{prefix}_{org}")
    return server.url(f"{prefix}_{{org}}")


def query(url: str, sql: str, *params) -> list[tuple]:
    """Straight to the org's database (libpq reads the URL), no shardline code in between."""
    with psycopg.connect(url) as c:
        return c.execute(sql, params).fetchall()


def shardline(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """As the operator types it: the command in a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "shardline", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
    )


def said(out: subprocess.CompletedProcess) -> str:
    return " ".join((out.stdout + out.stderr).split())


def processes_of(run_dir: Path) -> list[str]:
    """Processes whose command line names ``run_dir`` (servers and workers of a stack there)."""
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if str(run_dir) in cmd and p.info["pid"] != os.getpid():
            found.append(f"{p.info['pid']}: {cmd}")
    return found


def assert_nothing_started(run_dir: Path) -> None:
    assert stack.read_pids(run_dir) == {}
    assert processes_of(run_dir) == []


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """A run directory for an `up` that should be refused; taken down after all if it was not."""
    path = tmp_path / "run"
    yield path
    stack.down(path, say=lambda _m: None)


@pytest.fixture(scope="module")
def pg_stack(tmp_path_factory, sample_sheets, postgres_server):
    template = databases(postgres_server, "stack", ["org1", "org2", "org3", "org4", "org5"])
    run_dir = tmp_path_factory.mktemp("stack-postgres")
    cfg = start_stack(run_dir, sample_sheets[:PG_TRANSPORTS], database_url=template)
    yield cfg, template
    stack.down(run_dir, say=lambda _m: None)
    assert_nothing_started(run_dir)


def test_a_lookup_and_its_audit_on_a_stack_whose_orgs_keep_their_stores_in_postgres(
    pg_stack, sample_sheets
):
    cfg, template = pg_stack
    urls = {o.id: o.database_url for o in cfg.orgs}
    assert urls == {o: template.replace("{org}", o) for o in ("org1", "org2", "org3", "org4")}
    assert StackConfig.load(cfg.path).database_url_template == template
    assert list(cfg.run_dir.rglob("*.db")) == [], "an org's SQLite file was made"

    sheet = sample_sheets[2]
    out = asyncio.run(do_lookup(cfg, sheet.transport_id))
    assert out.status == 200, out.body
    assert out.body["sheet"] == json.loads(sheet.canonical_bytes())
    assert len(out.body["used_orgs"]) == cfg.threshold and out.body["bad_orgs"] == []
    guid, asked = out.body["guid"], set(asked_orgs(out))

    # each org's database holds every share sent to it, and the lookup it served, marked on chain
    for org, url in urls.items():
        assert query(url, "SELECT count(*) FROM shares") == [(PG_TRANSPORTS,)], org
    deadline = time.monotonic() + 10
    while True:
        served = {
            org: query(url, 'SELECT "trigger", on_chain_block FROM served WHERE guid = %s', guid)
            for org, url in urls.items()
        }
        if all(rows and rows[0][1] is not None for org, rows in served.items() if org in asked):
            break
        assert time.monotonic() < deadline, f"served rows not marked on chain: {served}"
        time.sleep(0.1)
    assert {org for org, rows in served.items() if rows} == asked, served
    assert all(served[org][0][0] == "chain" for org in asked), served

    # status says where each org keeps its stores, its password masked
    listed = shardline("status", "--run-dir", str(cfg.run_dir), "--json")
    assert listed.returncode == 0, said(listed)
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert {o: rows[f"node-{o}"]["database"] for o in urls} == {
        o: shown_url(u) for o, u in urls.items()
    }

    done = cli(cfg, "audit", "--format", "json", "--grace", "0")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["unmatched"] == 0 and report["unreachable"] == [], report
    mine = [r for r in report["rows"] if r["guid"] == guid]
    assert {r["org"] for r in mine} == asked and all(r["status"] == "matched" for r in mine), mine
    assert list(cfg.run_dir.rglob("*.db")) == []


def test_an_org_added_to_the_stack_gets_its_database_from_the_template(pg_stack):
    """`shardline org add` follows the stack's template: org5's node opens `stack_org5`; an
    org whose database is missing is refused before it is registered or given keys."""
    cfg, template = pg_stack
    missing = shardline("org", "add", "org6", "--config", str(cfg.path))
    assert missing.returncode == 1, said(missing)
    assert "cannot open org org6's database" in said(missing), said(missing)
    assert 'database "stack_org6" does not exist' in said(missing), said(missing)
    assert "org6" not in {o.id for o in StackConfig.load(cfg.path).orgs}
    assert not (cfg.run_dir / "keys" / "org6.json").exists()

    added = shardline("org", "add", "org5", "--config", str(cfg.path))
    assert added.returncode == 0, said(added)
    org5 = StackConfig.load(cfg.path).org("org5")
    assert org5.database_url == template.replace("{org}", "org5")
    tables = {r[0] for r in query(org5.database_url, "SELECT tablename FROM pg_tables")}
    assert {"shares", "served", "cursor_blocks", "envelopes_seen"} <= tables, tables
    assert list(cfg.run_dir.rglob("*.db")) == []


def test_up_refuses_a_database_url_without_org(run_dir):
    out = shardline(
        "up",
        "--database-url",
        "postgresql://shardline:s3cret@db/shardline",
        "--run-dir",
        str(run_dir),
    )
    text = said(out)
    assert out.returncode == 1, text
    assert "--database-url postgresql://shardline:***@db/shardline names one database" in text
    assert "each org node needs a database of its own" in text, text
    assert "Put {org} where the org's id goes" in text and "/shardline_{org}" in text, text
    assert "s3cret" not in text and "Traceback" not in text, text
    assert_nothing_started(run_dir)
    with pytest.raises(stack.StackError, match=r"needs a database of its own"):
        stack.up(run_dir, ports=stack.Ports.free(), database_url="sqlite:////tmp/one.db")
    assert_nothing_started(run_dir)


def test_up_fails_early_on_a_database_it_cannot_open(run_dir, postgres_server):
    """Missing (org2's, of four), unreachable, or holding an earlier stack's tables: `up` says
    which org's database, with the password masked, and what to do, before it starts anything."""
    n = next(_names)
    # org1's database exists, org2's does not; the server trusts the socket, the password is shown
    # masked all the same
    postgres_server.create_database(f"partial{n}_org1")
    template = postgres_server.url(f"partial{n}_{{org}}").replace(
        "postgresql://postgres@", "postgresql://postgres:s3cret@"
    )
    ports = [str(servers.free_port()) for _ in range(6)]
    t = time.monotonic()
    out = shardline(
        "up",
        "--database-url",
        template,
        "--run-dir",
        str(run_dir),
        *("--nats-port", ports[0], "--nats-monitor-port", ports[1], "--redis-port", ports[2]),
        *("--anvil-port", ports[3], "--gateway-port", ports[4], "--metrics-base-port", ports[5]),
    )
    elapsed = time.monotonic() - t
    text = said(out)
    assert out.returncode == 1, text
    assert "cannot open org org2's database postgresql://postgres:***@/partial" in text, text
    assert f'database "partial{n}_org2" does not exist' in text, text
    assert f"create it (e.g. `createdb partial{n}_org2`" in text, text
    assert "Nothing was started" in text and "s3cret" not in text, text
    assert "Traceback" not in text, text
    assert elapsed < 15, elapsed  # no server was started and waited for
    assert_nothing_started(run_dir)

    # no server there at all
    nowhere = f"postgresql://shardline:s3cret@127.0.0.1:{servers.free_port()}/x_{{org}}"
    with pytest.raises(stack.StackError) as refused:
        stack.up(run_dir, ports=stack.Ports.free(), database_url=nowhere)
    text = str(refused.value)
    assert "cannot open org org1's database postgresql://shardline:***@127.0.0.1:" in text, text
    assert "check that the server runs" in text and "s3cret" not in text, text
    assert_nothing_started(run_dir)

    # an earlier stack's tables in org3's database
    used = databases(postgres_server, f"used{n}", ["org1", "org2", "org3", "org4"])
    with psycopg.connect(used.replace("{org}", "org3"), autocommit=True) as c:
        c.execute("CREATE TABLE shares (transport_key text)")
    with pytest.raises(stack.StackError) as refused:
        stack.up(run_dir, ports=stack.Ports.free(), database_url=used)
    text = str(refused.value)
    assert f"org org3's database postgresql://postgres@/used{n}_org3" in text, text
    assert "is not empty (tables shares)" in text, text
    assert f"`dropdb used{n}_org3 && createdb used{n}_org3`" in text, text
    assert_nothing_started(run_dir)
