"""`shardline gateway ...`: further gateway processes on a running stack, for failover."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from shardline import gateways, stack
from shardline.cli_common import ConfigOpt, console, err, load_config

gateway_app = typer.Typer(
    help="Gateways: run more than one, so that a responder's client can fail over.",
    no_args_is_help=True,
)


@gateway_app.command("add")
def add_cmd(
    count: Annotated[int, typer.Option(help="How many gateways to add.")] = 1,
    config: ConfigOpt = None,
) -> None:
    """Start further gateways (the same key, responders, Redis, bus and chain) on free ports."""
    cfg = load_config(config)
    try:
        added = gateways.add(cfg, count)
    except (ValueError, stack.StackError, OSError) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    for name in added:
        console.print(f"started {name} on http://{cfg.gateway.host}:{gateways.port(cfg, name)}")


@gateway_app.command("urls")
def urls_cmd(
    as_json: Annotated[bool, typer.Option("--json")] = False, config: ConfigOpt = None
) -> None:
    """Every gateway's base URL, in the order a responder's client should try them."""
    found = gateways.urls(load_config(config))
    print(json.dumps(found) if as_json else "\n".join(found))
