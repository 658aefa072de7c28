"""Partitioning by key on disk: the shuffle behind deterministic joins and distributed scoring.

A map task hashes each row's key into one of B buckets and writes one file per non-empty
bucket (``<dir>/b=<bucket>/<part>.parquet``); a reduce task reads every file of its bucket.
Rows with equal keys always meet in the same bucket, whichever task wrote them; files on
disk make the exchange restartable and let data exceed memory. Rows whose key has a null
part go nowhere (a null never equals anything in SQL).

Buckets that only the tasks after them read (a stage's scratch: scoring's two sides, the
signatures' and the deterministic pass's exchanges) are Arrow IPC files (``<part>.arrow``,
zstd); the candidate pairs' buckets (``deterministic/``, ``predictions/``, which a later
increment reads) stay Parquet. Measured on one scoring reduce's two sides of a 3M-person
job (203k and 295k rows of 16 link columns in 37 parts each, one core): Parquet (zstd level 1)
wrote them in 0.25 + 0.43 s and read them back in 0.13 + 0.21 s; Arrow IPC with zstd 0.12 +
0.24 s and 0.06 + 0.12 s, for 10-20% more bytes (8.6 -> 10.4 MB, 19.9 -> 22.2 MB). IPC with lz4
read 6x faster than Parquet but took 1.8-1.9x its bytes, and the job directory's peak is
bounded (README, "Disk").
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from nirlink.kernels._hash import hash_rows
from nirlink.kernels._segments import group_by_key

__all__ = ["key_hash", "write_buckets", "read_bucket", "bucket_ids", "sorted_id_options", "is_in_sorted", "write_arrow"]


def is_in_sorted(values: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """``np.isin(values, keys)`` for ``keys`` sorted and unique (``np.unique``'s output): a
    binary search of each value. ``np.isin`` sorts both arrays again on every call (its
    ``unique`` of ``keys``): 50,000 hashes against 1M keys took 1.4 s, against 5M 8.7 s (0.01
    and 0.04 s searched), and scoring's right side called it once per register file and right
    key (ten minutes of the link stage at 7.9M persons)."""
    values = np.asarray(values)
    if len(keys) == 0 or len(values) == 0:
        return np.zeros(len(values), bool)
    at = np.searchsorted(keys, values)
    at[at == len(keys)] = 0
    return keys[at] == values


def sorted_id_options(schema: pa.Schema, ids: str) -> dict:
    """Parquet options for a link output file sorted by its 64-bit hash id column ``ids``
    (links, candidates and signatures, kept for ``nirlink explain``): the ids delta-encoded and
    without a dictionary, every other column with one. A hash never repeats, so the writer's
    dictionary overflowed its page and fell back to plain after 17 bits a row of indices (79.5
    bits a row); sorted, the gaps between ids take ~50 bits: 8.0 -> 6.3 bytes a row measured
    at 200,000 persons (each bucket's file)."""
    return dict(compression="zstd", use_dictionary=[n for n in schema.names if n != ids],
                column_encoding={ids: "DELTA_BINARY_PACKED"})


def key_hash(table: pa.Table, keys) -> tuple[np.ndarray, np.ndarray]:
    """(hash, valid) of the key columns/expressions of each row; valid is False when a part is null."""
    cols = []
    valid = np.ones(table.num_rows, bool)
    for k in keys:
        col = table.column(k)
        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks()
        valid &= np.asarray(col.is_valid()) if col.null_count else True
        # integers hash by value whatever their width, so int8 and int16 keys agree across tables
        if pa.types.is_integer(col.type):
            col = pc.cast(col, pa.int64())
        cols.append(col)
    return hash_rows(*cols), valid


def bucket_ids(h: np.ndarray, n_buckets: int) -> np.ndarray:
    return (h.view(np.uint64) % np.uint64(n_buckets)).astype(np.int64)


def write_buckets(table: pa.Table, h: np.ndarray, valid: np.ndarray, n_buckets: int, directory: str | os.PathLike,
                  part: str, *, scratch: bool = False) -> dict[int, int]:
    """Write the valid rows of ``table`` into bucket files; returns rows per bucket written.
    ``scratch``: buckets only the next tasks read, as Arrow IPC files (module docstring)."""
    directory = Path(directory)
    rows = np.flatnonzero(valid)
    b = bucket_ids(h[rows], n_buckets)
    order, starts = group_by_key(b, n_buckets)
    written = {}
    for k in np.flatnonzero(np.diff(starts)):
        idx = rows[order[starts[k]:starts[k + 1]]]
        target = directory / f"b={int(k):05d}" / f"{part}.{'arrow' if scratch else 'parquet'}"
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:6]}")
        rows_k = table.take(pa.array(idx))
        if scratch:
            write_arrow(tmp, rows_k)
        else:
            pq.write_table(rows_k, tmp, compression="zstd", compression_level=1)
        os.replace(tmp, target)
        written[int(k)] = len(idx)
    return written


def write_arrow(path: str | os.PathLike, table: pa.Table) -> None:
    """``table`` as the Arrow IPC file ``path``, zstd-compressed: the link stage's scratch files
    (buckets, training samples)."""
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(
            sink, table.schema, options=pa.ipc.IpcWriteOptions(compression="zstd")) as writer:
        writer.write_table(table)


def read_bucket(directory: str | os.PathLike, bucket: int, schema: pa.Schema) -> pa.Table:
    """Every file of a bucket (Parquet or Arrow IPC, in the order of their names) as one table
    of ``schema``."""
    d = Path(directory) / f"b={bucket:05d}"
    files = sorted([*d.glob("*.parquet"), *d.glob("*.arrow")]) if d.exists() else []
    if not files:
        return schema.empty_table()
    return pa.concat_tables([_read_ipc(f, schema) if f.suffix == ".arrow" else pq.read_table(f, schema=schema)
                             for f in files])


def _read_ipc(path: Path, schema: pa.Schema) -> pa.Table:
    """An Arrow IPC bucket file in ``schema``, as Parquet's reader gives it: columns cast, a
    column the file lacks all nulls."""
    with pa.OSFile(str(path)) as source:
        t = pa.ipc.open_file(source).read_all()
    if t.schema.equals(schema):
        return t
    columns = [t.column(f.name).cast(f.type) if f.name in t.column_names else pa.nulls(t.num_rows, f.type)
               for f in schema]
    return pa.table(columns, schema=schema)
