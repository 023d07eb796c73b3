"""`shardline analytics ...`: statistics over secret-shared data, paid for on the Market.

Keys of producers and consumers live in ``<run dir>/keys/analytics/<id>.json`` (0600); a
consumer's job secrets (its mask shares) in ``<run dir>/keys/analytics/jobs/<job>.json``.
"""

from __future__ import annotations

import asyncio
import csv
import json
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from eth_account import Account
from rich.table import Table

from shardline.cli_common import ConfigOpt, console, err, load_config
from shardline.config import StackConfig
from shardline.core import analytics as an
from shardline.core.ids import InvalidId, check_org_id
from shardline.core.keys import KeyFileError, ParticipantKeys

analytics_app = typer.Typer(
    help="Statistics over secret-shared data: submit rows, open paid jobs, read results.",
    no_args_is_help=True,
)
T = TypeVar("T")

AsOpt = Annotated[str, typer.Option("--as", help="Your analytics id (see `keygen`).")]
WEI = 10**18


def keys_dir(cfg: StackConfig) -> Path:
    return cfg.run_dir / "keys" / "analytics"


def _keys(cfg: StackConfig, who: str) -> ParticipantKeys:
    try:
        return ParticipantKeys.load(keys_dir(cfg) / f"{who}.json")
    except KeyFileError as exc:
        err.print(
            f"[red]no analytics keys for {who!r} ({exc}): run `shardline analytics keygen {who}`[/red]"
        )
        raise typer.Exit(2) from None


def _run(cfg: StackConfig, work: Callable[..., Awaitable[T]], *, bus: bool = False) -> T:
    from shardline.contracts.client import ChainError
    from shardline.workers.analytics_client import AnalyticsClient, JobFailed

    async def main() -> T:
        client = await AnalyticsClient.connect(
            cfg.nats_url if bus else None, cfg.chain_rpc, cfg.deployment or {}, name="analytics-cli"
        )
        try:
            return await work(client)
        finally:
            await client.close()

    try:
        return asyncio.run(main())
    except (
        an.SchemaError,
        an.InputOutOfRange,
        an.TooFewProducers,
        JobFailed,
        ChainError,
        ValueError,
        TimeoutError,
        FileNotFoundError,
    ) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None


@analytics_app.command("keygen")
def keygen(
    who: Annotated[str, typer.Argument(help="Your id, e.g. st-marys or p-0001.")],
    config: ConfigOpt = None,
) -> None:
    """Make a producer's or consumer's keys (Ed25519, X25519, chain account)."""
    cfg = load_config(config)
    try:
        check_org_id(who)
    except InvalidId as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    path = keys_dir(cfg) / f"{who}.json"
    if path.exists():
        err.print(f"[red]{path} exists already[/red]")
        raise typer.Exit(1)
    keys = ParticipantKeys.generate(who)
    address = keys.chain_address

    async def fund(client) -> None:
        if client.chain.chain_id == 31337:  # the local anvil chain: give the account some ether
            await client.chain.w3.provider.make_request(
                "anvil_setBalance", [address, hex(100 * WEI)]
            )

    _run(cfg, fund)
    keys.save(path)
    console.print(f"keys for {who} in {path}; chain account {address}")


@analytics_app.command("create")
def create(
    dataset: Annotated[str, typer.Argument(help="The data set's id.")],
    schema: Annotated[Path, typer.Option(help="JSON schema: {name, fields: [...]}.")],
    as_: AsOpt,
    servers: Annotated[str, typer.Option(help="Comma-separated org ids holding the shares.")],
    threshold: Annotated[int, typer.Option(help="t: any t servers learn nothing.")] = 1,
    k: Annotated[int, typer.Option(help="Refuse filters selecting fewer rows.")] = 10,
    config: ConfigOpt = None,
) -> None:
    """Create a data set on the Market (needs 3t+1 staked servers)."""
    from shardline.contracts import market as mk

    cfg = load_config(config)
    keys = _keys(cfg, as_)
    try:
        parsed = an.Schema.from_dict(json.loads(schema.read_text()))
    except (OSError, ValueError) as exc:
        err.print(f"[red]schema {schema}: {exc}[/red]")
        raise typer.Exit(2) from None
    ids = [s.strip() for s in servers.split(",") if s.strip()]
    _run(
        cfg,
        lambda c: mk.create_dataset(
            c.chain,
            Account.from_key(keys.chain_key),
            c.deployment,
            dataset,
            parsed.to_json(),
            threshold,
            k,
            ids,
        ),
    )
    console.print(
        f"data set {dataset}: {len(parsed.fields)} fields, t={threshold}, k={k}, servers {', '.join(ids)}"
    )


def _read_rows(path: Path) -> list[dict]:
    try:
        if path.suffix == ".json":
            data = json.loads(path.read_text())
            return data if isinstance(data, list) else [data]
        with path.open(newline="") as f:
            return list(csv.DictReader(f))
    except (OSError, ValueError) as exc:
        err.print(f"[red]cannot read {path}: {exc}[/red]")
        raise typer.Exit(2) from None


@analytics_app.command("submit")
def submit(
    dataset: Annotated[str, typer.Argument(help="The data set's id.")],
    rows: Annotated[Path, typer.Argument(help="CSV with a header, or JSON (an object or a list).")],
    as_: AsOpt,
    config: ConfigOpt = None,
) -> None:
    """Range-check your rows, share them among the data set's servers, and register them."""
    cfg = load_config(config)
    keys = _keys(cfg, as_)
    data = _read_rows(rows)
    digests = _run(cfg, lambda c: c.submit(keys, dataset, data), bus=True)
    console.print(f"shared {len(data)} row(s) in {len(digests)} contribution(s) to {dataset}")


def _spec(statistic: str, field: str, where: str, bins: str) -> an.JobSpec:
    wf, wv = "", ()
    if where:
        if "=" not in where:
            err.print("[red]--where is field=value[,value...][/red]")
            raise typer.Exit(2)
        wf, vals = where.split("=", 1)
        wv = tuple(v.strip() for v in vals.split(","))
    try:
        edges = tuple(float(b) for b in bins.split(",")) if bins else ()
    except ValueError:
        err.print(f"[red]--bins {bins!r}: give numbers separated by commas, e.g. 0,20,40[/red]")
        raise typer.Exit(2) from None
    return an.JobSpec(statistic, field, wf.strip(), wv, edges)


@analytics_app.command("open")
def open_job(
    dataset: Annotated[str, typer.Argument(help="The data set's id.")],
    statistic: Annotated[str, typer.Argument(help=", ".join(an.STATISTICS))],
    as_: AsOpt,
    field: Annotated[str, typer.Option(help="The numeric field.")] = "",
    where: Annotated[str, typer.Option(help="Filter: category_field=value[,value...].")] = "",
    bins: Annotated[str, typer.Option(help="Histogram edges, e.g. 0,20,40,120.")] = "",
    price: Annotated[str, typer.Option(help="Deposit in ether.")] = "0.1",
    window: Annotated[int, typer.Option(help="Seconds to commit, then to reveal.")] = 60,
    config: ConfigOpt = None,
) -> None:
    """Open a job: deposit, choose servers by reputation, share a mask for them."""
    cfg = load_config(config)
    keys = _keys(cfg, as_)
    spec = _spec(statistic, field, where, bins)
    wei = int(Decimal(price) * WEI)
    secret = _run(
        cfg,
        lambda c: c.open(
            Account.from_key(keys.chain_key),
            dataset,
            spec,
            price=wei,
            commit_window_s=window,
            reveal_window_s=window,
        ),
    )
    secret.save(keys_dir(cfg) / "jobs" / f"{secret.job}.json")
    console.print(
        f"job {secret.job}: {spec.describe()} on {dataset}, servers {', '.join(secret.servers)}"
    )


@analytics_app.command("result")
def result(
    job: Annotated[int, typer.Argument(help="The job id.")],
    as_: AsOpt,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout", "--wait", help="Seconds to wait for the servers (--wait: old name)."
        ),
    ] = 120,
    config: ConfigOpt = None,
) -> None:
    """Decode the result, name any cheating server on chain, and settle the job."""
    from shardline.workers.analytics_client import JobSecret

    cfg = load_config(config)
    keys = _keys(cfg, as_)
    try:
        secret = JobSecret.load(keys_dir(cfg) / "jobs" / f"{job}.json")
    except FileNotFoundError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    out = _run(cfg, lambda c: c.result(Account.from_key(keys.chain_key), secret, timeout_s=timeout))
    console.print_json(json.dumps(out.to_dict()))


@analytics_app.command("status")
def status(
    job: Annotated[int, typer.Argument(help="The job id.")], config: ConfigOpt = None
) -> None:
    """A job's state on chain: deadlines and what each server did."""
    from shardline.contracts import market as mk

    cfg = load_config(config)

    async def work(c):
        info = await mk.job(c.chain, c.deployment, job)
        if info is None:
            raise ValueError(f"no job {job} on the Market")
        slots = [await mk.slot(c.chain, c.deployment, job, i) for i in range(len(info.servers))]
        return info, slots

    info, slots = _run(cfg, work)
    console.print(
        f"job {job} on {info.dataset}: {info.status_name}; {json.dumps(info.spec)}; "
        f"price {Decimal(info.price) / WEI} ether; {info.inputs} contributions"
    )
    table = Table("server", "committed", "revealed", "refused", "cheater")
    for s, sl in zip(info.servers, slots, strict=True):
        table.add_row(s, str(sl.committed), str(sl.revealed), str(sl.refused), str(sl.cheater))
    console.print(table)


@analytics_app.command("jobs")
def jobs(config: ConfigOpt = None) -> None:
    """Every job on the Market."""
    from shardline.contracts import market as mk

    cfg = load_config(config)

    async def work(c):
        n = await mk.job_count(c.chain, c.deployment)
        return [await mk.job(c.chain, c.deployment, i) for i in range(1, n + 1)]

    table = Table("job", "data set", "statistic", "status", "servers", "price (ether)")
    for j in _run(cfg, work):
        table.add_row(
            str(j.id),
            j.dataset,
            an.JobSpec.from_dict(j.spec).describe(),
            j.status_name,
            ", ".join(j.servers),
            str(Decimal(j.price) / WEI),
        )
    console.print(table)


@analytics_app.command("reputation")
def reputation(config: ConfigOpt = None) -> None:
    """Each MPC server's stake, reputation, jobs and faults (the next jobs go to the best)."""
    from shardline.contracts import market as mk

    cfg = load_config(config)
    table = Table("server", "stake (ether)", "reputation", "jobs", "faults", "in open jobs")
    rows = _run(cfg, lambda c: mk.servers(c.chain, c.deployment))
    for s in sorted(rows, key=lambda s: -s.reputation):
        table.add_row(
            s.id,
            str(Decimal(s.stake) / WEI),
            str(s.reputation),
            str(s.jobs),
            str(s.faults),
            str(s.active),
        )
    console.print(table)


@analytics_app.command("withdraw")
def withdraw(
    as_: AsOpt,
    claim_jobs: Annotated[
        str, typer.Option("--claim", help="Producer: job ids to claim rewards of, comma-separated.")
    ] = "",
    config: ConfigOpt = None,
) -> None:
    """Take what the Market owes you (claiming producer rewards first)."""
    from shardline.contracts import market as mk

    cfg = load_config(config)
    keys = _keys(cfg, as_)
    acct = Account.from_key(keys.chain_key)

    async def work(c):
        if claim_jobs:
            await mk.claim(
                c.chain,
                acct,
                c.deployment,
                keys.participant_id,
                [int(j) for j in claim_jobs.split(",")],
            )
        owed = await mk.balance_of(c.chain, c.deployment, acct.address)
        if owed:
            await mk.withdraw(c.chain, acct, c.deployment)
        return owed

    owed = _run(cfg, work)
    console.print(f"withdrew {Decimal(owed) / WEI} ether to {acct.address}")
