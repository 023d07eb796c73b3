"""Import a CSV or JSON file of contacts into an org's store, with a column mapping."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from shardline.contacts.store import ContactStore, ImportReport
from shardline.core.contacts import MappingError, identity_mapping, read_file_text


def load_mapping(spec: str | None) -> dict | None:
    """A mapping from a JSON file path or inline JSON: ``{"given_name": "first", ...}``."""
    if not spec:
        return None
    text = Path(spec).read_text() if Path(spec).exists() else spec
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MappingError(f"the mapping is neither a file nor JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MappingError('the mapping must be a JSON object like {"given_name": "first"}')
    return data


def import_file(
    store: ContactStore,
    path: Path,
    secret: bytes,
    mapping: dict | None = None,
    fmt: str | None = None,
) -> ImportReport:
    raw = path.read_bytes()
    fmt = fmt or ("json" if path.suffix.lower() in (".json", ".jsonl", ".ndjson") else "csv")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MappingError(f"{path} is not UTF-8 text ({exc}); convert it first") from None
    if mapping is None:
        first = text.splitlines()[0] if text else ""
        cols = (
            first.split(",")
            if fmt == "csv"
            else list(json.loads(text)[0])
            if text.strip().startswith("[")
            else list(json.loads(first))
        )
        mapping = identity_mapping(c.strip() for c in cols)
    result = read_file_text(text, fmt, mapping)
    return store.import_result(
        result,
        file_name=path.name,
        file_sha256=hashlib.sha256(raw).hexdigest(),
        fmt=fmt,
        mapping=mapping,
        secret=secret,
    )
