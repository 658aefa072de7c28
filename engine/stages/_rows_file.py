"""The aggregate stage's rows file: one Parquet file of linked rows in export form per group of
person buckets, written on threads beside the task that reads and aggregates the buckets."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from nirlink.engine.io._datasets import column_options, make_private_dir, private_modes

__all__ = ["_RowsFile", "MAX_PENDING_WRITES"]

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
        self.pools: dict[str, ThreadPoolExecutor] = {}
        self.pending: list[Future] = []
        self.apart: list[Future] = []

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            self.submit(self._write, table)

    def _pool(self, name: str) -> ThreadPoolExecutor:
        if name not in self.pools:
            self.pools[name] = ThreadPoolExecutor(1, thread_name_prefix=f"nirlink-{name}")
        return self.pools[name]

    def submit(self, fn: Callable, *args, apart: bool = False) -> None:
        """``fn(*args)`` on the writing thread, after the writes before it (at most
        MAX_PENDING_WRITES in flight: the task waits for the oldest beyond that). ``apart``: on
        a second thread, in order with the other ``apart`` calls only (a bucket's aggregate
        tables, files of their own: the rows file's encoding and theirs use two cores when the
        task has them, as the last task of a stage has); a call that is not ``apart`` runs after
        every ``apart`` one queued before it (a bucket's input files are removed once all its
        outputs are written)."""
        while len(self.pending) >= MAX_PENDING_WRITES:
            self.pending.pop(0).result()
        if apart:
            future = self._pool("aggregate-tables").submit(fn, *args)
            self.apart = [f for f in self.apart if not f.done()] + [future]
        else:
            future = self._pool("rows-file").submit(_after, list(self.apart), fn, args)
        self.pending.append(future)

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
            for pool in self.pools.values():
                pool.shutdown(wait=True)
            if self.writer is not None:
                self.writer.close()
                if failed:
                    self.tmp.unlink(missing_ok=True)
                else:
                    os.chmod(self.tmp, private_modes()[1])
                    os.replace(self.tmp, self.target)



def _after(before: list[Future], fn: Callable, args: tuple) -> Any:
    """``fn(*args)`` once the calls ``before`` have finished (the first of their errors raised)."""
    for f in before:
        f.result()
    return fn(*args)


