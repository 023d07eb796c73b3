"""One JSON Schema per message type: the contract between workers, in any language.

Each schema file is named after its message type (``lookup.share.json``); ``envelope.json`` is
the outer form every message shares. Validators are compiled once per process.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import fastjsonschema

SCHEMA_VERSION = 1


class SchemaError(ValueError):
    """A message that does not match its schema; the text names the type and the field."""


def _files() -> dict[str, Any]:
    root = resources.files(__name__)
    return {p.name[: -len(".json")]: p for p in root.iterdir() if p.name.endswith(".json")}


@cache
def message_types() -> tuple[str, ...]:
    return tuple(sorted(n for n in _files() if n != "envelope"))


@cache
def schema(name: str) -> dict:
    files = _files()
    if name not in files:
        raise SchemaError(
            f"no schema for message type {name!r}; known: {', '.join(message_types())}"
        )
    return json.loads(files[name].read_text())


@cache
def _validator(name: str):
    return fastjsonschema.compile(schema(name))


def warm(names: list[str]) -> None:
    """Compile the envelope's and these types' validators now (a worker, before it takes
    messages): compiling one costs tens of milliseconds, which the first message of its type
    would otherwise wait for."""
    for name in ("envelope", *names):
        _validator(name)


def validate(name: str, data: Any) -> None:
    try:
        _validator(name)(data)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise SchemaError(f"{name}: {exc.message}") from None
