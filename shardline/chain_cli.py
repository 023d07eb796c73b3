"""`shardline chain ...`: put the contracts on any JSON-RPC chain and admit participants, from the
stack file alone.

The consortium's admin account signs: ``admin_key_file`` in the stack file is either a plain
Ethereum keystore (geth, clef, ``cast wallet``; password from ``SHARDLINE_KEY_PASSWORD_FILE`` or
``SHARDLINE_KEY_PASSWORD``) or a participant key file, plain or encrypted, whose chain key is the
admin's. Each org hands the admin only its public identities (``shardline keys public``).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer
from eth_account import Account
from eth_account.signers.local import LocalAccount

from shardline.cli_common import ConfigOpt, console, err, load_config
from shardline.config import StackConfig
from shardline.core import keystore
from shardline.core.directory import GATEWAY, ORG
from shardline.core.keys import KeyFileError, ParticipantKeys

chain_app = typer.Typer(
    help="Deploy the contracts on a chain and admit orgs, gateways and responders.",
    no_args_is_help=True,
)
KINDS = {"org": ORG, "gateway": GATEWAY}


class AdminKeyError(ValueError):
    pass


def load_admin(path: Path) -> LocalAccount:
    """The consortium admin's account from an Ethereum keystore or a participant key file."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise AdminKeyError(
            f"no admin key at {path}: set admin_key_file in the stack file to the consortium "
            "admin's Ethereum keystore"
        ) from None
    except (OSError, ValueError) as exc:
        raise AdminKeyError(f"admin key file {path} is unreadable: {exc}") from None
    if isinstance(data, dict) and "crypto" in data:  # a plain Web3 v3 keystore
        try:
            password = keystore.password_for({}, path)
            return Account.from_key(Account.decrypt(data, password))
        except keystore.KeystoreError as exc:
            raise AdminKeyError(str(exc)) from None
        except ValueError as exc:
            raise AdminKeyError(
                f"cannot open the admin keystore {path}: wrong password or damaged file ({exc})"
            ) from None
    try:
        return Account.from_key(ParticipantKeys.load(path).chain_key)
    except KeyFileError as exc:
        raise AdminKeyError(str(exc)) from None


def _config(config: Path | None) -> tuple[StackConfig, Path]:
    import os

    path = Path(config or os.environ.get("SHARDLINE_CONFIG") or ".shardline/stack.json")
    return load_config(path), path


async def _chain(cfg: StackConfig):
    from shardline.contracts.client import Chain

    chain = await Chain.connect(cfg.chain_rpc, expected_chain_id=cfg.chain_id)
    chain.gas_policy = cfg.gas
    return chain


def _fail(exc: Exception) -> None:
    err.print(f"[red]{exc}[/red]")
    raise typer.Exit(1) from None


@chain_app.command("deploy")
def deploy(
    config: ConfigOpt = None,
    force: Annotated[
        bool, typer.Option(help="Deploy again although the stack file names a deployment.")
    ] = False,
) -> None:
    """Deploy the contracts with the admin account and write their addresses into the stack file."""
    from shardline.contracts.client import ChainError
    from shardline.contracts.deploy import deploy_all

    cfg, path = _config(config)
    if cfg.deployment and not force:
        err.print(
            f"[red]{path} already names a deployment (governor {cfg.deployment.get('governor')});"
            " use --force to deploy a new one[/red]"
        )
        raise typer.Exit(2)
    try:
        admin = load_admin(cfg.admin_key_file)
    except AdminKeyError as exc:
        _fail(exc)

    async def go():
        chain = await _chain(cfg)
        try:
            return await deploy_all(chain, admin)
        finally:
            await chain.close()

    try:
        dep = asyncio.run(go())
    except ChainError as exc:
        _fail(exc)
    raw = json.loads(path.read_text())
    raw["deployment"] = dep.to_dict()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(raw, indent=2))
    tmp.replace(path)
    console.print(
        f"deployed on chain {cfg.chain_id} from block {dep.block}: governor {dep.governor}, "
        f"gatekeeper {dep.gatekeeper}; written to {path}"
    )


@chain_app.command("register")
def register(
    public_file: Annotated[
        Path, typer.Argument(help="An org's or gateway's public identities (`keys public`).")
    ],
    kind: Annotated[str, typer.Option(help="org or gateway.")] = "org",
    config: ConfigOpt = None,
) -> None:
    """Admit an org node or a gateway with the public identities it handed over."""
    from shardline.contracts import registry
    from shardline.contracts.client import ChainError
    from shardline.contracts.deploy import Deployment

    if kind not in KINDS:
        err.print(f"[red]--kind must be org or gateway, not {kind!r}[/red]")
        raise typer.Exit(2)
    cfg, path = _config(config)
    if not cfg.deployment:
        err.print(f"[red]{path} names no deployment: run `shardline chain deploy` first[/red]")
        raise typer.Exit(2)
    try:
        pub = json.loads(public_file.read_text())
        ident = (
            pub["participant_id"],
            bytes.fromhex(pub["signing_public"]),
            bytes.fromhex(pub["sealing_public"]),
            pub["account"],
        )
        admin = load_admin(cfg.admin_key_file)
    except (OSError, ValueError, KeyError) as exc:
        _fail(ValueError(f"{public_file} is not a public identity file ({exc})"))
    except AdminKeyError as exc:
        _fail(exc)

    async def go():
        chain = await _chain(cfg)
        try:
            dep = Deployment.from_dict(cfg.deployment or {})
            await registry.register_participant(chain, admin, dep, *ident, KINDS[kind])
        finally:
            await chain.close()

    try:
        asyncio.run(go())
    except (ChainError, ValueError) as exc:
        _fail(exc)
    console.print(f"registered {kind} {ident[0]} (account {ident[3]})")


@chain_app.command("grant-responder")
def grant_responder(
    account: Annotated[str, typer.Argument(help="The responder's chain account (0x...).")],
    config: ConfigOpt = None,
) -> None:
    """Give an account the RESPONDER role on the Gatekeeper: it may request lookups."""
    from shardline.contracts import registry
    from shardline.contracts.client import ChainError
    from shardline.contracts.deploy import Deployment

    cfg, path = _config(config)
    if not cfg.deployment:
        err.print(f"[red]{path} names no deployment: run `shardline chain deploy` first[/red]")
        raise typer.Exit(2)
    try:
        admin = load_admin(cfg.admin_key_file)
    except AdminKeyError as exc:
        _fail(exc)

    async def go():
        chain = await _chain(cfg)
        try:
            dep = Deployment.from_dict(cfg.deployment or {})
            await registry.grant_role(chain, admin, dep, "RESPONDER", account)
        finally:
            await chain.close()

    try:
        asyncio.run(go())
    except (ChainError, ValueError) as exc:
        _fail(exc)
    console.print(f"granted RESPONDER to {account}")
