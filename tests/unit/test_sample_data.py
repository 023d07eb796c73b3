"""Checks for the SAMPLE data files in shardline/data (not for operational use)."""

from __future__ import annotations

import csv
import datetime as dt
import importlib.util
import json
import re
from collections import Counter
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2] / "shardline/data"
GOODS_CSV = DATA / "dangerous_goods.csv"
GUIDES_JSON = DATA / "erg_guides.json"
TRANSPORTS_CSV = DATA / "transports.csv"
MAKE_SAMPLE = DATA / "make_sample.py"

GOODS_HEADER = [
    "un_number",
    "proper_shipping_name",
    "hazard_class",
    "subsidiary_risks",
    "packing_group",
    "erg_guide",
]
TRANSPORTS_HEADER = [
    "transport_id",
    "company",
    "carrier",
    "vehicle",
    "origin",
    "destination",
    "un_number",
    "quantity",
    "unit",
    "containment",
    "packages",
    "emergency_contact_name",
    "emergency_contact_phone",
    "departure",
]
# UN classes and divisions; class 1 carries a compatibility group letter.
DIVISIONS = {
    "2.1",
    "2.2",
    "2.3",
    "3",
    "4.1",
    "4.2",
    "4.3",
    "5.1",
    "5.2",
    "6.1",
    "6.2",
    "7",
    "8",
    "9",
}
EXPLOSIVE = re.compile(r"^1\.[1-6][A-HJKLNS]$")
UN_RE = re.compile(r"^UN\d{4}$")
GUIDE_RE = re.compile(r"^1[1-7]\dP?$")
ID_RE = re.compile(r"^TR-\d{6}$")
COMPANIES = {"org1", "org2", "org3", "org4"}
DISCLAIMER = "SAMPLE DATA"


def valid_class(value: str) -> bool:
    return value in DIVISIONS or bool(EXPLOSIVE.match(value))


def read_csv(path: Path) -> tuple[list[str], list[str], list[dict[str, str]]]:
    """Return (comment lines, header, rows), skipping '#' lines."""
    with open(path, encoding="utf-8", newline="") as fh:
        lines = fh.readlines()
    comments = [ln for ln in lines if ln.startswith("#")]
    body = [ln for ln in lines if not ln.startswith("#")]
    reader = csv.DictReader(body)
    rows = list(reader)
    return comments, list(reader.fieldnames or []), rows


@pytest.fixture(scope="module")
def goods():
    return read_csv(GOODS_CSV)


@pytest.fixture(scope="module")
def guides():
    with open(GUIDES_JSON, encoding="utf-8") as fh:
        return json.load(fh)


@pytest.fixture(scope="module")
def transports():
    return read_csv(TRANSPORTS_CSV)


def load_make_sample():
    spec = importlib.util.spec_from_file_location("shardline_make_sample", MAKE_SAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- dangerous_goods.csv -------------------------------------------------


def test_goods_marked_as_sample_and_header(goods):
    comments, header, _ = goods
    first_line = GOODS_CSV.read_text(encoding="utf-8").splitlines()[0]
    assert first_line.startswith("# ") and DISCLAIMER in first_line
    assert "Not for operational use" in first_line
    assert len(comments) == 1
    assert header == GOODS_HEADER


def test_goods_count_and_unique_un_numbers(goods):
    _, _, rows = goods
    assert len(rows) >= 45
    uns = [r["un_number"] for r in rows]
    bad = [u for u in uns if not UN_RE.match(u)]
    assert not bad, f"malformed UN numbers: {bad}"
    dupes = [u for u, n in Counter(uns).items() if n > 1]
    assert not dupes, f"duplicate UN numbers: {dupes}"


def test_goods_names_present(goods):
    _, _, rows = goods
    bad = [
        r["un_number"]
        for r in rows
        if not r["proper_shipping_name"].strip()
        or r["proper_shipping_name"] != r["proper_shipping_name"].upper()
    ]
    assert not bad, f"missing or non-upper-case names: {bad}"


def test_goods_hazard_classes_valid(goods):
    _, _, rows = goods
    bad = [(r["un_number"], r["hazard_class"]) for r in rows if not valid_class(r["hazard_class"])]
    assert not bad, f"invalid hazard classes: {bad}"


def test_goods_subsidiary_risks_valid(goods):
    _, _, rows = goods
    bad = []
    for r in rows:
        subs = r["subsidiary_risks"]
        if not subs:
            continue
        parts = subs.split(";")
        if (
            any(p not in DIVISIONS for p in parts)
            or r["hazard_class"] in parts
            or len(set(parts)) != len(parts)
        ):
            bad.append((r["un_number"], subs))
    assert not bad, f"invalid subsidiary risks: {bad}"


def test_goods_packing_groups_valid(goods):
    _, _, rows = goods
    bad = [
        (r["un_number"], r["packing_group"])
        for r in rows
        if r["packing_group"] not in {"", "I", "II", "III"}
    ]
    assert not bad, f"invalid packing groups: {bad}"
    # Gases (class 2), class 1 and class 7 are never assigned a packing group.
    no_pg = [r["un_number"] for r in rows if r["hazard_class"][0] in "127" and r["packing_group"]]
    assert not no_pg, f"packing group on class 1/2/7 entries: {no_pg}"


def test_goods_guide_numbers_well_formed(goods):
    _, _, rows = goods
    bad = [(r["un_number"], r["erg_guide"]) for r in rows if not GUIDE_RE.match(r["erg_guide"])]
    assert not bad, f"malformed ERG guide numbers: {bad}"


# --- erg_guides.json -----------------------------------------------------


def test_guides_note_is_disclaimer(guides):
    assert DISCLAIMER in guides.get("_note", "")
    assert "Not for operational use" in guides["_note"]


def test_every_used_guide_is_described(goods, guides):
    _, _, rows = goods
    used = {r["erg_guide"] for r in rows}
    missing = sorted(used - set(guides))
    assert not missing, f"guides used in dangerous_goods.csv but missing: {missing}"
    for number in sorted(used):
        guide = guides[number]
        assert isinstance(guide.get("title"), str) and guide["title"].strip(), number
        iso = guide.get("isolate_m")
        assert isinstance(iso, int) and not isinstance(iso, bool) and iso > 0, number
        for key in ("do", "never"):
            items = guide.get(key)
            assert isinstance(items, list) and items, f"{number}: empty {key}"
            assert all(isinstance(s, str) and s.strip() and len(s) < 70 for s in items), (
                f"{number}: bad {key} item"
            )


def test_guide_entries_well_formed(guides):
    keys = [k for k in guides if k != "_note"]
    assert keys
    bad = [k for k in keys if not GUIDE_RE.match(k)]
    assert not bad, f"malformed guide keys: {bad}"
    for k in keys:
        assert 3 <= len(guides[k]["do"]) <= 6, k
        assert 2 <= len(guides[k]["never"]) <= 4, k
        assert all(s.lower().startswith(("do not", "never")) for s in guides[k]["never"]), k


# --- transports.csv ------------------------------------------------------


def test_transports_marked_as_sample_and_header(transports):
    _, header, _ = transports
    first_line = TRANSPORTS_CSV.read_text(encoding="utf-8").splitlines()[0]
    assert first_line.startswith("# ") and DISCLAIMER in first_line
    assert header == TRANSPORTS_HEADER


def test_transport_ids_unique_and_well_formed(transports):
    _, _, rows = transports
    assert len(rows) >= 240
    ids = [r["transport_id"] for r in rows]
    bad = [i for i in ids if not ID_RE.match(i)]
    assert not bad, f"malformed transport ids: {bad}"
    dupes = [i for i, n in Counter(ids).items() if n > 1]
    assert not dupes, f"duplicate transport ids: {dupes}"


def test_transport_un_numbers_known_and_varied(goods, transports):
    known = {r["un_number"] for r in goods[2]}
    used = [r["un_number"] for r in transports[2]]
    unknown = sorted(set(used) - known)
    assert not unknown, f"UN numbers not in dangerous_goods.csv: {unknown}"
    assert len(set(used)) >= 40


def test_transport_companies(transports):
    counts = Counter(r["company"] for r in transports[2])
    assert set(counts) <= COMPANIES, f"unexpected companies: {set(counts) - COMPANIES}"
    for company in sorted(COMPANIES):
        assert counts[company] >= 40, f"{company} has only {counts[company]} transports"


def test_transport_fields_plausible(goods, transports):
    classes = {r["un_number"]: r["hazard_class"] for r in goods[2]}
    for r in transports[2]:
        tid = r["transport_id"]
        assert r["origin"] != r["destination"], tid
        for place in (r["origin"], r["destination"]):
            assert re.match(r"^[^,]+, [A-Z]{2}$", place), (tid, place)
        assert r["unit"] in {"L", "kg"}, tid
        assert r["containment"] in {"tank", "IBC", "drums", "cylinders", "bags", "boxes"}, tid
        quantity, packages = int(r["quantity"]), int(r["packages"])
        assert quantity > 0 and packages > 0, tid
        if r["containment"] == "tank":
            assert packages == 1, tid
        if classes[r["un_number"]].startswith("2"):
            assert r["containment"] in {"tank", "cylinders"}, tid
        assert r["carrier"].strip() and r["vehicle"].strip(), tid
        assert r["emergency_contact_name"].strip(), tid
        assert re.match(r"^\+\d{2,3} \d{1,4} 555\d \d{4}$", r["emergency_contact_phone"]), tid
        assert dt.date.fromisoformat(r["departure"]).year == 2026, tid


def test_generator_is_deterministic(tmp_path):
    module = load_make_sample()
    assert module.SEED == 2026
    first = module.generate(tmp_path / "a.csv")
    second = module.generate(tmp_path / "b.csv")
    expected = TRANSPORTS_CSV.read_bytes()
    assert Path(first).read_bytes() == expected, "transports.csv is stale; rerun make_sample.py"
    assert Path(second).read_bytes() == expected
