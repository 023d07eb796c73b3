"""Contacts: read rows through a column mapping, normalise them, keep the original.

Pure: text in, records and per-row errors out. A malformed row is reported with its line number
and the field at fault; the other rows still come through.

Normalisation: Unicode NFKC, case folded, accents stripped, non-Latin scripts (Arabic, Cyrillic,
...) transliterated to Latin with ``anyascii`` when the row gives no Latin form itself, spaces and
punctuation collapsed; dates to ISO ``YYYY-MM-DD`` from the usual written forms.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from anyascii import anyascii

# The fields a contact has; a mapping names, for each, the source column(s) that fill it.
FIELDS = (
    "external_id",
    "given_name",
    "family_name",
    "birth_date",
    "sex",
    "phone",
    "email",
    "street_number",
    "address",
    "locality",
    "postcode",
    "region",
    "id_number",
)
# The longest value each field keeps, and the contact store's column widths (contacts/models.py;
# PostgreSQL holds a database to them, SQLite does not): a longer one, once normalised, is the
# row's error on every database.
FIELD_MAX = {
    "external_id": 128,
    "given_name": 200,
    "family_name": 200,
    "birth_date": 10,
    "sex": 1,
    "phone": 32,
    "email": 200,
    "street_number": 32,
    "address": 300,
    "locality": 200,
    "postcode": 16,
    "region": 100,
    "id_number": 64,
}
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# A row must give at least one name (registrations often miss one of the two).
NAME_FIELDS = ("given_name", "family_name")
DATE_FORMATS = ("%Y-%m-%d", "%Y%m%d", "%d/%m/%Y", "%d.%m.%Y", "%d-%m-%Y", "%Y/%m/%d", "%d %b %Y")


class MappingError(ValueError):
    """A column mapping that cannot be used with this file."""


@dataclass(frozen=True)
class RowError:
    line: int
    field: str
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.field}: {self.reason}"


@dataclass(frozen=True)
class ContactRecord:
    """One normalised contact and the row it came from."""

    line: int
    given_name: str = ""
    family_name: str = ""
    birth_date: str = ""
    sex: str = ""
    phone: str = ""
    email: str = ""
    street_number: str = ""
    address: str = ""
    locality: str = ""
    postcode: str = ""
    region: str = ""
    id_number: str = ""
    external_id: str = ""
    original: dict[str, str] = field(default_factory=dict, compare=False)

    def fields(self) -> dict[str, str]:
        d = asdict(self)
        d.pop("line")
        d.pop("original")
        return d


@dataclass
class ImportResult:
    records: list[ContactRecord]
    errors: list[RowError]
    rows: int


_SPACES = re.compile(r"[^a-z0-9]+")


def fold(text: str) -> str:
    """Case, accents and script folded away: ``'Muḥammad'`` and ``'محمد'`` both give Latin letters."""
    text = unicodedata.normalize("NFKC", text or "").strip()
    if not text:
        return ""
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    latin = anyascii(stripped).lower()
    return _SPACES.sub(" ", latin).strip()


def name(text: str) -> str:
    return fold(text)


def digits(text: str) -> str:
    return re.sub(r"\D", "", text or "")


def birth_date(text: str) -> str:
    """ISO date from a written one; raises ValueError naming what it could not read."""
    text = (text or "").strip()
    if not text:
        return ""
    if re.fullmatch(r"\d+\.0", text):  # a spreadsheet that stored 19560812 as a float
        text = text[:-2]
    for fmt in DATE_FORMATS:
        try:
            d = dt.datetime.strptime(text, fmt).date()
        except ValueError:
            continue
        if not 1850 <= d.year <= dt.date.today().year:
            raise ValueError(f"year {d.year} is out of range")
        return d.isoformat()
    raise ValueError(f"{text!r} is not a date (use YYYY-MM-DD, DD/MM/YYYY or YYYYMMDD)")


def email(text: str) -> str:
    text = (text or "").strip().lower()
    if text and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", text):
        raise ValueError(f"{text!r} is not an e-mail address")
    return text


def sex(text: str) -> str:
    t = fold(text)
    if not t:
        return ""
    if t[0] in "mf":
        return t[0]
    if t[0] in "xo":
        return "x"
    raise ValueError(f"{text!r} is not a sex (m, f or x)")


def _plain(text: str) -> str:
    return fold(text)


NORMALISERS = {
    "external_id": lambda t: (t or "").strip(),
    "given_name": name,
    "family_name": name,
    "birth_date": birth_date,
    "sex": sex,
    "phone": digits,
    "email": email,
    "street_number": _plain,
    "address": _plain,
    "locality": _plain,
    "postcode": lambda t: re.sub(r"\s", "", (t or "")).upper(),
    "region": _plain,
    "id_number": lambda t: re.sub(r"[^0-9A-Za-z]", "", (t or "")).upper(),
}


def check_mapping(mapping: Mapping[str, str | list[str]], columns: Iterable[str]) -> None:
    cols = set(columns)
    unknown = sorted(set(mapping) - set(FIELDS))
    if unknown:
        raise MappingError(
            f"mapping names unknown field(s) {', '.join(unknown)}; fields are {', '.join(FIELDS)}"
        )
    if not any(f in mapping for f in NAME_FIELDS):
        raise MappingError("mapping has no column for given_name nor for family_name: map one")
    for f, src in mapping.items():
        for col in [src] if isinstance(src, str) else src:
            if col not in cols:
                raise MappingError(
                    f"mapping puts column {col!r} into {f}, but the file has no such column; "
                    f"columns: {', '.join(sorted(cols))}"
                )


def normalise_row(
    line: int, row: Mapping[str, Any], mapping: Mapping[str, str | list[str]]
) -> tuple[ContactRecord | None, list[RowError]]:
    values: dict[str, str] = {}
    errors: list[RowError] = []
    for f, src in mapping.items():
        cols = [src] if isinstance(src, str) else list(src)
        raw = " ".join(str(row.get(c) or "").strip() for c in cols).strip()
        try:
            values[f] = NORMALISERS[f](raw)
        except ValueError as exc:
            errors.append(RowError(line, f, str(exc)))
            continue
        if len(values[f]) > FIELD_MAX[f]:
            errors.append(
                RowError(line, f, f"is {len(values[f])} characters long, {FIELD_MAX[f]} at most")
            )
        elif bad := CONTROL.search(values[f]):
            # PostgreSQL refuses NUL in text; no name, phone or address holds a control code
            errors.append(
                RowError(line, f, f"holds the control character U+{ord(bad[0]):04X}; remove it")
            )
    if not errors and not any(values.get(f) for f in NAME_FIELDS):
        present = [f for f in NAME_FIELDS if f in mapping]
        errors.append(RowError(line, present[0], "is empty, and so is every other name"))
    if errors:
        return None, errors
    original = {str(k): "" if v is None else str(v) for k, v in row.items()}
    return ContactRecord(line=line, original=original, **values), []


def _normalise_rows(
    rows: Iterator[tuple[int, Mapping[str, Any]]], mapping: Mapping[str, str | list[str]]
) -> ImportResult:
    records: list[ContactRecord] = []
    errors: list[RowError] = []
    n = 0
    for line, row in rows:
        n += 1
        rec, errs = normalise_row(line, row, mapping)
        if rec is not None:
            records.append(rec)
        errors.extend(errs)
    return ImportResult(records, errors, n)


def read_csv(text: str, mapping: Mapping[str, str | list[str]]) -> ImportResult:
    """Rows of a CSV file with a header; line numbers are the file's (header is line 1)."""
    reader = csv.DictReader(io.StringIO(text, newline=""), skipinitialspace=True)
    if reader.fieldnames is None:
        raise MappingError("the CSV file is empty: it needs a header row")
    header = [c.strip() for c in reader.fieldnames]
    reader.fieldnames = header
    check_mapping(mapping, header)

    def rows() -> Iterator[tuple[int, Mapping[str, Any]]]:
        for row in reader:
            line = reader.line_num
            if None in row:  # more cells than the header
                extra = row.pop(None)
                yield line, {**row, "__extra__": extra}
                continue
            yield line, row

    result = _normalise_rows(rows(), mapping)
    bad = [r.line for r in result.records if "__extra__" in r.original]
    if bad:
        keep = [r for r in result.records if "__extra__" not in r.original]
        errs = [RowError(n, "(row)", "has more cells than the header") for n in bad]
        return ImportResult(keep, sorted(result.errors + errs, key=lambda e: e.line), result.rows)
    return result


def read_json(text: str, mapping: Mapping[str, str | list[str]]) -> ImportResult:
    """A JSON array of objects (or JSON lines); the line is the record's position, from 1."""
    text = text.strip()
    if text.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise MappingError(f"the JSON file does not parse: {exc}") from None
    else:
        items = []
        for i, ln in enumerate(text.splitlines(), 1):
            try:
                items.append(json.loads(ln) if ln.strip() else {})
            except json.JSONDecodeError as exc:
                items.append(RowError(i, "(row)", f"not JSON: {exc.msg}"))
    cols: set[str] = set()
    for it in items:
        if isinstance(it, dict):
            cols.update(it)
    check_mapping(mapping, cols)
    errors: list[RowError] = []

    def rows() -> Iterator[tuple[int, Mapping[str, Any]]]:
        for i, it in enumerate(items, 1):
            if isinstance(it, RowError):
                errors.append(it)
            elif not isinstance(it, dict):
                errors.append(RowError(i, "(row)", "is not a JSON object"))
            else:
                yield i, it

    result = _normalise_rows(rows(), mapping)
    return ImportResult(
        result.records, sorted(result.errors + errors, key=lambda e: e.line), len(items)
    )


def read_file_text(text: str, fmt: str, mapping: Mapping[str, str | list[str]]) -> ImportResult:
    if fmt == "csv":
        return read_csv(text, mapping)
    if fmt == "json":
        return read_json(text, mapping)
    raise MappingError(f"unknown format {fmt!r}: use csv or json")


def identity_mapping(columns: Iterable[str]) -> dict[str, str]:
    """Columns that already carry a field's name map to it."""
    return {c: c for c in columns if c in FIELDS}
