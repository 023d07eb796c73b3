"""Metrics and trace context: the switch that turns them off, and the W3C ``traceparent`` header.

A lookup's trace id is its guid. It travels in every envelope (``trace_id``) and in the NATS
header ``traceparent`` (``00-<trace id>-<span id>-01``, W3C Trace Context); each hop gives its
messages a fresh span id. While a worker handles a message, the trace id sits in a context
variable, so every log line the handler writes carries it without being told.

``enabled`` is on in every real deployment; the stack configuration's ``telemetry: false`` turns
metrics and trace headers off, only so that a benchmark can measure what they cost.
"""

from __future__ import annotations

import contextvars
import re
import secrets

enabled = True

current_trace: contextvars.ContextVar[str] = contextvars.ContextVar("trace_id", default="")
current_parent: contextvars.ContextVar[str] = contextvars.ContextVar("parent_span", default="")

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")


def set_enabled(on: bool) -> None:
    global enabled
    enabled = bool(on)


def traceparent(trace_id: str, span_id: str | None = None) -> str:
    """The W3C header for ``trace_id`` (32 hex digits) with a new span id unless one is given."""
    return f"00-{trace_id}-{span_id or secrets.token_hex(8)}-01"


def parse_traceparent(value: str | None) -> tuple[str, str] | None:
    """(trace id, parent span id) from a ``traceparent`` header, or None when it is not one."""
    if not value:
        return None
    m = _TRACEPARENT.match(value.strip().lower())
    if m is None or m.group(1) == "0" * 32 or m.group(2) == "0" * 16:
        return None
    return m.group(1), m.group(2)


def bind(trace_id: str, parent_span: str = "") -> None:
    """Make ``trace_id`` the current task's trace (each handled message runs in its own task)."""
    current_trace.set(trace_id)
    current_parent.set(parent_span)
