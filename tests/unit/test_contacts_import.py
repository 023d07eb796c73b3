"""Contact import: mapping, normalisation with the original kept, malformed rows by line and field,
the store's Alembic schema, keys in canonical JSON and the per-org anonymous id."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import inspect

from shardline.contacts.importer import import_file
from shardline.contacts.store import ContactStore, contact_secret
from shardline.core import contacts
from shardline.core.contact_keys import PhoneticKeys, anonymous_id, phonetic_keys
from shardline.core.contacts import MappingError, read_csv, read_json

MAPPING = {
    "given_name": "First",
    "family_name": "Last",
    "birth_date": "Born",
    "phone": "Tel",
    "address": ["Street", "Town"],
}
CSV = (
    "First,Last,Born,Tel,Street,Town\n"
    "Mohammed,Al-Hassan,1980-03-04,+961 1 234 567,Rue Clemenceau,Beyrouth\n"
    "  JOSÉ ,Núñez,04/03/1980,,Calle 5,Sevilla\n"
    "محمد,حسن,1979-13-01,,x,y\n"
    ",,,,,\n"
    "Amira,Haddad,19910512,+33 6 11,Rue A,Lyon\n"
)


def test_rows_are_normalised_and_the_original_is_kept():
    result = read_csv(CSV, MAPPING)
    assert result.rows == 5
    first, jose, amira = result.records
    assert (first.given_name, first.family_name) == ("mohammed", "al hassan")
    assert first.phone == "9611234567"
    assert first.address == "rue clemenceau beyrouth"
    assert (jose.given_name, jose.family_name, jose.birth_date) == ("jose", "nunez", "1980-03-04")
    assert jose.original["First"] == "JOSÉ "  # as typed, before any folding
    assert amira.birth_date == "1991-05-12"


def test_a_malformed_row_names_its_line_and_field_and_the_rest_imports():
    result = read_csv(CSV, MAPPING)
    errors = [(e.line, e.field) for e in result.errors]
    assert errors == [(4, "birth_date"), (5, "given_name")]
    assert "1979-13-01" in str(result.errors[0])
    assert [r.line for r in result.records] == [2, 3, 6]


def test_arabic_script_is_transliterated_to_latin():
    assert contacts.name("محمد") == "mhmd"
    assert contacts.name("Muḥammad") == "muhammad"


def test_a_mapping_naming_a_missing_column_is_refused_with_the_columns():
    with pytest.raises(MappingError, match="no such column; columns: "):
        read_csv(CSV, {**MAPPING, "email": "Mail"})
    with pytest.raises(MappingError, match="unknown field"):
        read_csv(CSV, {"nick": "First"})


def test_json_arrays_and_lines_import_alike():
    rows = [{"First": "Ana", "Last": "Silva", "Born": "1970-01-01"}, "oops", {"First": "Rui"}]
    result = read_json(
        json.dumps(rows), {"given_name": "First", "family_name": "Last", "birth_date": "Born"}
    )
    assert [r.given_name for r in result.records] == ["ana", "rui"]
    assert [(e.line, e.field) for e in result.errors] == [(2, "(row)")]
    lines = '{"First": "Ana", "Last": "Silva"}\n{not json}\n'
    result = read_json(lines, {"given_name": "First", "family_name": "Last"})
    assert len(result.records) == 1 and result.errors[0].line == 2


def test_phonetic_keys_are_canonical_json_and_spelling_variants_share_them():
    a, b = read_csv(
        "g,f\nMohammed,Ali\nMohamed,Aly\n", {"given_name": "g", "family_name": "f"}
    ).records
    ka, kb = phonetic_keys(a), phonetic_keys(b)
    assert ka.given_metaphone == kb.given_metaphone
    text = ka.to_json()
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    assert PhoneticKeys.from_json(text) == ka


def test_the_anonymous_id_depends_on_the_org_secret():
    rec = read_csv("g,f\nAna,Silva\n", {"given_name": "g", "family_name": "f"}).records[0]
    s1, s2 = contact_secret(b"1" * 32), contact_secret(b"2" * 32)
    assert anonymous_id(rec, s1) == anonymous_id(rec, s1)
    assert anonymous_id(rec, s1) != anonymous_id(rec, s2)
    with pytest.raises(ValueError, match="32 bytes"):
        anonymous_id(rec, b"short")


def test_the_store_is_made_by_migrations_and_imports_once(tmp_path):
    store = ContactStore(f"sqlite:///{tmp_path / 'org.db'}")
    tables = set(inspect(store.engine).get_table_names())
    assert {"contacts", "contact_imports", "dedup_jobs", "alembic_version_contacts"} <= tables
    f = tmp_path / "people.csv"
    f.write_text(CSV, encoding="utf-8")
    secret = contact_secret(b"k" * 32)
    report = import_file(store, f, secret, MAPPING)
    assert (report.rows, report.imported) == (5, 3)
    assert [(e.line, e.field) for e in report.errors] == [(4, "birth_date"), (5, "given_name")]
    again = import_file(store, f, secret, MAPPING)
    assert again.already and store.count() == 3
    stored = store.contacts()
    assert json.loads(stored[1].original_json)["Last"] == "Núñez"
    assert PhoneticKeys.from_json(stored[0].keys_json).given_metaphone
    # a second open of the same database finds the schema current and keeps the data
    assert ContactStore(store.url).count() == 3
