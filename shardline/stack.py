"""The local stack launcher: servers, contracts, org nodes and the gateway under ``.shardline/``.

Everything it starts is a child process in its own session with a pid file, so ``down`` stops
exactly what ``up`` started, and a second ``up`` sees the first.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from eth_account import Account
from sqlalchemy.engine import URL

from shardline import bus_access, db, gateways, servers
from shardline.config import (
    AUDIT_AFTER,
    CHAIN_CONFIRMED,
    GatewayConfig,
    Operator,
    OrgNodeConfig,
    Responder,
    StackConfig,
    TokenIssuer,
)
from shardline.core.directory import GATEWAY, ORG
from shardline.core.keys import ParticipantKeys

# anvil's first well-known development account: funds and deploys on the local chain only.
ANVIL_ADMIN_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
SERVER_ORDER = ("nats", "redis", "anvil")


class StackError(RuntimeError):
    pass


@dataclass
class Ports:
    nats: int = 14222
    nats_monitor: int = 18222
    redis: int = 16379
    anvil: int = 18545
    gateway: int = 18080
    metrics_base: int = 19100
    any_free: bool = False  # pick every port (metrics too) from the free ones

    @classmethod
    def free(cls) -> Ports:
        return cls(*(servers.free_port() for _ in range(6)), any_free=True)

    def metrics(self, index: int) -> int:
        return servers.free_port() if self.any_free else self.metrics_base + index


# ---- pid files ----------------------------------------------------------------------------
def pid_dir(run_dir: Path) -> Path:
    return run_dir / "pids"


def write_pid(run_dir: Path, name: str, proc: subprocess.Popen, argv: list[str], log: Path) -> None:
    pid_dir(run_dir).mkdir(parents=True, exist_ok=True)
    info = {
        "pid": proc.pid,
        "argv": argv,
        "log": str(log),
        "created": psutil.Process(proc.pid).create_time(),
    }
    (pid_dir(run_dir) / f"{name}.json").write_text(json.dumps(info))


def read_pids(run_dir: Path) -> dict[str, dict]:
    d = pid_dir(run_dir)
    if not d.exists():
        return {}
    return {p.stem: json.loads(p.read_text()) for p in sorted(d.glob("*.json"))}


def is_running(info: dict) -> bool:
    """Alive, and the same process we started (not a stranger that reused the pid)."""
    try:
        proc = psutil.Process(info["pid"])
        return (
            proc.status() != psutil.STATUS_ZOMBIE
            and abs(proc.create_time() - info["created"]) < 1.0
        )
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def running(run_dir: Path) -> dict[str, dict]:
    return {n: i for n, i in read_pids(run_dir).items() if is_running(i)}


def stop(run_dir: Path, name: str) -> bool:
    info = read_pids(run_dir).get(name)
    if info is None:
        raise StackError(f"nothing called {name!r} was started here; see `shardline status`")
    stopped = True
    if is_running(info):
        stopped = servers.stop_pid(info["pid"])
    (pid_dir(run_dir) / f"{name}.json").unlink(missing_ok=True)
    return stopped


# ---- workers ------------------------------------------------------------------------------
def worker_argv(cfg: StackConfig, kind: str, org: str | None = None) -> list[str]:
    argv = [sys.executable, "-m", "shardline", "worker", kind, "--config", str(cfg.path.resolve())]
    if org:
        argv += ["--org", org]
    return argv


def start_process(run_dir: Path, name: str, argv: list[str]) -> subprocess.Popen:
    log = run_dir / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=os.getcwd(),
        )
    write_pid(run_dir, name, proc, argv, log)
    return proc


def worker_names(cfg: StackConfig) -> list[str]:
    return [f"node-{o.id}" for o in cfg.orgs] + [
        "combiner",
        "gateway",
        *gateways.names(cfg),
        "contacts-jobs",
        "contacts-api",
    ]


def worker_spec(cfg: StackConfig, name: str) -> list[str]:
    if name.startswith("node-") and name.removeprefix("node-") in {o.id for o in cfg.orgs}:
        return worker_argv(cfg, "org-node", name.removeprefix("node-"))
    if name in ("combiner", "gateway", "contacts-jobs", "contacts-api"):
        return worker_argv(cfg, name)
    if gateways.is_replica(name) and name in gateways.names(cfg):
        return gateways.argv(cfg, name)
    raise StackError(f"no worker called {name!r}; workers: {', '.join(worker_names(cfg))}")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):  # noqa: S310 (loopback)
            return True
    except OSError:
        return False


def _celery_ready(cfg: StackConfig) -> bool:
    from celery import Celery

    # a probe of its own: this process may have talked to another stack's broker before
    with Celery("shardline-probe", broker=cfg.redis_url, set_as_current=False) as probe:
        try:
            return bool(probe.control.ping(timeout=0.5))
        except Exception:
            return False


def wait_ready(
    cfg: StackConfig, names: list[str], procs: dict[str, subprocess.Popen], timeout: float = 60
) -> None:
    """Wait until each worker answers on the bus (or, for the gateway, on HTTP)."""
    import nats

    async def check() -> set[str]:
        ready: set[str] = set()
        nc = await nats.connect(cfg.nats_url, connect_timeout=2)
        try:
            for name in names:
                if name == "gateway" or gateways.is_replica(name):
                    if await asyncio.to_thread(
                        _http_ok,
                        f"http://{cfg.gateway.host}:{gateways.port(cfg, name)}/healthz",
                    ):
                        ready.add(name)
                    continue
                if name == "contacts-api":
                    if await asyncio.to_thread(
                        _http_ok, f"http://{cfg.gateway.host}:{cfg.contacts_api_port}/healthz"
                    ):
                        ready.add(name)
                    continue
                if name == "contacts-jobs":
                    if await asyncio.to_thread(_celery_ready, cfg):
                        ready.add(name)
                    continue
                subject = (
                    f"shardline.status.share-node.{name.removeprefix('node-')}"
                    if name.startswith("node-")
                    else "shardline.status.combiner.main"
                )
                try:
                    await nc.request(subject, b"", timeout=0.5)
                    ready.add(name)
                except Exception:  # noqa: S110 (not up yet)
                    pass
        finally:
            await nc.close()
        return ready

    deadline = time.monotonic() + timeout
    pending = set(names)
    while pending and time.monotonic() < deadline:
        for name in list(pending):
            p = procs.get(name)
            if p is not None and p.poll() is not None:
                log = cfg.run_dir / "logs" / f"{name}.log"
                tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
                raise StackError(
                    f"worker {name} exited with code {p.returncode} while starting; {log}:\n{tail}"
                )
        pending -= asyncio.run(check())
        if pending:
            time.sleep(0.2)
    if pending:
        raise StackError(
            f"workers not ready after {timeout:.0f} s: {', '.join(sorted(pending))}; see {cfg.run_dir / 'logs'}"
        )


def start_workers(cfg: StackConfig, names: list[str]) -> None:
    specs = {n: worker_spec(cfg, n) for n in names}  # every name checked before any starts
    procs = {n: start_process(cfg.run_dir, n, spec) for n, spec in specs.items()}
    wait_ready(cfg, names, procs)


# ---- the org nodes' databases -------------------------------------------------------------
ORG_PLACEHOLDER = "{org}"
DATABASE_URL_FORM = "postgresql://USER[:PASSWORD]@HOST[:PORT]/shardline_{org}"


def org_database_url(template: str, org_id: str) -> str:
    """An org's database from a ``{org}`` template (``shardline up --database-url``)."""
    if ORG_PLACEHOLDER not in template:
        raise StackError(
            f"--database-url {db.shown_url(template)} names one database for every org: each org "
            "node needs a database of its own, since every org keeps its shares, served log and "
            "chain cursor in tables of the same names (orgs sharing one would overwrite each "
            "other's), and one database holding every org's shares is the single place the "
            "threshold split is there to avoid. Put {org} where the org's id goes: "
            f"{DATABASE_URL_FORM} (shardline_org1, shardline_org2, ...; create each beforehand)"
        )
    return template.replace(ORG_PLACEHOLDER, org_id)


def org_databases(run_dir: Path, org_ids: list[str], template: str | None) -> dict[str, str]:
    """Each org's ``database_url``: a SQLite file under ``run_dir/data`` (the default, made anew
    by every ``up``), or the org's own database from a ``{org}`` template, checked
    (``check_databases``) before anything starts: ``up`` and ``shardline org add`` alike."""
    if template is None:
        return {o: f"sqlite:///{run_dir / 'data' / f'{o}.db'}" for o in org_ids}
    urls = {o: org_database_url(template, o) for o in org_ids}
    check_databases(urls)
    return urls


def _db_error(exc: BaseException, url: URL) -> str:
    """What the driver said, on one line, without the URL's password."""
    said = str(getattr(exc, "orig", None) or exc)
    said = " ".join(said.split())
    if url.password:
        said = said.replace(str(url.password), "***")
    return said


def check_databases(urls: dict[str, str], connect_timeout_s: int = 5) -> None:
    """Open each org's database before anything starts: it must exist, be reachable and be
    empty. A new stack has a new chain and new keys: an org node on an earlier stack's tables
    would keep that stack's shares (sealed to a key that is gone, and at the same version a new
    registration has, so the new share would be refused) and its chain cursor."""
    from sqlalchemy import inspect
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError
    from sqlalchemy.pool import NullPool

    for org, url in urls.items():
        shown = db.shown_url(url)
        try:
            u = db.engine_url(url)
        except ArgumentError as exc:
            raise StackError(
                f"org {org}'s database URL {shown} is not a database URL ({exc}); "
                f"the form is {DATABASE_URL_FORM}"
            ) from None
        backend = u.get_backend_name()
        if backend not in ("postgresql", "sqlite"):
            raise StackError(
                f"org {org}'s database {shown}: an org node's stores speak PostgreSQL or SQLite, "
                f"not {backend}; the form is {DATABASE_URL_FORM}"
            )
        args = {"connect_timeout": connect_timeout_s} if backend == "postgresql" else {}
        try:
            engine = db.create_engine(u, poolclass=NullPool, connect_args=args)
            try:
                with engine.connect() as c:
                    tables = sorted(inspect(c).get_table_names())
            finally:
                engine.dispose()
        except (SQLAlchemyError, ImportError, OSError) as exc:
            said = _db_error(exc, u)
            if "does not exist" in said:
                todo = (
                    "the org's database must exist before `shardline up`: create it "
                    f"(e.g. `createdb {u.database}`, owned by or open to the URL's user), "
                    "or correct the URL"
                )
            else:
                todo = (
                    "check that the server runs and the URL's host, port, user and password; "
                    "each org's database must exist before `shardline up`"
                )
            raise StackError(
                f"cannot open org {org}'s database {shown}: {said}. Nothing was started: {todo}"
            ) from None
        if tables:
            listed = ", ".join(tables[:6]) + (", ..." if len(tables) > 6 else "")
            raise StackError(
                f"org {org}'s database {shown} is not empty (tables {listed}), perhaps from an "
                "earlier `shardline up`: a new stack has a new chain and new keys, and its org "
                "node would keep the old shares and chain cursor. Nothing was started: drop and "
                f"create it again (e.g. `dropdb {u.database} && createdb {u.database}`), "
                "or give another"
            )


# ---- up -----------------------------------------------------------------------------------
async def _provision(
    cfg: StackConfig,
    org_keys: dict[str, ParticipantKeys],
    gw_keys: ParticipantKeys,
    responders: dict[str, ParticipantKeys],
) -> dict:
    from shardline.contracts import registry
    from shardline.contracts.client import Chain
    from shardline.contracts.deploy import deploy_all

    admin = Account.from_key(ANVIL_ADMIN_KEY)
    async with await Chain.connect(cfg.chain_rpc) as chain:
        for k in [*org_keys.values(), gw_keys, *responders.values()]:
            addr = Account.from_key(k.chain_key).address
            await chain.w3.provider.make_request("anvil_setBalance", [addr, hex(10**21)])
        dep = await deploy_all(chain, admin)
        for org_id, k in org_keys.items():
            await registry.register_participant(
                chain,
                admin,
                dep,
                org_id,
                k.signing_public,
                k.sealing_public,
                Account.from_key(k.chain_key).address,
                ORG,
            )
        await registry.register_participant(
            chain,
            admin,
            dep,
            gw_keys.participant_id,
            gw_keys.signing_public,
            gw_keys.sealing_public,
            Account.from_key(gw_keys.chain_key).address,
            GATEWAY,
        )
        # "visitor" has a key and an API key but no RESPONDER role: the Gatekeeper refuses it.
        for name, k in responders.items():
            if name != "visitor":
                await registry.grant_role(
                    chain, admin, dep, "RESPONDER", Account.from_key(k.chain_key).address
                )
        return dep.to_dict()


def local_token_issuer(keys_dir: Path) -> TokenIssuer:
    """A stand-in for the brigade's identity provider: an Ed25519 key pair whose responder
    tokens the gateway accepts (``shardline responder token``). A real deployment configures
    the provider's public key only."""
    private = Ed25519PrivateKey.generate()
    priv_path, pub_path = keys_dir / "token-issuer.pem", keys_dir / "token-issuer.pub.pem"
    fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    pub_path.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return TokenIssuer(
        issuer="shardline-local-idp",
        audience="shardline-gateway",
        public_key_file=pub_path,
        private_key_file=priv_path,
    )


def up(
    run_dir: Path,
    *,
    orgs: int = 4,
    threshold: int = 2,
    policy: str = CHAIN_CONFIRMED,
    ports: Ports | None = None,
    deadline_s: float = 2.0,
    confirmations: int = 0,
    say=print,
    block_time: float | None = None,
    records_freshness: str = "pushed",
    gateway_count: int = 1,
    database_url: str | None = None,
) -> StackConfig:
    """Start a stack in ``run_dir``. Each org keeps its stores in a SQLite file under
    ``run_dir/data``, or with ``database_url``, a template with ``{org}``
    (``postgresql://shardline@db/shardline_{org}``), in a database of its own: each must exist
    and be empty, and is checked before anything starts."""
    live = running(run_dir)
    if live:
        raise StackError(
            f"a stack is already running from {run_dir} ({', '.join(sorted(live))}); "
            "use it, or stop it first with `shardline down`"
        )
    if not 1 <= threshold <= orgs:
        raise StackError(f"threshold {threshold} must be between 1 and the number of orgs ({orgs})")
    if gateway_count < 1:
        raise StackError(f"--gateways {gateway_count}: a stack needs at least one gateway")
    ports = ports or Ports()
    if not ports.any_free and gateway_count > 9:  # gateway + 10 is the contacts API's port
        raise StackError(f"--gateways {gateway_count}: at most 9 on the default ports")
    run_dir = run_dir.resolve()
    org_ids = [f"org{i}" for i in range(1, orgs + 1)]
    # before anything starts or an earlier stack's files go
    database_urls = org_databases(run_dir, org_ids, database_url)
    for sub in ("data", "logs", "pids", "keys"):
        shutil.rmtree(run_dir / sub, ignore_errors=True)
    run_dir.mkdir(parents=True, exist_ok=True)

    started: list[str] = []
    try:
        bus = bus_access.provision(run_dir, org_ids)
        for spec in (
            servers.nats_spec(
                run_dir / "data" / "nats", ports.nats, ports.nats_monitor, bus.config_file
            ),
            servers.redis_spec(run_dir / "data" / "redis", ports.redis),
            servers.anvil_spec(run_dir / "data" / "anvil", ports.anvil, block_time=block_time),
        ):
            t = time.monotonic()
            log = run_dir / "logs" / f"{spec.name}.log"
            proc = servers.spawn(spec, log)
            write_pid(run_dir, spec.name, proc, spec.argv, log)
            started.append(spec.name)
            say(
                f"started {spec.name:<6} pid {proc.pid:<7} ports {spec.ports} ({time.monotonic() - t:.2f} s)"
            )

        keys_dir = run_dir / "keys"
        org_keys = {o: ParticipantKeys.generate(o) for o in org_ids}
        gw_keys = ParticipantKeys.generate("gateway")
        responders = {n: ParticipantKeys.generate(n) for n in ("responder", "visitor")}
        for k in [*org_keys.values(), gw_keys, *responders.values()]:
            k.save(keys_dir / f"{k.participant_id}.json")
        responder_cfgs = []
        for name in responders:
            api_key = secrets.token_urlsafe(24)
            key_path = keys_dir / f"{name}.apikey"
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(api_key + "\n")
            responder_cfgs.append(
                Responder(
                    name=name,
                    api_key_sha256=hashlib.sha256(api_key.encode()).hexdigest(),
                    key_file=keys_dir / f"{name}.json",
                )
            )
        # the operator's key opens the ops page (`/ops`); a responder's key does not
        operator_key = secrets.token_urlsafe(24)
        fd = os.open(keys_dir / "operator.apikey", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(operator_key + "\n")
        operators = [
            Operator(
                name="operator", api_key_sha256=hashlib.sha256(operator_key.encode()).hexdigest()
            )
        ]
        cfg = StackConfig(
            run_dir=run_dir,
            nats_url=bus.url("127.0.0.1", ports.nats),
            nats_port=ports.nats,
            nats_monitor_port=ports.nats_monitor,
            redis_url=f"redis://127.0.0.1:{ports.redis}/0",
            redis_port=ports.redis,
            chain_rpc=f"http://127.0.0.1:{ports.anvil}",
            anvil_port=ports.anvil,
            confirmations=confirmations,
            threshold=threshold,
            admin_key_file=keys_dir / "admin.key",
            database_url_template=database_url,
            orgs=[
                OrgNodeConfig(
                    id=o,
                    name=f"Org {o[3:]}",
                    policy=policy,
                    key_file=keys_dir / f"{o}.json",
                    database_url=database_urls[o],
                    metrics_port=ports.metrics(i),
                    nats_seed_file=bus.org_seeds[o],
                    records_freshness=records_freshness,
                )
                for i, o in enumerate(org_ids, 1)
            ],
            gateway=GatewayConfig(
                key_file=keys_dir / "gateway.json",
                port=ports.gateway,
                deadline_s=deadline_s,
                # audit-after answers before the chain: its requests may wait to share a block
                tx_linger_s=0.01 if policy == AUDIT_AFTER else 0.0,
                responders=responder_cfgs,
                token_issuer=local_token_issuer(keys_dir),
                combiner_metrics_port=ports.metrics(0),
                operators=operators,
                nats_seed_file=bus.gateway_seed,
            ),
            contacts_api_port=servers.free_port() if ports.any_free else ports.gateway + 10,
            # further gateways (failover): free ports, or the ones after the first gateway's
            gateway_replicas=[
                servers.free_port() if ports.any_free else ports.gateway + i
                for i in range(1, gateway_count)
            ],
        )
        t = time.monotonic()
        cfg.deployment = asyncio.run(_provision(cfg, org_keys, gw_keys, responders))
        cfg.save()
        say(
            f"deployed contracts and registered {orgs} orgs and the gateway ({time.monotonic() - t:.2f} s)"
        )
        t = time.monotonic()
        bus_access.prepare(cfg)  # streams and consumers, made by the operator: org nodes may not
        start_workers(cfg, worker_names(cfg))
        say(
            f"started {len(cfg.orgs)} org nodes (policy {policy}), the combiner and the gateway "
            f"on http://{cfg.gateway.host}:{cfg.gateway.port} ({time.monotonic() - t:.2f} s)"
        )
        if cfg.gateway_replicas:
            say(f"gateways, in the order a client fails over: {' '.join(gateways.urls(cfg))}")
        return cfg
    except BaseException:
        down(run_dir, say=lambda _m: None)
        raise


def down(run_dir: Path, say=print) -> list[str]:
    """Stop what ``up`` started: workers first, then the servers."""
    pids = read_pids(run_dir)
    order = [n for n in pids if n not in SERVER_ORDER] + [
        n for n in reversed(SERVER_ORDER) if n in pids
    ]
    stopped = []
    for name in order:
        if stop(run_dir, name):
            stopped.append(name)
            say(f"stopped {name}")
        else:
            say(f"could not stop {name} (pid {pids[name]['pid']})")
    return stopped


def status(run_dir: Path) -> list[dict]:
    """Every process started in ``run_dir``: running, or stopped (by `shardline stop` or
    `down`, whose pid file is gone, or dead, whose pid file is left), by name. A process that
    was ever started has a log there, so one that was stopped is still listed, with no pid."""
    pids = read_pids(run_dir)
    logs = run_dir / "logs"
    names = set(pids) | ({p.stem for p in logs.glob("*.log")} if logs.is_dir() else set())
    rows = []
    for name in sorted(names):
        info = pids.get(name, {})
        rows.append(
            {
                "name": name,
                "pid": info.get("pid"),
                "running": bool(info) and is_running(info),
                "log": info.get("log", str(logs / f"{name}.log")),
            }
        )
    return rows
