"""`shardline records ...`: patient-controlled records from the command line.

Keys live in ``<run dir>/keys/records/<id>.json`` (0600), with the party's gateway API key in
``<id>.apikey`` beside it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
import uvloop
from rich.table import Table

from shardline.cli_common import ConfigOpt, console, err, load_config
from shardline.config import StackConfig
from shardline.core import records as rc
from shardline.core.ids import InvalidId, check_org_id
from shardline.core.keys import KeyFileError

records_app = typer.Typer(
    help="Patient-controlled records: encrypt, grant m-of-n proxies, revoke, read.",
    no_args_is_help=True,
)
T = TypeVar("T")

AsOpt = Annotated[str, typer.Option("--as", help="Your records party id (see `keygen`).")]


def keys_dir(cfg: StackConfig) -> Path:
    return cfg.run_dir / "keys" / "records"


def key_path(cfg: StackConfig, party_id: str) -> Path:
    return keys_dir(cfg) / f"{party_id}.json"


def _keys(cfg: StackConfig, party_id: str) -> rc.PartyKeys:
    try:
        return rc.PartyKeys.load(key_path(cfg, party_id))
    except KeyFileError as exc:
        err.print(f"[red]no records keys for {party_id!r}: {exc}[/red]")
        raise typer.Exit(2) from None


def _run(cfg: StackConfig, work: Callable[..., Awaitable[T]]) -> T:
    from shardline.workers.records_client import RecordsClient

    async def main() -> T:
        client = await RecordsClient.connect(
            cfg.nats_url, cfg.chain_rpc, cfg.deployment or {}, name="records-cli"
        )
        try:
            return await work(client)
        finally:
            await client.close()

    try:
        return uvloop.run(main())  # the loop the gateway and the workers run on
    except rc.RecordError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    except (RuntimeError, ValueError, OSError) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None


def parse_expiry(text: str, now: float | None = None) -> int:
    """``30d``, ``12h``, ``90m``, ``45s``, an ISO time, or unix seconds."""
    now = time.time() if now is None else now
    m = re.fullmatch(r"(\d+)([smhd])", text.strip())
    if m:
        return int(now + int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)])
    try:
        return int(float(text))
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"expiry {text!r}: use e.g. 30d, 12h, 90m, an ISO time or unix seconds"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp())


@records_app.command("keygen")
def keygen(
    party_id: Annotated[str, typer.Argument(help="Your id, e.g. alice or st-marys.")],
    config: ConfigOpt = None,
) -> None:
    """Make a party's keys (Umbral, Ed25519, X25519, chain account) and register them on chain."""
    cfg = load_config(config)
    try:
        check_org_id(party_id)
    except InvalidId as exc:
        err.print(f"[red]{str(exc).replace('org id', 'party id')}[/red]")
        raise typer.Exit(2) from None
    path = key_path(cfg, party_id)
    if path.exists():
        err.print(f"[red]{path} exists already: party {party_id} has keys[/red]")
        raise typer.Exit(1)
    keys = rc.PartyKeys.generate(party_id)
    _run(cfg, lambda c: c.register(keys))
    keys.save(path)
    api_key = secrets.token_urlsafe(24)
    fd = os.open(path.with_suffix(".apikey"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(api_key + "\n")
    console.print(f"registered records party {party_id}; keys in {path}")


@records_app.command("put")
def put(
    file: Annotated[Path, typer.Argument(help="The record to encrypt and store.")],
    as_: AsOpt,
    config: ConfigOpt = None,
) -> None:
    """Encrypt a file under your key, store the ciphertext and register the record on chain."""
    cfg = load_config(config)
    keys = _keys(cfg, as_)
    try:
        data = file.read_bytes()
    except OSError as exc:
        err.print(f"[red]cannot read {file}: {exc}[/red]")
        raise typer.Exit(2) from None
    info = _run(cfg, lambda c: c.put(keys, data))
    console.print(f"record {info.record_id} ({info.size} bytes, sha256 {info.content_hash.hex()})")


@records_app.command("grant")
def grant(
    record_id: str,
    reader: str,
    as_: AsOpt,
    threshold: Annotated[
        int | None, typer.Option(help="Proxies needed (default: the stack's).")
    ] = None,
    proxies: Annotated[
        str | None, typer.Option(help="Comma-separated org ids (default: every active org).")
    ] = None,
    expires: Annotated[str, typer.Option(help="30d, 12h, an ISO time or unix seconds.")] = "30d",
    config: ConfigOpt = None,
) -> None:
    """Let a reader have the record re-encrypted by THRESHOLD of the proxies until EXPIRES."""
    cfg = load_config(config)
    keys = _keys(cfg, as_)
    orgs = [p.strip() for p in proxies.split(",") if p.strip()] if proxies else None
    expires_at = parse_expiry(expires)

    async def work(c):
        g = await c.grant(
            keys,
            record_id,
            reader,
            threshold=threshold or cfg.threshold,
            proxies=orgs,
            expires_at=expires_at,
        )
        return g, await c.wait_held(g, timeout_s=5.0)

    g, missing = _run(cfg, work)
    console.print(
        f"granted record {record_id} to {reader}: {g.threshold} of {', '.join(g.proxies)} "
        f"until {dt.datetime.fromtimestamp(g.expires_at, dt.UTC).isoformat()} (grant {g.version})"
    )
    if missing:
        err.print(
            f"[yellow]not yet holding their key fragment: {', '.join(missing)} "
            "(they take it when they are back online)[/yellow]"
        )


@records_app.command("revoke")
def revoke(record_id: str, reader: str, as_: AsOpt, config: ConfigOpt = None) -> None:
    """End a reader's access: every proxy refuses from the revoking block on."""
    cfg = load_config(config)
    keys = _keys(cfg, as_)
    block = _run(cfg, lambda c: c.revoke(keys, record_id, reader))
    console.print(f"revoked record {record_id} for {reader} in block {block}")


@records_app.command("list")
def list_cmd(
    as_: AsOpt, as_json: Annotated[bool, typer.Option("--json")] = False, config: ConfigOpt = None
) -> None:
    """Your records with their grants, and the records granted to you."""
    cfg = load_config(config)
    listing = _run(cfg, lambda c: c.listing(as_))
    if as_json:
        print(json.dumps(listing, indent=2))
        return
    table = Table("record", "size", "reader", "m of proxies", "expires", "status", title="owned")
    for r in listing["owned"]:
        for g in r["grants"] or [None]:
            table.add_row(
                r["record_id"],
                str(r["size"]),
                *(_grant_cells(g) if g else ("-", "-", "-", "not shared")),
            )
    console.print(table)
    table = Table("record", "owner", "m of proxies", "expires", "status", title="granted to you")
    for g in listing["granted"]:
        table.add_row(g["record_id"], g["owner"], *_grant_cells(g)[1:])
    console.print(table)


def _grant_cells(g: dict) -> tuple[str, str, str, str]:
    when = dt.datetime.fromtimestamp(g["expires_at"], dt.UTC).strftime("%Y-%m-%d %H:%M")
    return g["reader"], f"{g['threshold']} of {','.join(g['proxies'])}", when, g["status"]


@records_app.command("get")
def get(
    record_id: str,
    as_: AsOpt,
    out: Annotated[Path | None, typer.Option(help="Write here (default: standard output).")] = None,
    config: ConfigOpt = None,
) -> None:
    """Read a record granted to you: m proxies re-encrypt, you decrypt (all or nothing)."""
    cfg = load_config(config)
    keys = _keys(cfg, as_)
    result = _run(cfg, lambda c: c.get(keys, record_id))
    if out is None:
        sys.stdout.buffer.write(result.plaintext)
        sys.stdout.flush()
    else:
        out.write_bytes(result.plaintext)
    err.print(
        f"record {record_id}: {len(result.plaintext)} bytes via {', '.join(result.used)} "
        f"in {result.elapsed_ms:.1f} ms"
        + (f"; bad fragment from {', '.join(result.bad)}" if result.bad else "")
    )
