"""`shardline contacts ...`: import, dedup (with a live progress bar), review, merge, match, lists."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from shardline.cli_common import ConfigOpt, console, err, load_config
from shardline.config import ConfigError, StackConfig
from shardline.lists_cli import lists_app

contacts_app = typer.Typer(
    help="An org's contacts: import, dedup, private matching, lists.", no_args_is_help=True
)
contacts_app.add_typer(lists_app, name="lists")

OrgOpt = Annotated[str, typer.Option("--org", help="The org whose contacts these are.")]


def _store(cfg: StackConfig, org: str):
    from shardline.contacts.store import ContactStore

    try:
        return ContactStore(cfg.org(org).database_url)
    except ConfigError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


@contacts_app.command("import")
def import_cmd(
    file: Annotated[Path, typer.Argument(help="CSV (with a header) or JSON (array or lines).")],
    org: OrgOpt,
    mapping: Annotated[
        str | None,
        typer.Option(
            help='Field -> column, JSON or a JSON file: {"given_name": "First", "address": ["Street", "Town"]}.'
        ),
    ] = None,
    fmt: Annotated[
        str | None, typer.Option("--format", help="csv or json (default: by extension).")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Import contacts; malformed rows are listed by line and field, the rest imports."""
    from shardline.contacts.importer import import_file, load_mapping
    from shardline.contacts.store import contact_secret
    from shardline.core.contacts import MappingError
    from shardline.core.keys import ParticipantKeys

    cfg = load_config(config)
    store = _store(cfg, org)
    if not file.exists():
        err.print(f"[red]no file {file}[/red]")
        raise typer.Exit(2)
    try:
        secret = contact_secret(ParticipantKeys.load(cfg.org(org).key_file).signing_seed)
        report = import_file(store, file, secret, load_mapping(mapping), fmt)
    except MappingError as exc:
        err.print(f"[red]{file}: {exc}[/red]")
        raise typer.Exit(2) from None
    if report.already:
        console.print(f"{file} was already imported (import {report.import_id}); nothing added")
    else:
        console.print(
            f"imported {report.imported} of {report.rows} rows from {file} into {org} "
            f"(import {report.import_id}); {len(report.errors)} rows refused"
        )
    if report.errors:
        t = Table("line", "field", "reason", title="refused rows")
        for e in report.errors[:50]:
            t.add_row(str(e.line), e.field, e.reason)
        err.print(t)
        if len(report.errors) > 50:
            err.print(f"... and {len(report.errors) - 50} more")
    raise typer.Exit(0 if report.imported or report.already else 1)


@contacts_app.command("dedup")
def dedup_cmd(
    org: OrgOpt,
    threshold: Annotated[
        float | None, typer.Option(help="Match weight threshold (default: the model's).")
    ] = None,
    resume: Annotated[str | None, typer.Option(help="Resume this unfinished job.")] = None,
    wait: Annotated[bool, typer.Option(help="Follow the job's progress until it ends.")] = True,
    list_jobs: Annotated[bool, typer.Option("--list", help="List this org's jobs.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Find duplicates as a Celery job, with a live progress bar from the bus."""
    from shardline.contacts import jobs

    cfg = load_config(config)
    store = _store(cfg, org)
    if list_jobs:
        t = Table("job", "state", "stage", "pairs", "groups", "attempts")
        for j in store.jobs():
            t.add_row(j.id, j.state, j.stage, f"{j.done}/{j.total}", str(j.groups), str(j.attempts))
        console.print(t)
        return
    if resume:
        try:
            jobs.resume(cfg, org, resume)
        except ValueError as exc:
            err.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from None
        job_id = resume
    else:
        job_id = jobs.submit(cfg, org, threshold)
    console.print(f"dedup job {job_id} queued for {org}")
    if not wait:
        return
    final = asyncio.run(_follow(cfg, store, job_id))
    if final.state != "done":
        err.print(f"[red]job {job_id} {final.state}: {final.error}[/red]")
        raise typer.Exit(1)
    console.print(
        f"[green]done[/green]: {final.groups} duplicate groups among {final.total} candidate pairs; "
        f"`shardline contacts groups --org {org} --job {job_id}`"
    )


async def _follow(cfg: StackConfig, store, job_id: str):
    from shardline.bus import subjects
    from shardline.bus.connect import connect

    nc = await connect(cfg.nats_url, f"dedup-follow.{job_id[:8]}", patient=False)
    events: asyncio.Queue = asyncio.Queue()

    async def on(msg) -> None:
        await events.put(json.loads(msg.data)["body"])

    await nc.subscribe(subjects.DEDUP_PROGRESS.format(job=job_id), cb=on)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
    )
    try:
        with Progress(*columns, console=console, transient=False) as bar:
            task = bar.add_task("queued", total=None)
            while True:
                try:
                    ev = await asyncio.wait_for(events.get(), 1.0)
                except TimeoutError:
                    job = await asyncio.to_thread(store.job, job_id)
                    if job.state in ("done", "failed"):
                        return job
                    continue
                bar.update(
                    task, description=ev["stage"], completed=ev["done"], total=ev["total"] or None
                )
                if ev["state"] in ("done", "failed"):
                    break
    finally:
        await nc.close()
    return await asyncio.to_thread(store.job, job_id)


@contacts_app.command("groups")
def groups_cmd(
    org: OrgOpt, job: Annotated[str, typer.Option(help="The dedup job.")], config: ConfigOpt = None
) -> None:
    """Show a job's duplicate groups with their pairs' scores (for review)."""
    cfg = load_config(config)
    store = _store(cfg, org)
    groups = store.groups(job)
    byid = {c.id: c for c in store.contacts({cid for g in groups for cid in g})}
    t = Table("group", "contact", "name", "born", "locality", "merged into")
    for n, g in enumerate(groups, 1):
        for cid in g:
            c = byid[cid]
            t.add_row(
                str(n),
                str(cid),
                f"{c.given_name} {c.family_name}",
                c.birth_date,
                c.locality,
                str(c.merged_into or ""),
            )
    console.print(t)


@contacts_app.command("review")
def review_cmd(
    org: OrgOpt,
    a: Annotated[int, typer.Argument(help="One contact id.")],
    b: Annotated[int, typer.Argument(help="The other contact id.")],
    decision: Annotated[str, typer.Option(help="accept or reject")],
    reviewer: Annotated[str, typer.Option(help="Who decides.")] = "cli",
    config: ConfigOpt = None,
) -> None:
    """Accept or reject a pair; later dedup jobs honour it."""
    from shardline.contacts.store import StoreError

    store = _store(load_config(config), org)
    try:
        store.review(a, b, decision, reviewer)
    except StoreError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    console.print(f"pair {a}, {b}: {decision}")


@contacts_app.command("merge")
def merge_cmd(
    org: OrgOpt,
    job: Annotated[str, typer.Option(help="The dedup job.")],
    group: Annotated[int, typer.Option(help="The group number.")],
    by: Annotated[str, typer.Option(help="Who merges.")] = "cli",
    config: ConfigOpt = None,
) -> None:
    """Merge a group (recorded; `unmerge` undoes it)."""
    from shardline.contacts.store import StoreError

    store = _store(load_config(config), org)
    try:
        m = store.merge(job, group, by)
    except StoreError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    console.print(f"merge {m.id}: {m.members_json} into {m.survivor}")


@contacts_app.command("unmerge")
def unmerge_cmd(org: OrgOpt, merge_id: int, config: ConfigOpt = None) -> None:
    """Undo a merge."""
    from shardline.contacts.store import StoreError

    store = _store(load_config(config), org)
    try:
        m = store.undo_merge(merge_id)
    except StoreError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    console.print(f"merge {m.id} undone")


@contacts_app.command("match")
def match_cmd(
    org: OrgOpt,
    peer: Annotated[str, typer.Option("--with", help="The peer org.")],
    pad_to: Annotated[int, typer.Option(help="Pad the blinded set to this size to hide it.")] = 0,
    timeout: Annotated[
        float, typer.Option(help="Seconds before a silent peer fails the match.")
    ] = 600.0,
    config: ConfigOpt = None,
) -> None:
    """Find the contacts this org shares with a peer, without either showing its list."""
    from shardline.contacts.matching import MatchError, start_match, wait_match

    cfg = load_config(config)
    store = _store(cfg, org)

    async def run():
        session = await start_match(cfg, org, peer, pad_to=pad_to, timeout_s=timeout)
        console.print(f"match {session} with {peer} started")
        with console.status("matching (blinded keys only on the bus)"):
            return await wait_match(store, session, timeout_s=timeout + 60)

    try:
        row = asyncio.run(run())
    except MatchError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    if row.state != "done":
        err.print(f"[red]match {row.id} failed: {row.detail}[/red]")
        raise typer.Exit(1)
    console.print(
        f"[green]{row.shared_contacts}[/green] of {org}'s contacts are shared with {peer} "
        f"(sets: {row.mine} sent, {row.theirs} received, padding included); session {row.id}"
    )


@contacts_app.command("token")
def token_cmd(
    org: OrgOpt,
    role: Annotated[
        str, typer.Option(help="admin (load and see contacts) or user (matches only).")
    ],
    subject: Annotated[str, typer.Option(help="Who the token is for.")],
    hours: Annotated[float, typer.Option(help="How long it is valid.")] = 8.0,
    config: ConfigOpt = None,
) -> None:
    """Issue a JWT for the org node's contacts API (run on the org's own node)."""
    from shardline.contacts import auth
    from shardline.core.keys import ParticipantKeys

    cfg = load_config(config)
    try:
        keys = ParticipantKeys.load(cfg.org(org).key_file)
        print(auth.issue(auth.jwt_secret(keys.signing_seed), org, role, subject, hours * 3600))
    except (ConfigError, auth.TokenError) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
