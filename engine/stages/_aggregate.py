"""The aggregate stage: rows with a person in, per-person tables out, across the Dask cluster.

Rows reach their person's partition either because the input is already partitioned by
person (each file holds all the rows of its persons: the synthetic blocks, the attach
stage's output) or through a Dask shuffle on the person. Each partition then runs the
Numba kernels (engine/stages/_aggregate_partitions.py) and writes its part of every output table. Rows with
no person are counted per input and reported in the manifest, never dropped silently.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from nirlink.engine.io._datasets import (column_options, describe_dataset, make_private_dir, private_modes,
                                         staged_directory, write_json, write_parquet)
from nirlink.engine.io._readers import expand_paths
from nirlink.kernels import InputError

from ._aggregate_partitions import (CAREER_INPUT, CAREER_STATE, OUTPUT_SCHEMAS, RESOURCE_INPUT, career_partition,
                                    resource_partition)

__all__ = ["run_aggregate", "review_month_index"]

CAREER_TABLES = ("career_person_year", "career_person")
RESOURCE_TABLES = ("resource_person_month", "resource_person_year", "resource_person_review")
ROW_TABLES = ("career_rows", "resource_rows")  # linked rows in export form, from the attach stage's buckets


def review_month_index(text: str) -> int:
    """Absolute month index of a first review month (YYYY-MM, a quarter's first month)."""
    from nirlink.engine.jobs._spec import review_month_problem

    problem = review_month_problem(text)
    if problem:
        raise InputError(f"first review month: {problem}")
    y, m = (int(x) for x in text.split("-"))
    return y * 12 + m - 1


def _partitions(path) -> list[str | list[str]]:
    """The partitions of an input: its Parquet files, or, for a directory of person buckets
    (``b=<k>/`` as the attach stage writes them), the files of each bucket together."""
    path = Path(path)
    buckets = sorted(p for p in path.glob("b=*") if p.is_dir()) if path.is_dir() else []
    if buckets:
        return [sorted(str(f) for f in b.glob("*.parquet")) for b in buckets]
    files, missing = expand_paths([str(path)])
    if missing:
        raise InputError(f"aggregate: no input files at {path}")
    return [str(f) for f in files if f.suffix == ".parquet"]


def _partition_task(kind: str, part: Any, index: int, out_dir: str, first_review: int | None,
                    rows: bool | tuple = False, consume: bool = False, state: bool = True) -> dict[str, Any]:
    """Aggregate one partition (a file path, or a pandas frame from the shuffle) and write its
    outputs. ``rows``: ``part`` is a list of consecutive person buckets ``(index, files)`` of
    linked rows, each read once for its aggregates and its rows in export form, the rows of
    all of them streamed into one file ``<kind>_rows/part-<index>.parquet``; ``(prefix,
    suffix)``: only the rows of the files whose name starts with ``prefix`` (an increment's
    new files), into ``part-<index><suffix>.parquet``; ``(prefix, suffix, previous, counts)``:
    besides, only those files are read at all, the aggregates updated from the previous job's
    (``previous``: its aggregate directory; ``counts``: its counts of the group, which the new
    rows' add to; engine/stages/_aggregate_update.py). ``consume``: remove each partition's
    input files once its outputs are written. ``state``: write the career accumulators a later
    increment updates from (``career_person_year_state``)."""
    if not rows:
        return {"kind": kind, **_aggregate_one(kind, part, index, out_dir, first_review, None, consume, state=state)}
    only, suffix, previous, counts = (*rows, None, None)[:4] if isinstance(rows, tuple) else (None, "", None, None)
    total: Counter = Counter()
    with _RowsFile(Path(out_dir) / f"{kind}_rows" / f"part-{index:05d}{suffix}.parquet") as rows_file:
        for i, files in part:
            total.update(_aggregate_one(kind, files, i, out_dir, first_review, rows_file, consume, only, previous,
                                        state))
    if counts is not None:  # the rows read before, kept in the previous job's buckets
        total.update({k: counts.get(k, 0) for k in ("rows_in", "rows_without_person")})
    return {"kind": kind, **total}


MAX_PENDING_WRITES = 6  # a bucket's aggregate tables, its rows in export form, the removal of its files


class _RowsFile:
    """One Parquet file of linked rows in export form, written a bucket at a time (row groups
    of the export's size), published under its name when complete. The task's writes (each
    bucket's aggregate tables and rows, then the removal of its input files when it consumes
    them) run in order on a thread of their own while the task reads and aggregates the next
    bucket (at most MAX_PENDING_WRITES in flight: about one more bucket in memory). At 200,000
    persons a kind's rows are one such file, one task: the resource task (18M rows) ran long
    after the career task (7M rows) had left its core idle; the Parquet encoding, about half
    of the task, now overlaps the rest (the stage 14.5 -> 12.5 s, benchmarks/README.md)."""

    def __init__(self, target: Path):
        self.target, self.writer = target, None
        self.tmp = target.with_name(f".{target.name}.tmp")
        self.pool: ThreadPoolExecutor | None = None
        self.pending: list[Future] = []

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            self.submit(self._write, table)

    def submit(self, fn: Callable, *args) -> None:
        """``fn(*args)`` on the writing thread, after the writes before it (at most
        MAX_PENDING_WRITES in flight: the task waits for the oldest beyond that)."""
        while len(self.pending) >= MAX_PENDING_WRITES:
            self.pending.pop(0).result()
        if self.pool is None:
            self.pool = ThreadPoolExecutor(1, thread_name_prefix="nirlink-rows-file")
        self.pending.append(self.pool.submit(fn, *args))

    def _write(self, table: pa.Table) -> None:
        from ._export import ROW_GROUP_ROWS

        if self.writer is None:
            from ._bucket_writers import _plain_schema

            make_private_dir(self.target.parent)
            # no Arrow schema stored: the dictionary columns read back as the plain strings they hold
            self.writer = pq.ParquetWriter(self.tmp, table.schema, store_schema=False,
                                           **column_options(_plain_schema(table.schema)))
        if table.schema != self.writer.schema:
            table = table.cast(self.writer.schema)
        self.writer.write_table(table, row_group_size=ROW_GROUP_ROWS)

    def _wait(self) -> None:
        """The writes in flight finished (the first error raised here)."""
        pending, self.pending = self.pending, []
        errors = [f.exception() for f in pending]
        for e in errors:
            if e is not None:
                raise e

    def __enter__(self) -> _RowsFile:
        return self

    def __exit__(self, *exc) -> None:
        failed = exc[0] is not None
        try:
            try:
                self._wait()
            except Exception:
                if not failed:
                    failed = True
                    raise
        finally:
            if self.pool is not None:
                self.pool.shutdown(wait=True)
            if self.writer is not None:
                self.writer.close()
                if failed:
                    self.tmp.unlink(missing_ok=True)
                else:
                    os.chmod(self.tmp, private_modes()[1])
                    os.replace(self.tmp, self.target)


def _aggregate_one(kind: str, part: Any, index: int, out_dir: str, first_review: int | None,
                   rows_file: _RowsFile | None, consume: bool, only: str | None = None,
                   previous: str | None = None, state: bool = True) -> dict[str, Any]:
    linked, new_counts = None, None
    if isinstance(part, (str, list)):
        columns = CAREER_INPUT if kind == "career" else RESOURCE_INPUT
        paths = [part] if isinstance(part, str) else part
        schema = pq.read_schema(paths[0])
        needed = [c for c in columns if c in schema.names]
        wanted = list(needed)
        if rows_file is not None:
            from ._export import ROW_COLUMNS

            wanted += [c for c in ROW_COLUMNS[kind] if c in schema.names and c not in wanted]
        # strings read as dictionaries: no string materialised per row, no re-hashing; the rows
        # in export form move indices and are written with the small dictionaries and the
        # person as they are (linked_rows, _RowsFile)
        as_dict = [c for c in wanted if pa.types.is_string(schema.field(c).type)] if rows_file is not None else \
            [c for c in ("person", "kind") if c in wanted]
        tables, rows = [], []
        for p in paths:  # every file for the aggregates; the rows in export form of all, or of ``only``'s
            full = rows_file is not None and (only is None or Path(p).name.startswith(only))
            if previous is not None and not full:  # an update: the previous files' rows are in its aggregates
                continue
            t = pq.read_table(p, columns=wanted if full else needed, use_threads=False, read_dictionary=as_dict)
            if full:
                rows.append(t)
            tables.append(t.select(needed))
        if rows:
            from ._export import linked_rows

            linked = _as_published(linked_rows(pa.concat_tables(rows), kind, dictionaries=True), schema)
        table = pa.concat_tables(tables) if tables else None
        if previous is not None:
            from ._aggregate_update import career_update_rows, new_row_counts, previous_state, resource_update_rows

            new_counts = new_row_counts(table)
            state, where = previous_state(kind, previous, index), f"{kind} person bucket {index}"
            table = career_update_rows(state, table, where) if kind == "career" else \
                resource_update_rows(state, table, where)
    else:
        table = pa.Table.from_pandas(part, preserve_index=False)
    if kind == "career":
        out, stats = career_partition(table, state)
    else:
        out, stats = resource_partition(table, first_review_month=first_review)
    for name, t in out.items():
        if t.num_rows:
            path = Path(out_dir) / name / f"part-{index:05d}.parquet"
            if rows_file is not None:  # on its writing thread, with the rows
                rows_file.submit(write_parquet, t, path)
            else:
                write_parquet(t, path)
    if new_counts is not None:  # rows_in counts this run's rows, not the previous aggregates fed back
        stats.update(new_counts)
    if linked is not None:
        rows_file.write(linked)
    if consume and isinstance(part, (str, list)):
        paths = [part] if isinstance(part, str) else part
        if rows_file is not None:  # once the writes of its outputs, queued before, are done
            rows_file.submit(_remove_files, paths)
        else:
            _remove_files(paths)
    return stats


def _as_published(rows: pa.Table, schema: pa.Schema) -> pa.Table:
    """The rows in export form with the fields' nullability of the published rows files: the
    bucket file's (``schema``), but ``person`` and ``kind`` nullable (read as dictionaries
    since the first rows files; the other strings are since 2026-12-05, keeping theirs)."""
    fields = [f.with_nullable(True if f.name in ("person", "kind") else schema.field(f.name).nullable)
              if f.name in schema.names else f for f in rows.schema]
    target = pa.schema(fields)
    return rows if target == rows.schema else rows.cast(target)


def _remove_files(paths: list[str]) -> None:
    for p in paths:
        os.remove(p)


ROWS_FILE_INPUT_BYTES = 160 << 20  # person buckets (Parquet bytes) whose linked rows go into one file (~64 MB+)


NULLS_INDEX = 99_999  # the output index of the bucket of rows without a person (``b=nulls``): last


def bucket_parts(path: str | Path) -> list[tuple[int, list[str]]]:
    """The person buckets of an attach output ``(index, files)``: a bucket's index is its number
    (``b=00042``: 42), the same in every job with that bucket count, so that an increment finds
    the previous job's outputs of a bucket under the same name."""
    return [(NULLS_INDEX if b.name == "b=nulls" else int(b.name[2:]), sorted(str(f) for f in b.glob("*.parquet")))
            for b in sorted(p for p in Path(path).glob("b=*") if p.is_dir())]


def _bucket_groups(parts: list[tuple[int, list[str]]]) -> list[list[tuple[int, list[str]]]]:
    """Consecutive person buckets ``(index, files)`` of about ROWS_FILE_INPUT_BYTES together."""
    groups: list[list[tuple[int, list[str]]]] = []
    size = ROWS_FILE_INPUT_BYTES
    for i, files in parts:
        n = sum(os.path.getsize(f) for f in files)
        if size + n > ROWS_FILE_INPUT_BYTES and size >= ROWS_FILE_INPUT_BYTES // 2:
            groups.append([])
            size = 0
        groups[-1].append((i, files))
        size += n
    return groups


def run_aggregate(*, career: str | Path | None = None, resource: str | Path | None = None, out_dir: str | Path,
                  client=None, partitioned_by_person: bool = False, npartitions: int | None = None,
                  first_review_month: str = "2021-01", consume: bool = False,
                  progress: Callable[..., None] | None = None,
                  increment: dict[str, Any] | None = None, state: bool = True) -> dict[str, Any]:
    """Aggregate career and/or resource rows (columns: engine/stages/_aggregate_partitions.py CAREER_INPUT,
    RESOURCE_INPUT; ``person`` null = row without a person) and publish the tables under ``out_dir``.
    Person buckets of linked rows (the attach stage's) also give the linked rows in export form
    (``career_rows``, ``resource_rows``: the bucket read once for both); ``consume``: each
    bucket's files are removed once its outputs are written (the job's last reader of them);
    ``state``: also write the career accumulators a later increment updates from (a job writes
    them when it keeps what increments read, engine/jobs/_release.py keeps_increment_inputs)."""
    if career is None and resource is None:
        raise InputError("aggregate: give career and/or resource rows")
    first_review = review_month_index(first_review_month) if first_review_month else None
    inputs = [(k, p) for k, p in (("career", career), ("resource", resource)) if p is not None]
    out_dir = Path(out_dir)
    started = _dt.datetime.now()
    with staged_directory(out_dir) as tmp:
        jobs: list[tuple[str, Any, int, bool]] = []
        reused: dict[str, Any] = {}
        for kind, path in inputs:
            parts = _partitions(path)
            files = [f for p in parts for f in ([p] if isinstance(p, str) else p)]
            if not files:
                raise InputError(f"aggregate: no Parquet files for {kind} at {path}")
            needed = CAREER_INPUT if kind == "career" else RESOURCE_INPUT
            names = pq.read_schema(files[0]).names
            lacking = [c for c in needed if c not in names and not c.startswith("person_birth")]
            if lacking:
                raise InputError(f"aggregate: {files[0]} lacks column(s) {', '.join(lacking)} for {kind} rows")
            if partitioned_by_person or client is None:
                if not partitioned_by_person:
                    raise InputError("aggregate: a shuffle by person needs a Dask client (or partitioned input)")
                if "link_status" in names and all(isinstance(p, list) for p in parts):  # linked person buckets
                    if increment is not None:
                        from ._aggregate_increment import plan_groups

                        todo, reused[kind] = plan_groups(kind, bucket_parts(path), increment, tmp, state)
                        jobs.extend((kind, g, key, rows) for key, g, rows in todo)
                    else:
                        jobs.extend((kind, g, g[0][0], True) for g in _bucket_groups(bucket_parts(path)))
                else:
                    jobs.extend((kind, p, i, False) for i, p in enumerate(parts))
            else:
                import dask.dataframe as dd

                columns = [c for c in needed if c in names]
                ddf = dd.read_parquet(files, columns=columns)
                n = npartitions or max(1, len(files))
                shuffled = ddf.shuffle(on="person", npartitions=n)
                jobs.extend((kind, part, i, False) for i, part in enumerate(shuffled.to_delayed()))
        results = _run(jobs, str(tmp.resolve()), first_review, client, progress, consume, state)
        groups = {kind: [] for kind, _ in inputs}  # groups of person buckets, each with its counts
        for (kind, part, key, rows), result in zip(jobs, results):
            if rows:
                groups[kind].append({"key": key, "buckets": [i for i, _ in part], "counts": result})
        for kind, entries in reused.items():
            groups[kind] += entries
            results = results + [e["counts"] for e in entries]
        manifest = _manifest(inputs, results, tmp, partitioned_by_person, first_review_month, started)
        manifest["row_groups"] = {k: sorted(v, key=lambda e: e["key"]) for k, v in groups.items() if v}
        if increment is not None:
            if increment.get("delta") and Path(increment["delta"]).exists():  # the changed persons, for the export
                shutil.copytree(increment["delta"], tmp / "delta")
            updated = Counter(kind for kind, _, _, rows in jobs if isinstance(rows, tuple) and len(rows) == 4)
            manifest["increment"] = {"previous": str(increment["previous"]), "reuse": increment.get("reuse"),
                                     "groups_computed": {k: len(v) - len(reused.get(k, [])) for k, v in groups.items()},
                                     "groups_updated": {k: updated.get(k, 0) for k in groups},
                                     "groups_reused": {k: len(v) for k, v in reused.items()}}
        write_json(tmp / "_manifest.json", manifest)
    return manifest


def _run(jobs, out_dir, first_review, client, progress, consume, state):
    from nirlink.linkage._tasks import run_tasks, without_step

    if client is not None:
        # partitions of a shuffle are Dask delayed objects: turn them into futures that the
        # partition tasks depend on
        jobs = [(kind, client.compute(part) if not isinstance(part, (str, list)) else part, index, rows)
                for kind, part, index, rows in jobs]

    def describe(args) -> str:
        kind, part, index, _, _, rows = args[:6]
        if rows:
            return f"{kind} person buckets {part[0][0]}-{part[-1][0]}: {part[0][1][0]} and more"
        if isinstance(part, str):
            return f"{kind} partition {index}: {part}"
        if isinstance(part, list):
            return f"{kind} partition {index}: {part[0]}" + (f" and {len(part) - 1} more" if len(part) > 1 else "")
        return f"{kind} partition {index} of the shuffle by person"

    return run_tasks(client, _partition_task, [(kind, part, index, out_dir, first_review, rows, consume, state)
                                                for kind, part, index, rows in jobs],
                     name="aggregate", progress=without_step(progress), describe=describe,
                     rows=lambda r: r["rows_in"])


def _manifest(inputs, results, root: Path, partitioned, first_review_month, started) -> dict[str, Any]:
    totals: dict[str, Counter] = {k: Counter() for k, _ in inputs}
    for r in results:
        c = totals[r["kind"]]
        for key, value in r.items():
            if key != "kind":
                c[key] += value
    tables = {}
    for kind, _ in inputs:
        for name in (CAREER_TABLES if kind == "career" else RESOURCE_TABLES):
            d = root / name
            tables[name] = describe_dataset(d, relative_to=root) if d.exists() else {
                "rows": 0, "files": [], "schema": [{"name": f.name, "type": str(f.type), "nullable": f.nullable}
                                                   for f in OUTPUT_SCHEMAS[name]]}
    linked_rows = {name: describe_dataset(root / name, relative_to=root) for name in ROW_TABLES if (root / name).exists()}
    # internal: the career accumulators an increment updates from (engine/stages/_aggregate_update.py)
    state = {CAREER_STATE: describe_dataset(root / CAREER_STATE, relative_to=root)} \
        if (root / CAREER_STATE).exists() else {}
    from nirlink.engine.reference._tables import year_table

    yt = year_table()
    unpublished = [int(y) for y, ok in zip(yt.years, yt.reval_published) if not ok]
    return {
        "stage": "aggregate",
        "inputs": {kind: {"path": str(path), **dict(totals[kind])} for kind, path in inputs},
        "rows_without_person": {kind: totals[kind]["rows_without_person"] for kind, _ in inputs},
        "partitioned_by_person": partitioned,
        "first_review_month": first_review_month,
        "tables": tables,
        "linked_rows": linked_rows,
        "state": state,
        "notes": [f"SAM revaluation: no published coefficient for {unpublished[0]}-{unpublished[-1]}; "
                  "salaries of those years are taken at face value (coefficient 1.0)"] if unpublished else [],
    }
