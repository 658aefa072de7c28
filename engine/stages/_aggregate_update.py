"""An increment's aggregates of a person bucket that only gained rows: from the previous job's
aggregates of the bucket and the new rows alone, equal to aggregating every row again.

Every aggregate is a function of per-person integer accumulators that new rows only add to:
- resources: per person and month, the cents of each kind and the rows. They are the
  previous ``resource_person_month`` itself (amounts are money, decimal(18, 2): their cents
  exactly, engine/io/_money.py); the year and
  review tables are computed from the months, as in a full run.
- career: per person and year, the salary cents (before the PASS cap: the cap, quarters by
  salary and the SAM come from the year's total), the days of each kind that counts quarters
  by days (added up over the year before dividing: 30 + 30 days of unemployment make one
  quarter, so the published ``quarters_assimilated`` cannot be updated) and the maternity
  periods; and the person's birth year and month (the SAM's number of best years). The
  published ``career_person_year`` lacks the days and the birth month, so the aggregate stage
  writes ``career_person_year_state`` (one file per bucket beside the published tables,
  never exported); the person table is computed from the updated years, as in a full run.

The previous accumulators go back into the same kernels as rows that stand for several
(``pseudo rows``: one per person-month and kind with cents, the month's row count on the
first; one salary row per person-year with its cents, one row per days kind with days, one
maternity row with its periods), followed by the new rows; sums are integers, so the order
does not matter and every output equals the full run's, bit for bit (the SAM sums the same
revalued years, largest first). A person whose rows moved or changed is never updated this
way: their bucket is rewritten by the attach stage and computed again from all its rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from nirlink.engine.io._money import MONEY, cents_of, money_from_cents
from nirlink.kernels import StageError
from nirlink.kernels._career import CAREER_KINDS, DAYS_KINDS
from nirlink.kernels._resources import RESOURCE_KINDS

from ._aggregate_partitions import CAREER_STATE

__all__ = ["STATE_TABLES", "previous_state", "career_update_rows", "resource_update_rows", "new_row_counts"]

STATE_TABLES = {"career": CAREER_STATE, "resource": "resource_person_month"}  # what an update reads per bucket
MAX_CENTS = 1 << 50  # below this, cents -> cents / 100.0 -> rint(x * 100) gives the same cents

# person and kind as dictionaries (as the stage reads them from Parquet): no string built per row
_DICT = pa.dictionary(pa.int32(), pa.string())
_CAREER_ROWS = pa.schema([("person", _DICT), ("person_birth_year", pa.int32()), ("person_birth_month", pa.int32()),
                          ("year", pa.int32()), ("kind", _DICT), ("gross_salary", MONEY), ("days", pa.int64()),
                          ("periods", pa.int64())])
_RESOURCE_ROWS = pa.schema([("person", _DICT), ("period", pa.date32()), ("kind", _DICT), ("amount", MONEY),
                            ("count", pa.int64())])


def previous_state(kind: str, previous: str | Path, index: int) -> pa.Table | None:
    """The previous job's accumulators of bucket ``index`` (None: the bucket had no person)."""
    path = Path(previous) / STATE_TABLES[kind] / f"part-{index:05d}.parquet"
    return pq.read_table(path, use_threads=False, read_dictionary=["person"]) if path.exists() else None


def _as(column, type_: pa.DataType):
    """``column`` as ``type_`` (a dictionary type: dictionary-encoded first when it is not one;
    money from numbers: rounded to the cent as the kernels' input rounds it, ``cents_of``:
    Arrow's cast rounded 0.005, 0.5 cents in binary, up where np.round gives 0)."""
    if type_ == MONEY and not pa.types.is_decimal(column.type):
        return money_from_cents(cents_of(column), valid=np.asarray(pc.is_valid(column)))
    if pa.types.is_dictionary(type_) and not pa.types.is_dictionary(column.type):
        column = pc.dictionary_encode(column)
    return column.cast(type_)


def _kinds(codes: np.ndarray, names: tuple[str, ...]) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)), pa.array(names, pa.string()))


def _too_large(cents: np.ndarray, what: str, where: str) -> None:
    if len(cents) and int(cents.max()) >= MAX_CENTS:
        raise StageError(f"aggregate: {where}: {what} beyond {MAX_CENTS} cents, too large to update exactly")


def _new_rows(new: pa.Table | None, schema: pa.Schema, one: str) -> pa.Table:
    """New rows in the pseudo rows' schema, each standing for one (``one``: that column)."""
    if new is None or new.num_rows == 0:
        return schema.empty_table()
    cols = []
    for f in schema:
        if f.name == one:
            cols.append(pa.array(np.ones(new.num_rows, np.int64)))
        elif f.name in new.column_names:
            cols.append(_as(new.column(f.name), f.type))
        else:
            cols.append(pa.nulls(new.num_rows, f.type))
    return pa.table(cols, schema=schema)


def career_update_rows(state: pa.Table | None, new: pa.Table | None, where: str = "career") -> pa.Table:
    """Career rows for ``career_partition``: the previous person-years as pseudo rows, then ``new``."""
    parts = [] if state is None else [_career_pseudo_rows(state, where)]
    return pa.concat_tables([*parts, _new_rows(new, _CAREER_ROWS, "periods")])


def _career_pseudo_rows(state: pa.Table, where: str) -> pa.Table:
    n = state.num_rows
    gross = state.column("gross_cents").to_numpy()
    _too_large(gross, "a year's salary", where)
    maternity = CAREER_KINDS.index("maternity")
    # which state row, which kind: one salary row each (the year exists), then days and periods
    rows = [np.arange(n)]
    kinds = [np.zeros(n, np.int64)]
    days = [np.zeros(n, np.int64)]
    periods = [np.zeros(n, np.int64)]
    for k in DAYS_KINDS:
        d = state.column(f"days_{k}").to_numpy().astype(np.int64)
        (at,) = np.nonzero(d)
        rows.append(at)
        kinds.append(np.full(len(at), CAREER_KINDS.index(k)))
        days.append(d[at])
        periods.append(np.zeros(len(at), np.int64))
    m = state.column("maternity_periods").to_numpy().astype(np.int64)
    (at,) = np.nonzero(m)
    rows.append(at)
    kinds.append(np.full(len(at), maternity))
    days.append(np.zeros(len(at), np.int64))
    periods.append(m[at])
    r = pa.array(np.concatenate(rows))
    k = np.concatenate(kinds)
    salary = k == 0
    return pa.table([_as(state.column("person").take(r), _DICT), state.column("birth_year").take(r).cast(pa.int32()),
                     state.column("birth_month").take(r).cast(pa.int32()), state.column("year").take(r).cast(pa.int32()),
                     _kinds(k, CAREER_KINDS),
                     money_from_cents(np.where(salary, gross[np.concatenate(rows)], 0), valid=salary),
                     pa.array(np.concatenate(days)), pa.array(np.concatenate(periods))],
                    schema=_CAREER_ROWS)


def resource_update_rows(months: pa.Table | None, new: pa.Table | None, where: str = "resource") -> pa.Table:
    """Resource rows for ``resource_partition``: the previous person-months as pseudo rows, then ``new``."""
    parts = [] if months is None else [_resource_pseudo_rows(months, where)]
    return pa.concat_tables([*parts, _new_rows(new, _RESOURCE_ROWS, "count")])


def _resource_pseudo_rows(months: pa.Table, where: str) -> pa.Table:
    cents = np.column_stack([cents_of(months.column(f"amount_{k}")) for k in RESOURCE_KINDS])
    _too_large(cents.reshape(-1), "a month's amount", where)
    has = cents > 0
    has[:, 0] |= ~has.any(axis=1)  # a month of zero amounts still has its rows: one pseudo row of kind 0
    first = np.argmax(has, axis=1)
    row, kind = np.nonzero(has)  # row-major: a month's kinds in order, its first one first
    count = np.where(kind == first[row], months.column("rows").to_numpy().astype(np.int64)[row], 0)
    r = pa.array(row)
    return pa.table([_as(months.column("person").take(r), _DICT), months.column("period").take(r),
                     _kinds(kind, RESOURCE_KINDS),
                     money_from_cents(cents[row, kind]), pa.array(count)], schema=_RESOURCE_ROWS)


def new_row_counts(new: pa.Table | None) -> dict[str, int]:
    """The counts a bucket's new rows add to the previous job's (``rows_in``, ``rows_without_person``)."""
    if new is None:
        return {"rows_in": 0, "rows_without_person": 0}
    return {"rows_in": new.num_rows, "rows_without_person": new.column("person").null_count}
