"""Ingest of one chunk: coerce types, check NIRs, normalise identities, split accepted / rejected.

Columnar throughout: every check produces a per-row error array; a row with any error
goes to the rejects with its first failing column, its reason code (engine/_schemas.py
REASONS) and every (column, reason) pair; the others are accepted. Nothing is dropped:
rows read = accepted + rejected, per chunk and so per file.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kernels._dates import DATE_BAD, DATE_MISSING, DATE_OK, parse_dates
from kernels._nir import DEPT_2A, DEPT_2B, NIR_STATUS, check_nir
from kernels._numbers import (
    DECIMAL_AUTO,
    DECIMAL_COMMA,
    DECIMAL_POINT,
    NUM_BAD,
    NUM_MISSING,
    latin1_to_utf8,
    parse_integers,
    parse_numbers,
    utf8_valid,
)
from kernels._text import FLAG_BAD_UTF8, FLAG_CONTROL, first_token, normalize_names, squeeze

from ._readers import Chunk, ChunkTask
from ._reference import year_table
from ._schemas import ACCEPTED_SCHEMAS, COLUMNS, KINDS, rejects_schema

__all__ = ["process_chunk", "ChunkResult"]

_DECIMAL = {"auto": DECIMAL_AUTO, ".": DECIMAL_POINT, ",": DECIMAL_COMMA}
_CONTROL = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"
_NEWLINE = r"[\r\n]"
REASON_CODES = ("missing_value", "bad_number", "negative_amount", "bad_date", "year_out_of_range",
                "date_outside_year", "end_before_start", "bad_days", "bad_kind", "bad_sex", "bad_nir",
                "bad_encoding", "bad_characters", "field_too_long", "bad_row")
_R = {name: i + 1 for i, name in enumerate(REASON_CODES)}  # 0 = no error


@dataclass
class ChunkResult:
    accepted: pa.Table
    rejects: pa.Table
    stats: dict[str, Any]


class _Errors:
    """First error per row, and every (column, reason) pair for the rejects."""

    def __init__(self, n: int, columns: list[str]):
        self.n = n
        self.columns = columns
        self.first_col = np.full(n, -1, np.int16)
        self.first_reason = np.zeros(n, np.int8)
        self.all: list[tuple[int, np.ndarray, int]] = []  # (column index, mask, reason)

    def add(self, column: str, mask: np.ndarray, reason: str) -> None:
        mask = np.asarray(mask, bool)
        if not mask.any():
            return
        ci = self.columns.index(column)
        code = _R[reason]
        fresh = mask & (self.first_reason == 0)
        self.first_col[fresh] = ci
        self.first_reason[fresh] = code
        self.all.append((ci, mask, code))

    @property
    def rejected(self) -> np.ndarray:
        return self.first_reason > 0


def _text(arr: pa.Array, task: ChunkTask, errors: _Errors, column: str, max_length: int, stats: Counter) -> pa.Array:
    """A UTF-8 string array from binary/string/other input, with encoding, control and length checks."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    typ = arr.type
    if pa.types.is_dictionary(typ):
        arr = arr.cast(typ.value_type)
        typ = arr.type
    if pa.types.is_binary(typ) or pa.types.is_large_binary(typ):
        ok = utf8_valid(arr)
        if not ok.all():
            bad = ~ok & np.asarray(arr.is_valid())
            if task.strict_utf8:
                errors.add(column, bad, "bad_encoding")
            else:
                stats["values_transcoded_from_latin1"] += int(bad.sum())
            arr = latin1_to_utf8(arr, ~ok)
        else:
            arr = arr.view(pa.string() if pa.types.is_binary(typ) else pa.large_string())
    elif not (pa.types.is_string(typ) or pa.types.is_large_string(typ)):
        arr = arr.cast(pa.string())
    if len(arr) and arr.null_count < len(arr):
        ctl = pc.fill_null(pc.match_substring_regex(arr, _CONTROL), False).to_numpy(zero_copy_only=False)
        errors.add(column, ctl, "bad_characters")
        long = pc.fill_null(pc.greater(pc.utf8_length(arr), max_length), False).to_numpy(zero_copy_only=False)
        errors.add(column, long, "field_too_long")
    return arr


def _blank(arr: pa.Array) -> np.ndarray:
    """True where the value is null or only spaces."""
    if len(arr) == 0:
        return np.zeros(0, bool)
    return pc.fill_null(pc.equal(pc.utf8_trim_whitespace(arr), ""), True).to_numpy(zero_copy_only=False)


def _dept_text(dept: np.ndarray) -> pa.Array:
    out = np.empty(len(dept), dtype=object)
    out[:] = None
    for code in np.unique(dept[dept > 0]):
        text = "2A" if code == DEPT_2A else "2B" if code == DEPT_2B else f"{code:02d}"
        out[dept == code] = text
    return pa.array(out, pa.string())


def _nir_columns(values: pa.Array, birth_year: np.ndarray, today_year: int) -> dict[str, Any]:
    r = check_nir(values)
    yy = r["yy"].astype(np.int64)
    have = yy >= 0
    century = np.where(yy > today_year % 100, 1900, 2000) + yy
    known = (birth_year > 0) & (birth_year % 100 == yy)
    nir_year = np.where(have, np.where(known, birth_year, century), 0).astype(np.int16)
    status_names = pa.array(NIR_STATUS)
    return {
        "nir": r["nir"],
        "nir_status": pa.DictionaryArray.from_arrays(pa.array(r["status"].astype(np.int32)), status_names).cast(pa.string()),
        "nir_key_computed": pa.array(r["key_computed"]),
        "nir_sex": pa.array(r["sex"], mask=r["sex"] == 0),
        "nir_birth_year": pa.array(nir_year, mask=~have),
        "nir_birth_month": pa.array(r["month"], mask=~have),
        "nir_department": _dept_text(r["dept"]),
        "_status": r["status"],
        "_key_computed": r["key_computed"],
    }


def _names(arr: pa.Array, errors: _Errors, column: str, *, first_names: bool = False) -> dict[str, pa.Array]:
    norm, flags = normalize_names(arr, keep_hyphen=first_names)
    errors.add(column, (flags & FLAG_CONTROL) > 0, "bad_characters")
    errors.add(column, (flags & FLAG_BAD_UTF8) > 0, "bad_encoding")
    return {"norm": norm, "key": squeeze(norm), "first": first_token(norm)}


def _numbers(arr: pa.Array, decimal: int) -> tuple[np.ndarray, np.ndarray]:
    """(value, status) from text or numeric input."""
    typ = arr.type
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return parse_numbers(arr, decimal=decimal)
    values = pc.cast(arr, pa.float64(), safe=False).to_numpy(zero_copy_only=False)
    valid = np.asarray(arr.is_valid())
    status = np.where(valid, np.where(np.isfinite(np.where(valid, values, 0.0)), 0, NUM_BAD), NUM_MISSING).astype(np.int8)
    return np.where(status == 0, values, 0.0), status


def _dates(arr: pa.Array, *, allow_unknown: bool) -> dict[str, np.ndarray]:
    typ = arr.type
    if pa.types.is_date(typ) or pa.types.is_timestamp(typ):
        valid = np.asarray(arr.is_valid())
        days = pc.cast(pc.cast(arr, pa.date32()), pa.int32()).to_numpy(zero_copy_only=False)
        days = np.where(valid, days, 0).astype(np.int32)
        d = days.astype("datetime64[D]")
        y = d.astype("datetime64[Y]").astype(np.int64) + 1970
        m = d.astype("datetime64[M]").astype(np.int64) % 12 + 1
        dd = (d - d.astype("datetime64[M]")).astype(np.int64) + 1
        return {"year": np.where(valid, y, 0).astype(np.int16), "month": np.where(valid, m, 0).astype(np.int8),
                "day": np.where(valid, dd, 0).astype(np.int8), "ordinal": days,
                "status": np.where(valid, DATE_OK, DATE_MISSING).astype(np.int8)}
    return parse_dates(arr, allow_unknown=allow_unknown)


def _date32(days: np.ndarray) -> pa.Array:
    return pa.array(days.astype(np.int32)).cast(pa.date32())


def process_chunk(chunk: Chunk, task: ChunkTask, *, today_year: int) -> ChunkResult:
    kind = task.kind
    spec_cols = {c.name: c for c in COLUMNS[kind]}
    t = chunk.table
    n = t.num_rows
    present = set(t.column_names)
    col_names = [c.name for c in COLUMNS[kind]]
    errors = _Errors(n, col_names)
    stats: Counter = Counter()
    decimal = _DECIMAL.get(task.decimal, DECIMAL_AUTO)
    yt = year_table()

    text: dict[str, pa.Array] = {}
    for name in col_names:
        if name not in present:
            continue
        col = spec_cols[name]
        raw = t.column(name)
        if col.parse in ("text", "nir", "kind", "nir_kind") or pa.types.is_binary(raw.type) or \
                pa.types.is_large_binary(raw.type) or pa.types.is_dictionary(raw.type):
            text[name] = _text(raw, task, errors, name, col.max_length, stats)
        else:
            text[name] = raw.combine_chunks() if isinstance(raw, pa.ChunkedArray) else raw
        if col.value:
            arr = text[name]
            blank = _blank(arr) if (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)) \
                else ~np.asarray(arr.is_valid())
            errors.add(name, blank, "missing_value")

    def get(name: str) -> pa.Array | None:
        return text.get(name)

    out: dict[str, Any] = {}
    # ----- identity
    birth = _dates(get("birth_date"), allow_unknown=True) if get("birth_date") is not None else None
    if birth is not None:
        errors.add("birth_date", birth["status"] == DATE_BAD, "bad_date")
        birth_year = birth["year"].astype(np.int64)
    else:
        birth_year = np.zeros(n, np.int64)

    nir_col = "nir" if kind == "register" else "declared_nir"
    nir_in = get(nir_col)
    if nir_in is None:
        nir_in = pa.nulls(n, pa.string())
    nir = _nir_columns(nir_in, birth_year, today_year)
    for code in np.unique(nir["_status"]):
        stats[f"nir_{NIR_STATUS[code]}"] += int((nir["_status"] == code).sum())
    stats["nir_key_computed"] += int(nir["_key_computed"].sum())

    last_name = get("last_name") if get("last_name") is not None else pa.nulls(n, pa.string())
    first_col = "first_names" if kind == "register" else "first_name"
    first_in = get(first_col) if get(first_col) is not None else pa.nulls(n, pa.string())
    ln = _names(last_name, errors, "last_name")
    fn = _names(first_in, errors, first_col, first_names=True)
    identity = {
        "last_name_norm": ln["norm"], "last_name_key": ln["key"],
        "first_name_norm": fn["first"], "first_names_norm": fn["norm"],
        "birth_year": pa.array(birth["year"] if birth is not None else np.zeros(n, np.int16)),
        "birth_month": pa.array(birth["month"] if birth is not None else np.zeros(n, np.int8)),
        "birth_day": pa.array(birth["day"] if birth is not None else np.zeros(n, np.int8)),
    }

    if kind == "register":
        status = nir["_status"]
        errors.add("nir", (status >= 3), "bad_nir")  # bad key or format (missing is missing_value)
        sex_arr = get("sex")
        sex = nir["nir_sex"].to_numpy(zero_copy_only=False)
        sex = np.where(np.isnan(sex.astype(float)), 0, sex).astype(np.int64) if sex.dtype.kind == "f" else sex
        sex = np.where(np.isin(sex, (1, 3, 7)), 1, np.where(np.isin(sex, (2, 4, 8)), 2, 0)).astype(np.int8)
        if sex_arr is not None:
            given = _sex(sex_arr)
            errors.add("sex", given < 0, "bad_sex")
            sex = np.where(given > 0, given, sex).astype(np.int8)
        death = get("death_date")
        if death is not None:
            dd = _dates(death, allow_unknown=False)
            errors.add("death_date", dd["status"] == DATE_BAD, "bad_date")
            death_arr = pa.array(dd["ordinal"], mask=dd["status"] != DATE_OK).cast(pa.date32())
        else:
            death_arr = pa.nulls(n, pa.date32())
        nk = get("nir_kind")
        derived_kind = np.where(nir["_status"] == 1, "temporary", "permanent")
        if nk is not None:
            given = pc.utf8_lower(pc.utf8_trim_whitespace(nk))
            kinds = np.where(_blank(nk), derived_kind, np.asarray(given.to_pylist(), dtype=object))
        else:
            kinds = derived_kind
        usage = get("usage_name")
        if usage is not None:
            un = _names(usage, errors, "usage_name")
            blank_usage = _blank(usage)
            usage_norm = pc.if_else(pa.array(blank_usage), pa.nulls(n, pa.string()), un["norm"])
            usage_key = pc.if_else(pa.array(blank_usage), pa.nulls(n, pa.string()), un["key"])
            usage_raw = pc.if_else(pa.array(blank_usage), pa.nulls(n, pa.string()), usage)
        else:
            usage_norm = usage_key = usage_raw = pa.nulls(n, pa.string())
        out = {
            "nir": nir["nir"], "nir_status": nir["nir_status"], "nir_sex": nir["nir_sex"],
            "nir_birth_year": nir["nir_birth_year"], "nir_birth_month": nir["nir_birth_month"],
            "nir_department": nir["nir_department"],
            "sex": pa.array(sex, mask=sex == 0),
            "birth_date": get("birth_date") if get("birth_date") is not None else pa.nulls(n, pa.string()),
            "birth_place": get("birth_place") if get("birth_place") is not None else pa.nulls(n, pa.string()),
            "last_name": last_name, "usage_name": usage_raw, "first_names": first_in,
            **identity,
            "usage_name_norm": usage_norm, "usage_name_key": usage_key,
            "death_date": death_arr,
            "nir_kind": pa.array(kinds, pa.string()),
        }
    else:
        record_id = _record_ids(get("record_id"), chunk, task, errors)
        out = {
            "record_id": record_id,
            "declared_nir": _clean_declared(nir_in),
            **{k: nir[k] for k in ("nir", "nir_status", "nir_key_computed", "nir_sex", "nir_birth_year",
                                   "nir_birth_month", "nir_department")},
            "last_name": last_name, "first_name": first_in,
            "birth_date": get("birth_date") if get("birth_date") is not None else pa.nulls(n, pa.string()),
            **identity,
        }
        kinds = pc.utf8_lower(pc.utf8_trim_whitespace(get("kind")))
        kind_ok = pc.fill_null(pc.is_in(kinds, value_set=pa.array(KINDS[kind])), False).to_numpy(zero_copy_only=False)
        errors.add("kind", ~kind_ok & ~_blank(get("kind")), "bad_kind")
        if kind == "career":
            out.update(_career_fields(get, kinds, n, errors, decimal, yt))
        else:
            out.update(_resource_fields(get, kinds, n, errors, decimal, yt))

    out["source_file"] = pa.array(np.full(n, task.path, dtype=object), pa.string()) if n else pa.array([], pa.string())
    out["row_number"] = pa.array(chunk.row_numbers.astype(np.int64))

    rejected = errors.rejected
    keep = pa.array(~rejected)
    schema = ACCEPTED_SCHEMAS[kind]
    accepted = pa.table({f.name: _as(out[f.name], f.type) for f in schema}, schema=schema).filter(keep)

    rejects = _rejects(t, text, errors, chunk, task, out.get("record_id"))
    stats["rows_read"] += n + len(chunk.bad_rows)
    stats["accepted"] += accepted.num_rows
    stats["rejected"] += int(rejected.sum()) + len(chunk.bad_rows)
    for code in np.unique(errors.first_reason[rejected]):
        stats[f"reason_{REASON_CODES[code - 1]}"] += int((errors.first_reason == code).sum())
    if chunk.bad_rows:
        stats["reason_bad_row"] += len(chunk.bad_rows)
    return ChunkResult(accepted, rejects, dict(stats))


def _as(arr, typ):
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if arr.type != typ:
        arr = arr.cast(typ)
    return arr


def _sex(arr: pa.Array) -> np.ndarray:
    """1/2 from '1', '2', 'M', 'F', 'H' (homme); 0 when empty; -1 when not understood."""
    if pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type):
        v = pc.fill_null(pc.cast(arr, pa.int64(), safe=False), 0).to_numpy(zero_copy_only=False)
        return np.where(v == 0, 0, np.where(np.isin(v, (1, 2)), v, -1)).astype(np.int8)
    s = pc.utf8_upper(pc.utf8_trim_whitespace(pc.fill_null(arr, "")))
    table = {"": 0, "1": 1, "2": 2, "M": 1, "H": 1, "F": 2}
    return np.array([table.get(x, -1) for x in s.to_pylist()], np.int8)


def _clean_declared(values: pa.Array) -> pa.Array:
    """The declared NIR as given, trimmed; empty becomes null."""
    trimmed = pc.utf8_trim_whitespace(values)
    return pc.if_else(pc.equal(trimmed, ""), pa.nulls(len(values), pa.string()), trimmed)


def _record_ids(arr, chunk: Chunk, task: ChunkTask, errors: _Errors) -> pa.Array:
    if arr is None:
        # stable ids from where the row is: input, file, row number
        base = (np.int64(task.input_index) << 54) | (np.int64(task.file_index) << 36)
        return pa.array(base + chunk.row_numbers.astype(np.int64))
    if pa.types.is_integer(arr.type):
        errors.add("record_id", ~np.asarray(arr.is_valid()), "missing_value")
        return pa.array(pc.fill_null(arr, 0).to_numpy(zero_copy_only=False).astype(np.int64))
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = arr.cast(pa.string())
    value, status = parse_integers(arr)
    errors.add("record_id", status == NUM_BAD, "bad_number")
    errors.add("record_id", status == NUM_MISSING, "missing_value")
    return pa.array(value)


def _career_fields(get, kinds, n, errors: _Errors, decimal, yt) -> dict[str, Any]:
    year_v, year_s = _numbers(get("year"), DECIMAL_POINT)
    bad_year = (year_s == NUM_BAD) | ((year_s == 0) & (year_v != np.floor(year_v)))
    errors.add("year", bad_year, "bad_number")
    year = np.where(year_s == 0, year_v, 0).astype(np.int64)
    out_range = (year_s == 0) & ~bad_year & ((year < yt.first_year) | (year > yt.last_year))
    errors.add("year", out_range, "year_out_of_range")
    start = _dates(get("start_date"), allow_unknown=False)
    end = _dates(get("end_date"), allow_unknown=False)
    errors.add("start_date", start["status"] == DATE_BAD, "bad_date")
    errors.add("end_date", end["status"] == DATE_BAD, "bad_date")
    both = (start["status"] == DATE_OK) & (end["status"] == DATE_OK)
    errors.add("end_date", both & (end["ordinal"] < start["ordinal"]), "end_before_start")
    in_year = (start["year"] == year) & (end["year"] == year)
    errors.add("start_date", both & (year_s == 0) & ~in_year, "date_outside_year")
    span = (end["ordinal"].astype(np.int64) - start["ordinal"] + 1)
    days_arr = get("days")
    if days_arr is not None:
        dv, ds = _numbers(days_arr, DECIMAL_POINT)
        bad_days = (ds == NUM_BAD) | ((ds == 0) & ((dv != np.floor(dv)) | (dv < 0) | (dv > 366) | (both & (dv > span))))
        errors.add("days", bad_days, "bad_days")
        days = np.where(ds == 0, dv, np.where(both, span, 0))
    else:
        days = np.where(both, span, 0)
    salary_v, salary_s = _numbers(get("gross_salary"), decimal)
    is_salary = pc.fill_null(pc.equal(kinds, "salary"), False).to_numpy(zero_copy_only=False)
    errors.add("gross_salary", salary_s == NUM_BAD, "bad_number")
    errors.add("gross_salary", is_salary & (salary_s == NUM_MISSING), "missing_value")
    errors.add("gross_salary", (salary_s == 0) & (salary_v < 0), "negative_amount")
    return {
        "employer_id": pc.utf8_trim_whitespace(get("employer_id")),
        "year": pa.array(np.clip(year, 0, 32767).astype(np.int16)),
        "start_date": _date32(start["ordinal"]),
        "end_date": _date32(end["ordinal"]),
        "kind": kinds,
        "gross_salary": pa.array(salary_v, mask=salary_s != 0),
        "days": pa.array(np.clip(days, 0, 32767).astype(np.int16)),
    }


def _resource_fields(get, kinds, n, errors: _Errors, decimal, yt) -> dict[str, Any]:
    period = _dates(get("period"), allow_unknown=False)
    errors.add("period", period["status"] == DATE_BAD, "bad_date")
    ok = period["status"] == DATE_OK
    py = period["year"].astype(np.int64)
    errors.add("period", ok & ((py < yt.first_year) | (py > yt.last_year)), "year_out_of_range")
    first_of_month = period["ordinal"] - np.where(period["day"] > 0, period["day"].astype(np.int32) - 1, 0)
    amount_v, amount_s = _numbers(get("amount"), decimal)
    errors.add("amount", amount_s == NUM_BAD, "bad_number")
    errors.add("amount", (amount_s == 0) & (amount_v < 0), "negative_amount")
    return {
        "payer_id": pc.utf8_trim_whitespace(get("payer_id")),
        "period": _date32(first_of_month),
        "kind": kinds,
        "amount": pa.array(amount_v),
    }


def _rejects(t: pa.Table, text: dict, errors: _Errors, chunk: Chunk, task: ChunkTask, record_id) -> pa.Table:
    """Rejected rows, built column by column (a file of bad rows must not cost a Python loop per row)."""
    rows = np.flatnonzero(errors.rejected)
    cols = errors.columns
    schema = rejects_schema(task.kind)
    parts = []
    if len(rows):
        idx = pa.array(rows)
        r = len(rows)
        first_col = errors.first_col[rows]
        first_reason = errors.first_reason[rows]
        # every (column, reason) pair of a row, joined with ';'
        pieces = []
        for ci, mask, code in errors.all:
            label = f"{cols[ci]}:{REASON_CODES[code - 1]}"
            m = mask[rows]
            pieces.append(pa.array(np.where(m, label, None), pa.string()))
        reasons = pc.binary_join_element_wise(*pieces, ";", null_handling="skip") if len(pieces) > 1 else pieces[0]
        raw_fields = []
        value = pa.nulls(r, pa.string())
        for name in cols:
            if name in text:
                arr = text[name]
            elif name in t.column_names:
                arr = t.column(name)
            else:
                raw_fields.append(pa.nulls(r, pa.string()))
                continue
            taken = _as_text(arr.take(idx))
            raw_fields.append(pc.utf8_slice_codeunits(taken, 0, 1000))
            here = first_col == cols.index(name)
            if here.any():
                value = pc.if_else(pa.array(here), pc.utf8_slice_codeunits(taken, 0, 200), value)
        parts.append(pa.table({
            "source_file": pa.array([task.path] * r, pa.string()),
            "row_number": pa.array(chunk.row_numbers[rows].astype(np.int64)),
            "record_id": record_id.take(idx) if record_id is not None else pa.nulls(r, pa.int64()),
            "column": pa.DictionaryArray.from_arrays(pa.array(first_col.astype(np.int32)), pa.array(cols)).cast(pa.string()),
            "reason": pa.DictionaryArray.from_arrays(pa.array(first_reason.astype(np.int32) - 1),
                                                     pa.array(REASON_CODES)).cast(pa.string()),
            "reasons": reasons,
            "value": value,
            "raw": pa.StructArray.from_arrays(raw_fields, fields=list(schema.field("raw").type)),
            "line": pa.nulls(r, pa.string()),
        }, schema=schema))
    if chunk.bad_rows:
        b = len(chunk.bad_rows)
        lines = pa.array([line for _, line in chunk.bad_rows], pa.string())
        parts.append(pa.table({
            "source_file": pa.array([task.path] * b, pa.string()),
            "row_number": pa.array([number for number, _ in chunk.bad_rows], pa.int64()),
            "record_id": pa.nulls(b, pa.int64()),
            "column": pa.nulls(b, pa.string()),
            "reason": pa.array(["bad_row"] * b, pa.string()),
            "reasons": pa.array(["row:bad_row"] * b, pa.string()),
            "value": pc.utf8_slice_codeunits(lines, 0, 200),
            "raw": pa.nulls(b, schema.field("raw").type),
            "line": pc.utf8_slice_codeunits(lines, 0, 10000),
        }, schema=schema))
    if not parts:
        return schema.empty_table()
    return pa.concat_tables(parts)


def _as_text(arr) -> pa.Array:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_binary(arr.type):
        return latin1_to_utf8(arr, ~utf8_valid(arr))
    if not pa.types.is_string(arr.type):
        arr = arr.cast(pa.string())
    return arr
