"""Analytics over secret-shared data: the data-set schema, how a row becomes a vector to share,
what a job asks for, which sums of that vector answer it, and how the opened sums become the
statistic.

A row is encoded as a linear sketch so that every statistic is a sum over producers of fixed
entries of their vectors: the MPC servers then only add shares, which keeps every output a
degree-t sharing that Reed-Solomon decoding can correct and check. For each *context* (all rows,
and each value of each category field) the vector holds a 1 if the row is in it, and for each
numeric field x, x^2 and a one-hot of x's bucket on the field's grid. A filter on a category field
picks contexts, so filtered statistics cost nothing more; a histogram's bins must lie on the
field's grid. Squares and one-hots are made by the producer (see docs/analytics.md for what this
trusts).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from .field_shares import PRIME, centered

STATISTICS = ("count", "sum", "mean", "variance", "std", "histogram")
MAX_VECTOR = 4096
# The rows a data set's sums are sized for: sums of squares of MAX_ROWS values up to MAX_VALUE
# (scaled) stay below p / 2 = 2^60, so the opened sums never wrap.
MAX_ROWS = 10**7
MAX_VALUE = math.isqrt(PRIME // 2 // MAX_ROWS)


class SchemaError(ValueError):
    """A data-set schema or a job that does not make sense; the text says what to change."""


class InputOutOfRange(ValueError):
    """A producer's value outside what the schema allows: rejected before anything is shared."""


class TooFewProducers(ValueError):
    """A filter selecting fewer than k producers: refused so that nobody is singled out."""


@dataclass(frozen=True)
class Field:
    name: str
    type: str  # "int", "float" or "category"
    min: float = 0
    max: float = 0
    decimals: int = 0  # float fields are fixed point with this many decimals
    bin_width: float = 0  # numeric fields: the histogram grid (0: no histograms)
    values: tuple[str, ...] = ()  # category fields

    @property
    def numeric(self) -> bool:
        return self.type in ("int", "float")

    @property
    def scale(self) -> int:
        return 10**self.decimals

    def scaled(self, v: float) -> int:
        return round(v * self.scale)

    @property
    def buckets(self) -> int:
        if not self.bin_width:
            return 0
        return (self.scaled(self.max) - self.scaled(self.min)) // self.scaled(self.bin_width) + 1


@dataclass(frozen=True)
class Schema:
    name: str
    fields: tuple[Field, ...]

    @classmethod
    def from_dict(cls, data: Mapping) -> Schema:
        if not isinstance(data, Mapping) or not isinstance(data.get("fields"), list):
            raise SchemaError('a schema is {"name": ..., "fields": [{"name", "type", ...}]}')
        fields_: list[Field] = []
        for f in data["fields"]:
            name, typ = str(f.get("name", "")), f.get("type")
            if not name.isidentifier():
                raise SchemaError(f"field name {name!r} must be an identifier")
            if typ == "category":
                values = tuple(str(v) for v in f.get("values", []))
                if not values or len(set(values)) != len(values):
                    raise SchemaError(f"category field {name} needs distinct `values`")
                fields_.append(Field(name, typ, values=values))
            elif typ in ("int", "float"):
                decimals = int(f.get("decimals", 0)) if typ == "float" else 0
                lo, hi = f.get("min"), f.get("max")
                if not isinstance(lo, int | float) or not isinstance(hi, int | float) or lo > hi:
                    raise SchemaError(f"numeric field {name} needs numbers min <= max")
                if not 0 <= decimals <= 6:
                    raise SchemaError(f"field {name}: decimals must be 0 to 6")
                fld = Field(name, typ, lo, hi, decimals, f.get("bin_width", 0) or 0)
                if fld.bin_width and fld.scaled(fld.bin_width) <= 0:
                    raise SchemaError(f"field {name}: bin_width must be positive")
                if typ == "int" and any(float(v) != int(v) for v in (lo, hi, fld.bin_width)):
                    raise SchemaError(f"int field {name}: min, max and bin_width must be integers")
                bound = max(abs(fld.scaled(lo)), abs(fld.scaled(hi)))
                if bound**2 * MAX_ROWS >= PRIME // 2:
                    raise SchemaError(
                        f"field {name}: values up to {bound / fld.scale:g} are too wide: sums of "
                        f"squares of {MAX_ROWS:,} rows must stay below the field's 2^60; keep "
                        f"|value| * 10^decimals at most {MAX_VALUE:,}"
                    )
                fields_.append(fld)
            else:
                raise SchemaError(f"field {name}: type must be int, float or category, not {typ!r}")
        names = [f.name for f in fields_]
        if not fields_ or len(set(names)) != len(names):
            raise SchemaError("a schema needs at least one field and distinct field names")
        schema = cls(str(data.get("name", "dataset")), tuple(fields_))
        if schema.width > MAX_VECTOR:
            raise SchemaError(
                f"a row of this schema is {schema.width} values: more than {MAX_VECTOR}; "
                "use wider bins or fewer category values"
            )
        return schema

    def to_dict(self) -> dict:
        out = []
        for f in self.fields:
            if f.type == "category":
                out.append({"name": f.name, "type": f.type, "values": list(f.values)})
            else:
                d = {"name": f.name, "type": f.type, "min": f.min, "max": f.max}
                if f.decimals:
                    d["decimals"] = f.decimals
                if f.bin_width:
                    d["bin_width"] = f.bin_width
                out.append(d)
        return {"name": self.name, "fields": out}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @cached_property
    def names(self) -> frozenset[str]:
        return frozenset(f.name for f in self.fields)

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise SchemaError(
            f"data set {self.name} has no field {name!r}; fields: {', '.join(f.name for f in self.fields)}"
        )

    # -- the vector layout -----------------------------------------------------------------
    @property
    def contexts(self) -> list[tuple[str, str] | None]:
        out: list[tuple[str, str] | None] = [None]
        for f in self.fields:
            if f.type == "category":
                out += [(f.name, v) for v in f.values]
        return out

    @property
    def context_width(self) -> int:
        return 1 + sum(2 + f.buckets for f in self.fields if f.numeric)

    @property
    def width(self) -> int:
        return len(self.contexts) * self.context_width

    def offsets(self, name: str) -> tuple[int, int, int]:
        """Within a context: where field ``name``'s x, x^2 and first bucket sit."""
        at = 1
        for f in self.fields:
            if not f.numeric:
                continue
            if f.name == name:
                return at, at + 1, at + 2
            at += 2 + f.buckets
        raise SchemaError(f"field {name} is not numeric")

    def context_index(self, ctx: tuple[str, str] | None) -> int:
        return self.contexts.index(ctx)


def check_row(schema: Schema, row: Mapping[str, object], where: str = "row") -> dict[str, object]:
    """The row's values, parsed and range checked; raises InputOutOfRange naming the field."""
    out: dict[str, object] = {}
    for f in schema.fields:
        if f.name not in row or row[f.name] in (None, ""):
            raise InputOutOfRange(f"{where}: field {f.name} is missing")
        raw = row[f.name]
        if f.type == "category":
            if str(raw) not in f.values:
                raise InputOutOfRange(
                    f"{where}: {f.name}={raw!r} is not one of {', '.join(f.values)}"
                )
            out[f.name] = str(raw)
            continue
        try:
            v = float(raw) if not isinstance(raw, int | float) else raw
        except ValueError:
            raise InputOutOfRange(f"{where}: {f.name}={raw!r} is not a number") from None
        if f.type == "int" and float(v) != int(v):
            raise InputOutOfRange(f"{where}: {f.name}={raw!r} is not a whole number")
        if math.isnan(v) or not f.min <= v <= f.max:
            raise InputOutOfRange(
                f"{where}: {f.name}={raw!r} is outside the allowed range {f.min} to {f.max}"
            )
        out[f.name] = v
    unknown = row.keys() - schema.names
    if unknown:
        raise InputOutOfRange(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    return out


def encode_row(schema: Schema, row: Mapping[str, object], where: str = "row") -> list[int]:
    """The vector a producer shares for one row (range checked first)."""
    values = check_row(schema, row, where)
    block = [0] * schema.context_width
    block[0] = 1
    for f in schema.fields:
        if not f.numeric:
            continue
        x = f.scaled(float(values[f.name]))  # type: ignore[arg-type]
        ix, isq, ib = schema.offsets(f.name)
        block[ix] = x % PRIME
        block[isq] = x * x
        if f.buckets:
            block[ib + (x - f.scaled(f.min)) // f.scaled(f.bin_width)] = 1
    vec: list[int] = []
    for ctx in schema.contexts:
        if ctx is None or values[ctx[0]] == ctx[1]:
            vec += block
        else:
            vec += [0] * len(block)
    return vec


@dataclass(frozen=True)
class JobSpec:
    statistic: str
    field: str = ""  # the numeric field (all but count)
    where_field: str = ""  # a category field to filter on ("" = all rows)
    where_values: tuple[str, ...] = ()
    bins: tuple[float, ...] = ()  # histogram edges, on the field's grid

    @classmethod
    def from_dict(cls, d: Mapping) -> JobSpec:
        where = d.get("where") or {}
        return cls(
            statistic=str(d.get("statistic", "")),
            field=str(d.get("field", "") or ""),
            where_field=str(where.get("field", "")) if where else "",
            where_values=tuple(str(v) for v in where.get("values", [])) if where else (),
            bins=tuple(float(b) for b in d.get("bins", []) or []),
        )

    def to_dict(self) -> dict:
        d: dict = {"statistic": self.statistic}
        if self.field:
            d["field"] = self.field
        if self.where_field:
            d["where"] = {"field": self.where_field, "values": list(self.where_values)}
        if self.bins:
            d["bins"] = list(self.bins)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def describe(self) -> str:
        text = self.statistic + (f"({self.field})" if self.field else "")
        if self.where_field:
            text += f" where {self.where_field} in {{{', '.join(self.where_values)}}}"
        return text


def selectors(schema: Schema, spec: JobSpec) -> list[list[int]]:
    """Output component c is the sum of the aggregate vector at ``selectors(...)[c]``.

    Component 0 is always the count of selected rows (the servers check it against k).
    """
    if spec.statistic not in STATISTICS:
        raise SchemaError(f"statistic {spec.statistic!r} is not one of {', '.join(STATISTICS)}")
    if spec.where_field:
        wf = schema.field(spec.where_field)
        if wf.type != "category":
            raise SchemaError(f"filter field {wf.name} must be a category field")
        if not spec.where_values or any(v not in wf.values for v in spec.where_values):
            raise SchemaError(f"filter values must be some of {', '.join(wf.values)}")
        ctxs = [schema.context_index((wf.name, v)) for v in dict.fromkeys(spec.where_values)]
    else:
        ctxs = [0]
    base = [c * schema.context_width for c in ctxs]
    comps = [[b for b in base]]
    if spec.statistic == "count":
        return comps
    f = schema.field(spec.field) if spec.field else None
    if f is None or not f.numeric:
        raise SchemaError(f"statistic {spec.statistic} needs a numeric `field`")
    ix, isq, ib = schema.offsets(f.name)
    if spec.statistic == "histogram":
        if not f.buckets:
            raise SchemaError(f"field {f.name} has no bin_width in the schema: no histograms")
        edges = [f.scaled(e) for e in spec.bins]
        width, lo = f.scaled(f.bin_width), f.scaled(f.min)
        if len(edges) < 2 or edges != sorted(set(edges)):
            raise SchemaError("histogram bins need at least two increasing edges")
        off = [e for e in edges if (e - lo) % width or not lo <= e <= lo + f.buckets * width]
        if off:
            raise SchemaError(
                f"bin edges must lie on {f.name}'s grid ({f.min} + k * {f.bin_width}, up to "
                f"{f.max + f.bin_width}); these do not: {', '.join(str(e / f.scale) for e in off)}"
            )
        for a, b in itertools.pairwise(edges):
            ks = range((a - lo) // width, (b - lo) // width)
            comps.append([p + ib + k for p in base for k in ks])
        return comps
    comps.append([p + ix for p in base])
    if spec.statistic in ("variance", "std"):
        comps.append([p + isq for p in base])
    return comps


def output_share(aggregate: Sequence[int], sel: list[list[int]]) -> list[int]:
    """A server's output share: the selected sums of its aggregate share vector."""
    return [sum(aggregate[i] for i in idx) % PRIME for idx in sel]


def check_k(count: int, k: int, spec: JobSpec) -> None:
    if count < k:
        raise TooFewProducers(
            f"{spec.describe()} selects {count} row(s), fewer than k={k}: refused so that no "
            "producer is singled out; widen the filter"
        )


@dataclass(frozen=True)
class Result:
    statistic: str
    count: int
    value: float | list[int] | None
    spec: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "statistic": self.statistic,
            "count": self.count,
            "value": self.value,
            "spec": self.spec,
        }


def finish(schema: Schema, spec: JobSpec, components: Sequence[int]) -> Result:
    """The statistic from the opened components (field elements)."""
    comps = [centered(c) for c in components]
    count = comps[0]
    st = spec.statistic
    if st == "count":
        return Result(st, count, count, spec.to_dict())
    if st == "histogram":
        return Result(st, count, comps[1:], spec.to_dict())
    f = schema.field(spec.field)
    total = comps[1] / f.scale
    if st == "sum":
        return Result(st, count, total, spec.to_dict())
    if count == 0:
        return Result(st, 0, None, spec.to_dict())
    mean = total / count
    if st == "mean":
        return Result(st, count, mean, spec.to_dict())
    # Exact integer arithmetic before the one division: n*sum(x^2) - sum(x)^2 >= 0.
    n, s, sq = count, comps[1], comps[2]
    var = (n * sq - s * s) / (n * n) / (f.scale * f.scale)
    var = max(var, 0.0)
    return Result(st, count, var if st == "variance" else math.sqrt(var), spec.to_dict())
