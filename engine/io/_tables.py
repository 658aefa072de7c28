"""Whole datasets as Arrow tables, for the general linkage front (`nirlink link`).

The job's readers do the reading: the same file expansion (files, directories, globs), the
same CSV sniffing (separator, encoding, header names trimmed, duplicate or empty names
refused) and the same CSV reader (quoted newlines, malformed lines counted) as ingest, with
the same options (separator, encoding, decimal separator). What differs is the result: one
table per input, every column the caller names and nothing else, as text unless a type is
asked for ("integer", "number", "date"); an empty (or all-blank) field, or one of the given
null values, is null. Everything is checked before the caller starts any work, and each
problem names the file, the column and the rows, never a value (values may identify a
person): missing columns (listing those the file has), no data rows, malformed lines, values
that are not of the asked type, bytes that are not UTF-8 when UTF-8 was asked.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from nirlink.kernels import InputError, InputFileError

from ._csv_header import sniff_csv
from ._readers import ChunkTask, CsvOptions, _format_of, expand_paths, read_chunks

__all__ = ["ColumnType", "COLUMN_TYPES", "read_table", "table_columns"]

ColumnType = Literal["text", "integer", "number", "date"]
COLUMN_TYPES = ("text", "integer", "number", "date")
_DECIMAL = {"auto": 0, ".": 1, ",": 2}  # kernels._numbers DECIMAL_AUTO / _POINT / _COMMA
_CHUNK_ROWS = 1 << 20


def _files(path: str | Path, fmt: str) -> list[tuple[Path, str]]:
    files, missing = expand_paths([str(path)])
    if missing or not files:
        raise InputFileError(f"{path}: no such file or directory (or no CSV / Parquet file in it)")
    return [(f, _format_of(f, fmt)) for f in files]


def table_columns(path: str | Path, *, format: str = "auto", csv_options: CsvOptions | None = None) -> list[str]:
    """The column names of a dataset (trimmed CSV header names), from its first file."""
    f, fmt = _files(path, format)[0]
    if fmt == "parquet":
        try:
            return list(pq.read_schema(f).names)
        except Exception as exc:  # noqa: BLE001 - any failure to open is the file's fault
            raise InputFileError(f"{f}: not a readable Parquet file ({type(exc).__name__})") from None
    return sniff_csv(f, csv_options or CsvOptions())[3]


def _rows(mask: np.ndarray, numbers: np.ndarray) -> str:
    bad = numbers[mask]
    return ", ".join(str(int(r)) for r in bad[:5]) + (" ..." if len(bad) > 5 else "")


def _as_text(arr: pa.Array, *, strict: bool, where: str, numbers: np.ndarray) -> pa.Array:
    from nirlink.kernels._numbers import latin1_to_utf8, utf8_valid

    if pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type):
        try:  # Arrow validates UTF-8 when it casts: the usual case, without loading a kernel
            return pc.cast(arr, pa.string() if pa.types.is_binary(arr.type) else pa.large_string())
        except pa.ArrowInvalid:
            pass
        ok = utf8_valid(arr)
        bad = ~ok & np.asarray(arr.is_valid())
        if bad.any():
            if strict:
                raise InputError(f"{where}: {int(bad.sum())} value(s) are not valid UTF-8 (encoding 'utf-8' was "
                                 f"asked; rows {_rows(bad, numbers)})")
            return latin1_to_utf8(arr, ~ok)
        return arr.view(pa.string() if pa.types.is_binary(arr.type) else pa.large_string())
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    return arr if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type) else pc.cast(arr, pa.string())


def _nulls(arr: pa.Array, null_values: Sequence[str]) -> pa.Array:
    """Null where the text is empty, only blanks, or one of ``null_values``."""
    if len(arr) == 0:
        return arr
    blank = pc.equal(pc.utf8_trim_whitespace(arr), "")
    if null_values:
        blank = pc.or_(blank, pc.is_in(arr, value_set=pa.array(list(null_values), arr.type)))
    return pc.if_else(pc.fill_null(blank, False), pa.nulls(len(arr), arr.type), arr)


def _typed(arr: pa.Array, typ: str, *, where: str, numbers: np.ndarray, decimal: str) -> pa.Array:
    """``arr`` (text, nulls already made) as ``typ``; refuses values that are not of that type."""
    from nirlink.kernels._dates import DATE_BAD, parse_dates
    from nirlink.kernels._numbers import NUM_BAD, parse_integers, parse_numbers

    if typ == "integer":
        value, status = parse_integers(arr)
        bad, out = status == NUM_BAD, pa.array(value, pa.int64(), mask=status != 0)
    elif typ == "number":
        value, status = parse_numbers(arr, decimal=_DECIMAL[decimal])
        bad, out = status == NUM_BAD, pa.array(value, pa.float64(), mask=status != 0)
    else:
        d = parse_dates(arr)
        bad = d["status"] == DATE_BAD
        out = pa.array(d["ordinal"], pa.int32(), mask=d["status"] != 0).cast(pa.date32())
    if bad.any():
        what = {"integer": "integers", "number": "numbers", "date": "dates (YYYY-MM-DD, DD/MM/YYYY...)"}[typ]
        raise InputError(f"{where}: {int(bad.sum())} value(s) are not {what} (rows {_rows(bad, numbers)}); the "
                         f"model reads this column as {typ!r}")
    return out


def _native(arr: pa.Array, typ: str) -> pa.Array | None:
    """A Parquet column already of the asked type, cast losslessly; None when it must be parsed as text."""
    t = arr.type
    if typ == "integer" and pa.types.is_integer(t):
        return pc.cast(arr, pa.int64())
    if typ == "number" and (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)):
        return pc.cast(arr, pa.float64())
    if typ == "date" and pa.types.is_date(t):
        return pc.cast(arr, pa.date32())
    if typ == "date" and pa.types.is_timestamp(t):
        return pc.cast(pc.floor_temporal(arr, unit="day"), pa.date32())
    return None


def read_table(path: str | Path, columns: Sequence[str], *, types: dict[str, str] | None = None,
               keep_native: Sequence[str] = (), format: str = "auto", csv_options: CsvOptions | None = None,
               null_values: Sequence[str] = (), what: str = "input", uses: dict[str, str] | None = None) -> pa.Table:
    """The ``columns`` of the dataset at ``path`` (a file, a directory or a glob of CSV or
    Parquet files) as one Arrow table, in this order. Columns are text (empty -> null) unless
    ``types`` names another type; columns of ``keep_native`` keep a Parquet file's own type.
    ``uses`` says what needs each column (in the error about a missing one).
    Raises InputFileError / InputError naming the file before returning anything."""
    types = types or {}
    opts = csv_options or CsvOptions()
    for name, typ in types.items():
        if typ not in COLUMN_TYPES:
            raise InputError(f"column {name!r}: unknown type {typ!r} (expected one of {', '.join(COLUMN_TYPES)})")
    parts = []
    for f, fmt in _files(path, format):
        if fmt == "parquet":
            try:
                pf = pq.ParquetFile(f)
            except Exception as exc:  # noqa: BLE001
                raise InputFileError(f"{f}: not a readable Parquet file ({type(exc).__name__})") from None
            available = list(pf.schema_arrow.names)
        else:
            sep, encoding, strict, available = sniff_csv(f, opts)
        missing = [c for c in columns if c not in available]
        if missing:
            shown = ", ".join(available[:40]) + (" ..." if len(available) > 40 else "")
            needed = "; ".join(f"{c!r} ({(uses or {}).get(c, what)})" for c in missing)
            raise InputError(f"{f}: no column {needed}; the file has: {shown}")
        if fmt == "parquet":
            meta = pf.metadata
            task = ChunkTask(what, 0, "", str(f), 0, "parquet", tuple((c, c) for c in columns),
                             tuple(range(meta.num_row_groups)))
            strict = False
        else:
            task = ChunkTask(what, 0, "", str(f), 0, "csv", tuple((c, c) for c in columns),
                             separator=sep, encoding=encoding, strict_utf8=strict, decimal=opts.decimal,
                             quote=opts.quote, header_fields=len(available), header=tuple(available))
        if fmt == "parquet" and meta.num_row_groups == 0:
            continue
        for chunk in read_chunks(task, chunk_rows=_CHUNK_ROWS):
            if chunk.bad_rows:
                rows = ", ".join(str(r) for r, _ in chunk.bad_rows[:5]) + (" ..." if len(chunk.bad_rows) > 5 else "")
                raise InputError(f"{f}: {len(chunk.bad_rows)} line(s) with a number of fields other than the "
                                 f"header's {task.header_fields} (rows {rows})")
            cols = {}
            for c in columns:
                arr = chunk.table.column(c).combine_chunks()
                where = f"{f}: column {c!r}"
                typ = types.get(c, "text")
                native = _native(arr, typ) if fmt == "parquet" and typ != "text" else None
                if native is not None:
                    cols[c] = native
                elif fmt == "parquet" and c in keep_native and not pa.types.is_binary(arr.type):
                    cols[c] = arr
                else:
                    text = _nulls(_as_text(arr, strict=strict, where=where, numbers=chunk.row_numbers), null_values)
                    cols[c] = text if typ == "text" else _typed(text, typ, where=where, numbers=chunk.row_numbers,
                                                                 decimal=opts.decimal)
            parts.append(pa.table(cols))
    if not parts or sum(p.num_rows for p in parts) == 0:
        raise InputError(f"{path}: no data rows (a header only, or 0 rows): nothing to link")
    try:
        return pa.concat_tables(parts, promote_options="permissive").combine_chunks()
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise InputError(f"{path}: its files disagree on a column's type ({exc})") from None
