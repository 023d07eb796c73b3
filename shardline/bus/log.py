"""Structured logs: one JSON object a line, with the trace id that travels with each request."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from shardline.bus import telemetry

_logger = logging.getLogger("shardline")


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


def event(name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event. Never pass key material or plaintext records as fields."""
    _logger.log(level, name, extra={"fields": fields})


def warn(name: str, **fields: Any) -> None:
    event(name, logging.WARNING, **fields)


def error(name: str, **fields: Any) -> None:
    _logger.error(name, extra={"fields": fields}, exc_info=sys.exc_info()[0] is not None)
