"""`shardline org ...`: the org nodes of a stack."""

from __future__ import annotations

from typing import Annotated

import typer

from shardline.cli_common import ConfigOpt, console, err
from shardline.config import AUDIT_AFTER, CHAIN_CONFIRMED, ConfigError, StackConfig

org_app = typer.Typer(help="The org nodes of the stack: add one.", no_args_is_help=True)


@org_app.command("add")
def org_add(
    org_id: Annotated[str, typer.Argument(help="The new org's id, e.g. org5.")],
    name: Annotated[str | None, typer.Option(help="A display name.")] = None,
    policy: Annotated[
        str, typer.Option(help=f"{CHAIN_CONFIRMED} or {AUDIT_AFTER}.")
    ] = CHAIN_CONFIRMED,
    start: Annotated[bool, typer.Option(help="Start its node now.")] = True,
    config: ConfigOpt = None,
) -> None:
    """Admit a new org: keys, on-chain registration, its own bus user and permissions, its node."""
    from shardline import stack
    from shardline.bus.credentials import CredentialsError
    from shardline.core.ids import InvalidId
    from shardline.orgs import OrgError, add_org

    if policy not in (CHAIN_CONFIRMED, AUDIT_AFTER):
        err.print(f"[red]policy must be {CHAIN_CONFIRMED} or {AUDIT_AFTER}, not {policy!r}[/red]")
        raise typer.Exit(2)
    try:
        cfg = StackConfig.load(config)
        add_org(cfg, org_id, name=name, policy=policy, start=start, say=console.print)
    except (ConfigError, OrgError, InvalidId, CredentialsError, stack.StackError) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    console.print(
        f"[green]{org_id} added[/green]: bus seed in {cfg.run_dir / 'keys' / (org_id + '.nk')}"
    )
