"""`shardline bus ...`: what the bus operator does on a consortium's NATS."""

from __future__ import annotations

import typer

from shardline.cli_common import ConfigOpt, console, err
from shardline.config import ConfigError, StackConfig

bus_app = typer.Typer(help="The bus operator's tasks.", no_args_is_help=True)


@bus_app.command("prepare")
def bus_prepare(config: ConfigOpt = None) -> None:
    """Create the streams and every org's and the combiner's durable consumer, as the operator.

    `shardline up` and `shardline org add` do it on the local stack; on a consortium's cluster the
    operator runs it (with a stack file whose nats_url carries the operator's credentials) before
    the nodes start and after admitting an org: nodes may bind to their consumers, never create
    them."""
    from shardline import bus_access

    try:
        cfg = StackConfig.load(config)
        bus_access.prepare(cfg)
    except (ConfigError, OSError, RuntimeError) as exc:
        err.print(f"[red]could not prepare the bus: {exc}[/red]")
        raise typer.Exit(1) from None
    specs = bus_access.consumer_specs(cfg)
    console.print(f"streams and {len(specs)} durable consumers in place")
