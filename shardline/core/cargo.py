"""The cargo sheet of a hazardous transport, and the sample data set it is built from."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from functools import cache
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

DATA = resources.files("shardline") / "data"


class EmergencyContact(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    phone: str


class CargoSheet(BaseModel):
    """What a responder needs at the scene, and nothing a company would not put on the sheet."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    transport_id: str
    company: str
    carrier: str
    vehicle: str
    origin: str
    destination: str
    un_number: str = Field(pattern=r"^UN\d{4}$")
    proper_shipping_name: str
    hazard_class: str
    subsidiary_risks: tuple[str, ...] = ()
    packing_group: str = ""
    quantity: float
    unit: str
    containment: str
    packages: int
    erg_guide: str
    erg_title: str
    isolate_m: int
    do: tuple[str, ...]
    never: tuple[str, ...]
    emergency_contact: EmergencyContact
    departure: str
    sample_data: bool = False

    def canonical_bytes(self) -> bytes:
        return json.dumps(
            self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> CargoSheet:
        return cls.model_validate_json(raw)


class DataError(ValueError):
    """A transports file that cannot be read: names the file, the row and the field."""


def _rows(text: str) -> Iterator[dict[str, str]]:
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    yield from csv.DictReader(lines)


@cache
def dangerous_goods() -> dict[str, dict[str, str]]:
    return {r["un_number"]: r for r in _rows((DATA / "dangerous_goods.csv").read_text())}


@cache
def erg_guides() -> dict[str, dict]:
    data = json.loads((DATA / "erg_guides.json").read_text())
    return {k: v for k, v in data.items() if not k.startswith("_")}


def sample_transports_path() -> Path:
    return Path(str(DATA / "transports.csv"))


TRANSPORT_COLUMNS = (
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
)


def sheet_from_row(row: dict[str, str], *, sample: bool, where: str = "") -> CargoSheet:
    missing = [c for c in TRANSPORT_COLUMNS if not (row.get(c) or "").strip()]
    if missing:
        raise DataError(
            f"{where}: missing {', '.join(missing)}; every row needs all of {', '.join(TRANSPORT_COLUMNS)}"
        )
    un = row["un_number"].strip().upper()
    good = dangerous_goods().get(un)
    if good is None:
        raise DataError(
            f"{where}: {un} is not in the dangerous goods table (shardline/data/dangerous_goods.csv)"
        )
    guide = erg_guides().get(good["erg_guide"])
    if guide is None:
        raise DataError(
            f"{where}: ERG guide {good['erg_guide']} for {un} is missing from erg_guides.json"
        )
    try:
        quantity = float(row["quantity"])
        packages = int(row["packages"])
    except ValueError as exc:
        raise DataError(f"{where}: quantity and packages must be numbers ({exc})") from exc
    return CargoSheet(
        transport_id=row["transport_id"].strip(),
        company=row["company"].strip(),
        carrier=row["carrier"].strip(),
        vehicle=row["vehicle"].strip(),
        origin=row["origin"].strip(),
        destination=row["destination"].strip(),
        un_number=un,
        proper_shipping_name=good["proper_shipping_name"],
        hazard_class=good["hazard_class"],
        subsidiary_risks=tuple(r for r in good["subsidiary_risks"].split(";") if r),
        packing_group=good["packing_group"],
        quantity=quantity,
        unit=row["unit"].strip(),
        containment=row["containment"].strip(),
        packages=packages,
        erg_guide=good["erg_guide"],
        erg_title=guide["title"],
        isolate_m=int(guide["isolate_m"]),
        do=tuple(guide["do"]),
        never=tuple(guide["never"]),
        emergency_contact=EmergencyContact(
            name=row["emergency_contact_name"].strip(), phone=row["emergency_contact_phone"].strip()
        ),
        departure=row["departure"].strip(),
        sample_data=sample,
    )


def _decode(path: Path, raw: bytes) -> str:
    """The text of a transports file: UTF-8, with or without the byte-order mark Excel writes."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path}: line {line} is not UTF-8 (byte {exc.start}: 0x{raw[exc.start]:02x}); "
            'save the file as UTF-8 (in Excel: Save As "CSV UTF-8 (Comma delimited)")'
        ) from None


def _check_header(path: Path, header: list[str]) -> None:
    """Name the required columns the header lacks, and the ones it has that are not known."""
    missing = [c for c in TRANSPORT_COLUMNS if c not in header]
    if not missing:
        return
    unknown = [c for c in header if c not in TRANSPORT_COLUMNS]
    msg = f"{path} row 1 (header): missing {', '.join(missing)}"
    if unknown:
        msg += f"; unknown column(s) {', '.join(repr(c) for c in unknown)}"
    if len(header) == 1 and ";" in header[0]:
        msg += "; the columns seem to be separated by ';': save the file with commas"
    raise DataError(f"{msg}; the header must be {','.join(TRANSPORT_COLUMNS)}")


def read_transports(path: Path) -> list[CargoSheet]:
    """Read a transports CSV (the columns of the sample file) into cargo sheets."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from exc
    text = _decode(path, raw)
    sample = text.lstrip().startswith("# SAMPLE DATA")
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    reader = csv.DictReader(lines)
    try:
        header = reader.fieldnames
        if header:
            _check_header(path, list(header))
        rows = list(reader)
    except csv.Error as exc:
        raise DataError(
            f"{path} row {reader.line_num}: not valid CSV ({exc}); check that row's quotes"
        ) from None
    if not rows:
        raise DataError(
            f"{path}: no transports found; the header must be {','.join(TRANSPORT_COLUMNS)}"
        )
    sheets = [
        sheet_from_row(r, sample=sample, where=f"{path} row {i}") for i, r in enumerate(rows, 2)
    ]
    seen: dict[str, int] = {}
    for row, s in enumerate(sheets, 2):
        if s.transport_id in seen:
            raise DataError(
                f"{path} row {row}: transport_id {s.transport_id} appears twice (first in row {seen[s.transport_id]})"
            )
        seen[s.transport_id] = row
    return sheets


def by_id(sheets: Iterable[CargoSheet]) -> dict[str, CargoSheet]:
    return {s.transport_id: s for s in sheets}
