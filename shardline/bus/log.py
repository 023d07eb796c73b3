"""Structured logs: one JSON object a line, with the trace id that travels with each request."""

from __future__ import annotations

import gc
import json
import logging
import sys
import time
from typing import Any

from shardline.bus import telemetry

_logger = logging.getLogger("shardline")

GC_PAUSE_LOGGED_S = 0.05  # a garbage collection that stops a worker longer than this is logged


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        data.update(getattr(record, "fields", {}))
        if not data.get("trace_id") and (trace := telemetry.current_trace.get()):
            data["trace_id"] = trace  # the message being handled, when not said otherwise
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def setup(level: str = "INFO", stream=None) -> None:
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("nats", "web3", "urllib3", "httpx", "uvicorn.access"):
        logging.getLogger(noisy).setLevel("WARNING")
    if _gc_pause not in gc.callbacks:
        gc.callbacks.append(_gc_pause)


_gc_started = 0.0


def _gc_pause(phase: str, info: dict) -> None:
    """Log a long garbage collection: the whole process stops for it, every lookup with it (a
    gateway that kept finished lookups as dicts paused 0.5 s every few seconds at 200/s)."""
    global _gc_started
    if phase == "start":
        _gc_started = time.perf_counter()
        return
    took = time.perf_counter() - _gc_started
    # not for a process on its way out, or one whose logging was taken down
    if took >= GC_PAUSE_LOGGED_S and not sys.is_finalizing() and logging.getLogger().handlers:
        warn(
            "gc.pause",
            generation=info["generation"],
            ms=round(1000 * took, 1),
            collected=info["collected"],
        )


def event(name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event. Never pass key material or plaintext records as fields."""
    _logger.log(level, name, extra={"fields": fields})


def warn(name: str, **fields: Any) -> None:
    event(name, logging.WARNING, **fields)


def error(name: str, **fields: Any) -> None:
    _logger.error(name, extra={"fields": fields}, exc_info=sys.exc_info()[0] is not None)
