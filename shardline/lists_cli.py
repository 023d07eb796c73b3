"""`shardline contacts lists ...`: distribution lists, their invitations and agreements."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from shardline.cli_common import ConfigOpt, console, err, load_config
from shardline.config import ConfigError

lists_app = typer.Typer(
    help="Distribution lists: who among several orgs serves each shared contact.",
    no_args_is_help=True,
)

OrgOpt = Annotated[str, typer.Option("--org", help="The org acting.")]
ListArg = Annotated[str, typer.Argument(help="The list's id (32 hex digits).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _run(fn, *args, **kwargs):
    from shardline.contacts.lists_client import ListError

    try:
        out = fn(*args, **kwargs)
        return asyncio.run(out) if asyncio.iscoroutine(out) else out
    except (ListError, ConfigError) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None


@lists_app.command("create")
def create_cmd(
    org: OrgOpt,
    name: Annotated[str, typer.Option(help="The service delivered, e.g. 'food parcels'.")],
    capacity: Annotated[int, typer.Option(help="This org's share of the work (weight).")] = 1,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Create a list owned by this org."""
    from shardline.contacts import lists_client

    out = _run(lists_client.create, load_config(config), org, name, capacity)
    if as_json:
        console.print_json(data=out)
    else:
        console.print(f"list {out['list']} '{out['name']}' created by {org}")


@lists_app.command("invite")
def invite_cmd(
    list_id: ListArg,
    org: OrgOpt,
    to: Annotated[str, typer.Option("--to", help="The org invited.")],
    config: ConfigOpt = None,
) -> None:
    """Invite another org to a list this org owns (a signed message to its node)."""
    from shardline.contacts import lists_client

    _run(lists_client.invite, load_config(config), org, list_id, to)
    console.print(f"{to} invited to list {list_id}")


@lists_app.command("accept")
def accept_cmd(
    list_id: ListArg,
    org: OrgOpt,
    capacity: Annotated[int, typer.Option(help="This org's share of the work (weight).")] = 1,
    config: ConfigOpt = None,
) -> None:
    """Accept an invitation; the matches with the other members then start by themselves."""
    from shardline.contacts import lists_client

    out = _run(lists_client.accept, load_config(config), org, list_id, capacity)
    console.print(f"{org} takes part in list {list_id} (owner {out['owner']})")


@lists_app.command("show")
def show_cmd(
    org: OrgOpt,
    list_id: Annotated[str | None, typer.Argument(help="A list; none: every list.")] = None,
    contacts: Annotated[
        bool, typer.Option("--contacts", help="Also list the contact ids this org serves.")
    ] = False,
    agreement: Annotated[
        str | None,
        typer.Option(help="Print the agreement document with this peer (to show anyone)."),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout",
            "--wait",
            help="Seconds to wait for every pair to be recorded; 0: do not wait (--wait: old name).",
        ),
    ] = 0.0,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """What the list is, how far each pair got, and what this org serves (its own only)."""
    from shardline.contacts import lists_client

    cfg = load_config(config)
    if list_id is None:
        rows = _run(lists_client.lists, cfg, org)
        if as_json:
            console.print_json(data=rows)
            return
        t = Table("list", "name", "owner", "state")
        for r in rows:
            t.add_row(r["list"], r["name"], r["owner"], r["state"])
        console.print(t)
        return
    if agreement:
        doc = _run(lists_client.agreement, cfg, org, list_id, agreement)
        print(json.dumps(doc, sort_keys=True, separators=(",", ":")))
        return
    deadline = time.monotonic() + timeout
    while True:
        out = _run(lists_client.show, cfg, org, list_id, contacts=contacts)
        members = len(out["members"])
        settled = len(out["pairs"]) == members - 1 and all(
            p["state"] in ("recorded", "failed") for p in out["pairs"]
        )
        if settled or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    if as_json:
        console.print_json(data=out)
        return
    console.print(
        f"list {out['list']} '{out['name']}', owner {out['owner']}, {org}: {out['state']}"
    )
    console.print(
        "members: " + ", ".join(f"{m['org']} (capacity {m['capacity']})" for m in out["members"])
    )
    t = Table("peer", "state", "digest", "detail")
    for p in out["pairs"]:
        t.add_row(p["peer"], p["state"], p["digest"][:16], p["detail"])
    console.print(t)
    console.print(
        f"{out['shared_contacts']} contacts shared with other members: "
        f"{out['served_here']} served by {org}, {out['served_elsewhere']} by others"
    )
    if contacts:
        console.print("served here: " + " ".join(map(str, out["contacts_served_here"])))


@lists_app.command("verify")
def verify_cmd(
    list_id: Annotated[str | None, typer.Argument(help="A list of --org's.")] = None,
    org: Annotated[str | None, typer.Option("--org", help="Check this org's pairs.")] = None,
    document: Annotated[
        Path | None,
        typer.Option(
            help="Check an agreement document someone showed you (from `show --agreement`)."
        ),
    ] = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Show that what was agreed is what both orgs recorded on chain; exit 1 when it is not."""
    from shardline.contacts import lists_client

    cfg = load_config(config)
    if document is not None:
        try:
            doc = json.loads(document.read_text())
        except (OSError, ValueError) as exc:
            err.print(f"[red]cannot read agreement document {document}: {exc}[/red]")
            raise typer.Exit(2) from None
        checks = [_run(lists_client.check_document, cfg, doc)]
    elif list_id and org:
        checks = _run(lists_client.verify, cfg, org, list_id)
    else:
        err.print("[red]give a LIST and --org, or --document FILE[/red]")
        raise typer.Exit(2)
    if as_json:
        console.print_json(data=[c.to_dict() for c in checks])
    else:
        for c in checks:
            mark = "[green]agreed[/green]" if c.ok else "[red]NOT agreed[/red]"
            chain = ", ".join(f"{o}: {(d or 'nothing')[:16]}" for o, d in c.on_chain.items())
            console.print(f"{' + '.join(c.pair)}: digest {c.digest[:16]} on chain {chain}: {mark}")
        if not checks:
            console.print("no agreed pair in this list yet")
    if not checks or not all(c.ok for c in checks):
        raise typer.Exit(1)
