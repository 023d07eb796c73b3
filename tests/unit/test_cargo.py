"""Cargo sheets and the transports CSV reader."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from shardline.core.cargo import (
    TRANSPORT_COLUMNS,
    CargoSheet,
    DataError,
    by_id,
    read_transports,
    sample_transports_path,
)


@pytest.fixture(scope="module")
def sheets() -> list[CargoSheet]:
    return read_transports(sample_transports_path())


def sample_header() -> list[str]:
    lines = [
        ln for ln in sample_transports_path().read_text().splitlines() if not ln.startswith("#")
    ]
    return next(csv.reader(lines))


def good_row(**overrides: str) -> dict[str, str]:
    row = {
        "transport_id": "TR-1",
        "company": "org1",
        "carrier": "Carrier Ltd",
        "vehicle": "AB 123",
        "origin": "Ghent, BE",
        "destination": "Milan, IT",
        "un_number": "UN1079",
        "quantity": "16500",
        "unit": "kg",
        "containment": "tank",
        "packages": "1",
        "emergency_contact_name": "Marta Martinez",
        "emergency_contact_phone": "+34 977 5551 1378",
        "departure": "2026-01-05",
    }
    row.update(overrides)
    return row


def write_csv(path: Path, rows: list[dict[str, str]], comment: str | None = None) -> Path:
    buf = io.StringIO()
    if comment:
        buf.write(comment + "\n")
    w = csv.DictWriter(buf, fieldnames=sample_header(), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    path.write_text(buf.getvalue())
    return path


def test_header_matches_transport_columns():
    assert tuple(sample_header()) == TRANSPORT_COLUMNS


def test_sample_file_has_many_unique_sheets(sheets):
    assert len(sheets) >= 200
    assert len({s.transport_id for s in sheets}) == len(sheets)
    assert all(s.sample_data for s in sheets)
    assert len(by_id(sheets)) == len(sheets)


def test_canonical_bytes_round_trip(sheets):
    for s in sheets:
        raw = s.canonical_bytes()
        back = CargoSheet.from_bytes(raw)
        assert back == s
        assert back.canonical_bytes() == raw


def test_canonical_bytes_are_sorted_compact_json(sheets):
    for s in sheets[:20]:
        raw = s.canonical_bytes()
        again = json.dumps(
            json.loads(raw), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()
        assert raw == again
    assert sheets[0].canonical_bytes().startswith(b'{"carrier":')


def test_from_bytes_rejects_extra_fields(sheets):
    raw = sheets[0].canonical_bytes()
    with pytest.raises(ValidationError):
        CargoSheet.from_bytes(raw[:-1] + b',"extra":1}')


def test_small_file_reads_and_fills_from_tables(tmp_path):
    path = write_csv(tmp_path / "t.csv", [good_row(), good_row(transport_id="TR-2")])
    got = read_transports(path)
    assert [s.transport_id for s in got] == ["TR-1", "TR-2"]
    s = got[0]
    assert s.un_number == "UN1079"
    assert s.proper_shipping_name  # from dangerous_goods.csv
    assert s.erg_guide and s.erg_title and s.do and s.never
    assert s.quantity == 16500.0 and s.packages == 1
    assert s.emergency_contact.phone == "+34 977 5551 1378"
    assert s.sample_data is False


def test_sample_marker_sets_sample_data(tmp_path):
    path = write_csv(tmp_path / "t.csv", [good_row()], comment="# SAMPLE DATA test")
    assert read_transports(path)[0].sample_data is True


def test_lower_case_un_number_is_normalised(tmp_path):
    path = write_csv(tmp_path / "t.csv", [good_row(un_number=" un1079 ")])
    assert read_transports(path)[0].un_number == "UN1079"


def test_unknown_un_number(tmp_path):
    path = write_csv(
        tmp_path / "t.csv", [good_row(), good_row(transport_id="TR-2", un_number="UN0000")]
    )
    with pytest.raises(DataError) as info:
        read_transports(path)
    msg = str(info.value)
    assert str(path) in msg
    assert "row 3" in msg
    assert "UN0000" in msg and "dangerous goods" in msg


@pytest.mark.parametrize("column", ["company", "quantity", "emergency_contact_phone", "departure"])
def test_missing_column_value(tmp_path, column):
    path = write_csv(tmp_path / "t.csv", [good_row(**{column: "  "})])
    with pytest.raises(DataError) as info:
        read_transports(path)
    msg = str(info.value)
    assert str(path) in msg
    assert "row 2" in msg
    assert f"missing {column}" in msg


@pytest.mark.parametrize(("column", "value"), [("quantity", "lots"), ("packages", "1.5")])
def test_non_numeric_quantity(tmp_path, column, value):
    path = write_csv(
        tmp_path / "t.csv", [good_row(), good_row(transport_id="TR-2", **{column: value})]
    )
    with pytest.raises(DataError) as info:
        read_transports(path)
    msg = str(info.value)
    assert str(path) in msg
    assert "row 3" in msg
    assert "must be numbers" in msg
    assert value in msg


def test_duplicate_transport_id_names_file_and_id(tmp_path):
    path = write_csv(tmp_path / "t.csv", [good_row(), good_row(transport_id="TR-2"), good_row()])
    with pytest.raises(DataError) as info:
        read_transports(path)
    msg = str(info.value)
    assert str(path) in msg
    assert "TR-1" in msg and "twice" in msg


def test_duplicate_transport_id_names_the_row(tmp_path):
    path = write_csv(tmp_path / "t.csv", [good_row(), good_row(transport_id="TR-2"), good_row()])
    with pytest.raises(DataError, match="row 4"):
        read_transports(path)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.csv"
    with pytest.raises(DataError, match="cannot read") as info:
        read_transports(path)
    assert str(path) in str(info.value)


def test_header_only_file(tmp_path):
    path = write_csv(tmp_path / "t.csv", [])
    with pytest.raises(DataError, match="no transports found") as info:
        read_transports(path)
    assert str(path) in str(info.value)


def test_missing_column_in_header(tmp_path):
    path = tmp_path / "t.csv"
    row = good_row()
    del row["vehicle"]
    path.write_text(",".join(row) + "\n" + ",".join(f'"{v}"' for v in row.values()) + "\n")
    with pytest.raises(DataError, match="missing vehicle"):
        read_transports(path)


def test_utf8_file_with_byte_order_mark_reads(tmp_path):
    """Excel's "CSV UTF-8" starts the file with a BOM; the header must still be found."""
    path = write_csv(tmp_path / "t.csv", [good_row(company="Química SA")])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    got = read_transports(path)
    assert [s.transport_id for s in got] == ["TR-1"]
    assert got[0].company == "Química SA"


def test_sample_marker_is_seen_after_a_byte_order_mark(tmp_path):
    path = write_csv(tmp_path / "t.csv", [good_row()], comment="# SAMPLE DATA test")
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert read_transports(path)[0].sample_data is True


def test_latin1_file_names_the_file_and_line_and_says_utf8(tmp_path):
    path = write_csv(tmp_path / "t.csv", [good_row(), good_row(transport_id="TR-2")])
    text = path.read_text().replace("TR-2,org1", "TR-2,Química")
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(DataError) as info:
        read_transports(path)
    msg = str(info.value)
    assert str(path) in msg
    assert "line 3" in msg
    assert "0xed" in msg
    assert "UTF-8" in msg and "CSV UTF-8" in msg
    assert "\n" not in msg


def test_header_of_unknown_columns_names_missing_and_unknown(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(DataError) as info:
        read_transports(path)
    msg = str(info.value)
    assert str(path) in msg
    assert "header" in msg
    assert "row 2" not in msg
    assert f"missing {', '.join(TRANSPORT_COLUMNS)}" in msg
    assert "unknown column(s) 'a', 'b'" in msg
    assert f"the header must be {','.join(TRANSPORT_COLUMNS)}" in msg


def test_header_is_checked_even_without_rows(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("transport_id,company\n")
    with pytest.raises(DataError, match="missing carrier, vehicle") as info:
        read_transports(path)
    assert "no transports found" not in str(info.value)


def test_semicolon_separated_header_says_so(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(";".join(TRANSPORT_COLUMNS) + "\n" + ";".join(good_row().values()) + "\n")
    with pytest.raises(DataError, match="separated by ';'"):
        read_transports(path)


def test_extra_columns_next_to_the_required_ones_are_allowed(tmp_path):
    path = tmp_path / "t.csv"
    row = good_row()
    values = [*row.values(), "call first"]
    path.write_text(",".join([*row, "notes"]) + "\n" + ",".join(f'"{v}"' for v in values) + "\n")
    assert [s.transport_id for s in read_transports(path)] == ["TR-1"]
