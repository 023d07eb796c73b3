"""Participant keys at rest in encrypted keystores (Web3 Secret Storage, version 3).

On a shared or production host a key file should not hold its secrets in the clear. The
encrypted form keeps each of a participant's three 32-byte secrets in its own version-3
keystore as eth-account writes and reads them (scrypt or PBKDF2, AES-128-CTR, a MAC checked
before decryption). The ``chain`` entry is an ordinary Ethereum keystore: geth, clef or
``cast wallet`` open it with the same password, and one issued by a consortium can be pasted in.

The password never sits in the file. The file says where to find it, as ``"password": {"env":
NAME}`` or ``{"file": PATH}``; without that, ``SHARDLINE_KEY_PASSWORD_FILE`` (a path, e.g. a
systemd credential or a Kubernetes secret mount) and then ``SHARDLINE_KEY_PASSWORD`` are used.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from eth_account import Account

FORMAT = "shardline-keystore-v3"
PASSWORD_FILE_ENV = "SHARDLINE_KEY_PASSWORD_FILE"  # noqa: S105 (a variable name)
PASSWORD_ENV = "SHARDLINE_KEY_PASSWORD"  # noqa: S105 (a variable name)
SECRETS = ("chain", "signing", "sealing")


class KeystoreError(ValueError):
    """An encrypted key file that cannot be opened; the message says what to do."""


def is_encrypted(data: Any) -> bool:
    return isinstance(data, dict) and data.get("format") == FORMAT


def encrypt(
    participant_id: str,
    secrets: dict[str, bytes],
    password: str,
    *,
    kdf: str = "scrypt",
    iterations: int | None = None,
    password_source: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The encrypted key file's JSON for ``secrets`` (chain, signing, sealing: 32 bytes each)."""
    if not password:
        raise KeystoreError("refusing to encrypt keys with an empty password")
    if kdf not in ("scrypt", "pbkdf2"):
        raise KeystoreError(f"kdf must be scrypt or pbkdf2, not {kdf!r}")
    out: dict[str, Any] = {"participant_id": participant_id, "format": FORMAT}
    if password_source:
        out["password"] = _checked_source(password_source, "the new key file")
    for name in SECRETS:
        ks = Account.encrypt(secrets[name], password, kdf=kdf, iterations=iterations)
        if name != "chain":
            ks.pop("address", None)  # an address means something for the chain key only
        out[name] = ks
    return out


def decrypt(data: dict[str, Any], path: Path) -> dict[str, bytes]:
    """The three secrets of an encrypted key file; the password comes from where it says."""
    password = password_for(data, path)
    out: dict[str, bytes] = {}
    for name in SECRETS:
        if name not in data:
            raise KeystoreError(f"encrypted key file {path} has no {name!r} keystore")
        try:
            out[name] = bytes(Account.decrypt(data[name], password))
        except ValueError as exc:
            # eth-account says "MAC mismatch" for a wrong password; keep the message plain
            raise KeystoreError(
                f"cannot open the {name} keystore in {path}: wrong password or damaged file "
                f"({exc}); check the password source ({_describe(data)})"
            ) from None
    return out


def password_for(data: dict[str, Any], path: Path) -> str:
    source = data.get("password")
    if source is not None:
        source = _checked_source(source, str(path))
        if "env" in source:
            value = os.environ.get(source["env"])
            if not value:
                raise KeystoreError(
                    f"key file {path} is encrypted and takes its password from the environment "
                    f"variable {source['env']}, which is not set"
                )
            return value
        return _read_password_file(Path(source["file"]), path)
    file_env = os.environ.get(PASSWORD_FILE_ENV)
    if file_env:
        return _read_password_file(Path(file_env), path)
    value = os.environ.get(PASSWORD_ENV)
    if value:
        return value
    raise KeystoreError(
        f"key file {path} is encrypted: set {PASSWORD_FILE_ENV} to a file holding its password, "
        f'or {PASSWORD_ENV}, or name a source in the file ("password": {{"env": NAME}} or '
        '{"file": PATH})'
    )


def _read_password_file(file: Path, key_path: Path) -> str:
    try:
        value = file.read_text().rstrip("\r\n")
    except OSError as exc:
        raise KeystoreError(
            f"cannot read the password file {file} for key file {key_path}: {exc.strerror}"
        ) from None
    if not value:
        raise KeystoreError(f"the password file {file} for key file {key_path} is empty")
    return value


def _checked_source(source: Any, where: str) -> dict[str, str]:
    if (
        not isinstance(source, dict)
        or len(source) != 1
        or not ({"env", "file"} & source.keys())
        or not all(isinstance(v, str) and v for v in source.values())
    ):
        raise KeystoreError(
            f'the password source in {where} must be {{"env": NAME}} or {{"file": PATH}}, '
            f"not {source!r}"
        )
    return dict(source)


def _describe(data: dict[str, Any]) -> str:
    source = data.get("password")
    if isinstance(source, dict) and source:
        kind, value = next(iter(source.items()))
        return f"{kind} {value}"
    return f"{PASSWORD_FILE_ENV} or {PASSWORD_ENV}"
