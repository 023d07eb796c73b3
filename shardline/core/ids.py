"""Identifiers shared by the chain, the bus and the stores.

Org ids are short ASCII names (``org1``, ``rhine-chem``) that travel as ``bytes32`` on chain.
A transport is known on chain only by its key, a hash of its id, so that the public log does not
list a company's fleet in clear.
"""

from __future__ import annotations

import hashlib
import re
import uuid

ORG_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")
TRANSPORT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class InvalidId(ValueError):
    """An id that does not have the shape shardline needs."""


def check_org_id(org_id: str) -> str:
    if not ORG_ID_RE.fullmatch(org_id):
        raise InvalidId(
            f"org id {org_id!r} is not valid: use 1-31 lower-case letters, digits or '-', "
            "starting with a letter or digit"
        )
    return org_id


def org_id_to_bytes32(org_id: str) -> bytes:
    """The on-chain form of an org id: its ASCII bytes, right-padded with zeros."""
    return check_org_id(org_id).encode("ascii").ljust(32, b"\0")


def org_id_from_bytes32(raw: bytes) -> str:
    return raw.rstrip(b"\0").decode("ascii")


def check_transport_id(transport_id: str) -> str:
    if not TRANSPORT_ID_RE.fullmatch(transport_id):
        raise InvalidId(
            f"transport id {transport_id!r} is not valid: use 1-64 letters, digits, '.', '_' or '-'"
        )
    return transport_id


def transport_key(transport_id: str) -> bytes:
    """The 32-byte on-chain key of a transport."""
    check_transport_id(transport_id)
    return hashlib.sha256(b"shardline.transport.v1\0" + transport_id.encode()).digest()


def new_guid() -> bytes:
    """A fresh 16-byte lookup id (random UUID)."""
    return uuid.uuid4().bytes


def guid_hex(guid: bytes) -> str:
    return guid.hex()


def parse_guid(text: str) -> bytes:
    try:
        raw = bytes.fromhex(text.removeprefix("0x"))
    except ValueError as exc:
        raise InvalidId(f"lookup id {text!r} is not 32 hex digits") from exc
    if len(raw) != 16:
        raise InvalidId(f"lookup id {text!r} is not 32 hex digits")
    return raw
