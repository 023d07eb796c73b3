"""`shardline privtx ...`: private contracts settled by the public Mediator.

Stakeholder and sender keys live in ``<run dir>/keys/privtx/<name>.json`` (0600): a chain
account, an X25519 sealing key and a BLS key. A stakeholder's facilitator runs with
``shardline privtx facilitator NAME`` (it starts the stakeholder's own anvil as its executor
unless ``--executor URL`` names one).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_utils import keccak
from rich.table import Table

from shardline import privtx_local as pl
from shardline import servers
from shardline.cli_common import ConfigOpt, console, err, load_config
from shardline.config import StackConfig
from shardline.contracts import mediator as med
from shardline.contracts.client import Chain, ChainError
from shardline.contracts.deploy import Deployment
from shardline.core import privtx as pt

privtx_app = typer.Typer(
    help="Private contracts: sealed payloads, private execution, settlement by the Mediator.",
    no_args_is_help=True,
)
POLICY = re.compile(r"^(unanimous|(\d+)-of-(\d+))$")


def _cfg(config: Path | None) -> tuple[StackConfig, str, int]:
    cfg = load_config(config)
    dep = Deployment.from_dict(cfg.deployment or {})
    if not dep.mediator:
        err.print(
            "[red]this deployment has no Mediator (it predates private contracts): redeploy "
            "with `shardline down && shardline up`[/red]"
        )
        raise typer.Exit(2)
    return cfg, dep.mediator, dep.block


def key_path(cfg: StackConfig, name: str) -> Path:
    return cfg.run_dir / "keys" / "privtx" / f"{name}.json"


def _load(cfg: StackConfig, name: str) -> pl.Stakeholder:
    try:
        return pl.Stakeholder.load(key_path(cfg, name))
    except pt.PrivTxError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


def _group_id(text: str) -> bytes:
    raw = text.removeprefix("0x")
    if not re.fullmatch(r"[0-9a-fA-F]{64}", raw):
        err.print(f"[red]{text!r} is not a group id (64 hex digits, from `create-group`)[/red]")
        raise typer.Exit(2)
    return bytes.fromhex(raw)


def _run(coro):
    try:
        return asyncio.run(coro)
    except (ChainError, pt.PrivTxError, med.UnknownGroup) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None


@privtx_app.command()
def keygen(
    name: Annotated[str, typer.Argument(help="A name for the stakeholder or sender.")],
    config: ConfigOpt = None,
) -> None:
    """Make a stakeholder's (or sender's) keys and fund its account on the local chain."""
    cfg, _, _ = _cfg(config)
    path = key_path(cfg, name)
    if path.exists():
        err.print(f"[red]{path} exists already; choose another name[/red]")
        raise typer.Exit(2)
    s = pl.Stakeholder.generate(name)
    s.save(path)

    async def fund() -> None:
        async with await Chain.connect(cfg.chain_rpc) as chain:
            await pl.fund(chain, s.address)

    _run(fund())
    console.print(f"{name}: account {s.address}, sealing key {s.sealing_pk.hex()} ({path})")


@privtx_app.command("create-group")
def create_group(
    member: Annotated[list[str], typer.Option("--member", help="A stakeholder (repeat).")],
    sender: Annotated[str, typer.Option("--sender", help="Who may submit (a keygen name).")],
    policy: Annotated[str, typer.Option(help="unanimous, or K-of-N with 2K > N.")] = "unanimous",
    timeout: Annotated[int, typer.Option(help="Seconds before a transaction may fail.")] = 30,
    bls: Annotated[bool, typer.Option(help="Register BLS keys for aggregate votes.")] = True,
    config: ConfigOpt = None,
) -> None:
    """Create a group of stakeholders on the Mediator; prints its id."""
    cfg, mediator, _ = _cfg(config)
    members = [_load(cfg, m) for m in member]
    found = POLICY.match(policy)
    if not found:
        err.print(f"[red]policy {policy!r}: use unanimous or K-of-N (e.g. 2-of-3)[/red]")
        raise typer.Exit(2)
    threshold = len(members)
    if found.group(2):
        threshold = int(found.group(2))
        if int(found.group(3)) != len(members):
            err.print(
                f"[red]policy {policy} names {found.group(3)} members; {len(members)} given[/red]"
            )
            raise typer.Exit(2)
    try:
        pt.check_policy(len(members), threshold)
    except pt.PrivTxError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    sender_keys = _load(cfg, sender)

    async def go() -> bytes:
        async with await Chain.connect(cfg.chain_rpc) as chain:
            creator = Account.from_key(sender_keys.account_key)
            return await pl.create_group(
                chain,
                creator,
                mediator,
                creator.address,
                members,
                threshold=threshold,
                timeout_s=timeout,
                bls=bls,
            )

    group = _run(go())
    console.print(group.hex())


def inventory_call(action: str, sku: str, units: int, to: str | None) -> bytes:
    sku_b = sku.encode()
    if len(sku_b) > 32:
        raise pt.PrivTxError(f"sku {sku!r} is longer than 32 bytes")
    sku_b = sku_b.ljust(32, b"\0")
    if action == "receive":
        return keccak(text="receiveGoods(bytes32,uint256)")[:4] + abi_encode(
            ["bytes32", "uint256"], [sku_b, units]
        )
    if action == "ship":
        return keccak(text="ship(bytes32,uint256)")[:4] + abi_encode(
            ["bytes32", "uint256"], [sku_b, units]
        )
    if action == "transfer":
        if not to:
            raise pt.PrivTxError("transfer needs --to ADDRESS")
        return keccak(text="transfer(bytes32,address,uint256)")[:4] + abi_encode(
            ["bytes32", "address", "uint256"], [sku_b, to, units]
        )
    raise pt.PrivTxError(f"unknown action {action!r}: receive, ship or transfer")


@privtx_app.command()
def send(
    group: Annotated[str, typer.Argument(help="The group id.")],
    sender: Annotated[str, typer.Option("--as", help="The group's sender (a keygen name).")],
    action: Annotated[
        str, typer.Option(help="receive, ship or transfer (SharedInventory).")
    ] = "receive",
    sku: Annotated[str, typer.Option(help="The stock keeping unit.")] = "widget",
    units: Annotated[int, typer.Option(help="How many units.")] = 1,
    to: Annotated[str | None, typer.Option(help="transfer: the receiving account.")] = None,
    data: Annotated[str | None, typer.Option(help="Any ABI-encoded call (hex) instead.")] = None,
    wait: Annotated[bool, typer.Option(help="Wait for the outcome.")] = True,
    config: ConfigOpt = None,
) -> None:
    """Seal a private call for the group, push it to the stakeholders and submit it."""
    cfg, mediator, _ = _cfg(config)
    gid = _group_id(group)
    keys = _load(cfg, sender)
    try:
        call = (
            bytes.fromhex(data.removeprefix("0x"))
            if data
            else inventory_call(action, sku, units, to)
        )
    except (ValueError, pt.PrivTxError) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    from shardline.workers.privtx_sender import PrivateSender, SettleTimeout

    async def go():
        s = await PrivateSender.connect(
            cfg.nats_url,
            cfg.chain_rpc,
            mediator,
            keys.account_key,
            chain_ws=cfg.chain_rpc.replace("http://", "ws://"),
        )
        try:
            sent = await s.send(gid, call)
            console.print(f"payload {sent.payload_hash.hex()} (transaction {sent.tx_hash})")
            if not wait:
                return None
            info = await s.group(gid)
            return await s.outcome(gid, sent.payload_hash, timeout_s=info.timeout + 30)
        finally:
            await s.close()

    try:
        out = _run(go())
    except SettleTimeout as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    if out is not None:
        console.print(f"{out.status.name}: root {out.old_root.hex()} -> {out.new_root.hex()}")
        if out.status != pt.Status.YES:
            raise typer.Exit(1)


@privtx_app.command()
def status(
    group: Annotated[str, typer.Argument(help="The group id.")],
    payload: Annotated[
        str | None, typer.Argument(help="A payload hash, for one transaction.")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """A group's policy, members and agreed root; or one transaction's votes and outcome."""
    cfg, mediator, start = _cfg(config)
    gid = _group_id(group)

    async def go():
        async with await Chain.connect(cfg.chain_rpc) as chain:
            info = await med.group_of(chain, mediator, gid)
            if payload is None:
                return info, None, {}
            phash = _group_id(payload)
            tx = await med.tx_of(chain, mediator, gid, phash)
            if tx is None:
                raise pt.PrivTxError(f"no transaction {payload} in group {group}")
            from shardline.contracts.cursor import raw_log

            logs = await chain.rpc.call(
                "eth_getLogs",
                [
                    {
                        "address": mediator,
                        "fromBlock": hex(start),
                        "toBlock": "latest",
                        "topics": [med.TX_VOTE, "0x" + gid.hex(), "0x" + phash.hex()],
                    }
                ],
            )
            votes = {}
            for r in logs:
                v = med.decode_event(raw_log(r))
                votes[v.member] = (v.old_root, v.new_root)
            return info, tx, votes

    info, tx, votes = _run(go())
    if tx is None:
        console.print(f"group {gid.hex()}: {info.policy}, timeout {info.timeout} s")
        console.print(f"sender {info.sender}; {info.submitted} transactions submitted")
        console.print(f"agreed root {info.root.hex()}")
        for i, m in enumerate(info.members):
            console.print(f"  member {i}: {m}")
        return
    console.print(f"{tx.status.name} (transaction {tx.seq} of the group, {tx.votes} votes)")
    if tx.status == pt.Status.YES:
        console.print(f"agreed root {tx.old_root.hex()} -> {tx.new_root.hex()}")
    decision = pt.decide(
        votes,
        len(info.members),
        info.threshold,
        tx.old_root if tx.status == pt.Status.YES else info.root,
    )
    table = Table("member", "account", "vote")
    for i, m in enumerate(info.members):
        if i not in votes:
            what = "no vote (offline?)"
        elif votes[i][1] == pt.ZERO_ROOT:
            what = "refused: could not open or run the payload (see its facilitator's log)"
        else:
            what = f"{votes[i][0].hex()[:12]}.. -> {votes[i][1].hex()[:12]}.."
            if i in decision.odd:
                what += "  (differs)"
        table.add_row(str(i), m, what)
    console.print(table)


@privtx_app.command()
def facilitator(
    name: Annotated[str, typer.Argument(help="The stakeholder (a keygen name).")],
    executor: Annotated[str | None, typer.Option(help="Its private EVM's JSON-RPC URL.")] = None,
    bls: Annotated[bool, typer.Option(help="Vote by aggregate BLS signature.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Run a stakeholder's facilitator in the foreground (and its executor, unless given)."""
    cfg, mediator, start = _cfg(config)
    keys = _load(cfg, name)
    _org_bus(cfg, name)  # refused before anything starts if it is no org of this stack
    home = cfg.run_dir / "privtx" / name
    home.mkdir(parents=True, exist_ok=True)
    proc = None
    if executor is None:
        proc, executor = pl.start_executor(home / "executor")
    try:
        asyncio.run(_facilitate(cfg, keys, executor, mediator, start, home, bls))
    except KeyboardInterrupt:
        pass
    finally:
        if proc is not None:
            servers.stop_pid(proc.pid)


def _org_bus(cfg: StackConfig, name: str):
    """The bus URL and nkey user of the org node a stakeholder ``name`` is: its facilitator
    speaks on the bus as that org, with the org's permissions, never as the operator."""
    from shardline import bus_access

    org = next((o for o in cfg.orgs if o.id == name), None)
    if org is None:
        err.print(
            f"[red]{name!r} is not an org node of this stack (orgs: "
            f"{', '.join(o.id for o in cfg.orgs)}): a facilitator connects to the bus with its "
            "org's credentials; add the org with `shardline org add` or run it for an org[/red]"
        )
        raise typer.Exit(2)
    return bus_access.org_bus(cfg, org)


async def _facilitate(cfg, keys, executor, mediator, start, home: Path, bls: bool) -> None:
    from urllib.parse import urlsplit

    from shardline import bus_access

    nats_url, auth = _org_bus(cfg, keys.name)
    if urlsplit(cfg.nats_url).password:  # the operator's configuration: make sure of the store
        await pl.ensure_payload_store(cfg.nats_url, bus_access.bus_tls(cfg.nats_tls))
    f = pl.facilitator(
        keys,
        executor_url=executor,
        chain_rpc=cfg.chain_rpc,
        mediator=mediator,
        start_block=start,
        nats_url=nats_url,
        db_path=home / "facilitator.db",
        bls_votes=bls,
        bus_auth=auth,
    )
    await f.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    console.print(f"{keys.name}: facilitating for {keys.address}, executor {executor}")
    await stop.wait()
    await f.stop()


@privtx_app.command("up")
def up(
    org: Annotated[
        list[str] | None, typer.Option("--org", help="Org nodes to start for (default: all).")
    ] = None,
    bls: Annotated[bool, typer.Option(help="Vote by aggregate BLS signature.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Start an executor (its own anvil) and a facilitator for each org node of the stack.

    Each org becomes a stakeholder of the same name (keys made on first use); `shardline down`
    stops them with the rest of the stack.
    """
    from shardline import bus_access, stack

    cfg, _, _ = _cfg(config)
    names = org or [o.id for o in cfg.orgs]
    for name in names:
        _org_bus(cfg, name)
    # the object store for sealed payloads is the operator's to create; org users read it
    asyncio.run(pl.ensure_payload_store(cfg.nats_url, bus_access.bus_tls(cfg.nats_tls)))
    live = stack.running(cfg.run_dir)
    for name in names:
        if f"privtx-{name}" in live:
            console.print(f"privtx-{name} is running already")
            continue
        path = key_path(cfg, name)
        if not path.exists():
            keygen(name, config)
        exec_dir = cfg.run_dir / "data" / f"privtx-exec-{name}"
        port = servers.free_port()
        spec = servers.anvil_spec(exec_dir, port, chain_id=1337)
        log_path = cfg.run_dir / "logs" / f"privtx-exec-{name}.log"
        proc = servers.spawn(spec, log_path)
        stack.write_pid(cfg.run_dir, f"privtx-exec-{name}", proc, spec.argv, log_path)
        argv = [
            sys.executable,
            "-m",
            "shardline",
            "privtx",
            "facilitator",
            name,
            "--executor",
            f"http://127.0.0.1:{port}",
            "--config",
            str(cfg.path.resolve()),
        ]
        if bls:
            argv.append("--bls")
        fproc = stack.start_process(cfg.run_dir, f"privtx-{name}", argv)
        console.print(
            f"started privtx-{name} (pid {fproc.pid}) with its executor on port {port} "
            f"(pid {proc.pid}); logs in {cfg.run_dir / 'logs'}"
        )
