"""The operator's commands: `shardline monitor`, `tail`, `logs --trace` and `dlq list/show/replay`."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from shardline.bus.credentials import redact
from shardline.cli_common import ConfigOpt, console, err, load_config
from shardline.config import StackConfig

dlq_app = typer.Typer(
    help="Dead letters: messages a worker could not process.", no_args_is_help=True
)

AsJson = Annotated[bool, typer.Option("--json", help="JSON for scripts.")]


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]{message}[/red]")
    return typer.Exit(code)


def monitor(
    as_json: Annotated[bool, typer.Option("--json", help="Print one snapshot as JSON.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes.")] = 1.0,
    config: ConfigOpt = None,
) -> None:
    """A live view of the stack: workers, streams, dead letters, chain intake, Redis."""
    from shardline.ops.snapshot import collect

    cfg = load_config(config)
    if as_json:
        try:
            snap = asyncio.run(collect(cfg))
        except Exception as exc:
            raise _fail(f"cannot reach the bus at {redact(cfg.nats_url)}: {exc}") from None
        print(json.dumps(snap, indent=2, default=str))
        raise typer.Exit(0 if snap["healthy"] else 1)
    from rich.live import Live

    from shardline.ops.view import render

    async def run() -> None:
        from shardline.bus.connect import connect

        nc = await connect(cfg.nats_url, "monitor", patient=False)
        try:
            with Live(console=console, auto_refresh=False, screen=False) as live:
                while True:
                    live.update(render(await collect(cfg, nc)), refresh=True)
                    await asyncio.sleep(interval)
        finally:
            await nc.close()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


def tail(
    subject: Annotated[str, typer.Argument(help="A subject or wildcard, e.g. 'lookup.>'.")],
    count: Annotated[int | None, typer.Option(help="Stop after N messages.")] = None,
    seconds: Annotated[float | None, typer.Option(help="Stop after S seconds.")] = None,
    as_json: AsJson = False,
    config: ConfigOpt = None,
) -> None:
    """Show messages on a subject as they pass: envelope fields, sender, type, size; never a
    sealed body's plaintext."""
    from shardline.bus.connect import connect
    from shardline.ops.tail import tail as run_tail

    cfg = load_config(config)

    def show(m: dict) -> None:
        if as_json:
            print(json.dumps(m, default=str), flush=True)
            return
        env = m.get("envelope")
        when = dt.datetime.fromtimestamp(m["at"]).strftime("%H:%M:%S.%f")[:-3]
        if env is None:
            console.print(
                f"{when} [bold]{m['subject']}[/bold] {m['size']} B [red]{m['problem']}[/red]"
            )
            return
        body = m["body"]
        what = (
            f"sealed to {body['sealed_to']} ({body['sealed_bytes']} B)"
            if "sealed_to" in body
            else f"plain {', '.join(body.get('plain_fields', []))}"
        )
        console.print(
            f"{when} [bold]{m['subject']}[/bold] {m['size']} B  type {env['type']} "
            f"v{env['schema_version']}  from [cyan]{env['sender']}[/cyan]  trace {env['trace_id']}"
            f"  id {env['id']}  {what}",
            highlight=False,
        )

    async def run() -> int:
        nc = await connect(cfg.nats_url, "tail", patient=False)
        try:
            return await run_tail(
                nc,
                subject,
                show,
                count=count,
                seconds=seconds,
                on_ready=lambda: err.print(f"tailing {subject} (Ctrl-C to stop)", highlight=False),
            )
        finally:
            await nc.close()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


def logs(
    trace: Annotated[str, typer.Option("--trace", help="A lookup's guid (its trace id).")],
    as_json: AsJson = False,
    run_dir: Annotated[
        Path | None, typer.Option("--run-dir", help="The local stack's folder (default: config's).")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Every log line of one request across the local stack's processes, in time order."""
    from shardline.ops.logs import TraceError
    from shardline.ops.logs import trace as find

    folder = (run_dir or load_config(config).run_dir) / "logs"
    try:
        lines = find(folder, trace)
    except TraceError as exc:
        raise _fail(str(exc), 2) from None
    if as_json:
        for line in lines:
            print(json.dumps(line, default=str))
    else:
        for line in lines:
            when = dt.datetime.fromtimestamp(line.get("ts", 0)).strftime("%H:%M:%S.%f")[:-3]
            rest = {
                k: v
                for k, v in line.items()
                if k not in ("process", "ts", "level", "event", "logger", "trace_id")
            }
            console.print(
                f"{when} [cyan]{line['process']:<14}[/cyan] {line.get('level', ''):<7} "
                f"[bold]{line.get('event', '')}[/bold] {json.dumps(rest, default=str)}",
                highlight=False,
            )
    if not lines:
        raise _fail(f"no log line of trace {trace} in {folder}")


@dlq_app.command("list")
def dlq_list(
    subject: Annotated[str | None, typer.Option(help="Only this original subject.")] = None,
    limit: Annotated[int, typer.Option(help="The newest N.")] = 200,
    as_json: AsJson = False,
    config: ConfigOpt = None,
) -> None:
    """The newest dead letters: sequence, original subject, worker, reason."""
    from shardline.ops import dlq

    cfg = load_config(config)
    letters = asyncio.run(_with_js(cfg, lambda js: dlq.listing(js, subject=subject, limit=limit)))
    if as_json:
        print(json.dumps([d.to_dict() for d in letters], indent=2))
        return
    table = Table(
        "seq", "when", "subject", "worker", "reason", title=f"{len(letters)} dead letters"
    )
    for d in letters:
        table.add_row(
            str(d.seq),
            dt.datetime.fromtimestamp(d.at).strftime("%Y-%m-%d %H:%M:%S"),
            d.subject,
            d.worker,
            d.reason,
        )
    console.print(table)


@dlq_app.command("show")
def dlq_show(seq: int, config: ConfigOpt = None) -> None:
    """One dead letter: its headers and envelope fields (a sealed body stays sealed)."""
    from shardline.ops import dlq

    cfg = load_config(config)
    try:
        found = asyncio.run(_with_js(cfg, lambda js: dlq.show(js, seq)))
    except dlq.DeadLetterError as exc:
        raise _fail(str(exc), 2) from None
    print(dlq.dumps(found))


@dlq_app.command("replay")
def dlq_replay(
    seq: int,
    keep: Annotated[bool, typer.Option(help="Keep the dead letter after replaying it.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Publish a dead letter to its original subject again (after the fix), then drop it."""
    from shardline.ops import dlq

    cfg = load_config(config)
    try:
        done = asyncio.run(_with_js(cfg, lambda js: dlq.replay(js, seq, keep=keep)))
    except dlq.DeadLetterError as exc:
        raise _fail(str(exc), 2) from None
    console.print(
        f"replayed dead letter {seq} to {done['subject']} ({done['stream']} seq {done['seq']})"
        + ("; kept it" if keep else "; removed it from the dead letters")
    )


async def _with_js(cfg: StackConfig, fn):
    from shardline.bus.connect import connect

    nc = await connect(cfg.nats_url, "dlq", patient=False)
    try:
        return await fn(nc.jetstream(timeout=5))
    finally:
        await nc.close()


def install(app: typer.Typer) -> None:
    """Add the operator's commands to the `shardline` command."""
    app.command()(monitor)
    app.command()(tail)
    app.command()(logs)
    app.add_typer(dlq_app, name="dlq")
