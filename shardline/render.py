"""How the CLI shows a lookup, a cargo sheet and an audit to a person."""

from __future__ import annotations

import datetime as dt
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from shardline.audit import AuditReport
from shardline.lookup_client import LookupOutcome


def print_event(console: Console, ev: dict[str, Any]) -> None:
    at = f"[dim]{ev['at_ms']:>7.1f} ms[/dim]"
    kind = ev["event"]
    if kind == "accepted":
        console.print(
            f"{at}  request accepted: {ev['threshold']} of {len(ev['orgs'])} companies needed"
        )
    elif kind == "on_chain":
        console.print(f"{at}  recorded on chain in block {ev['block']}")
    elif kind == "share":
        console.print(f"{at}  share from [bold]{ev['org']}[/bold] checked against its commitment")
    elif kind == "bad_share":
        console.print(f"{at}  [red]bad share from {ev['org']}[/red]: {ev.get('detail', '')}")
    elif kind == "late_share":
        console.print(f"{at}  [dim]late share from {ev['org']} (not needed)[/dim]")
    elif kind == "chain_failed":
        console.print(f"{at}  [red]chain transaction failed[/red]: {ev.get('detail', '')}")
    elif kind == "result":
        console.print(f"{at}  [green]sheet rebuilt[/green] from {', '.join(ev['used_orgs'])}")
    elif kind == "error":
        console.print(f"{at}  [red]{ev['status']}[/red]: {ev.get('detail', '')}")


def print_sheet(console: Console, s: dict[str, Any]) -> None:
    risks = f" ({', '.join(s['subsidiary_risks'])})" if s["subsidiary_risks"] else ""
    pg = f"  packing group {s['packing_group']}" if s["packing_group"] else ""
    head = (
        f"[bold white on red] {s['un_number']} [/]  [bold]{s['proper_shipping_name']}[/bold]\n"
        f"class {s['hazard_class']}{risks}{pg}   ERG guide {s['erg_guide']}: {s['erg_title']}\n"
        f"{s['quantity']:g} {s['unit']} in {s['packages']} x {s['containment']}   "
        f"isolate at least [bold]{s['isolate_m']} m[/bold] in all directions"
    )
    do = "\n".join(f"[green]DO[/green]     {x}" for x in s["do"])
    never = "\n".join(f"[red]NEVER[/red]  {x}" for x in s["never"])
    contact = s["emergency_contact"]
    tail = (
        f"emergency contact: [bold]{contact['name']}[/bold]  {contact['phone']}\n"
        f"{s['carrier']}  {s['vehicle']}  {s['origin']} -> {s['destination']}  (registered by {s['company']})"
    )
    note = "\n[dim]SAMPLE DATA, not for operational use[/dim]" if s.get("sample_data") else ""
    console.print(
        Panel(
            f"{head}\n\n{do}\n{never}\n\n{tail}{note}",
            title=f"transport {s['transport_id']}",
            expand=False,
        )
    )


def print_outcome(console: Console, transport_id: str, outcome: LookupOutcome) -> None:
    if outcome.ok:
        print_sheet(console, outcome.body["sheet"])
        console.print(
            f"rebuilt from {', '.join(outcome.body['used_orgs'])} in {outcome.body['elapsed_ms']} ms"
            + (
                f"; rejected: {', '.join(b['org'] for b in outcome.body['bad_orgs'])}"
                if outcome.body["bad_orgs"]
                else ""
            )
        )
    else:
        console.print(
            f"[bold red]{outcome.status}[/bold red] for {transport_id}: {outcome.body.get('detail')}"
        )


def print_audit(console: Console, report: AuditReport) -> None:
    table = Table("served at", "org", "lookup", "requester", "trigger", "chain", "status")
    for r in report.rows:
        when = dt.datetime.fromtimestamp(r.served_at).strftime("%H:%M:%S")
        style = {"matched": "green", "pending": "yellow"}.get(r.status, "bold red")
        table.add_row(
            when,
            r.org,
            r.guid[:12],
            r.requester[:10],
            r.trigger,
            str(r.block) if r.block is not None else "-",
            f"[{style}]{r.status}[/{style}]",
        )
    console.print(table)
    matched = sum(1 for r in report.rows if r.status == "matched")
    console.print(
        f"{len(report.rows)} shares served: {matched} matched to on-chain requests, "
        f"{len(report.unmatched)} unmatched"
        + (f"; {len(report.unserved)} on-chain requests nobody served" if report.unserved else "")
        + (
            f"; [red]no answer from {', '.join(report.unreachable)}[/red]"
            if report.unreachable
            else ""
        )
    )
