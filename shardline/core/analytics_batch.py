"""Many producers' rows at once: checked against the schema, encoded as the linear sketch of
``core.analytics`` plus the aux bits of ``core.shared_checks``, and shared t-of-n in bulk
(``core.bulk_shares``) - the same vectors as ``analytics.encode_row``, column by column in NumPy
instead of row by row in Python.

A batch is what one ``submit`` call sends: one digest on chain, one sealed part per server, and
at the servers one range check and one bulk insert. Any row that fails a check is found again
by the row-by-row checker, so the error names the row and the field exactly as for one row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from . import analytics as an
from . import bulk_shares as bs
from . import field_shares as fs
from . import shared_checks as sc

INT64_SAFE = 2**62
SMALL_BATCH = 64


def _fast(schema: an.Schema) -> bool:
    return all(
        max(abs(f.scaled(f.min)), abs(f.scaled(f.max))) ** 2 < INT64_SAFE
        for f in schema.fields
        if f.numeric
    )


def _column(schema: an.Schema, f: an.Field, rows: Sequence[Mapping]) -> np.ndarray | None:
    """The field's values as integers (scaled), or None when any row needs a closer look."""
    raw = [r.get(f.name) for r in rows]
    if f.type == "category":
        index = {v: i for i, v in enumerate(f.values)}
        got = [index.get(v if isinstance(v, str) else str(v)) for v in raw]
        if any(g is None for g in got):
            return None
        return np.array(got, dtype=np.int64)
    if any(v is None or v == "" or isinstance(v, bool) for v in raw):
        return None
    try:
        arr = np.array(raw, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    ok = (arr >= f.min) & (arr <= f.max)  # NaN fails both
    if f.type == "int":
        ok &= arr == np.floor(arr)
    if not ok.all():
        return None
    return np.round(arr * f.scale).astype(np.int64) if f.scale != 1 else arr.astype(np.int64)


def encode_matrix(schema: an.Schema, rows: Sequence[Mapping], first: int = 1) -> np.ndarray:
    """(rows x schema.width) sketch of every row; raises InputOutOfRange naming the first bad
    row (counted from ``first``) as ``analytics.check_row`` does."""
    if not rows:
        raise an.InputOutOfRange("no rows to submit")
    n = len(rows)
    names = len(schema.fields)
    cols = (
        {f.name: _column(schema, f, rows) for f in schema.fields}
        if _fast(schema) and all(len(r) == names for r in rows)
        else None
    )
    if cols is None or any(c is None for c in cols.values()):
        for i, r in enumerate(rows):  # the exact error for the first bad row
            an.check_row(schema, r, f"row {i + first}")
        cols = None
    if cols is None:  # wide ranges: Python integers, same layout
        return np.array(
            [[fs.centered(v) for v in an.encode_row(schema, r)] for r in rows], dtype=object
        )
    cw = schema.context_width
    block = np.zeros((n, cw), dtype=np.int64)
    block[:, 0] = 1
    for f in schema.fields:
        if not f.numeric:
            continue
        x = cols[f.name]
        ix, isq, ib = schema.offsets(f.name)
        block[:, ix] = x
        block[:, isq] = x * x
        if f.buckets:
            k = (x - f.scaled(f.min)) // f.scaled(f.bin_width)
            block[np.arange(n), ib + k] = 1
    parts = []
    for ctx in schema.contexts:
        if ctx is None:
            parts.append(block)
        else:
            fld = schema.field(ctx[0])
            sel = cols[fld.name] == fld.values.index(ctx[1])
            parts.append(block * sel[:, None])
    return np.concatenate(parts, axis=1)


def extended_elements(schema: an.Schema, matrix: np.ndarray) -> bytes:
    """Packed field elements of each row's sketch followed by its aux bits."""
    ext = np.concatenate([matrix, sc.aux_bits(schema, matrix).astype(matrix.dtype)], axis=1)
    if ext.dtype == object:
        return fs.pack([int(v) for v in ext.ravel()])
    return bs.packed(bs.elements_of(ext))


@dataclass(frozen=True)
class SharedBatch:
    rows: int
    # share point -> its extended rows (or, for a seeded point, the 32-byte seed that expands
    # to them), then w(x), then eta(x)
    parts: dict[int, bytes]
    hashes: list[bytes]  # sha256 of each server's part, in share-point order
    seeded: frozenset[int] = frozenset()  # the points whose part carries a seed


def share_batch(
    schema: an.Schema, rows: Sequence[Mapping], threshold: int, xs: Sequence[int], first: int = 1
) -> SharedBatch:
    """Check, encode and share ``rows`` for the servers at ``xs``, with the two random
    polynomials the servers' range check needs (w of degree t, eta of degree 2t - 1)."""
    matrix = encode_matrix(schema, rows, first)
    if len(rows) < SMALL_BATCH:  # a few rows: Python integers beat NumPy's per-call cost
        ext = np.concatenate([matrix, sc.aux_bits(schema, matrix).astype(matrix.dtype)], axis=1)
        shares = fs.share_rows([[int(v) for v in ext.ravel()]], threshold, xs)
        w = fs.share_rows([fs.random_elements(1)], threshold, xs)
        eta = fs.share_rows([fs.random_elements(1)], max(2 * threshold - 1, 0), xs)
    else:
        ext = np.concatenate([matrix, sc.aux_bits(schema, matrix).astype(matrix.dtype)], axis=1)
        w = bs.share_elements(_one_random(), threshold, xs)
        eta = bs.share_elements(_one_random(), threshold, xs, degree=max(2 * threshold - 1, 0))
        if ext.dtype != object and threshold >= 1:  # t servers get a seed, not their shares
            seeds, rest = bs.share_seeded(bs.elements_of(ext), threshold, xs)
            parts = {x: seeds[x] + w[x] + eta[x] for x in seeds}
            parts |= {x: bs.packed(rest[x]) + w[x] + eta[x] for x in rest}
            hashes = [hashlib.sha256(parts[x]).digest() for x in xs]
            return SharedBatch(len(rows), parts, hashes, frozenset(seeds))
        shares = bs.share_elements(extended_elements(schema, matrix), threshold, xs)
    parts = {x: shares[x] + w[x] + eta[x] for x in xs}
    return SharedBatch(len(rows), parts, [hashlib.sha256(parts[x]).digest() for x in xs])


def _one_random() -> bytes:
    return bs.packed(bs.random_field(1))


def split_part(
    lay: sc.Layout, part: bytes, rows: int, seeded: bool = False
) -> tuple[bytes, int, int]:
    """A server's part -> (its extended rows, w(x), eta(x)); a seeded part's rows are expanded
    from its seed. Raises ValueError on a bad size."""
    count = rows * lay.extended
    body = bs.SEED_BYTES if seeded else count * fs.ELEMENT_BYTES
    if len(part) != body + 2 * fs.ELEMENT_BYTES:
        what = "a seed" if seeded else f"{rows} rows of {lay.extended} elements"
        raise ValueError(f"{what} and two check values do not fill {len(part)} bytes")
    tail = fs.unpack(part[body:])
    rows_bytes = bs.packed(bs.expand_seed(part[:body], count)) if seeded else part[:body]
    return rows_bytes, tail[0], tail[1]
