"""The `shardline` command."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from shardline import stack
from shardline.analytics_cli import analytics_app
from shardline.bus.credentials import redact
from shardline.bus_cli import bus_app
from shardline.chain_cli import chain_app
from shardline.cli_common import ConfigOpt, console, err, load_config
from shardline.config import AUDIT_AFTER, CHAIN_CONFIRMED, DEFAULT_RUN_DIR, ConfigError, StackConfig
from shardline.contacts_cli import contacts_app
from shardline.gateways_cli import gateway_app
from shardline.keys_cli import keys_app
from shardline.ops_cli import install as install_ops_commands
from shardline.orgs_cli import org_app
from shardline.privtx_cli import privtx_app
from shardline.records_cli import records_app

app = typer.Typer(
    help="shardline: answer sensitive questions across organisations that do not trust each other.",
    no_args_is_help=True,
    add_completion=False,
)
transports_app = typer.Typer(help="Register and manage hazardous transports.", no_args_is_help=True)
app.add_typer(transports_app, name="transports")
app.add_typer(records_app, name="records")
app.add_typer(contacts_app, name="contacts")
responder_app = typer.Typer(help="Responders: credentials for the gateway.", no_args_is_help=True)
app.add_typer(responder_app, name="responder")
app.add_typer(org_app, name="org")
app.add_typer(bus_app, name="bus")
app.add_typer(keys_app, name="keys")
app.add_typer(chain_app, name="chain")
app.add_typer(privtx_app, name="privtx")
app.add_typer(analytics_app, name="analytics")
app.add_typer(gateway_app, name="gateway")

RunDir = Annotated[
    Path, typer.Option("--run-dir", help="Where the local stack keeps data, logs and pids.")
]


@app.command()
def up(
    orgs: Annotated[int, typer.Option(help="Number of org nodes.")] = 4,
    threshold: Annotated[int, typer.Option(help="Shares needed to rebuild a sheet.")] = 2,
    policy: Annotated[
        str, typer.Option(help=f"{CHAIN_CONFIRMED} or {AUDIT_AFTER}.")
    ] = CHAIN_CONFIRMED,
    deadline: Annotated[float, typer.Option(help="Seconds a lookup waits for shares.")] = 2.0,
    confirmations: Annotated[int, typer.Option(help="Blocks an intake waits before acting.")] = 0,
    block_time: Annotated[
        float | None,
        typer.Option(help="Seconds between anvil's blocks (default: a block per transaction)."),
    ] = None,
    records_freshness: Annotated[
        str,
        typer.Option(
            help="Records proxies' grant freshness: pushed (the newest head the node pushed) "
            "or exact (the chain's block number after each request; see docs/records.md)."
        ),
    ] = "pushed",
    nats_port: Annotated[int, typer.Option(help="nats-server's client port.")] = 14222,
    nats_monitor_port: Annotated[
        int, typer.Option(help="nats-server's HTTP monitoring port (/healthz, /varz).")
    ] = 18222,
    redis_port: Annotated[int, typer.Option(help="redis-server's port.")] = 16379,
    anvil_port: Annotated[int, typer.Option(help="anvil's JSON-RPC and websocket port.")] = 18545,
    gateway_port: Annotated[
        int, typer.Option(help="The gateway's HTTP port (the responders' API and /docs).")
    ] = 18080,
    metrics_base_port: Annotated[
        int, typer.Option(help="The workers' Prometheus /metrics ports count up from this one.")
    ] = 19100,
    gateways: Annotated[
        int,
        typer.Option(
            help="Gateway processes: the first on --gateway-port, the others on the ports "
            "after it; a responder's client fails over between them (docs/reliability.md)."
        ),
    ] = 1,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="Each org's own database, from a URL with {org} for the org's id, e.g. "
            "'postgresql://shardline@db/shardline_{org}'; each must exist and be empty "
            "(default: a SQLite file per org under the run dir; docs/deploy.md)."
        ),
    ] = None,
    run_dir: RunDir = DEFAULT_RUN_DIR,
) -> None:
    """Start nats-server, redis-server and anvil, deploy the contracts, start org nodes and the gateway."""
    if policy not in (CHAIN_CONFIRMED, AUDIT_AFTER):
        err.print(f"[red]policy must be {CHAIN_CONFIRMED} or {AUDIT_AFTER}, not {policy!r}[/red]")
        raise typer.Exit(2)
    if records_freshness not in ("pushed", "exact"):
        err.print(
            f"[red]--records-freshness must be pushed or exact, not {records_freshness!r}[/red]"
        )
        raise typer.Exit(2)
    ports = stack.Ports(
        nats_port, nats_monitor_port, redis_port, anvil_port, gateway_port, metrics_base_port
    )
    try:
        stack.up(
            run_dir,
            orgs=orgs,
            threshold=threshold,
            policy=policy,
            ports=ports,
            deadline_s=deadline,
            confirmations=confirmations,
            say=console.print,
            block_time=block_time,
            records_freshness=records_freshness,
            gateway_count=gateways,
            database_url=database_url,
        )
    except (stack.StackError, OSError, RuntimeError) as exc:
        err.print(f"[red]{escape(str(exc))}[/red]")  # a driver's words may hold [brackets]
        raise typer.Exit(1) from None
    if run_dir.resolve() == DEFAULT_RUN_DIR.resolve():
        console.print(
            "[green]stack is up[/green]: `shardline status`, `shardline lookup TR-100001`, "
            "`shardline down`"
        )
    else:  # the commands need to be told where it is
        console.print(
            f"[green]stack is up[/green]: `shardline status --run-dir {run_dir}`, "
            f"`shardline lookup TR-100001 --config {run_dir}`, `shardline down --run-dir {run_dir}`"
            f" (or export SHARDLINE_CONFIG={run_dir / 'stack.json'})"
        )


@app.command()
def down(run_dir: RunDir = DEFAULT_RUN_DIR) -> None:
    """Stop everything `shardline up` started."""
    stopped = stack.down(run_dir, say=console.print)
    if not stopped:
        console.print("nothing was running")


@app.command()
def status(
    run_dir: RunDir = DEFAULT_RUN_DIR, as_json: Annotated[bool, typer.Option("--json")] = False
) -> None:
    """Show what runs and where."""
    from shardline.ops.metrics import endpoints

    rows = stack.status(run_dir)
    try:
        cfg: StackConfig | None = StackConfig.load(run_dir / "stack.json")
    except ConfigError:
        cfg = None
    metrics = endpoints(cfg) if cfg else {}
    from shardline.db import shown_url

    databases = {f"node-{o.id}": shown_url(o.database_url) for o in (cfg.orgs if cfg else [])}
    for r in rows:
        r["metrics"] = metrics.get(r["name"], "")
        if r["name"] in databases:
            r["database"] = databases[r["name"]]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        console.print(f"no stack in {run_dir}: start one with `shardline up`")
        return
    table = Table("name", "pid", "state", "log", "metrics")
    for r in rows:
        table.add_row(
            r["name"],
            "-" if r["pid"] is None else str(r["pid"]),
            "[green]running[/green]" if r["running"] else "[red]stopped[/red]",
            r["log"],
            r["metrics"],
        )
    console.print(table)
    if cfg is not None and cfg.database_url_template is not None:  # not the SQLite files
        for name, url in databases.items():
            console.print(f"{name} keeps its stores in {url}")
    stopped = [r["name"] for r in rows if not r["running"]]
    if len(stopped) == len(rows):
        console.print(f"the stack in {run_dir} is down: `shardline up --run-dir {run_dir}`")
    elif any(n in stack.SERVER_ORDER for n in stopped):
        console.print(
            f"a server of the stack in {run_dir} stopped: `shardline down --run-dir {run_dir}` "
            f"and `shardline up --run-dir {run_dir}` start it again"
        )
    # what `shardline start` starts (not, say, a private EVM a command ran there once)
    elif startable := [n for n in stopped if cfg and n in stack.worker_names(cfg)]:
        console.print(
            f"to start what stopped: `shardline start {' '.join(startable)} --run-dir {run_dir}`"
        )
    if cfg is None:
        return
    console.print(
        f"nats {redact(cfg.nats_url)}  redis {cfg.redis_url}  chain {cfg.chain_rpc}  "
        f"gateway http://{cfg.gateway.host}:{cfg.gateway.port}  orgs {len(cfg.orgs)} "
        f"threshold {cfg.threshold}"
    )
    if cfg.gateway_replicas:
        from shardline.gateways import urls

        console.print(f"gateways (a client fails over in this order): {' '.join(urls(cfg))}")


@app.command("stop")
def stop_cmd(names: list[str], run_dir: RunDir = DEFAULT_RUN_DIR) -> None:
    """Stop some workers, e.g. `shardline stop node-org3 node-org4`."""
    for name in names:
        try:
            stack.stop(run_dir, name)
            console.print(f"stopped {name}")
        except stack.StackError as exc:
            err.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None


@app.command("start")
def start_cmd(
    names: list[str],
    config: ConfigOpt = None,
    run_dir: Annotated[
        Path | None,
        typer.Option(
            "--run-dir", help="The local stack's directory, as for stop (instead of --config)."
        ),
    ] = None,
) -> None:
    """Start workers again, e.g. `shardline start node-org3`."""
    cfg = load_config(config or run_dir)  # a run directory reads its stack.json
    live = stack.running(cfg.run_dir)
    if "nats" in live and any(o.nats_seed_file for o in cfg.orgs):
        from shardline import bus_access

        # the permissions this code's workers need (subjects change between versions), so
        # that workers started again after an upgrade are not refused their subjects
        bus_access.rewrite_server_config(cfg, live["nats"]["pid"])
    try:
        stack.start_workers(cfg, [n for n in names if n not in live])
    except stack.StackError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    console.print(f"running: {', '.join(names)}")


@app.command()
def worker(
    kind: Annotated[
        str, typer.Argument(help="org-node, combiner, gateway, contacts-jobs or contacts-api")
    ],
    org: Annotated[str | None, typer.Option(help="The org, for org-node.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Run one worker in the foreground (what `up`, the Procfile and systemd units start)."""
    from shardline import runtime
    from shardline.bus import telemetry

    cfg = load_config(config)
    telemetry.set_enabled(cfg.telemetry)
    if kind == "org-node":
        if not org:
            err.print("[red]org-node needs --org ORG_ID[/red]")
            raise typer.Exit(2)
        o = cfg.org(org)
        runtime.run_loop(
            runtime.run_workers(lambda: runtime.org_node_workers(cfg, o), o.metrics_port)
        )
    elif kind == "combiner":
        runtime.run_loop(
            runtime.run_workers(
                lambda: runtime.combiner_workers(cfg), cfg.gateway.combiner_metrics_port
            )
        )
    elif kind == "gateway":
        from shardline.workers.gateway import serve

        serve(cfg)
    elif kind == "contacts-jobs":
        from shardline.contacts.jobs import worker_main

        worker_main(cfg, [org] if org else [o.id for o in cfg.orgs])
    elif kind == "contacts-api":
        from shardline.workers.org_api import serve as serve_api

        serve_api(cfg, [org] if org else [o.id for o in cfg.orgs])
    else:
        err.print(
            f"[red]no worker kind {kind!r}: use org-node, combiner, gateway, contacts-jobs or contacts-api[/red]"
        )
        raise typer.Exit(2)


@transports_app.command("register")
def transports_register(
    file: Annotated[
        Path, typer.Argument(help="CSV with the columns of shardline/data/transports.csv")
    ],
    company: Annotated[
        str | None,
        typer.Option(help="Register every row as this org (default: the row's company)."),
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Only the first N rows (at least 1).")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Split each transport's sheet across the org nodes and commit to it on chain."""
    from rich.progress import Progress

    from shardline import transports
    from shardline.core.cargo import DataError, read_transports

    cfg = load_config(config)
    try:
        sheets = read_transports(file)[:limit]
    except DataError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(f"registering {len(sheets)} transports", total=len(sheets))
        try:
            report = asyncio.run(
                transports.register(
                    cfg, sheets, company=company, progress=lambda n: bar.advance(task, n)
                )
            )
        except transports.RegistrationError as exc:
            err.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None
    left = asyncio.run(transports.wait_stored(cfg))
    console.print(
        f"registered {len(report.registered)} transports "
        f"({len(report.skipped)} already registered) across {len(cfg.orgs)} orgs, "
        f"threshold {cfg.threshold}"
    )
    if any(v != 0 for v in left.values()):
        err.print(f"[yellow]shares not yet taken in by: {left}[/yellow]")


@app.command("lookup")
def lookup_cmd(
    transport_id: str,
    responder: Annotated[str, typer.Option(help="Which responder's API key to use.")] = "responder",
    as_json: Annotated[bool, typer.Option("--json")] = False,
    config: ConfigOpt = None,
) -> None:
    """Look up a transport's cargo sheet through the gateway, as a responder's phone does."""
    import httpx

    from shardline.render import print_outcome

    cfg = load_config(config)
    try:
        outcome = asyncio.run(_lookup(cfg, transport_id, responder, quiet=as_json))
    except FileNotFoundError as exc:  # no API key for that responder
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as exc:
        err.print(
            f"[red]cannot reach the gateway at {exc.request.url.copy_with(path='/')} "
            f"({type(exc).__name__}); is the stack up? try `shardline status`[/red]"
        )
        raise typer.Exit(2) from None
    if as_json:
        print(json.dumps({"status": outcome.status, **outcome.body}, indent=2))
    else:
        print_outcome(console, transport_id, outcome)
    raise typer.Exit(0 if outcome.ok else 3)


async def _lookup(cfg: StackConfig, transport_id: str, responder: str, quiet: bool = False):
    import httpx

    from shardline.gateways import urls
    from shardline.lookup_client import api_key, base_url, lookup
    from shardline.render import print_event

    bases = urls(cfg) if cfg.gateway_replicas else [base_url(cfg)]
    for i, base in enumerate(bases):  # a gateway that is down: the next one, a new lookup
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            try:
                return await lookup(
                    client,
                    transport_id,
                    api_key(cfg, responder),
                    on_event=None if quiet else (lambda ev: print_event(console, ev)),
                )
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as exc:
                if i == len(bases) - 1:
                    raise
                err.print(f"[yellow]{base} is down ({type(exc).__name__}): {bases[i + 1]}[/yellow]")
    raise AssertionError("unreachable")  # pragma: no cover


@responder_app.command("token")
def responder_token_cmd(
    name: Annotated[str, typer.Argument(help="The responder, as configured at the gateway.")],
    ttl: Annotated[float, typer.Option(help="Seconds the token lives (at most a day).")] = 3600,
    config: ConfigOpt = None,
) -> None:
    """Print a JWT for a responder, signed by the local stack's token issuer."""
    from shardline.core.responder_tokens import TokenError
    from shardline.lookup_client import responder_token

    cfg = load_config(config)
    try:
        print(responder_token(cfg, name, ttl))
    except (FileNotFoundError, TokenError) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


@app.command()
def audit(
    since: Annotated[str | None, typer.Option(help="ISO time or epoch seconds.")] = None,
    until: Annotated[str | None, typer.Option(help="ISO time or epoch seconds.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table or json")] = "table",
    as_json: Annotated[
        bool, typer.Option("--json", help="JSON, as the other commands print it (--format json).")
    ] = False,
    grace: Annotated[
        float, typer.Option(help="Seconds a served share may wait for its chain request.")
    ] = 30.0,
    config: ConfigOpt = None,
) -> None:
    """Match every served share to an on-chain request; exit 1 when anything is unmatched."""
    from shardline import audit as auditing

    if fmt not in ("table", "json"):
        err.print(f"[red]--format must be table or json, not {fmt!r}[/red]")
        raise typer.Exit(2)
    if as_json:
        fmt = "json"
    try:
        start, end = _when(since), _when(until)
    except ValueError as exc:
        err.print(f"[red]--since/--until: {exc}; give an ISO time or epoch seconds[/red]")
        raise typer.Exit(2) from None
    cfg = load_config(config)
    # a node or the bus away: main() says so, in one line
    report = asyncio.run(auditing.run(cfg, since=start or 0.0, until=end, grace_s=grace))
    if fmt == "json":
        print(json.dumps(report.to_dict(), indent=2))
    else:
        from shardline.render import print_audit

        print_audit(console, report)
    raise typer.Exit(1 if report.unmatched or report.unreachable else 0)


def _when(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return dt.datetime.fromisoformat(text).timestamp()


@app.command()
def label(
    transport_id: Annotated[
        str | None, typer.Argument(help="The transport to label, e.g. TR-100001.")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="label.svg|png|pdf (default <id>.svg); with --all a .pdf sheet."),
    ] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="A printable A4 sheet of every transport's label.")
    ] = False,
    company: Annotated[str | None, typer.Option(help="With --all: only this company.")] = None,
    transports_file: Annotated[
        Path | None,
        typer.Option("--transports", help="Transports CSV (default: the sample file)."),
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(help="The responders' app URL, so that a phone camera opens it directly."),
    ] = None,
) -> None:
    """Make the QR label to fix on a transport, or with --all a printable sheet for a fleet."""
    from shardline import labels
    from shardline.core.cargo import DataError, read_transports, sample_transports_path

    if all_ == (transport_id is not None):
        err.print("[red]give a TRANSPORT_ID or --all, not both and not neither[/red]")
        raise typer.Exit(2)
    try:
        sheets = read_transports(transports_file or sample_transports_path())
        chosen = labels.select(sheets, transport_id, company)
        if all_:
            target = out or Path(f"labels-{company or 'fleet'}.pdf")
            pages = labels.write_fleet(chosen, target, url)
            console.print(f"wrote {len(chosen)} labels on {pages} A4 page(s) to {target}")
        else:
            target = out or Path(f"{transport_id}.svg")
            labels.write_label(chosen[0], target, url)
            console.print(f"wrote the label of {transport_id} ({chosen[0].un_number}) to {target}")
    except (DataError, labels.LabelError) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    except OSError as exc:
        err.print(f"[red]cannot write {exc.filename}: {exc.strerror}[/red]")
        raise typer.Exit(1) from None


@app.command()
def demo(run_dir: RunDir = DEFAULT_RUN_DIR) -> None:
    """Run the emergency lookup end to end on a fresh local stack, then shut it down."""
    from shardline.demo import run

    sys.exit(run(run_dir, console))


install_ops_commands(app)  # monitor, tail, logs, dlq


def main() -> None:
    from shardline.bus.connect import BusUnavailable
    from shardline.contracts.client import ChainError

    try:
        app()
    except (BusUnavailable, ChainError) as exc:  # a server of the stack away: what to do, no trace
        err.print(f"[red]{exc}[/red]")
        raise SystemExit(2) from None
