"""Column checks of the ingest: each turns one source column into canonical values and
records per-row errors (the first failing column and its reason code, and every
(column, reason) pair) in an _Errors; process_chunk (_ingest_rows.py) assembles them."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nirlink.engine.io._readers import Chunk, ChunkTask
from nirlink.kernels._dates import DATE_BAD, DATE_MISSING, DATE_OK, civil_parts, parse_dates
from nirlink.kernels._nir import DEPT_2A, DEPT_2B, NIR_STATUS, check_nir
from nirlink.engine.io._money import cents_from_amounts, money_from_cents
from nirlink.kernels._numbers import (
    DECIMAL_AUTO,
    DECIMAL_COMMA,
    DECIMAL_POINT,
    NUM_BAD,
    NUM_MISSING,
    NUM_OK,
    SEP_AMBIGUOUS,
    SEP_COMMA,
    SEP_POINT,
    decimal_evidence,
    latin1_to_utf8,
    parse_integers,
    parse_numbers,
    utf8_valid,
)
from nirlink.kernels._text import (FLAG_BAD_UTF8, FLAG_CONTROL, blank_values, first_token, normalize_names, squeeze,
                                  text_checks)

__all__ = ["REASON_CODES"]

_DECIMAL = {"auto": DECIMAL_AUTO, ".": DECIMAL_POINT, ",": DECIMAL_COMMA}
_NEWLINE = r"[\r\n]"
REASON_CODES = ("missing_value", "bad_number", "negative_amount", "bad_date", "year_out_of_range",
                "date_outside_year", "end_before_start", "bad_days", "bad_kind", "bad_sex", "bad_nir",
                "bad_encoding", "bad_characters", "field_too_long", "bad_row", "duplicate_record_id",
                "sub_cent_amount")  # new codes go last: a code is its position
_R = {name: i + 1 for i, name in enumerate(REASON_CODES)}  # 0 = no error


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

    def add_grouped(self, groups: "_Errors", inverse: np.ndarray) -> None:
        """The errors ``groups`` found on the first row of each group of rows, given to every
        row of its group (``inverse``: each row's group), in the order they were found."""
        for ci, mask, code in groups.all:
            self.add(groups.columns[ci], mask[inverse], REASON_CODES[code - 1])

    @property
    def rejected(self) -> np.ndarray:
        return self.first_reason > 0


def _text(arr: pa.Array, task: ChunkTask, errors: _Errors, column: str, max_length: int, stats: Counter,
          keep_dictionary: bool = False) -> pa.Array:
    """A UTF-8 string array from binary/string/other input, with encoding, control and length
    checks. With ``keep_dictionary``, a dictionary array stays one: its values are checked
    (once each) and every row gets its value's errors."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    typ = arr.type
    if pa.types.is_dictionary(typ) and keep_dictionary:
        values, found, transcoded = _checked_text(arr.dictionary, task.strict_utf8, max_length)
        rows = np.asarray(arr.indices.fill_null(0).to_numpy(zero_copy_only=False), np.int64)
        valid = np.asarray(arr.is_valid()) if arr.null_count else np.ones(len(arr), bool)
        for mask, reason in found:
            errors.add(column, mask[rows] & valid, reason)
        if transcoded is not None:
            stats["values_transcoded_from_latin1"] += int((transcoded[rows] & valid).sum())
        return pa.DictionaryArray.from_arrays(arr.indices, values)
    if pa.types.is_dictionary(typ):
        arr = arr.cast(typ.value_type)
    arr, found, transcoded = _checked_text(arr, task.strict_utf8, max_length)
    for mask, reason in found:
        errors.add(column, mask, reason)
    if transcoded is not None:
        stats["values_transcoded_from_latin1"] += int(transcoded.sum())
    return arr


def _checked_text(arr: pa.Array, strict_utf8: bool, max_length: int) -> tuple[pa.Array, list, np.ndarray | None]:
    """(UTF-8 string array, [(mask, reason)] in the order found, the values transcoded from
    Latin-1 or None) of a plain array."""
    typ = arr.type
    found: list[tuple[np.ndarray, str]] = []
    transcoded = None
    if pa.types.is_binary(typ) or pa.types.is_large_binary(typ):
        ok = utf8_valid(arr)
        if not ok.all():
            bad = ~ok & np.asarray(arr.is_valid())
            if strict_utf8:
                found.append((bad, "bad_encoding"))
            else:
                transcoded = bad
            arr = latin1_to_utf8(arr, ~ok)
        else:
            arr = arr.view(pa.string() if pa.types.is_binary(typ) else pa.large_string())
    elif not (pa.types.is_string(typ) or pa.types.is_large_string(typ)):
        arr = arr.cast(pa.string())
    if len(arr) and arr.null_count < len(arr):
        ctl, long = text_checks(arr, max_length)
        found += [(ctl, "bad_characters"), (long, "field_too_long")]
    return arr, found, transcoded


def _blank(arr: pa.Array) -> np.ndarray:
    """True where the value is null or only white space."""
    if len(arr) == 0:
        return np.zeros(0, bool)
    return blank_values(arr)


def _dept_label(code: int) -> str:
    return "2A" if code == DEPT_2A else "2B" if code == DEPT_2B else f"{code:02d}"


# every department code check_nir gives (1-95, 99, 970-988, 2A and 2B) has its label at its own
# index: the text column is a dictionary lookup, not a Python object per row
_DEPT_LABELS = pa.array([_dept_label(c) for c in range(1000)], pa.string())


def _dept_text(dept: np.ndarray) -> pa.Array:
    """Department labels of check_nir's codes ("01", "2A", "974"); null where the code is 0."""
    indices = pa.array(dept.astype(np.int32), mask=dept <= 0)
    return pa.DictionaryArray.from_arrays(indices, _DEPT_LABELS).cast(pa.string())


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


def _auto_numbers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Amounts whose decimal separator is not given (``decimal = "auto"``): each value decides
    (the last separator of two; a lone one is decimal), but a value of one to three digits, a
    lone separator and three digits ("1,500", "12.500": 1.5 in one convention, 1500 in the
    other) is read by the chunk's convention when its values holding both '.' and ',' all end
    with the same one ("1,234.56" beside "1,500": 1500), else refused as a bad number rather
    than read either way (give ``csv.decimal``)."""
    value, status = parse_numbers(arr, decimal=DECIMAL_AUTO)  # each value decides, as it always did
    evidence = decimal_evidence(arr)
    ambiguous = (evidence == SEP_AMBIGUOUS) & (status == NUM_OK)
    if not ambiguous.any():
        return value, status
    point, comma = bool((evidence == SEP_POINT).any()), bool((evidence == SEP_COMMA).any())
    if point != comma:  # the chunk's convention reads the ambiguous values, and only them
        told_value, told_status = parse_numbers(arr, decimal=DECIMAL_POINT if point else DECIMAL_COMMA)
        return np.where(ambiguous, told_value, value), np.where(ambiguous, told_status, status).astype(status.dtype)
    return np.where(ambiguous, 0.0, value), np.where(ambiguous, NUM_BAD, status).astype(status.dtype)


def _numbers(arr: pa.Array, decimal: int) -> tuple[np.ndarray, np.ndarray]:
    """(value, status) from text or numeric input."""
    typ = arr.type
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return _auto_numbers(arr) if decimal == DECIMAL_AUTO else parse_numbers(arr, decimal=decimal)
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
        y, m, dd = civil_parts(days, valid)
        return {"year": y, "month": m, "day": dd, "ordinal": days,
                "status": np.where(valid, DATE_OK, DATE_MISSING).astype(np.int8)}
    return parse_dates(arr, allow_unknown=allow_unknown)


def _date32(days: np.ndarray) -> pa.Array:
    return pa.array(days.astype(np.int32)).cast(pa.date32())


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
    salary_c, salary_exact = cents_from_amounts(salary_v)
    errors.add("gross_salary", (salary_s == 0) & ~salary_exact, "sub_cent_amount")
    return {
        "employer_id": pc.utf8_trim_whitespace(get("employer_id")),
        "year": pa.array(np.clip(year, 0, 32767).astype(np.int16)),
        "start_date": _date32(start["ordinal"]),
        "end_date": _date32(end["ordinal"]),
        "kind": kinds,
        "gross_salary": money_from_cents(salary_c, valid=salary_s == 0),
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
    amount_c, amount_exact = cents_from_amounts(amount_v)
    errors.add("amount", (amount_s == 0) & ~amount_exact, "sub_cent_amount")
    return {
        "payer_id": pc.utf8_trim_whitespace(get("payer_id")),
        "period": _date32(first_of_month),
        "kind": kinds,
        "amount": money_from_cents(amount_c),
    }


def _as_text(arr) -> pa.Array:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_binary(arr.type):
        return latin1_to_utf8(arr, ~utf8_valid(arr))
    if not pa.types.is_string(arr.type):
        arr = arr.cast(pa.string())
    return arr
