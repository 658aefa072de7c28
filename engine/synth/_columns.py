"""Arrow columns of the synthetic datasets: SIRETs with valid Luhn keys, dictionary-encoded
columns built by a Numba remap, the identity columns of the rows gathered from their identity
versions in one pass, dates, and the Parquet writer options."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from numba import njit

from nirlink.kernels import format_digits

__all__ = ["siret_column", "dictionary_column", "version_dictionary", "gather_versions", "dates", "write_dataset",
           "PartWriter"]


def siret_column(index: np.ndarray) -> pa.Array:
    """14-digit SIRETs that pass the Luhn check (SIREN and the full SIRET), one per pool index."""
    index = np.asarray(index, np.int64)
    siren8 = (index * 48271 + 12345678) % 10**8  # a bijection of the first 10**8 indices
    siren = siren8 * 10 + _luhn_digit(siren8, 8)
    nic4 = 1 + (index % 97)
    partial = siren * 10**4 + nic4
    full = partial * 10 + _luhn_digit(partial, 13)
    return format_digits(full, 14)


def _luhn_digit(values: np.ndarray, n_digits: int) -> np.ndarray:
    """Check digit c such that the number (values * 10 + c) passes the Luhn test."""
    total = np.zeros(len(values), np.int64)
    v = values.copy()
    for pos in range(n_digits):  # pos 0 = rightmost digit of values, doubled
        d = v % 10
        v //= 10
        if pos % 2 == 0:
            d = d * 2
            d = np.where(d > 9, d - 9, d)
        total += d
    return (10 - total % 10) % 10


@njit(nogil=True, cache=True)
def _used_ranks(used):
    """Each distinct value's number among the used ones, in order (a used value's new index)."""
    remap = np.empty(used.shape[0], np.int32)
    k = 0
    for u in range(used.shape[0]):
        remap[u] = k
        if used[u]:
            k += 1
    return remap


@njit(nogil=True, cache=True)
def _remap(indices, rows, to_unique, n_unique, out, null):
    """Dictionary indices (``indices[rows]``, or ``indices`` when ``rows`` is empty) onto
    distinct values, renumbered to the values used; -1 is null (``null`` set). Returns the
    used values' mask and the number of nulls."""
    n = rows.shape[0] if rows.shape[0] else indices.shape[0]
    direct = rows.shape[0] == 0
    used = np.zeros(n_unique, np.bool_)
    nulls = 0
    for i in range(n):
        j = indices[i] if direct else indices[rows[i]]
        if j >= 0:
            used[to_unique[j]] = True
        else:
            nulls += 1
    remap = _used_ranks(used)
    for i in range(n):
        j = indices[i] if direct else indices[rows[i]]
        if j >= 0:
            out[i] = remap[to_unique[j]]
            null[i] = False
        else:
            out[i] = 0
            null[i] = True
    return used, nulls


_NO_ROWS = np.zeros(0, np.int64)


def dictionary_column(indices: np.ndarray, dictionary: pa.Array, cache: dict | None = None,
                      rows: np.ndarray | None = None) -> pa.DictionaryArray:
    """A dictionary array over distinct values, holding only the entries ``indices`` use (-1 = null);
    with ``rows``, the column is ``indices[rows]`` (the gather done in the same pass).

    Not cosmetic: handed a dictionary with repeated values (two persons both named MARIE),
    the Parquet writer falls back to plain pages, slower, and its bytes are not reproducible.
    ``cache`` keeps the encoding of dictionaries used for several columns (one block's).
    """
    cached = cache.get(id(dictionary)) if cache is not None else None
    if cached is None or cached[0] is not dictionary:
        enc = dictionary.dictionary_encode()
        cached = (dictionary, enc.dictionary, enc.indices.to_numpy(zero_copy_only=False).astype(np.int64))
        if cache is not None:
            cache[id(dictionary)] = cached
    _, values, to_unique = cached
    indices = np.ascontiguousarray(indices)
    if indices.dtype.kind not in "iu":
        indices = indices.astype(np.int64)
    if rows is None or not len(rows):
        n, rows = (len(indices) if rows is None else 0), _NO_ROWS
    else:
        rows = np.ascontiguousarray(rows)
        n = len(rows)
    out = np.empty(n, np.int32)
    null = np.empty(n, np.bool_)
    used, nulls = _remap(indices if n else indices[:0], rows, to_unique, len(values), out, null)
    idx = pa.array(out, mask=null) if nulls else pa.array(out)
    return pa.DictionaryArray.from_arrays(idx, values.filter(pa.array(used)))


@njit(nogil=True, cache=True)
def _version_remap(indices, used_versions, to_unique, n_unique, out):
    """Per version, its value's index among the distinct values the used versions take
    (renumbered to those), -1 for null; returns the used values' mask."""
    used = np.zeros(n_unique, np.bool_)
    for v in range(indices.shape[0]):
        if used_versions[v] and indices[v] >= 0:
            used[to_unique[indices[v]]] = True
    remap = _used_ranks(used)
    for v in range(indices.shape[0]):
        j = indices[v]
        out[v] = remap[to_unique[j]] if j >= 0 and used[to_unique[j]] else -1
    return used


def version_dictionary(indices: np.ndarray, dictionary: pa.Array, used: np.ndarray,
                       out: np.ndarray) -> pa.Array:
    """One identity column at the version level: ``out[v]`` (int32) receives version v's index
    among the distinct values of ``dictionary`` that the ``used`` versions take (-1 = null, or
    an unused version), and the values are returned; rows then gather ``out[version]``
    (``gather_versions``), so the per-row work is one lookup, not a hash or a remap.

    The values are distinct on purpose: handed a dictionary with repeated values (two persons
    both named MARIE), the Parquet writer falls back to plain pages, slower, and its bytes are
    not reproducible. The career and resource files share them: a file's dictionary may hold
    values only the other's rows use (a few per person), which readers never see."""
    enc = dictionary.dictionary_encode()
    to_unique = enc.indices.to_numpy(zero_copy_only=False).astype(np.int32)
    mask = _version_remap(np.ascontiguousarray(indices, np.int64), used, to_unique, len(enc.dictionary), out)
    return enc.dictionary.filter(pa.array(mask))


@njit(nogil=True, cache=True)
def _gather(version, table, out, valid):
    """``out[c, r] = table[version[r], c]``; ``valid[r]``: column 0's value is not null (>= 0)."""
    n_cols = table.shape[1]
    nulls = 0
    for r in range(version.shape[0]):
        v = version[r]
        for c in range(n_cols):
            out[c, r] = table[v, c]
        ok = table[v, 0] >= 0
        valid[r] = ok
        if not ok:
            out[0, r] = 0
            nulls += 1
    return nulls


def gather_versions(version: np.ndarray, table: np.ndarray, dictionaries: list[pa.Array]) -> list[pa.DictionaryArray]:
    """The dictionary columns of rows from their identity ``version``: ``table[v, c]`` is
    version v's index into ``dictionaries[c]`` (``version_dictionary``); only the first column
    may hold nulls (-1)."""
    n = len(version)
    out = np.empty((table.shape[1], n), np.int32)
    valid = np.empty(n, np.bool_)
    nulls = _gather(np.ascontiguousarray(version), table, out, valid)
    cols = []
    for c, values in enumerate(dictionaries):
        idx = pa.array(out[c], mask=~valid) if c == 0 and nulls else pa.array(out[c])
        cols.append(pa.DictionaryArray.from_arrays(idx, values))
    return cols


def dates(days: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(days, np.int32)).cast(pa.date32())


_WRITE = dict(compression="lz4", store_schema=False)
_DELTA = {"record_id"}


def _with_schema(table: pa.Table, schema: pa.Schema | None) -> pa.Table:
    if schema is None:
        return table
    return pa.Table.from_arrays(table.columns, schema=pa.schema(
        [f.with_nullable(schema.field(f.name).nullable) for f in table.schema]))


def _options(table: pa.Table, string_columns: list[str]) -> dict:
    stats = [c for c in table.column_names if c not in string_columns]
    # record ids run in sequence: delta encoding writes them 2x faster and ~500x smaller
    delta = {c: "DELTA_BINARY_PACKED" for c in table.column_names if c in _DELTA}
    return dict(use_dictionary=string_columns, write_statistics=stats, column_encoding=delta or None, **_WRITE)


def write_dataset(table: pa.Table, path: Path, string_columns: list[str], schema: pa.Schema | None = None) -> None:
    """Write ``table`` to ``path`` (through a temporary name): the string columns
    dictionary-encoded, record ids delta-encoded, statistics (min/max) for the other columns only. Statistics of a
    dictionary column cost a hash of its indices, a third of the whole write, and no reader
    of these files filters on names or NIRs by row group.

    With ``schema`` (the dataset's documented schema), its non-null fields are written as
    required columns: an optional column costs its definition levels, ~8 ns a value, a fifth
    of the career and resource writes."""
    tmp = path.with_name("." + path.name + ".tmp")
    table = _with_schema(table, schema)
    pq.write_table(table, tmp, **_options(table, string_columns))
    os.replace(tmp, path)


class PartWriter:
    """A file written in parts (one row group or more each), with ``write_dataset``'s options;
    published under its name by ``close``. A part's dictionary columns may carry their own
    dictionary: each row group has its own dictionary page."""

    def __init__(self, path: Path, string_columns: list[str], schema: pa.Schema | None = None):
        self.path, self.string_columns, self.schema = path, string_columns, schema
        self.tmp = path.with_name("." + path.name + ".tmp")
        self.writer: pq.ParquetWriter | None = None

    def write(self, table: pa.Table) -> None:
        table = _with_schema(table, self.schema)
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.tmp, table.schema, **_options(table, self.string_columns))
        self.writer.write_table(table)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            os.replace(self.tmp, self.path)
