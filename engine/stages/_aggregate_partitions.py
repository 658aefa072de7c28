"""Per-partition aggregation: Arrow rows of some persons in, the aggregate tables out.

A partition holds every row of its persons (the stage guarantees it, by a shuffle on the
person or because the input is already partitioned by person). Persons get dense indices
in sorted order, so the outputs are sorted by person whatever the row order, and sums are
in cents: a partition's output does not depend on how its rows arrived. Amounts come out as
money (engine/io/_money.py, decimal(18, 2)); the revalued salaries and the SAM, which the
kernels compute in euros, rounded to the cent.

Besides the published tables, the career side writes ``career_person_year_state`` (STATE_SCHEMAS):
each person-year's integer accumulators (salary cents, days of each kind counted in days,
maternity periods) and the person's birth year and month, which the published tables do
not hold (quarters are divided per kind after the year's days are added up). With it, and
``resource_person_month`` (whose amounts are exact cents), an increment updates a person
from their previous aggregates and new rows alone (engine/stages/_aggregate_update.py).
A row may stand for several (``periods`` on career rows, ``count`` on resource rows): that
is how those accumulators come back in.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nirlink.engine.io._money import MONEY, cents_of, money_from_cents, round_cents
from nirlink.engine.reference._tables import cohort_table, year_table
from nirlink.kernels import InputError
from nirlink.kernels._career import CAREER_KINDS, DAYS_KINDS, aggregate_career
from nirlink.kernels._dates import first_day_of_month, month_index
from nirlink.kernels._resources import RESOURCE_KINDS, aggregate_resources

__all__ = ["career_partition", "resource_partition", "OUTPUT_SCHEMAS", "STATE_SCHEMAS", "CAREER_STATE", "CAREER_INPUT",
           "RESOURCE_INPUT", "DEFAULT_BEST_YEARS"]

DEFAULT_BEST_YEARS = 25  # when a person's birth year is unknown
CAREER_INPUT = ["person", "person_birth_year", "person_birth_month", "year", "kind", "gross_salary", "days"]
RESOURCE_INPUT = ["person", "period", "kind", "amount"]

_KIND_COLS = [pa.field(f"amount_{k}", MONEY, nullable=False) for k in RESOURCE_KINDS]
OUTPUT_SCHEMAS = {
    "career_person_year": pa.schema([
        pa.field("person", pa.string(), nullable=False),
        pa.field("year", pa.int16(), nullable=False),
        pa.field("gross_salary", MONEY, nullable=False),
        pa.field("capped_salary", MONEY, nullable=False),
        pa.field("quarters_salary", pa.int8(), nullable=False),
        pa.field("quarters_assimilated", pa.int16(), nullable=False),
        pa.field("quarters", pa.int8(), nullable=False),
        pa.field("revalued_capped_salary", MONEY, nullable=False),
        pa.field("counts_for_sam", pa.bool_(), nullable=False),
    ]),
    "career_person": pa.schema([
        pa.field("person", pa.string(), nullable=False),
        pa.field("birth_year", pa.int16()),
        pa.field("quarters", pa.int32(), nullable=False),
        pa.field("first_year", pa.int16(), nullable=False),
        pa.field("last_year", pa.int16(), nullable=False),
        pa.field("years", pa.int32(), nullable=False),
        pa.field("gross_salary", MONEY, nullable=False),
        pa.field("sam", MONEY, nullable=False),
        pa.field("sam_years", pa.int16(), nullable=False),
        pa.field("sam_best_years", pa.int16(), nullable=False),
    ]),
    "resource_person_month": pa.schema([
        pa.field("person", pa.string(), nullable=False),
        pa.field("period", pa.date32(), nullable=False),
        *_KIND_COLS,  # no total: the sum of these (37 of 90 MB at 200k persons; README "Exports")
        pa.field("rows", pa.int32(), nullable=False),
    ]),
    "resource_person_year": pa.schema([
        pa.field("person", pa.string(), nullable=False),
        pa.field("year", pa.int16(), nullable=False),
        *_KIND_COLS,
        pa.field("total", MONEY, nullable=False),
        pa.field("months", pa.int16(), nullable=False),
    ]),
    "resource_person_review": pa.schema([
        pa.field("person", pa.string(), nullable=False),
        pa.field("review_month", pa.date32(), nullable=False),
        pa.field("window_start", pa.date32(), nullable=False),
        pa.field("window_end", pa.date32(), nullable=False),
        pa.field("income_12m", MONEY, nullable=False),
        pa.field("months_with_income", pa.int16(), nullable=False),
    ]),
}


CAREER_STATE = "career_person_year_state"  # internal: read by the next increment, never exported
STATE_SCHEMAS = {
    CAREER_STATE: pa.schema([
        pa.field("person", pa.string(), nullable=False),
        pa.field("year", pa.int16(), nullable=False),
        pa.field("birth_year", pa.int16()),  # the person's, as on their rows (null: unknown)
        pa.field("birth_month", pa.int8()),
        pa.field("gross_cents", pa.int64(), nullable=False),
        *[pa.field(f"days_{k}", pa.int32(), nullable=False) for k in DAYS_KINDS],
        pa.field("maternity_periods", pa.int32(), nullable=False),
    ]),
}


def _dictionary(col) -> pa.DictionaryArray:
    """One dictionary array whose dictionary holds each distinct value once and only used
    values: a dictionary column as read from Parquet (chunks unified), else encoded here."""
    if isinstance(col, pa.ChunkedArray):
        col = col.unify_dictionaries() if pa.types.is_dictionary(col.type) else col
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if not pa.types.is_dictionary(col.type):
        return pc.dictionary_encode(col)
    dictionary = col.dictionary
    indices = col.indices.to_numpy(zero_copy_only=False)
    valid = indices[col.indices.is_valid().to_numpy(zero_copy_only=False)] if col.null_count else indices
    used = np.bincount(valid.astype(np.int64), minlength=len(dictionary)) > 0 if len(valid) else \
        np.zeros(len(dictionary), bool)
    if used.all() and len(pc.unique(dictionary)) == len(dictionary):
        return col
    # unused or repeated dictionary values (possible in files from other writers): encode again
    return pc.dictionary_encode(col.cast(dictionary.type))


def _persons(table: pa.Table) -> tuple[pa.Table, np.ndarray, pa.Array, dict[str, Any]]:
    """Drop (and count) rows without a person; dense person index in sorted person order.

    ``person`` may be a string column or a dictionary of strings (read as such from Parquet,
    which saves hashing every row's person again)."""
    person = table.column("person")
    value_type = person.type.value_type if pa.types.is_dictionary(person.type) else person.type
    if not (pa.types.is_string(value_type) or pa.types.is_large_string(value_type)):
        person = person.cast(pa.string())
        table = table.set_column(table.column_names.index("person"), "person", person)
    missing = person.null_count
    stats = {"rows_in": table.num_rows, "rows_without_person": missing}
    if missing:
        stats["_without_person_mask"] = True
        table = table.filter(pc.is_valid(person))
    enc = _dictionary(table.column("person"))
    dictionary = enc.dictionary
    order = pc.array_sort_indices(dictionary).to_numpy()
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    idx = rank[enc.indices.to_numpy(zero_copy_only=False)]
    persons = dictionary.take(pa.array(order))
    if not pa.types.is_string(persons.type):
        persons = persons.cast(pa.string())
    return table, idx, persons, stats


def _codes(values, names: tuple[str, ...], what: str) -> np.ndarray:
    """Index of each value in ``names`` (a string or dictionary column); raises naming unknown values."""
    if isinstance(values, pa.ChunkedArray) and pa.types.is_dictionary(values.type):
        enc = _dictionary(values)
        per_value = pc.index_in(enc.dictionary, value_set=pa.array(names)).to_numpy(zero_copy_only=False)
        per_value = np.where(np.isnan(per_value.astype(float)), -1, per_value).astype(np.int8)
        indices = enc.indices.to_numpy(zero_copy_only=False)
        if enc.null_count or (per_value < 0).any() and (per_value[indices] < 0).any():
            values = enc.cast(enc.dictionary.type)  # slow path: name the unknown values
        else:
            return per_value[indices]
    codes = pc.index_in(values, value_set=pa.array(names)).to_numpy(zero_copy_only=False)
    codes = np.where(np.isnan(codes.astype(float)), -1, codes).astype(np.int64) if codes.dtype.kind == "f" else codes
    if (codes < 0).any():
        bad = pc.filter(values, pa.array(codes < 0)).unique().to_pylist()[:5]
        raise InputError(f"{what}: unknown kind(s) {bad}; expected one of {', '.join(names)}")
    return codes


def _amounts(col) -> np.ndarray:
    """An amount column (money, or numbers) as float64 with NaN for null, the kernels' input:
    whole cents / 100, which the kernels round back to the same cents."""
    out = cents_of(col, null=0) / 100.0
    if col.null_count:
        out[~np.asarray(pc.is_valid(col).to_numpy(zero_copy_only=False), bool)] = np.nan
    return out


def _num(col, dtype, fill=0):
    return pc.fill_null(col, fill).to_numpy(zero_copy_only=False).astype(dtype)


def career_partition(table: pa.Table, state: bool = True) -> tuple[dict[str, pa.Table], dict[str, Any]]:
    """Aggregate the career rows of one partition (see CAREER_INPUT for the columns); ``state``:
    the accumulators (CAREER_STATE) too."""
    table, idx, persons, stats = _persons(table)
    n_persons = len(persons)
    kinds = _codes(table.column("kind"), CAREER_KINDS, "career aggregation")
    gross = _amounts(table.column("gross_salary"))
    years = _num(table.column("year"), np.int64)
    days = _num(table.column("days"), np.int64)
    # each person's birth cohort (first known value among their rows)
    by = _num(table.column("person_birth_year"), np.int64, 0) if "person_birth_year" in table.column_names \
        else np.zeros(len(idx), np.int64)
    bm = _num(table.column("person_birth_month"), np.int64, 0) if "person_birth_month" in table.column_names \
        else np.zeros(len(idx), np.int64)
    birth_year = np.zeros(n_persons, np.int64)
    birth_month = np.zeros(n_persons, np.int64)
    known = by > 0
    birth_year[idx[known]] = by[known]
    birth_month[idx[known]] = bm[known]
    best = np.full(n_persons, DEFAULT_BEST_YEARS, np.int64)
    has = birth_year > 0
    if has.any():
        best[has] = cohort_table().best_years(birth_year[has], birth_month[has])
    periods = _num(table.column("periods"), np.int64) if "periods" in table.column_names else None
    res = aggregate_career(idx, n_persons, years, kinds, gross, days, best_years=best, table=year_table(),
                           periods=periods)
    y, p = res["years"], res["persons"]
    y_has = has[y["person"]]
    out = {
        "career_person_year": pa.table({
            "person": persons.take(pa.array(y["person"])),
            "year": pa.array(y["year"]),
            "gross_salary": money_from_cents(y["gross_cents"]),
            "capped_salary": money_from_cents(y["capped_cents"]),
            "quarters_salary": pa.array(y["quarters_salary"]),
            "quarters_assimilated": pa.array(y["quarters_assimilated"]),
            "quarters": pa.array(y["quarters"]),
            "revalued_capped_salary": money_from_cents(round_cents(y["revalued_capped"])),
            "counts_for_sam": pa.array(y["counts_for_sam"]),
        }, schema=OUTPUT_SCHEMAS["career_person_year"]),
        "career_person": pa.table({
            "person": persons,
            "birth_year": pa.array(birth_year.astype(np.int16), mask=~has),
            "quarters": pa.array(p["quarters"].astype(np.int32)),
            "first_year": pa.array(p["first_year"].astype(np.int16)),
            "last_year": pa.array(p["last_year"].astype(np.int16)),
            "years": pa.array(p["years"].astype(np.int32)),
            "gross_salary": money_from_cents(p["gross_cents"]),
            "sam": money_from_cents(round_cents(p["sam"])),
            "sam_years": pa.array(p["sam_years"].astype(np.int16)),
            "sam_best_years": pa.array(best.astype(np.int16)),
        }, schema=OUTPUT_SCHEMAS["career_person"]),
    }
    if state:
        out[CAREER_STATE] = pa.table({
            "person": persons.take(pa.array(y["person"])),
            "year": pa.array(y["year"]),
            "birth_year": pa.array(birth_year[y["person"]].astype(np.int16), mask=~y_has),
            "birth_month": pa.array(birth_month[y["person"]].astype(np.int8), mask=~y_has),
            "gross_cents": pa.array(y["gross_cents"]),
            **{f"days_{k}": pa.array(np.ascontiguousarray(y["days"][:, i])) for i, k in enumerate(DAYS_KINDS)},
            "maternity_periods": pa.array(y["periods"]),
        }, schema=STATE_SCHEMAS[CAREER_STATE])
    stats.pop("_without_person_mask", None)
    stats.update(persons=n_persons, person_years=len(y["person"]))
    return out, stats


def _month_index(period) -> np.ndarray:
    days = pc.cast(period, pa.date32()).combine_chunks() if isinstance(period, pa.ChunkedArray) \
        else pc.cast(period, pa.date32())
    return month_index(pc.cast(days, pa.int32()).to_numpy(zero_copy_only=False))


def _month_dates(months: np.ndarray) -> pa.Array:
    return pa.Array.from_buffers(pa.date32(), len(months), [None, pa.py_buffer(first_day_of_month(months))])


def resource_partition(table: pa.Table, *, first_review_month: int | None = None) -> tuple[dict[str, pa.Table], dict]:
    """Aggregate the resource rows of one partition (see RESOURCE_INPUT for the columns)."""
    table, idx, persons, stats = _persons(table)
    kinds = _codes(table.column("kind"), RESOURCE_KINDS, "resource aggregation")
    if table.column("period").null_count:
        raise InputError("resource aggregation: period must not be null")
    month = _month_index(table.column("period"))
    amount = _amounts(table.column("amount"))
    count = _num(table.column("count"), np.int64) if "count" in table.column_names else None
    res = aggregate_resources(idx, len(persons), month, kinds, amount, first_review_month=first_review_month,
                              count=count)
    m, y, r = res["months"], res["years"], res["reviews"]
    kind_cols_m = {f"amount_{k}": money_from_cents(m["by_kind"][:, i]) for i, k in enumerate(RESOURCE_KINDS)}
    kind_cols_y = {f"amount_{k}": money_from_cents(y["by_kind"][:, i]) for i, k in enumerate(RESOURCE_KINDS)}
    out = {
        "resource_person_month": pa.table({
            "person": persons.take(pa.array(m["person"])), "period": _month_dates(m["month"]), **kind_cols_m,
            "rows": pa.array(m["rows"].astype(np.int32)),
        }, schema=OUTPUT_SCHEMAS["resource_person_month"]),
        "resource_person_year": pa.table({
            "person": persons.take(pa.array(y["person"])), "year": pa.array(y["year"].astype(np.int16)), **kind_cols_y,
            "total": money_from_cents(y["total"]), "months": pa.array(y["months"].astype(np.int16)),
        }, schema=OUTPUT_SCHEMAS["resource_person_year"]),
        "resource_person_review": pa.table({
            "person": persons.take(pa.array(r["person"])), "review_month": _month_dates(r["review_month"]),
            "window_start": _month_dates(r["review_month"] - 13), "window_end": _month_dates(r["review_month"] - 2),
            "income_12m": money_from_cents(r["total"]), "months_with_income": pa.array(r["months"].astype(np.int16)),
        }, schema=OUTPUT_SCHEMAS["resource_person_review"]),
    }
    stats.pop("_without_person_mask", None)
    stats.update(persons=len(persons), person_months=len(m["person"]))
    return out, stats
