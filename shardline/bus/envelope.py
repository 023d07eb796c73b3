"""The signed envelope every message travels in.

``{id, type, schema_version, sender, sent_at, trace_id, body, sig}``: ``sig`` is the sender's
Ed25519 signature over the canonical JSON of the other fields; ``body`` is the message's plain
JSON, or ``{"sealed_to": reader, "box": base64}``, a libsodium sealed box that only that reader
opens. The body is checked against the message type's schema when it is made and when it is read.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from shardline import schemas
from shardline.core import sealing
from shardline.core.directory import Directory, UnknownParticipant
from shardline.core.keys import ParticipantKeys

MAX_MESSAGE_BYTES = 256 * 1024


class BadMessage(ValueError):
    """A message that can never be processed: it goes to the dead letters with this reason."""


def canonical(data: dict[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def new_trace_id() -> str:
    return secrets.token_hex(16)


@dataclass(frozen=True)
class Envelope:
    id: str
    type: str
    schema_version: int
    sender: str
    sent_at: float
    trace_id: str
    body: dict[str, Any] = field(repr=False)
    sig: str = field(repr=False)

    @property
    def sealed(self) -> bool:
        return "sealed_to" in self.body

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "schema_version": self.schema_version,
            "sender": self.sender,
            "sent_at": self.sent_at,
            "trace_id": self.trace_id,
            "body": self.body,
            "sig": self.sig,
        }

    def to_bytes(self) -> bytes:
        return canonical(self.to_dict())


def make(
    msg_type: str,
    body: dict[str, Any],
    keys: ParticipantKeys,
    *,
    seal_to: tuple[str, bytes] | None = None,
    trace_id: str | None = None,
) -> Envelope:
    """Build, check and sign a message; ``seal_to`` is (reader id, reader's sealing key)."""
    schemas.validate(msg_type, body)
    if seal_to is not None:
        reader, reader_pk = seal_to
        body = {"sealed_to": reader, "box": b64(sealing.seal(canonical(body), reader_pk))}
    unsigned = {
        "id": secrets.token_hex(16),
        "type": msg_type,
        "schema_version": schemas.SCHEMA_VERSION,
        "sender": keys.participant_id,
        "sent_at": time.time(),
        "trace_id": trace_id or new_trace_id(),
        "body": body,
    }
    sig = b64(sealing.sign(canonical(unsigned), keys.signing_key))
    return Envelope(**unsigned, sig=sig)


def parse(raw: bytes, expected_type: str | None = None) -> Envelope:
    """Read an envelope and check its outer form (not yet its signature)."""
    if len(raw) > MAX_MESSAGE_BYTES:
        raise BadMessage(
            f"{len(raw)} bytes is larger than the {MAX_MESSAGE_BYTES} bytes a message may have"
        )
    try:
        # orjson refuses nesting deeper than 1024 instead of exhausting the stack
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadMessage(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadMessage("not an envelope: the message is JSON but not an object")
    try:
        schemas.validate("envelope", data)
    except schemas.SchemaError as exc:
        raise BadMessage(str(exc)) from None
    if expected_type is not None and data["type"] != expected_type:
        raise BadMessage(f"expected a {expected_type} message, got {data['type']}")
    if data["schema_version"] != schemas.SCHEMA_VERSION:
        raise BadMessage(
            f"schema version {data['schema_version']} is not supported (this node reads "
            f"{schemas.SCHEMA_VERSION}): upgrade the older side"
        )
    if data["type"] not in schemas.message_types():
        raise BadMessage(f"unknown message type {data['type']}")
    if "sealed_to" not in data["body"]:
        try:
            schemas.validate(data["type"], data["body"])
        except schemas.SchemaError as exc:
            raise BadMessage(str(exc)) from None
    return Envelope(**data)


async def verify(env: Envelope, directory: Directory) -> None:
    """Check the signature against the sender's key in the on-chain registry."""
    try:
        sender = await directory.resolve(env.sender)
    except UnknownParticipant as exc:
        raise BadMessage(f"unknown sender: {exc}") from None
    unsigned = env.to_dict()
    del unsigned["sig"]
    try:
        sealing.verify(canonical(unsigned), unb64(env.sig), sender.signing_pk)
    except (sealing.SignatureInvalid, ValueError):
        raise BadMessage(f"signature of {env.sender} does not verify") from None


def open_body(env: Envelope, keys: ParticipantKeys) -> dict[str, Any]:
    """The plain body: opened with the reader's key when sealed, and checked against its schema."""
    if not env.sealed:
        return env.body
    if env.body["sealed_to"] != keys.participant_id:
        raise BadMessage(f"sealed to {env.body['sealed_to']}, not to {keys.participant_id}")
    try:
        body = orjson.loads(sealing.unseal(unb64(env.body["box"]), keys.sealing_key))
    except (sealing.SealError, ValueError) as exc:
        raise BadMessage(f"sealed body does not open: {exc}") from None
    if not isinstance(body, dict):
        raise BadMessage("sealed body is not a JSON object")
    try:
        schemas.validate(env.type, body)
    except schemas.SchemaError as exc:
        raise BadMessage(str(exc)) from None
    return body
