"""What private transactions say on the bus, each message checked against its JSON Schema.

- ``privtx.payload.<group>`` (schema ``privtx.payload``): the sender pushes the sealed payload
  to the group's stakeholders ahead of the chain transaction, ``{"hash", "ciphertext"}``; the
  ciphertext must hash (SHA3-256) to ``hash``, which is the payload hash the mediator will hold.
  With ``seq``, ``root``, ``ephemeral`` and ``wraps`` (the position and agreed root the sender
  expects, and what the submission will carry) it asks for a vote ahead: a stakeholder in step
  with the group (that position next, that root its state) executes it at once and answers the
  push's reply subject with a ``privtx.prevote`` ``{"hash", "member", "seq", "old", "new",
  "sig"}`` signed by its chain account, which the sender carries in ``submitVoted``.
- ``privtx.vote.<group>`` (schema ``privtx.vote``): in BLS mode, one stakeholder's vote share
  ``{"hash", "member", "old", "new", "sig"}``; the aggregate is checked by the mediator.

Both are core NATS (a push that is missed is fetched from the object store; a vote share that is
missed is replaced by a vote of one's own after a while), so they are not envelopes: what
authenticates them is the chain (the payload hash) and the BLS signature. A message that does
not parse, does not match its schema or does not hash to its name goes to ``dlq.<subject>``
with the reason, as the worker base does with a poison message, and is otherwise ignored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass

from nats.aio.msg import Msg
from nats.js import JetStreamContext

from shardline import schemas
from shardline.bus import log, subjects
from shardline.bus.envelope import BadMessage
from shardline.core.privtx import PreVote

PAYLOAD_SUBJECT = subjects.PRIVTX_PAYLOAD
VOTE_SUBJECT = subjects.PRIVTX_VOTE
PAYLOAD_TYPE = "privtx.payload"
VOTE_TYPE = "privtx.vote"
PREVOTE_TYPE = "privtx.prevote"


def _group_of(subject: str) -> bytes:
    token = subject.rsplit(".", 1)[-1]
    try:
        group = bytes.fromhex(token)
    except ValueError:
        group = b""
    if len(group) != 32:
        raise BadMessage(f"{subject}: the subject's last token is not a 32-byte group id in hex")
    return group


def _json(subject: str, msg_type: str, data: bytes) -> dict:
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadMessage(f"{subject}: a {msg_type} message is JSON; this is not ({exc})") from None
    try:
        schemas.validate(msg_type, body)
    except schemas.SchemaError as exc:
        raise BadMessage(f"{subject}: {exc}") from None
    return body


# -- the pushed payload -------------------------------------------------------------------------
@dataclass(frozen=True)
class Ahead:
    """What a push that asks for a vote ahead carries besides the ciphertext."""

    seq: int  # the position in the group's sequence the sender expects it to take
    root: bytes  # the group's agreed root the sender expects it to build on
    ephemeral_pk: bytes
    wraps: tuple[bytes, ...]


def push_body(ciphertext: bytes, ahead: Ahead | None = None) -> bytes:
    body: dict = {
        "hash": hashlib.sha3_256(ciphertext).hexdigest(),
        "ciphertext": base64.b64encode(ciphertext).decode(),
    }
    if ahead is not None:
        body["seq"] = ahead.seq
        body["root"] = ahead.root.hex()
        body["ephemeral"] = ahead.ephemeral_pk.hex()
        body["wraps"] = [w.hex() for w in ahead.wraps]
    return json.dumps(body, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Push:
    group: bytes
    name: str  # hex SHA3-256 of the ciphertext
    ciphertext: bytes
    ahead: Ahead | None = None


def parse_push(subject: str, data: bytes) -> Push:
    group = _group_of(subject)
    body = _json(subject, PAYLOAD_TYPE, data)
    try:
        ciphertext = base64.b64decode(body["ciphertext"], validate=True)
    except binascii.Error as exc:
        raise BadMessage(f"{subject}: ciphertext is not base64 ({exc})") from None
    got = hashlib.sha3_256(ciphertext).hexdigest()
    if got != body["hash"]:
        raise BadMessage(
            f"{subject}: the ciphertext hashes to {got}, not to the payload hash "
            f"{body['hash']} it is pushed under"
        )
    ahead = None
    if "seq" in body:
        if any(len(w) % 2 for w in body["wraps"]):
            raise BadMessage(f"{subject}: a wrap is not whole bytes of hex")
        ahead = Ahead(
            int(body["seq"]),
            bytes.fromhex(body["root"]),
            bytes.fromhex(body["ephemeral"]),
            tuple(bytes.fromhex(w) for w in body["wraps"]),
        )
    return Push(group, got, ciphertext, ahead)


# -- a vote cast ahead (answer to a push) ---------------------------------------------------------
def prevote_body(phash: bytes, seq: int, vote: PreVote) -> bytes:
    return json.dumps(
        {
            "hash": phash.hex(),
            "member": vote.member,
            "seq": seq,
            "old": vote.old_root.hex(),
            "new": vote.new_root.hex(),
            "sig": vote.sig.hex(),
        },
        separators=(",", ":"),
    ).encode()


@dataclass(frozen=True)
class PreVoteMsg:
    payload_hash: bytes
    seq: int
    vote: PreVote


def parse_prevote(subject: str, data: bytes) -> PreVoteMsg:
    body = _json(subject, PREVOTE_TYPE, data)
    return PreVoteMsg(
        bytes.fromhex(body["hash"]),
        int(body["seq"]),
        PreVote(
            int(body["member"]),
            bytes.fromhex(body["old"]),
            bytes.fromhex(body["new"]),
            bytes.fromhex(body["sig"]),
        ),
    )


# -- a BLS vote share ---------------------------------------------------------------------------
def vote_body(phash: bytes, member: int, old: bytes, new: bytes, sig: tuple[int, int]) -> bytes:
    return json.dumps(
        {
            "hash": phash.hex(),
            "member": member,
            "old": old.hex(),
            "new": new.hex(),
            "sig": [str(sig[0]), str(sig[1])],
        },
        separators=(",", ":"),
    ).encode()


@dataclass(frozen=True)
class VoteShare:
    group: bytes
    payload_hash: bytes
    member: int
    old_root: bytes
    new_root: bytes
    sig: tuple[int, int]


def parse_vote(subject: str, data: bytes) -> VoteShare:
    group = _group_of(subject)
    body = _json(subject, VOTE_TYPE, data)
    return VoteShare(
        group,
        bytes.fromhex(body["hash"]),
        int(body["member"]),
        bytes.fromhex(body["old"]),
        bytes.fromhex(body["new"]),
        (int(body["sig"][0]), int(body["sig"][1])),
    )


# -- dead letters -------------------------------------------------------------------------------
async def dead_letter(js: JetStreamContext, msg: Msg, reason: str, worker: str) -> None:
    """Keep ``msg`` in the DLQ stream under ``dlq.<subject>`` with the reason (as the worker
    base does); the same bad message twice is kept once."""
    digest = hashlib.sha256(msg.subject.encode() + b"\0" + bytes(msg.data)).hexdigest()[:32]
    headers = {
        "Shardline-Reason": reason[:1000],
        "Shardline-Subject": msg.subject,
        "Shardline-Worker": worker,
        "Nats-Msg-Id": f"dlq:core:{digest}",
    }
    try:
        await js.publish(subjects.dlq(msg.subject), bytes(msg.data), headers=headers)
    except Exception as exc:  # the dead letters are best effort; the reason is logged anyway
        log.warn("privtx.dead_letter_failed", subject=msg.subject, error=repr(exc))
    log.warn("privtx.dead_letter", worker=worker, subject=msg.subject, reason=reason)
