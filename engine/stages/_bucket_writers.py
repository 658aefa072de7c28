"""Person bucket files: the rows of a task spread over one Parquet file per person bucket.

The attach stage reads the ingested strings as dictionaries and looks each row's person, link
status and method up as dictionary indices (the lookup file holds them so, ``_attach.py``),
so the rows' move into bucket order moves integers. A dictionary column is then written as
it is when its dictionary is small (a status, a kind: the Parquet writer takes the
dictionary and the indices without hashing a string) or, for the person, once its dictionary
is cut to the persons of the slice (a bucket's rows are sorted by person rank, so a person's
rows are one run: the runs give the slice's dictionary in one pass). The others (the NIR,
from the lookup's one per signature; the payer or employer id, a whole input file's) are cut
to the values of each row group (``_compacted``), no longer decoded row by row. The files
hold no Arrow schema (``store_schema=False``): they read back as plain columns, the same
types and values either way.

Measured on one attach task of the 200,000-person dataset (3.58M resource rows, 13 buckets,
one process, CPU): benchmarks/README.md, "Attach".
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from nirlink.engine.io._datasets import column_options, make_private_dir, private_modes

__all__ = ["_BucketWriters", "writable", "SMALL_DICTIONARY"]

SMALL_DICTIONARY = 1024  # a dictionary column with at most this many values is written as it is


class _BucketWriters:
    """One Parquet file per person bucket, opened at its first rows; each ``write`` adds a row
    group to the files of the buckets it has rows for (rows sorted by person).

    A write moves its rows once: one ``take`` of the whole table in (bucket, person) order,
    then a zero-copy slice per bucket. A take per bucket (as before) cost the whole table's
    size on every call, Arrow concatenating a chunked table's columns each time: at 127
    buckets, 18 of the 33 seconds of a 4M-row attach task (3.7 s at 13 buckets), the cause of
    the stage's cost growing faster than the rows."""

    def __init__(self, directory: Path, n_buckets: int, part: str):
        self.directory, self.n_buckets, self.part = Path(directory), n_buckets, part
        self.writers: dict[str, tuple[pq.ParquetWriter, Path, Path]] = {}

    def _append(self, bucket: str, table: pa.Table) -> None:
        if bucket not in self.writers:
            target = self.directory / f"b={bucket}" / f"{self.part}.parquet"
            make_private_dir(target.parent)
            tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
            # the options of the plain columns, whatever arrives as a dictionary
            options = column_options(_plain_schema(table.schema))
            self.writers[bucket] = (pq.ParquetWriter(tmp, table.schema, store_schema=False, **options), tmp, target)
        writer = self.writers[bucket][0]
        writer.write_table(table if table.schema == writer.schema else table.cast(writer.schema))

    def write(self, rows: pa.Table, bucket: np.ndarray | None = None,
              rank: np.ndarray | None = None) -> tuple[dict[int, int], np.ndarray]:
        """``bucket``: each row's person bucket (-1: no person), ``rank``: its person's rank in
        person order (both computed from the ``person`` column when not given)."""
        from nirlink.kernels._segments import group_by_key
        from nirlink.linkage._buckets import bucket_ids, key_hash

        if bucket is None:
            h, valid = key_hash(rows, ["person"])
            bucket = np.where(valid, bucket_ids(h, self.n_buckets), -1)
        valid = bucket >= 0
        index = np.flatnonzero(valid)
        if rank is None:  # grouped by bucket (stable), each bucket then sorted by person (stable)
            order, starts = group_by_key(bucket[index], self.n_buckets)
            grouped = _decoded(rows.take(pa.array(index[order])))
        else:  # bucket and person rank in one stable sort: the same order
            order = np.argsort((bucket[index].astype(np.int64) << 32) | rank[index].astype(np.int64), kind="stable")
            starts = np.searchsorted(bucket[index][order], np.arange(self.n_buckets + 1))
            grouped = rows.take(pa.array(index[order]))
            slots = _slots(grouped, _small_dictionaries(rows))  # small in every input file: written whole
        written = {}
        for k in np.flatnonzero(np.diff(starts)):
            t = grouped.slice(starts[k], starts[k + 1] - starts[k])
            if rank is None:
                t = t.take(pc.sort_indices(t, sort_keys=[("person", "ascending")]))
            else:
                t = _compacted(_person_runs(t), slots)  # as writable(t), the slots allocated once
            self._append(f"{int(k):05d}", t)
            written[int(k)] = int(starts[k + 1] - starts[k])
        if not valid.all():
            self._append("nulls", _decoded(rows.filter(pa.array(~valid))))
        return written, valid

    def __enter__(self) -> _BucketWriters:
        return self

    def __exit__(self, *exc) -> None:
        for writer, tmp, target in self.writers.values():
            writer.close()
            if exc[0] is None:
                os.chmod(tmp, private_modes()[1])
                os.replace(tmp, target)
            else:
                tmp.unlink(missing_ok=True)


def _plain_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([f.with_type(f.type.value_type) if pa.types.is_dictionary(f.type) else f for f in schema])


def _decoded(table: pa.Table, keep: set[str] = frozenset()) -> pa.Table:
    """Dictionary columns back to their values (but those named in ``keep``)."""
    if not any(pa.types.is_dictionary(f.type) and f.name not in keep for f in table.schema):
        return table
    return table.cast(pa.schema([f.with_type(f.type.value_type) if pa.types.is_dictionary(f.type)
                                 and f.name not in keep else f for f in table.schema]))


def writable(table: pa.Table) -> pa.Table:
    """A bucket's rows (sorted by person) as the writers take them: dictionary columns written
    as they are, the small dictionaries whole, the person cut to its runs, and each other
    (the NIR, the employer or payer id: a whole file's or lookup's values) cut to the values
    of each row group (``_compacted``)."""
    return _compacted(_person_runs(table), _slots(table))


def _slots(table: pa.Table, small: set[str] | None = None) -> dict[str, np.ndarray]:
    """For each large dictionary column (neither ``small``, by default those of at most
    SMALL_DICTIONARY values, nor the person) the slots ``compact_dictionary`` works in: one per
    value of its chunks' dictionaries (their concatenation's, which ``_compacted`` takes, holds
    at most as many)."""
    small = _small_dictionaries(table) if small is None else small
    return {f.name: np.full(sum(len(c.dictionary) for c in table.column(f.name).chunks), -1, np.int32)
            for f in table.schema if pa.types.is_dictionary(f.type) and f.name not in small and f.name != "person"}


def _compacted(table: pa.Table, slots: dict[str, np.ndarray]) -> pa.Table:
    """The large dictionary columns named in ``slots`` (kernels/_arrow.py compact_dictionary),
    each row group's rows (ROW_GROUP_ROWS, the writers' row groups) with a dictionary of the
    values they use, in order of first appearance: what Parquet's encoder builds from the
    decoded values, taken as it is instead of hashing every row's string, and the stage no
    longer decodes every row from a dictionary of millions (the attach lookup's NIRs: one
    per signature). The same values, files within 0.1%; an aggregate task's CPU 6% less, the
    attach stage's time unchanged within noise at 2M persons (benchmarks/README.md, "Attach")."""
    from nirlink.kernels._arrow import compact_dictionary

    from ._export import ROW_GROUP_ROWS

    for name, free in slots.items():
        i = table.schema.get_field_index(name)
        column = table.column(i)
        column = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
        pieces = [compact_dictionary(column.slice(a, ROW_GROUP_ROWS), free) for a in range(0, len(column), ROW_GROUP_ROWS)]
        if not pieces:
            continue
        if not all(pa.types.is_dictionary(p.type) for p in pieces):  # a null inside the dictionary: decoded
            pieces = [column.cast(column.type.value_type)]
        table = table.set_column(i, table.schema.field(i).with_type(pieces[0].type), pa.chunked_array(pieces))
    return table


def _small_dictionaries(table: pa.Table) -> set[str]:
    """The dictionary columns whose every chunk's dictionary holds at most SMALL_DICTIONARY values."""
    return {f.name for f in table.schema if pa.types.is_dictionary(f.type)
            and all(len(c.dictionary) <= SMALL_DICTIONARY for c in table.column(f.name).chunks)}


def _person_runs(table: pa.Table) -> pa.Table:
    """``person`` (a dictionary column, rows sorted by person) with a dictionary of the persons
    of these rows only, one value per run of equal indices."""
    column = table.column("person")
    if not pa.types.is_dictionary(column.type):
        return table
    person = column.combine_chunks()
    if person.null_count or len(person) == 0:
        return table.set_column(table.schema.get_field_index("person"), "person", person.cast(pa.string()))
    idx = person.indices.to_numpy()
    change = np.empty(len(idx), bool)
    change[0] = True
    np.not_equal(idx[1:], idx[:-1], out=change[1:])
    runs = person.dictionary.take(pa.array(idx[change]))
    compact = pa.DictionaryArray.from_arrays(pa.array(np.cumsum(change, dtype=np.int32) - 1), runs)
    return table.set_column(table.schema.get_field_index("person"), "person", compact)
