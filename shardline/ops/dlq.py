"""Dead letters: what a worker could not process, kept in the DLQ stream under ``dlq.<subject>``.

Each keeps the original bytes and the headers the worker base set: ``Shardline-Reason``,
``Shardline-Subject`` (where it came from), ``Shardline-Worker`` and, when known,
``Shardline-Trace``. Listing and showing never open a sealed body; replay publishes the original
bytes to the original subject again (with a fresh message id, so the stream's duplicate window
does not drop it) and then removes the dead letter, unless asked to keep it.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from shardline.bus import subjects
from shardline.ops.tail import describe

STREAM = "DLQ"


class DeadLetterError(LookupError):
    pass


@dataclass
class DeadLetter:
    seq: int
    subject: str  # the original subject
    reason: str
    worker: str
    trace_id: str
    at: float  # when it became a dead letter (epoch seconds)
    size: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _letter(raw) -> DeadLetter:
    h = raw.headers or {}
    return DeadLetter(
        seq=raw.seq,
        subject=h.get("Shardline-Subject") or raw.subject.removeprefix(subjects.DLQ_PREFIX),
        reason=h.get("Shardline-Reason", ""),
        worker=h.get("Shardline-Worker", ""),
        trace_id=h.get("Shardline-Trace", ""),
        at=raw.time.timestamp() if raw.time else 0.0,
        size=len(raw.data or b""),
    )


async def listing(
    js: JetStreamContext, *, subject: str | None = None, limit: int = 200
) -> list[DeadLetter]:
    """The newest ``limit`` dead letters (oldest first), optionally of one original subject."""
    try:
        info = await js.stream_info(STREAM)
    except NotFoundError:
        return []
    state = info.state
    if not state.messages:
        return []
    want = subjects.dlq(subject) if subject else f"{subjects.DLQ_PREFIX}>"
    found: list[DeadLetter] = []
    seq = max(state.first_seq, state.last_seq - 4 * limit)
    while seq <= state.last_seq:
        try:
            raw = await js.get_msg(STREAM, seq=seq, subject=want, next=True)
        except NotFoundError:
            break
        found.append(_letter(raw))
        seq = raw.seq + 1
    return found[-limit:]


async def counts(js: JetStreamContext) -> dict[str, int]:
    """Original subject -> how many dead letters it has."""
    try:
        info = await js.stream_info(STREAM, subjects_filter=f"{subjects.DLQ_PREFIX}>")
    except NotFoundError:
        return {}
    return {
        s.removeprefix(subjects.DLQ_PREFIX): n
        for s, n in sorted((info.state.subjects or {}).items())
    }


async def show(js: JetStreamContext, seq: int) -> dict[str, Any]:
    """One dead letter: its headers and the envelope's fields, never a sealed body's plaintext."""
    raw = await _get(js, seq)
    letter = _letter(raw)
    return {
        **letter.to_dict(),
        "headers": dict(raw.headers or {}),
        "message": describe(raw.data or b""),
    }


async def replay(js: JetStreamContext, seq: int, *, keep: bool = False) -> dict[str, Any]:
    """Publish a dead letter's original bytes to its original subject again."""
    raw = await _get(js, seq)
    letter = _letter(raw)
    headers = {"Nats-Msg-Id": f"replay:{seq}:{time.time_ns()}", "Shardline-Replay-Of": str(seq)}
    if letter.trace_id:
        from shardline.bus.telemetry import traceparent

        headers["traceparent"] = traceparent(letter.trace_id)
    ack = await js.publish(letter.subject, raw.data or b"", headers=headers)
    if not keep:
        await js.delete_msg(STREAM, seq)
    return {"replayed": seq, "subject": letter.subject, "stream": ack.stream, "seq": ack.seq}


async def _get(js: JetStreamContext, seq: int):
    try:
        raw = await js.get_msg(STREAM, seq=seq)
    except NotFoundError:
        raise DeadLetterError(
            f"no dead letter {seq} in the {STREAM} stream: see `shardline dlq list`"
        ) from None
    if not raw.subject or not raw.subject.startswith(subjects.DLQ_PREFIX):
        raise DeadLetterError(f"message {seq} of {STREAM} is not a dead letter")
    return raw


def dumps(value: Any) -> str:
    return json.dumps(value, indent=2, default=str)
