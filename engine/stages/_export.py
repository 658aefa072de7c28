"""The export stage: the datasets other systems consume, with documented schemas and a manifest.

Published under ``export/``: linked rows, the per-person aggregate tables, the link table and
a summary of rejects (where and why, never the rejected values). Identity fields (names,
birth dates, declared NIRs) stay inside nirlink: other systems get the person and the facts.
Each dataset is a few large Parquet files (64 MB and more where the data allows,
row groups of ROW_GROUP_ROWS rows): one task per group of inputs reads each input once and
streams it into its file. The linked rows come in export form from the aggregate stage
(written from the same read of each person bucket as its aggregates, a few buckets into one
large file), sorted by person then record id, so that the person's runs compress: without
pseudonymisation their files are moved into the export as they are (linked when the
aggregate stage's output is kept), with it rewritten with the pseudonyms. ``year`` is
a column of every row, person-year and person-month file (no ``year=<y>/`` directories).
With pseudonymisation, every NIR becomes HMAC-SHA256(key, NIR) in hex: the same key gives the
same pseudonym across jobs; the key is read from a file or an environment variable (at
least MIN_KEY_BYTES), is never written anywhere and travels to tasks as a PseudonymKey,
which never prints.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from nirlink.engine.io._datasets import describe_dataset, staged_directory, write_json
from nirlink.kernels import InputError

__all__ = ["run_export", "pseudonymise", "load_key", "PseudonymKey", "MIN_KEY_BYTES", "EXPORTS"]

ROW_COLUMNS = {
    "career": ["record_id", "signature", "person", "employer_id", "year", "start_date", "end_date", "kind", "gross_salary", "days",
               "nir_status", "link_status", "link_method", "match_probability"],
    "resource": ["record_id", "signature", "person", "payer_id", "period", "kind", "amount", "nir_status", "link_status",
                 "link_method", "match_probability"],
}
# table -> (source path relative to the job directory, hive partition column: None for every table
# since ``year`` became a column; kept in the manifest as ``hive_partitioning``, README "Exports")
EXPORTS = {
    "career_rows": ("aggregate/career_rows", None),
    "resource_rows": ("aggregate/resource_rows", None),
    "career_person_year": ("aggregate/career_person_year", None),
    "career_person": ("aggregate/career_person", None),
    "resource_person_month": ("aggregate/resource_person_month", None),
    "resource_person_year": ("aggregate/resource_person_year", None),
    "resource_person_review": ("aggregate/resource_person_review", None),
    "links": ("link/links", None),
    "person_changes": ("link/person_changes", None),  # an increment's: persons whose id changed
    "delta": ("aggregate/delta", None),  # an increment's: the persons whose rows or link changed
}
INPUT_BYTES_PER_FILE = 96 << 20  # inputs (Parquet bytes) streamed into one export file (>= 64 MB out where the data allows)
ROW_TABLES = ("career_rows", "resource_rows")
ROW_GROUP_ROWS = 1 << 20  # rows per row group: a unit of parallel reading for DuckDB, Polars, Spark
# the signals stage's case datasets, exported as signals/<rule> when the job ran that stage
SIGNAL_EXPORTS = {f"signals/{name}": (f"signals/{name}", None) for name in (
    "income_after_death", "nir_shared", "identity_conflict", "possible_pension_non_take_up",
    "low_resources_no_minimum", "declarant_quality", "declarant_scorecard")}
NIR_COLUMNS = ("person", "register_nir", "nir_owner", "old_person", "new_person")
NIR_LIST_COLUMNS = ("other_persons",)


MIN_KEY_BYTES = 16  # HMAC-SHA256 keys shorter than this are guessable; README, "Exports for other systems"


class PseudonymKey:
    """A pseudonymisation key that never shows itself: its repr and str hide the bytes, so a
    log line or a report of a failed task that prints its arguments (Dask did before 2024.12)
    prints no secret. ``nirlink submit`` hands the key to the job's driver this way,
    inside the submitted task's arguments: it stays in memory (submitter, scheduler, driver)
    and is never written to disk."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes):
        self._value = bytes(value)

    @property
    def value(self) -> bytes:
        return self._value

    def __repr__(self) -> str:
        return "PseudonymKey(<hidden>)"

    __str__ = __repr__


def load_key(*, key_env: str | None, key_file: str | None) -> bytes:
    """The key from ``key_file`` (its content, stripped) or else the environment variable
    ``key_env`` of this process; at least MIN_KEY_BYTES bytes. Messages name the setting and
    what to do, never the key."""
    if key_file:
        where = f"key file {key_file}"
        try:
            key = Path(key_file).read_bytes().strip()
        except OSError as exc:
            raise InputError(f"pseudonymisation {where}: {exc.strerror}") from None
    elif key_env:
        where = f"environment variable {key_env}"
        value = os.environ.get(key_env)
        if value is None:
            raise InputError(f"pseudonymisation key: {where} is not set: set it in the shell that runs "
                             "`nirlink job check`, `run` or `submit` (submit hands the key to the job's driver "
                             "in memory; the workers need not have it)")
        key = value.encode("utf-8")
    else:
        raise InputError("pseudonymisation needs a key: set output.key_env (an environment variable) or "
                         "output.key_file")
    if len(key) < MIN_KEY_BYTES:
        raise InputError(f"pseudonymisation key in {where} is {len(key)} bytes; it needs at least "
                         f"{MIN_KEY_BYTES} (e.g. `openssl rand -hex 32`)")
    return key


def pseudonymise(values: pa.Array, key: bytes) -> pa.Array:
    """HMAC-SHA256 of each value (hex); computed once per distinct value."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    enc = values.dictionary_encode()
    digests = [hmac.new(key, v.encode("utf-8"), hashlib.sha256).hexdigest() if v is not None else None
               for v in enc.dictionary.to_pylist()]
    return pa.array(digests, pa.string()).take(enc.indices)


def _prepare(table: pa.Table, name: str, key: bytes | None) -> pa.Table:
    if name == "resource_person_month":
        table = table.append_column("year", pc.cast(pc.year(table.column("period")), pa.int16()))
    if name == "links":
        table = table.drop_columns([c for c in ("register_nir",) if c in table.column_names])
    if key is not None:
        for col in NIR_COLUMNS:
            if col in table.column_names:
                table = table.set_column(table.column_names.index(col), col, pseudonymise(table.column(col), key))
        for col in NIR_LIST_COLUMNS:
            if col in table.column_names:
                lists = table.column(col).combine_chunks()
                values = pseudonymise(lists.flatten(), key)
                table = table.set_column(table.column_names.index(col), col,
                                         pa.ListArray.from_arrays(lists.offsets, values, mask=lists.is_null()))
    return table


def linked_rows(table: pa.Table, source: str, dictionaries: bool = False) -> pa.Table:
    """Linked rows in export form: ROW_COLUMNS (plain strings), ``year`` (a resource row's from
    its period), sorted by person then record id (rows without a person last). ``dictionaries``:
    the dictionary columns that a Parquet writer takes as they are stay dictionaries (the
    person cut to its runs, the small ones: engine/stages/_bucket_writers.py); the same values."""
    table = table.select([c for c in ROW_COLUMNS[source] if c in table.column_names])
    if source == "resource":
        table = table.append_column("year", pc.cast(pc.year(table.column("period")), pa.int16()))
    # sorted and moved while the strings are still dictionary indices (the person as the rank
    # of its value among the dictionary's), decoded once in their final order: decoding first
    # then moving every string cost 1.8x as much (0.20 s against 0.11 s for a bucket of 1.4M
    # resource rows, the same rows out)
    table = table.combine_chunks()
    person = table.column("person")
    if pa.types.is_dictionary(person.type):
        person = person.chunk(0) if person.num_chunks else pa.array([], pa.string()).dictionary_encode()
        rank = pc.rank(person.dictionary, sort_keys="ascending", tiebreaker="dense").cast(pa.int64())
        person = pc.fill_null(rank.take(person.indices), len(rank) + 1)  # nulls last
    order = pc.sort_indices(pa.table({"person": person, "record_id": table.column("record_id")}),
                            sort_keys=[("person", "ascending"), ("record_id", "ascending")])  # nulls last
    table = table.take(order)
    if dictionaries:  # as the bucket writers take them: the small ones and the person's runs kept
        from ._bucket_writers import writable

        return writable(table)
    from ._bucket_writers import _decoded

    return _decoded(table)


def _export_group(inputs: list[str], name: str, out: str, part: str, key: PseudonymKey | None,
                  consume: bool = False) -> int:
    """Stream ``inputs`` (each read once, in order) into the export file ``<name>/<part>.parquet``;
    ``consume``: remove each input once read."""
    from nirlink.engine.io._datasets import column_options, link_or_copy, make_private_dir, private_modes

    target = Path(out) / name / f"{part}.parquet"
    if key is None and name in ROW_TABLES and len(inputs) == 1:
        # already in export form (the aggregate stage's, one large file): moved, or linked when kept
        if consume:
            make_private_dir(target.parent)
            os.replace(inputs[0], target)
        else:
            link_or_copy(inputs[0], target)
        return pq.read_metadata(target).num_rows
    writer, rows = None, 0
    try:
        for src in inputs:
            table = _prepare(pq.read_table(src, use_threads=False), name, key.value if key is not None else None)
            if consume:
                os.remove(src)  # the job's last reader of it: the disk it held is free for the export
            if table.num_rows == 0:
                continue
            if writer is None:
                make_private_dir(target.parent)
                writer = pq.ParquetWriter(target, table.schema, **column_options(table.schema))
            if table.schema != writer.schema:
                table = table.cast(writer.schema)
            writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
            rows += table.num_rows
    finally:
        if writer is not None:
            writer.close()
            os.chmod(target, private_modes()[1])
    return rows


def _groups(src: Path, name: str) -> list[list[str]]:
    """The export files of a dataset, each a list of its Parquet files (consecutive, about
    INPUT_BYTES_PER_FILE together); the linked rows, already in large files, one each."""
    groups: list[list[str]] = []
    size = INPUT_BYTES_PER_FILE
    for f in sorted(str(p) for p in src.rglob("*.parquet") if not p.name.startswith(".")):
        if name in ROW_TABLES:
            groups.append([f])
            continue
        n = os.path.getsize(f)
        if size + n > INPUT_BYTES_PER_FILE and size >= INPUT_BYTES_PER_FILE // 2:
            groups.append([])
            size = 0
        groups[-1].append(f)
        size += n
    return groups


def run_export(job_dir: str | Path, out_dir: str | Path, *, client=None, key: bytes | PseudonymKey | None = None,
               progress: Callable[..., None] | None = None, signals: bool = False,
               consume: tuple[str, ...] = ()) -> dict[str, Any]:
    """Export the job's datasets; ``signals``: also the signals stage's (``export/signals/<rule>/``);
    ``consume``: the stages (``aggregate``) whose files each task removes once read."""
    from nirlink.linkage._tasks import run_tasks

    job_dir = Path(job_dir)
    if isinstance(key, bytes):
        key = PseudonymKey(key)  # the tasks' arguments show up in a failed task's log line: hide it
    exports = {**EXPORTS, **(SIGNAL_EXPORTS if signals else {})}
    with staged_directory(out_dir) as work:
        work = work.resolve()
        args = [(group, name, str(work), f"part-{i:05d}", key, rel.split("/")[0] in consume)
                for name, (rel, _) in exports.items() if (job_dir / rel).exists()
                for i, group in enumerate(_groups(job_dir / rel, name))]
        counts = run_tasks(client, _export_group, args, name="export", progress=progress, rows=int)
        rejects = _rejects_summary(job_dir, work)
        tables = {}
        for name, (_, partition) in exports.items():
            if (work / name).exists():
                tables[name] = {**describe_dataset(work / name, relative_to=work), "hive_partitioning": partition}
        manifest = {
            "stage": "export",
            "pseudonymised": key is not None,
            "pseudonym": "HMAC-SHA256 of the NIR, hex" if key is not None else None,
            "rows_written": sum(counts),
            "tables": tables,
            "rejects": rejects,
        }
        write_json(work / "_manifest.json", manifest)
    return manifest


def _rejects_summary(job_dir: Path, work: Path) -> dict[str, int]:
    src = job_dir / "ingest" / "rejects"
    if not src.exists():
        return {}
    files = sorted(src.rglob("*.parquet"))
    if not files:
        return {}
    t = pa.concat_tables([pq.read_table(f, columns=["source_file", "row_number", "column", "reason"]) for f in files])
    (work / "rejects").mkdir(parents=True, exist_ok=True)
    pq.write_table(t, work / "rejects" / "part-00000.parquet", compression="zstd")
    return {str(k): int(v) for k, v in zip(*[c.to_pylist() for c in pc.value_counts(t.column("reason")).flatten()])}
