"""`shardline keys ...`: put a participant's key file into encrypted keystores, and check one."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from shardline.cli_common import console, err
from shardline.core.keys import KeyFileError, ParticipantKeys

keys_app = typer.Typer(
    help="Participant key files: encrypt them at rest (Web3 keystore v3), check they open.",
    no_args_is_help=True,
)


def _password(env: str | None, file: Path | None) -> tuple[str, dict[str, str]]:
    if bool(env) == bool(file):
        err.print("[red]give exactly one of --password-env NAME or --password-file PATH[/red]")
        raise typer.Exit(2)
    if env:
        value = os.environ.get(env, "")
        if not value:
            err.print(f"[red]the environment variable {env} is empty or not set[/red]")
            raise typer.Exit(2)
        return value, {"env": env}
    assert file is not None
    try:
        value = file.read_text().rstrip("\r\n")
    except OSError as exc:
        err.print(f"[red]cannot read the password file {file}: {exc.strerror}[/red]")
        raise typer.Exit(2) from None
    if not value:
        err.print(f"[red]the password file {file} is empty[/red]")
        raise typer.Exit(2)
    return value, {"file": str(file.resolve())}


@keys_app.command("encrypt")
def encrypt(
    key_file: Annotated[Path, typer.Argument(help="A plain key file (as `shardline up` writes).")],
    out: Annotated[Path, typer.Option(help="Where to write the encrypted key file.")],
    password_env: Annotated[
        str | None, typer.Option(help="Environment variable that holds the password.")
    ] = None,
    password_file: Annotated[
        Path | None, typer.Option(help="File that holds the password (first line).")
    ] = None,
    kdf: Annotated[str, typer.Option(help="scrypt (default) or pbkdf2.")] = "scrypt",
    kdf_cost: Annotated[
        int | None,
        typer.Option(
            help="scrypt n or pbkdf2 iterations (default eth-account's: n=262144, about 4 s "
            "per secret to open; 16384 opens in 0.2 s at a weaker setting)."
        ),
    ] = None,
    remove_plain: Annotated[
        bool, typer.Option(help="Delete the plain key file once the encrypted one opens.")
    ] = False,
) -> None:
    """Write KEY_FILE's secrets as keystores; the new file names where its password comes from."""
    password, source = _password(password_env, password_file)
    try:
        keys = ParticipantKeys.load(key_file)
        keys.save_encrypted(out, password, kdf=kdf, iterations=kdf_cost, password_source=source)
        again = ParticipantKeys.load(out)
    except (KeyFileError, ValueError) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    if again != keys:
        err.print(f"[red]{out} does not open to the same keys; the plain file is kept[/red]")
        raise typer.Exit(1)
    if remove_plain:
        key_file.unlink()
    console.print(
        f"wrote {out} for {keys.participant_id} (chain account "
        f"{keys.chain_address}); point the stack file's key_file at it"
    )


@keys_app.command("check")
def check(key_file: Annotated[Path, typer.Argument(help="A plain or encrypted key file.")]) -> None:
    """Open KEY_FILE as a worker would and print its public identities (never a secret)."""
    try:
        keys = ParticipantKeys.load(key_file)
    except KeyFileError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    console.print(
        f"{keys.participant_id}: chain account {keys.chain_address}, "
        f"signing key {keys.signing_public.hex()}, sealing key {keys.sealing_public.hex()}"
    )


@keys_app.command("public")
def public(
    key_file: Annotated[Path, typer.Argument(help="A plain or encrypted key file.")],
    out: Annotated[Path | None, typer.Option(help="Write here instead of printing.")] = None,
) -> None:
    """The public identities to hand the consortium admin (`shardline chain register`)."""
    try:
        keys = ParticipantKeys.load(key_file)
    except KeyFileError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    text = json.dumps(
        {
            "participant_id": keys.participant_id,
            "signing_public": keys.signing_public.hex(),
            "sealing_public": keys.sealing_public.hex(),
            "account": keys.chain_address,
        },
        indent=2,
    )
    if out is None:
        print(text)
    else:
        out.write_text(text + "\n")
        console.print(f"wrote {out}")
