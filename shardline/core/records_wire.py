"""A proxy's capsule fragment for a reader, as one binary frame instead of a JSON envelope.

A read's reply is on its critical path twice (made by the proxy, read by the reader), and the
JSON envelope cost more CPU there than the Ed25519 signature and the sealed box it carries:
canonical JSON to sign and to verify, base64, schema checks. The frame keeps the signature and
the sealed box and drops the rest:

    MAGIC | version (4 bytes, big-endian) | Ed25519 signature (64) | sealed box of the cfrag

The signature is the proxy org's, over a context string, the request it answers (request id,
record id, reader: the reader's own values, never read from the frame), the org, the version
and the box; the box (libsodium sealed box) opens only with the reader's sealing key. So a
frame answers exactly one request, from exactly one org, and only its reader reads the cfrag.
Refusals stay signed JSON envelopes (``records.refusal``); a frame never starts with ``{``.

Pure: no I/O.
"""

from __future__ import annotations

from nacl.public import PrivateKey
from nacl.signing import SigningKey

from shardline.core import sealing

MAGIC = b"\x00SLcf1"
CONTEXT = b"shardline records.cfrag frame v1\x00"
VERSION_BYTES = 4
SIGNATURE_BYTES = 64
SEAL_OVERHEAD = 48  # the sealed box's ephemeral key and MAC
_HEAD = len(MAGIC) + VERSION_BYTES + SIGNATURE_BYTES


class BadFrame(ValueError):
    """A frame that is cut short, not for this request, not signed by its org, or not sealed to
    this reader."""


def is_frame(raw: bytes) -> bool:
    return raw[: len(MAGIC)] == MAGIC


def _field(text: str) -> bytes:
    raw = text.encode()
    if len(raw) > 0xFFFF:
        raise BadFrame(f"a field of {len(raw)} bytes is too long for a frame")
    return len(raw).to_bytes(2, "big") + raw


def _signed(request_id: str, record_id: str, reader: str, org: str, version: bytes, box: bytes):
    return b"".join(
        (CONTEXT, _field(request_id), _field(record_id), _field(reader), _field(org), version, box)
    )


def make(
    *,
    request_id: str,
    record_id: str,
    reader: str,
    org: str,
    version: int,
    cfrag: bytes,
    signing_key: SigningKey,
    reader_sealing_pk: bytes,
) -> bytes:
    """The frame a proxy (``org``) sends in answer to one access request."""
    box = sealing.seal(bytes(cfrag), reader_sealing_pk)
    v = version.to_bytes(VERSION_BYTES, "big")
    sig = sealing.sign(_signed(request_id, record_id, reader, org, v, box), signing_key)
    return MAGIC + v + sig + box


def open_frame(
    raw: bytes,
    *,
    request_id: str,
    record_id: str,
    reader: str,
    org: str,
    org_signing_pk: bytes,
    reader_sealing_key: PrivateKey,
) -> tuple[int, bytes]:
    """(grant version, cfrag) from a frame that answers this request from ``org``."""
    if not is_frame(raw) or len(raw) < _HEAD + SEAL_OVERHEAD:
        raise BadFrame(f"{len(raw)} bytes are not a capsule-fragment frame")
    v = raw[len(MAGIC) : len(MAGIC) + VERSION_BYTES]
    sig, box = raw[len(MAGIC) + VERSION_BYTES : _HEAD], raw[_HEAD:]
    try:
        sealing.verify(_signed(request_id, record_id, reader, org, v, box), sig, org_signing_pk)
    except sealing.SignatureInvalid:
        raise BadFrame(
            f"the frame is not signed by {org} for request {request_id} of {reader}"
        ) from None
    try:
        cfrag = sealing.unseal(box, reader_sealing_key)
    except sealing.SealError:
        raise BadFrame(f"the frame's box is not sealed to {reader}") from None
    return int.from_bytes(v, "big"), cfrag
