"""Ingest of one chunk: coerce types, check NIRs, normalise identities, split accepted / rejected.

Columnar throughout: every check produces a per-row error array; a row with any error
goes to the rejects with its first failing column, its reason code (engine/io/_schemas.py
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

from nirlink.engine.io._readers import DICTIONARY_COLUMNS, Chunk, ChunkTask
from nirlink.engine.io._schemas import ACCEPTED_SCHEMAS, COLUMNS, INGESTED_ROW_COLUMNS, KINDS, rejects_schema
from nirlink.engine.reference._tables import year_table
from nirlink.kernels._dates import DATE_BAD, DATE_OK
from nirlink.kernels._nir import NIR_STATUS
from nirlink.kernels._numbers import DECIMAL_AUTO

from ._ingest_identity import GROUP, declared_identity, identity_columns
from ._ingest_checks import (
    _DECIMAL,
    REASON_CODES,
    _as,
    _as_text,
    _blank,
    _career_fields,
    _dates,
    _Errors,
    _names,
    _record_ids,
    _resource_fields,
    _sex,
    _text,
)

__all__ = ["ChunkResult", "process_chunk", "SOURCE_FILE"]

# a declared row's source file in memory: its file's name as a one-value dictionary
SOURCE_FILE = pa.field("source_file", pa.dictionary(pa.int32(), pa.string()), nullable=False)


@dataclass
class ChunkResult:
    accepted: pa.Table  # declared rows: their own columns, signature and group (_ingest_identity)
    rejects: pa.Table
    stats: dict[str, Any]
    groups: pa.Table | None = None  # declared rows: the identity of each group of the chunk's rows


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
            text[name] = _text(raw, task, errors, name, col.max_length, stats,
                               keep_dictionary=kind != "register" and name in DICTIONARY_COLUMNS)
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
    groups = None
    nir_col = "nir" if kind == "register" else "declared_nir"
    nir_in = get(nir_col)
    if nir_in is None:
        nir_in = pa.nulls(n, pa.string())
    last_name = get("last_name") if get("last_name") is not None else pa.nulls(n, pa.string())
    first_col = "first_names" if kind == "register" else "first_name"
    first_in = get(first_col) if get(first_col) is not None else pa.nulls(n, pa.string())
    if kind == "register":
        nir, identity = identity_columns(nir_in, get("birth_date"), last_name, first_in, errors, first_col, today_year)
        for code in np.unique(nir["_status"]):
            stats[f"nir_{NIR_STATUS[code]}"] += int((nir["_status"] == code).sum())
        stats["nir_key_computed"] += int(nir["_key_computed"].sum())
    else:  # once per distinct identity of the chunk
        row_identity, groups, _ = declared_identity(nir_in, get("birth_date"), last_name, first_in, errors,
                                                    today_year, stats)

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
        out = {"record_id": _record_ids(get("record_id"), chunk, task, errors), **row_identity}
        kinds = pc.utf8_lower(pc.utf8_trim_whitespace(get("kind")))
        kind_ok = pc.fill_null(pc.is_in(kinds, value_set=pa.array(KINDS[kind])), False).to_numpy(zero_copy_only=False)
        errors.add("kind", ~kind_ok & ~_blank(get("kind")), "bad_kind")
        if kind == "career":
            out.update(_career_fields(get, kinds, n, errors, decimal, yt))
        else:
            out.update(_resource_fields(get, kinds, n, errors, decimal, yt))

    out["row_number"] = pa.array(chunk.row_numbers.astype(np.int64))

    rejected = errors.rejected
    keep = pa.array(~rejected)
    schema = ACCEPTED_SCHEMAS[kind]
    if groups is not None:  # a declared row's own columns, its signature and its group
        schema = pa.schema([schema.field(name) if name != "source_file" else SOURCE_FILE
                            for name in INGESTED_ROW_COLUMNS[kind]] + [pa.field(GROUP, pa.int32(), nullable=False)])
        # one value: a dictionary of it (the writer takes it as it is; read back as text)
        out["source_file"] = pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([task.path]))
    else:
        out["source_file"] = pa.repeat(pa.scalar(task.path, pa.string()), n)
    accepted = _without(pa.table({f.name: _as(out[f.name], f.type) for f in schema}, schema=schema), rejected, keep)

    rejects = _rejects(t, text, errors, chunk, task, out.get("record_id"))
    stats["rows_read"] += n + len(chunk.bad_rows)
    stats["accepted"] += accepted.num_rows
    stats["rejected"] += int(rejected.sum()) + len(chunk.bad_rows)
    for code in np.unique(errors.first_reason[rejected]):
        stats[f"reason_{REASON_CODES[code - 1]}"] += int((errors.first_reason == code).sum())
    if chunk.bad_rows:
        stats["reason_bad_row"] += len(chunk.bad_rows)
    return ChunkResult(accepted, rejects, dict(stats), groups)


MAX_RUNS = 256  # accepted runs between rejected rows kept as zero-copy slices; more: one filter


def _without(table: pa.Table, rejected: np.ndarray, keep: pa.Array) -> pa.Table:
    """``table`` without its rejected rows. Rejects are rare: the runs of accepted rows between
    them are zero-copy slices (filtering copies every column: 0.2 s of CPU per million rows of
    a resource chunk, even with nothing rejected); many rejects: one filter."""
    rows = np.flatnonzero(rejected)
    if not len(rows):
        return table
    if len(rows) >= MAX_RUNS:
        return table.filter(keep)
    starts = np.r_[0, rows + 1]
    ends = np.r_[rows, len(rejected)]
    return pa.concat_tables([table.slice(a, b - a) for a, b in zip(starts, ends) if b > a] or [table.slice(0, 0)])


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
            "source_file": pa.repeat(pa.scalar(task.path, pa.string()), r),
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
            "source_file": pa.repeat(pa.scalar(task.path, pa.string()), b),
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


