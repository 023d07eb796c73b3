"""`shardline logs --trace ID`: one request's whole path through the local stack's logs.

Every process of the local stack writes JSON lines to ``<run dir>/logs/<process>.log``; each line
a worker writes while it handles a message carries the message's trace id (a lookup's guid).
This reads every log, keeps the lines of one trace, and orders them by time.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

TRACE_ID = re.compile(r"^[0-9a-f]{32}$")


class TraceError(ValueError):
    pass


def check_trace_id(trace_id: str) -> str:
    t = trace_id.strip().lower()
    if not TRACE_ID.match(t):
        raise TraceError(
            f"{trace_id!r} is not a trace id: give the 32 hex digits of a lookup's guid "
            "(`shardline lookup ... --json` prints it)"
        )
    return t


def trace(log_dir: Path, trace_id: str) -> list[dict[str, Any]]:
    """The JSON log lines of one trace in every ``*.log`` under ``log_dir``, oldest first."""
    t = check_trace_id(trace_id)
    if not log_dir.is_dir():
        raise TraceError(f"no logs at {log_dir}: is the stack running from this directory?")
    found: list[dict[str, Any]] = []
    for path in sorted(log_dir.glob("*.log")):
        with path.open(errors="replace") as f:
            for line in f:
                if t not in line:  # cheap first: most lines are of other traces
                    continue
                try:
                    data = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(data, dict):
                    continue
                if data.get("trace_id") == t or t in data.values():
                    found.append({"process": path.stem, **data})
    found.sort(key=lambda d: d.get("ts", 0.0))
    return found
