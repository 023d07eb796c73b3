"""The JSON Schemas: valid, one per message type, covering the subject catalogue."""

from __future__ import annotations

import json
import re
from importlib import resources

import fastjsonschema
import pytest

from shardline import schemas
from shardline.bus import subjects

SCHEMA_DIR = resources.files("shardline.schemas")
FILES = sorted(p.name for p in SCHEMA_DIR.iterdir() if p.name.endswith(".json"))


def test_there_are_schema_files():
    assert "envelope.json" in FILES
    assert len(FILES) >= 2


@pytest.mark.parametrize("name", FILES)
def test_every_schema_file_compiles(name):
    doc = json.loads((SCHEMA_DIR / name).read_text())
    validate = fastjsonschema.compile(doc)
    assert callable(validate)
    assert doc["title"] == name.removesuffix(".json")
    assert doc["$id"].endswith("/" + name)
    assert doc["type"] == "object"
    assert doc["additionalProperties"] is False
    with pytest.raises(fastjsonschema.JsonSchemaValueException):
        validate([])  # not an object


def test_every_message_type_has_a_file():
    types = schemas.message_types()
    assert types
    assert "envelope" not in types
    for t in types:
        assert f"{t}.json" in FILES
        assert schemas.schema(t)["title"] == t


def test_every_file_is_a_message_type_or_the_envelope():
    assert sorted([*schemas.message_types(), "envelope"]) == [
        f.removesuffix(".json") for f in FILES
    ]


def test_message_type_names_fit_the_envelope_pattern():
    pattern = re.compile(schemas.schema("envelope")["properties"]["type"]["pattern"])
    for t in schemas.message_types():
        assert pattern.match(t), t


def test_catalogue_types_all_have_schemas():
    cat = subjects.catalogue()
    assert cat
    for subject, msg_type in cat.items():
        assert msg_type in schemas.message_types(), (subject, msg_type)
        assert subject.startswith(msg_type.split(".")[0] + ".")
        assert subject == subject.lower()


def test_unknown_schema_name_raises():
    with pytest.raises(schemas.SchemaError, match="no schema for message type 'nope'"):
        schemas.validate("nope", {})


def test_validate_names_the_type():
    with pytest.raises(schemas.SchemaError, match=r"^lookup\.progress: "):
        schemas.validate("lookup.progress", {"guid": "x"})


def test_warm_compiles_ahead_and_names_an_unknown_type():
    schemas._validator.cache_clear()
    schemas.warm(["envelope", "lookup.share", "lookup.share"])
    assert schemas._validator.cache_info().currsize == 2
    misses = schemas._validator.cache_info().misses
    schemas._validator("lookup.share")  # compiled already: a hit, no second compile
    assert schemas._validator.cache_info().misses == misses
    with pytest.raises(schemas.SchemaError, match="no schema for message type 'nope'"):
        schemas.warm(["nope"])


def test_workers_declare_the_types_they_publish():
    """What a worker sends is compiled when it starts (``Worker.publishes``): a misspelt type
    would fail there, so each must be a message type."""
    from shardline.workers.analytics_server import AnalyticsServer
    from shardline.workers.share_node import ShareNode

    for worker in (ShareNode, AnalyticsServer):
        assert worker.publishes
        assert set(worker.publishes) <= set(schemas.message_types()), worker
