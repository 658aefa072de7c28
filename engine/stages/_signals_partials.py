"""Partial tables of the signal rules that cross persons, one per bucket, summed by the stage:
(valid declared NIR, linked person) pairs for ``nir_shared``; counts per declarant and month,
and the distinct persons per declarant, for ``declarant_quality``."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nirlink.kernels import InputError
from nirlink.kernels._dates import month_index

from ._signals_rules import VALID, _arr, _as_dict, _days, _flags, _rows

__all__ = ["nir_pairs", "declarant_counts", "declarant_persons", "PAIR_SCHEMA", "COUNTS_SCHEMA", "PERSONS_SCHEMA"]


PAIR_SCHEMA = pa.schema([pa.field("nir", pa.string(), nullable=False), pa.field("person", pa.string(), nullable=False),
                         pa.field("rows", pa.int64(), nullable=False), pa.field("record_id", pa.int64(), nullable=False),
                         pa.field("month", pa.int32(), nullable=False)])


def nir_pairs(career: pa.Table | None, resource: pa.Table | None) -> pa.Table:
    """Partial input of ``nir_shared``: each (valid declared NIR, linked person) of the bucket,
    with its row count and smallest record id."""
    rows = _rows(career, resource)
    if not rows:
        return PAIR_SCHEMA.empty_table()
    ok = pa.array(_flags(rows["nir_status"], VALID) & pc.is_valid(rows["person"]).to_numpy(zero_copy_only=False))
    t = pa.table({"nir": rows["nir"], "person": rows["person"], "record_id": rows["record_id"],
                  "month": pa.array(rows["month"], pa.int32())}).filter(ok)
    g = t.group_by(["nir", "person"], use_threads=False).aggregate([("record_id", "count"), ("record_id", "min"),
                                                                     ("month", "min")])
    return pa.table({"nir": _arr(g.column("nir")), "person": _arr(g.column("person")), "rows": g.column("record_id_count"),
                     "record_id": g.column("record_id_min"), "month": g.column("month_min")}, schema=PAIR_SCHEMA)


COUNT_COLUMNS = ("rows", "nir_missing", "nir_bad_key", "nir_bad_format", "unlinked", "ambiguous", "problem_rows")
COUNTS_SCHEMA = pa.schema([pa.field("declarant", pa.string(), nullable=False), pa.field("source", pa.string(), nullable=False),
                           pa.field("month", pa.int32(), nullable=False),
                           *[pa.field(c, pa.int64(), nullable=False) for c in COUNT_COLUMNS]])


def declarant_counts(table: pa.Table | None, source: str) -> pa.Table:
    """Partial input of ``declarant_quality``: per declarant and month of these rows, the row
    count, the NIR problems, the rows left unlinked or ambiguous, and rows with any of those."""
    if table is None or table.num_rows == 0:
        return COUNTS_SCHEMA.empty_table()
    decl = "employer_id" if source == "career" else "payer_id"
    for c in (decl, "nir_status", "link_status"):
        if c not in table.column_names:
            raise InputError(f"signals: {source} rows lack column {c}")
    day = _days(table.column("start_date" if source == "career" else "period"))
    status = table.column("nir_status")
    link = table.column("link_status")

    def flag(col, value):
        return pa.array(_flags(col, (value,)).astype(np.int64))

    bad_nir = ~_flags(status, VALID)
    not_linked = ~_flags(link, ("linked",))
    declarant = _as_dict(table.column(decl))
    t = pa.table({
        "declarant": declarant, "month": pa.array(month_index(day, day >= -719162), pa.int32()),
        "rows": pa.array(np.ones(table.num_rows, np.int64)),
        "nir_missing": flag(status, "missing"), "nir_bad_key": flag(status, "bad_key"),
        "nir_bad_format": flag(status, "bad_format"), "unlinked": flag(link, "unlinked"),
        "ambiguous": flag(link, "ambiguous"), "problem_rows": pa.array((bad_nir | not_linked).astype(np.int64)),
    })
    g = t.group_by(["declarant", "month"], use_threads=False).aggregate([(c, "sum") for c in COUNT_COLUMNS])
    return pa.table({"declarant": pc.fill_null(_arr(g.column("declarant")), ""),
                     "source": pa.array([source] * g.num_rows),
                     "month": g.column("month"), **{c: g.column(f"{c}_sum") for c in COUNT_COLUMNS}},
                    schema=COUNTS_SCHEMA)


PERSONS_SCHEMA = pa.schema([pa.field("declarant", pa.string(), nullable=False),
                            pa.field("persons", pa.int64(), nullable=False),
                            pa.field("problem_persons", pa.int64(), nullable=False)])


def declarant_persons(table: pa.Table | None, source: str) -> pa.Table:
    """Partial input of the scorecard: per declarant, the distinct persons its rows declare (the
    linked person, else the declared NIR; rows with neither count as one) and how many of them
    have a problem row (NIR not valid, or the row not linked). A person's rows are all in one
    bucket, so the buckets' counts add up exactly for linked persons. Worked on the dictionary
    codes (integers), never on the strings."""
    if table is None or table.num_rows == 0:
        return PERSONS_SCHEMA.empty_table()
    for c in ("nir_status", "link_status"):
        if c not in table.column_names:
            raise InputError(f"signals: {source} rows lack column {c}")
    decl = _as_dict(table.column("employer_id" if source == "career" else "payer_id"))
    person, nir = _as_dict(table.column("person")), _as_dict(table.column("nir"))
    problem = ~_flags(table.column("nir_status"), VALID) | ~_flags(table.column("link_status"), ("linked",))

    def codes(d):
        return pc.fill_null(d.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)

    p, n = codes(person), codes(nir)
    who = np.where(p >= 0, p, len(person.dictionary) + 1 + n)  # the NIR's code when there is no person
    dc = codes(decl)
    width = len(person.dictionary) + len(nir.dictionary) + 2
    pairs, inverse = np.unique(dc * width + who, return_inverse=True)
    bad_pair = np.bincount(inverse.ravel(), weights=problem, minlength=len(pairs)) > 0
    d_of_pair = pairs // width
    used, first, counts = np.unique(d_of_pair, return_index=True, return_counts=True)
    bad = np.add.reduceat(bad_pair.astype(np.int64), first) if len(first) else np.zeros(0, np.int64)
    names = pc.fill_null(decl.dictionary.take(pa.array(np.maximum(used, 0))), "")
    names = pc.if_else(pa.array(used < 0), pa.scalar("", pa.string()), names)
    t = pa.table({"declarant": names, "persons": pa.array(counts.astype(np.int64)),
                  "problem_persons": pa.array(bad.astype(np.int64))})
    return t.group_by("declarant", use_threads=False).aggregate([("persons", "sum"), ("problem_persons", "sum")]) \
        .rename_columns(["declarant", "persons", "problem_persons"]).cast(PERSONS_SCHEMA)
