"""What every command module shares: the consoles, the ``--config`` option, and loading the
stack configuration with an error a person can act on."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from shardline.config import ConfigError, StackConfig

console = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="Stack configuration (default: $SHARDLINE_CONFIG, else .shardline/stack.json).",
    ),
]


def load_config(config: Path | None) -> StackConfig:
    try:
        return StackConfig.load(config)
    except ConfigError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
