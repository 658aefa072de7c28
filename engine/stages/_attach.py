"""The attach stage: the link table joined back onto every ingested row, rows regrouped by person.

The link table (one row per signature) is sorted once into an Arrow IPC file that every task
memory-maps (the operating system shares its pages between the worker processes); each task
takes a group of ingested files (attach_task_rows), reads each file once (the columns the
later stages read, attached_columns, with the signature the ingest stage stored), looks
its rows up (a radix index over the sorted signature ids) and streams them into one file per
person bucket (``<source>/b=<k>/<part>.parquet``, a row group per ROWS_PER_WRITE rows
gathered, rows sorted by person so that a person's repeated columns compress), so the
aggregate stage reads each bucket as one partition holding every row of its persons - no
second shuffle. Rows with no linked person go to ``<source>/b=nulls/``: kept, counted,
never dropped.

Files per bucket: one per task, not one per ingested file: with one task per ingested file
the stage wrote files x buckets small files, both growing with the rows (quadratic in the
rows: 26 x 14 at 25.6M rows, 128 x 66 at 128M, of 71,000 and 15,000 rows), each with its own
open, column chunks and footer, every one of them opened again by the aggregate stage; small
files also compress worse. Tasks now grow with the bucket count (attach_task_rows), so the
files number linearly in the rows and each holds ROWS_PER_BUCKET_FILE rows or more.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from nirlink.engine.io._datasets import describe_dataset, staged_directory, write_json
from nirlink.kernels import InputError, StageError

from ._bucket_writers import _BucketWriters

__all__ = ["run_attach", "PERSON_COLUMNS", "person_buckets"]

PERSON_COLUMNS = ["person", "person_birth_year", "person_birth_month", "link_status", "link_method",
                  "match_probability"]
# a row's declared NIR (normalised; null when not valid) and its status: functions of its
# signature, taken from the link stage's signatures (the ingested rows no longer carry them)
SIGNATURE_COLUMNS = ["nir", "nir_status"]


def _build_lookup(link_dir: str, out: str, n_buckets: int | None = None, threads: int | None = None) -> int:
    """The link table as a memory-mapped Arrow file for the attach tasks, sorted by signature,
    with each person's rank in person order and, given ``n_buckets`` (the lookup ``_LinkLookup``
    reads; not the previous job's, which the increment only compares), each signature's person
    bucket (``bucket``, -1: no linked person): computed here once rather than by every task
    (hashing every signature's person is O(signatures) per task: 0.3 s a task at 1M persons,
    32 tasks). Returns the number of signatures.

    The rank and the bucket are those of the register entry a signature's person is, computed
    on the register (one row per person) and joined on: a rank over the signatures (DuckDB's
    dense_rank, sorting the 27.4M signatures of a 1e9-row job by person) and a hash of every
    signature's person took 55 s of this task's 81.5 s there, one thread of one worker, at a
    peak of 7.4 GB. A rank is only an order (the attach writers sort a bucket's rows by it):
    the register's position in NIR order sorts the rows as the dense rank did. ``threads``
    (default: the cores this process may use): this task is the stage's only one while it runs.

    Given ``n_buckets``, each signature's NIR status (``links/``) and declared NIR (the link
    stage's ``signatures/``: every signature of the job, an increment's with the previous
    job's) too (SIGNATURE_COLUMNS), a row taking them by its signature as it takes its person:
    the NIR without nulls (a missing one empty, ``nir_valid`` 0), so that every task's memory
    map hands it out as the rows' dictionary without a copy. That join made the task ~4%
    longer on 8M signatures (10.1 -> 10.4 s, reading only the signatures' id and NIR)."""
    import duckdb

    threads = threads or len(os.sched_getaffinity(0))
    if n_buckets is not None and not any(Path(link_dir, "signatures").glob("*.parquet")):
        raise StageError(f"{link_dir}: no signatures/ (the link stage's distinct signatures): written by an "
                         "older nirlink or removed; run the job again with --restart")
    con = duckdb.connect()
    try:
        con.execute(f"SET threads = {int(threads)}")
        con.execute("SET preserve_insertion_order = false")
        register = con.sql(f"select nir, birth_year, birth_month from read_parquet('{link_dir}/register/*.parquet') "
                           "order by nir").to_arrow_table().combine_chunks()
        register = register.append_column("person_rank", pa.array(np.arange(1, register.num_rows + 1, dtype=np.int64)))
        if n_buckets is not None:
            register = register.append_column(
                "bucket", pa.array(person_buckets(_one_chunk(register.column("nir")), n_buckets), pa.int32()))
        # what the tasks read besides (not the previous job's lookup): the bucket and SIGNATURE_COLUMNS
        for_tasks = ", case when l.status = 'linked' then coalesce(r.bucket, -1) else -1 end::integer as bucket" \
            ", l.nir_status, coalesce(s.nir, '') as nir, (s.nir is not null)::tinyint as nir_valid" \
            if n_buckets is not None else ""
        signatures = f"left join (select unique_id, nir from read_parquet('{link_dir}/signatures/*.parquet')) s " \
                     "on s.unique_id = l.signature" if n_buckets is not None else ""
        con.register("person_register", register)
        table = con.sql(f"""
            select l.signature, l.person, r.birth_year as person_birth_year, r.birth_month as person_birth_month,
                   l.status as link_status, l.method as link_method, l.match_probability,
                   r.person_rank{for_tasks}
            from read_parquet('{link_dir}/links/*.parquet') l
            left join person_register r on r.nir = l.person
            {signatures}
            order by l.signature""").to_arrow_table()
    finally:
        con.close()
    table = table.combine_chunks()  # one record batch: the tasks' memory maps hand its columns out without a copy
    if n_buckets is not None:
        table = _as_dictionaries(table, register.column("nir").combine_chunks())
    del register
    with pa.OSFile(out, "wb") as sink, ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return table.num_rows


def _write_person_buckets(rows: pa.Table, directory: Path, n_buckets: int,
                          part: str) -> tuple[dict[int, int], np.ndarray]:
    """Rows into person buckets ``b=<k>/<part>.parquet``, rows without a person into
    ``b=nulls/``; returns the rows written per bucket and which rows had a person."""
    with _BucketWriters(directory, n_buckets, part) as writers:
        return writers.write(rows)


def _one_chunk(column: pa.ChunkedArray) -> pa.Array:
    """The column as one array (no copy when it is one chunk): ``take`` on a chunked array
    concatenates its chunks on every call."""
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def person_buckets(persons: pa.Array, n_buckets: int) -> np.ndarray:
    """The person bucket of each person (-1: null), as the attach stage's writers compute it."""
    from nirlink.linkage._buckets import bucket_ids, key_hash

    h, has_person = key_hash(pa.table({"person": persons}), ["person"])
    return np.where(has_person, bucket_ids(h, n_buckets), -1)


def _as_dictionaries(table: pa.Table, nirs: pa.Array) -> pa.Table:
    """The lookup's columns the attach tasks move with every row, as dictionaries (a row then
    carries an index, moved into bucket order and written as it is, _bucket_writers.py):
    ``person_index``, the linked person (null: none; the bucket is -1) as an index into the
    register's NIRs in person-rank order (``nirs``: index = rank - 1, so a bucket's rows,
    sorted by rank, hold each person's index in one run), and the link status and method and
    the NIR status. (A row's NIR is an index into the lookup's: ``_LinkLookup.attach``.)"""
    bucket = np.asarray(table.column("bucket").combine_chunks(), np.int64)
    rank = np.asarray(pc.fill_null(table.column("person_rank"), 0).combine_chunks(), np.int64)
    index = pa.array(np.where(bucket < 0, 0, rank - 1).astype(np.int32), mask=bucket < 0)
    table = table.append_column("person_index", pa.DictionaryArray.from_arrays(index, nirs))
    for name in ("link_status", "link_method", "nir_status"):
        table = table.set_column(table.schema.get_field_index(name), name,
                                 pc.dictionary_encode(table.column(name)).combine_chunks())
    return table


def _fill_dictionary(array: pa.Array, value: str) -> pa.Array:
    """A dictionary array with its nulls replaced by ``value``."""
    if not array.null_count:
        return array
    dictionary = array.dictionary.to_pylist()
    if value not in dictionary:
        dictionary.append(value)
    indices = pc.fill_null(array.indices, dictionary.index(value))
    return pa.DictionaryArray.from_arrays(indices, pa.array(dictionary, array.dictionary.type))


class _LinkLookup:
    """A task's view of the link table (the memory-mapped lookup file): per signature its
    attached columns and, for a linked one, its person's bucket and rank in person order; rows
    are looked up by their signature ids (a radix index over the sorted ids: a binary search of
    the 27.4M ids of a 1e9-row job cost ~2 us a row for rows in no particular order)."""

    def __init__(self, links: pa.Table):
        from nirlink.kernels._lookup import SortedIndex  # Numba: imported where it runs

        self.keys = links.column("signature").to_numpy()
        self.index = SortedIndex(self.keys)  # built once per task, for its millions of rows (kernels/_lookup.py)
        self.columns = {c: _one_chunk(links.column(c)) for c in PERSON_COLUMNS + SIGNATURE_COLUMNS}
        # a signature's NIR is null where nir_valid is 0 (the NIRs, without nulls, a dictionary:
        # Parquet writes no null inside one)
        self.nir_valid = np.asarray(_one_chunk(links.column("nir_valid")), np.int8)
        # the person as a dictionary index, null where the bucket is -1 (_as_dictionaries)
        self.person = _one_chunk(links.column("person_index")) if "person_index" in links.column_names else None
        # one entry more, at index len(keys): a signature missing from the table (no person)
        self.bucket = np.append(np.asarray(_one_chunk(links.column("bucket")), np.int64), -1)
        self.rank = np.append(np.asarray(pc.fill_null(_one_chunk(links.column("person_rank")), 0), np.int64), 0)

    def attach(self, sig: np.ndarray) -> tuple[dict[str, pa.Array], np.ndarray, np.ndarray]:
        """The attached columns of rows of signature ids ``sig`` (PERSON_COLUMNS: only a linked
        row carries a person; a row whose signature is missing is unlinked; SIGNATURE_COLUMNS:
        the NIR as an index into the lookup's NIRs, written decoded), each row's person bucket
        (-1: no person) and person rank."""
        n = len(self.keys)
        pos = np.minimum(self.index.find(sig), max(n - 1, 0))
        found = self.keys[pos] == sig if n else np.zeros(len(sig), bool)
        taken = pa.array(pos, mask=~found)
        extra = {c: self.columns[c].take(taken) for c in PERSON_COLUMNS + ["nir_status"]
                 if c != "person" or self.person is None}
        at = np.where(found, pos, n)
        # the signature's position in the lookup's NIRs (int32: under 2**31 signatures)
        no_nir = ~found | (self.nir_valid[pos] == 0) if n else np.ones(len(sig), bool)
        extra["nir"] = pa.DictionaryArray.from_arrays(pa.array(pos.astype(np.int32), mask=no_nir), self.columns["nir"])
        bucket = self.bucket[at]
        if self.person is not None:
            extra["person"] = self.person.take(taken)
        else:
            extra["person"] = pc.if_else(pa.array(bucket >= 0), extra["person"], pa.nulls(len(sig), pa.string()))
        status = extra["link_status"]
        extra["link_status"] = _fill_dictionary(status, "unlinked") if pa.types.is_dictionary(status.type) else \
            pc.fill_null(status, "unlinked")
        return extra, bucket, self.rank[at]


def _attach_files(paths: list[str], source: str, lookup: str, out: str, n_buckets: int, part: str,
                  consume: bool = False) -> dict[str, Any]:
    """Attach a group of ingested files, gathering ROWS_PER_WRITE rows (whole files) before
    spreading them over the bucket files: row groups of about ROWS_PER_WRITE / buckets rows."""
    gone = [Path(p).name for p in paths if consume and not os.path.exists(p)]
    if gone:
        # removed by an earlier attempt of this task (its worker died after reading them, of
        # memory most often): the rows they held are gone with them. The stage's inputs are
        # marked released before it begins, so the job's re-run ingests them again
        raise StageError(f"attach: {len(gone)} ingested {source} file(s) ({gone[0]}...) were consumed by an "
                         "earlier attempt of this task (its worker died, often of memory); their rows are no "
                         "longer here: run the job again (it re-runs ingest)")
    total: Counter = Counter()
    keep = attached_columns(source)
    with pa.memory_map(lookup, "r") as source_file, _BucketWriters(Path(out) / source, n_buckets, part) as writers:
        links = _LinkLookup(ipc.open_file(source_file).read_all())
        buckets: set[int] = set()
        pending: list[tuple[pa.Table, np.ndarray, np.ndarray]] = []

        def flush() -> None:
            first = pending[0][0].schema
            rows = pa.concat_tables([p[0] if p[0].schema == first else p[0].cast(first) for p in pending])
            written, valid = writers.write(rows, np.concatenate([p[1] for p in pending]),
                                           np.concatenate([p[2] for p in pending]))
            buckets.update(written)
            status = pc.value_counts(rows.column("link_status").combine_chunks())
            total.update({"rows": rows.num_rows, "rows_with_person": int(valid.sum()),
                          "rows_without_person": int((~valid).sum()),
                          **{f"status_{s['values']}": int(s["counts"]) for s in status.to_pylist()}})
            pending.clear()

        for path in paths:
            # strings read as their dictionaries: the rows' shuffle into buckets then moves
            # dictionary indices; decoded once in bucket order. Read, shuffle and decode took
            # 1.0 s of CPU per million rows, 2.8 s with the strings read as values
            schema = pq.read_schema(path)
            wanted = [c for c in keep if c in schema.names and c not in PERSON_COLUMNS + SIGNATURE_COLUMNS]
            if "signature" not in wanted:
                raise InputError(f"{path}: no signature column: ingested by an older nirlink; run the job with --restart")
            rows = pq.read_table(path, columns=wanted, use_threads=False,
                                 read_dictionary=[c for c in wanted if pa.types.is_string(schema.field(c).type)])
            # the signature the ingest stage hashed (its key in link/links)
            extra, bucket, rank = links.attach(rows.column("signature").to_numpy())
            if extra["nir_status"].null_count:  # every signature has a status (a NIR may be null)
                raise StageError(f"attach: {extra['nir_status'].null_count} rows of {path} have a signature missing "
                                 "from the link stage's links: the two stages' outputs are not of "
                                 "one run; run the job again with --restart")
            for name in PERSON_COLUMNS + SIGNATURE_COLUMNS:  # the status required, as ingested before
                rows = rows.append_column(pa.field(name, extra[name].type, nullable=name != "nir_status"), extra[name])
            if consume:
                # the job's last reader of the ingested file (marked released before the stage
                # began): its rows are in memory, its disk free for the buckets. Removed once
                # written instead, the files pending a write (ROWS_PER_WRITE rows a task) held the
                # stage's peak of disk at 390 MB against 312 at 200,000 persons (1.51x the input
                # against 1.20x; the job's peak is now the export's, 1.43x)
                os.remove(path)
            pending.append((rows.select([c for c in keep if c in rows.column_names]), bucket, rank))
            if sum(p[0].num_rows for p in pending) >= ROWS_PER_WRITE:
                flush()
        if pending:
            flush()
    return {"source": source, **total, "buckets": len(buckets)}


def attached_columns(source: str) -> list[str]:
    """The columns of an attached row: what the later stages read (the aggregates' inputs, the
    rows in export form, the signals' rules), the row's signature and its attached columns.
    Not the row's origin nor (the ingested rows no longer hold them: ``ingest/identities/``)
    its identity columns: linkage is done, and explain and evaluate read the link stage's
    signatures. Written, they were half the stage's write and of its files' size."""
    from ._aggregate_partitions import CAREER_INPUT, RESOURCE_INPUT
    from ._export import ROW_COLUMNS
    from ._signals import CAREER_COLUMNS, RESOURCE_COLUMNS

    wanted = ["record_id", "signature", "nir", "nir_status", *ROW_COLUMNS[source],
              *(CAREER_INPUT if source == "career" else RESOURCE_INPUT),
              *(CAREER_COLUMNS if source == "career" else RESOURCE_COLUMNS), *PERSON_COLUMNS]
    return list(dict.fromkeys(c for c in wanted if c != "year" or source == "career"))


def _task_groups(files: list[str], rows_per_task: int) -> list[list[str]]:
    """Consecutive files in as few groups of at most about ``rows_per_task`` rows as the files
    allow, of even sizes (at least one file each): 25.3M rows in tasks of at most 8M made
    groups of 8, 8, 7.4 and 1.9M rows, the last core idle for a quarter of the stage."""
    sizes = [pq.read_metadata(f).num_rows for f in files]
    if not files:
        return []
    total = sum(sizes)
    n_groups = max(1, -(-total // max(rows_per_task, 1)))
    groups: list[list[str]] = [[]]
    done = 0
    for f, n in zip(files, sizes):
        # a new group once the rows so far reach the next even share (rounded to whole files)
        if groups[-1] and done + n / 2 > total * len(groups) / n_groups:
            groups.append([])
        groups[-1].append(f)
        done += n
    return groups


def run_attach(ingest_dir: str | Path, link_dir: str | Path, out_dir: str | Path, *, client=None,
               person_buckets: int | None = None, progress: Callable[..., None] | None = None,
               consume: bool = False) -> dict:
    """Attach the link table to the ingested career and resource rows; ``consume``: each task
    removes an ingested file once it has read its rows (the job's last reader of them)."""
    from nirlink.linkage._tasks import run_tasks

    from ._link import ingested_files

    files = ingested_files(ingest_dir)
    link_dir = Path(link_dir).resolve()
    out_dir = Path(out_dir)
    total_rows = sum(pq.read_metadata(f).num_rows for k in ("career", "resource") for f in files[k])
    n_buckets = person_buckets or person_bucket_count(total_rows)
    with staged_directory(out_dir) as work:
        work = work.resolve()
        lookup = str(work / ".links.arrow")
        signatures = run_tasks(client, _build_lookup, [(str(link_dir), lookup, n_buckets)], name="attach-lookup",
                               progress=progress)[0]
        args = [(group, source, lookup, str(work), n_buckets, f"part-{i:05d}", consume) for source in ("career", "resource")
                for i, group in enumerate(_task_groups(files[source], attach_task_rows(n_buckets)))]
        results = run_tasks(client, _attach_files, args, name="attach", progress=progress,
                            rows=lambda r: r["rows"])
        os.remove(lookup)
        per_source: dict[str, Counter] = {}
        for r in results:
            per_source.setdefault(r["source"], Counter()).update({k: v for k, v in r.items() if k != "source"})
        for source, c in per_source.items():
            if c["rows"] != c["rows_with_person"] + c["rows_without_person"]:
                from nirlink.kernels import StageError

                raise StageError(f"attach: counts do not reconcile for {source}")
        manifest = {
            "stage": "attach", "signatures": signatures, "person_buckets": n_buckets,
            "inputs": {s: dict(c) for s, c in per_source.items()},
            "tables": {s: describe_dataset(work / s, relative_to=work) for s in per_source if (work / s).exists()},
        }
        write_json(work / "_manifest.json", manifest)
    return manifest


_DECLARED_COLUMNS = {
    "career": ["year", "kind", "gross_salary", "days"],
    "resource": ["period", "kind", "amount"],
}
ROWS_PER_PERSON_BUCKET = 2_000_000  # rows of one aggregation partition (one task's memory)
ROWS_PER_BUCKETING_TASK = 4_000_000  # rows one task of declared_persons reads (in memory) and spreads over the buckets
ROWS_PER_ATTACH_TASK = 4_000_000  # rows one attach task streams (ROWS_PER_WRITE at a time) into its bucket files
ROWS_PER_BUCKET_FILE = 131_072  # rows of a bucket file of one attach task, at least on average
ROWS_PER_WRITE = 2_000_000  # rows an attach task gathers (whole ingested files) before writing them into its buckets


def attach_task_rows(n_buckets: int) -> int:
    """Rows of one attach task: ROWS_PER_ATTACH_TASK, more with many buckets, so that each of
    its bucket files holds ROWS_PER_BUCKET_FILE rows on average. The files then number
    tasks x buckets = (rows / (buckets x ROWS_PER_BUCKET_FILE)) x buckets: linear in the rows
    (with a fixed task size they would grow with the square of the rows, ever smaller)."""
    return max(ROWS_PER_ATTACH_TASK, n_buckets * ROWS_PER_BUCKET_FILE)


def person_bucket_count(total_rows: int) -> int:
    return max(1, min(1024, total_rows // ROWS_PER_PERSON_BUCKET + 1))


def _declared_files(files: list[str], source: str, out: str, n_buckets: int, part: str) -> dict[str, int]:
    """Ingested files as aggregate input: each row's own NIR as its person (with the NIR's
    birth year and month: its signature's, from the part's identities file), only the columns
    the aggregation reads, written into person buckets (rows without a person: b=nulls)."""
    from ._ingest import with_identity

    wanted = ["nir", "nir_birth_year", "nir_birth_month"]
    t = pa.concat_tables([with_identity(f, _DECLARED_COLUMNS[source], wanted) for f in files])
    t = pa.table({"person": t.column("nir").combine_chunks(), "person_birth_year": t.column("nir_birth_year"),
                  "person_birth_month": t.column("nir_birth_month"),
                  **{c: t.column(c) for c in _DECLARED_COLUMNS[source]}})
    _, valid = _write_person_buckets(t, Path(out) / source, n_buckets, part)
    return {"rows": t.num_rows, "rows_without_person": int((~valid).sum())}


def declared_persons(ingest_dir: str | Path, out_dir: str | Path, *, client=None,
                     progress: Callable[..., None] | None = None) -> tuple[Path | None, Path | None]:
    """Without linkage: the ingested rows with their own valid NIR as the person (rows whose
    NIR is not valid have no person), grouped by person into bucket directories on disk (as
    the attach stage does), so that the aggregate stage reads each bucket as one partition
    and no task holds more than a bucket's rows."""
    from nirlink.linkage._tasks import run_tasks

    from ._link import ingested_files

    files = ingested_files(ingest_dir)
    out_dir = Path(out_dir)
    sizes = {s: [pq.read_metadata(f).num_rows for f in files[s]] for s in ("career", "resource")}
    n_buckets = person_bucket_count(sum(sum(v) for v in sizes.values()))
    args = []
    for source in ("career", "resource"):
        group, rows = [], 0
        for f, n in zip(files[source], sizes[source]):
            if group and rows + n > ROWS_PER_BUCKETING_TASK:
                args.append((group, source, str(out_dir), n_buckets, f"part-{len(args):05d}"))
                group, rows = [], 0
            group.append(str(f))
            rows += n
        if group:
            args.append((group, source, str(out_dir), n_buckets, f"part-{len(args):05d}"))
    run_tasks(client, _declared_files, args, name="person-buckets", progress=progress, rows=lambda r: r["rows"])
    return tuple(out_dir / source if files[source] else None for source in ("career", "resource"))
