"""Duplicate record ids: one accepted row per record id and kind, the others rejected.

A record id names one row for everything after ingest (explain, clerical decisions, the
export), and a row delivered twice would count a salary twice. So among the accepted rows
of one kind (career or resource), across every input of that kind, the first row of each
record id - in job order: input, then file (sorted), then row number - is kept and every
later one is moved to the rejects with reason ``duplicate_record_id`` (its ``value`` says
where the kept row is). Counts stay reconciled: rows read = accepted + rejected per file.

Only kinds where some input gives its own ids are checked (generated ids are unique by
construction). Each ingest task reports, per chunk of accepted rows, the smallest and largest
record id and whether the chunk's ids are unique (`id_summary`). Two rows can share an id only
inside one chunk whose ids are not unique or in two chunks whose id ranges overlap, so only
those chunks are checked; deliveries numbered by increasing ids (the usual case) need no
check at all, no scratch on disk and no second read. The check is a shuffle on disk
(linkage/_buckets.py): a task per checked chunk reads its record ids back and writes the
(record id, position) into buckets by record id; a task per bucket finds the ids seen twice;
a task per bucket of affected input files moves their rows. Memory per task is one bucket,
whatever the number of rows, and one chunk.
A moved row keeps its fields as delivered (``raw``), and the part files no longer hold the
identity (it is written once per signature, ``ingest/identities/``): the chunks holding a
duplicate are read and checked again, in one read of each file's reading task, and their
part and identities files written again.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from nirlink.engine.io._datasets import write_parquet
from nirlink.engine.io._readers import ChunkTask
from nirlink.engine.io._schemas import COLUMNS, IDENTITIES, rejects_schema
from nirlink.kernels import StageError

__all__ = ["SCRATCH", "checked_kinds", "id_summary", "chunks_to_check", "reject_duplicates", "part_name"]

SCRATCH = "_duplicates"  # below the stage's temporary directory; removed before publication
_ROWS_PER_BUCKET = 4_000_000  # record ids per bucket of the check (~100 MB in memory)

IDS_SCHEMA = pa.schema([
    pa.field("record_id", pa.int64()), pa.field("input", pa.int32()), pa.field("file", pa.int32()),
    pa.field("row", pa.int64()), pa.field("group", pa.int32()), pa.field("chunk", pa.int32()),
    pa.field("pos", pa.int32()),
])
FOUND_SCHEMA = pa.schema([
    pa.field("input", pa.int32()), pa.field("file", pa.int32()), pa.field("group", pa.int32()),
    pa.field("chunk", pa.int32()), pa.field("pos", pa.int32()), pa.field("record_id", pa.int64()),
    pa.field("first_input", pa.int32()), pa.field("first_file", pa.int32()), pa.field("first_row", pa.int64()),
])
_PART = ["input", "file", "group", "chunk"]


def part_name(input_index: int, file_index: int, group: int, chunk: int) -> str:
    """File name of an ingest task's chunk (accepted rows and rejects alike)."""
    return f"part-{input_index:02d}-{file_index:05d}-{group:05d}-{chunk:05d}.parquet"


def checked_kinds(tasks: list[ChunkTask]) -> set[str]:
    """Kinds with an input that gives its own record ids."""
    return {t.kind for t in tasks if t.kind != "register" and any(c == "record_id" for c, _ in t.columns)}


def id_summary(accepted: pa.Table, task: ChunkTask, chunk: int) -> dict | None:
    """What the check needs to know of one chunk's accepted rows: where its part file is, its
    smallest and largest record id and whether its ids are unique (None: no id to check)."""
    ids = accepted.column("record_id")
    ids = (ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids).drop_null().to_numpy()
    if not len(ids):
        return None
    unique = bool((ids[1:] > ids[:-1]).all())
    if not unique:
        s = np.sort(ids)
        unique = bool((s[1:] != s[:-1]).all())
    return {"kind": task.kind, "input": task.input_index, "file": task.file_index,
            "group": task.first_group, "chunk": chunk,
            "min": int(ids.min()), "max": int(ids.max()), "unique": unique, "rows": int(len(ids))}


def chunks_to_check(summaries: list[dict]) -> list[dict]:
    """The chunks that may hold a duplicate id: those whose ids are not unique and those whose
    id range overlaps another chunk's (ranges sorted by start, grouped while they overlap)."""
    out: list[dict] = []
    group: list[dict] = []
    end = None
    for s in sorted(summaries, key=lambda s: (s["min"], s["max"])):
        if end is not None and s["min"] <= end:
            group.append(s)
            end = max(end, s["max"])
            continue
        out += group if len(group) > 1 else [g for g in group if not g["unique"]]
        group, end = [s], s["max"]
    out += group if len(group) > 1 else [g for g in group if not g["unique"]]
    return out


def _write_ids(root: str, input_name: str, summary: dict, n_buckets: int) -> None:
    """The ids of one checked chunk's accepted rows, read back from its part file, into
    buckets by record id (map side)."""
    from nirlink.linkage._buckets import key_hash, write_buckets

    name = part_name(summary["input"], summary["file"], summary["group"], summary["chunk"])
    accepted = pq.read_table(Path(root) / input_name / name, columns=["record_id", "row_number"])
    n = accepted.num_rows
    ids = pa.table({
        "record_id": accepted.column("record_id"),
        "input": pa.array(np.full(n, summary["input"], np.int32)),
        "file": pa.array(np.full(n, summary["file"], np.int32)),
        "row": accepted.column("row_number"),
        "group": pa.array(np.full(n, summary["group"], np.int32)),
        "chunk": pa.array(np.full(n, summary["chunk"], np.int32)),
        "pos": pa.array(np.arange(n, dtype=np.int32)),
    }, schema=IDS_SCHEMA)
    h, valid = key_hash(ids, ["record_id"])
    write_buckets(ids, h, valid, n_buckets, Path(root) / SCRATCH / summary["kind"] / "ids", name.removesuffix(".parquet"))


def _find(root: str, kind: str, bucket: int, n_buckets: int) -> tuple[int, list[tuple[int, int]]]:
    """Every row of one id bucket whose record id an earlier row already has; written into
    buckets by input file (a file's parts in one bucket: ``_move`` reads the file once).
    Returns how many, and the (input, file) pairs they are in."""
    from nirlink.linkage._buckets import key_hash, read_bucket, write_buckets

    t = read_bucket(Path(root) / SCRATCH / kind / "ids", bucket, IDS_SCHEMA)
    if t.num_rows < 2:
        return 0, []
    col = {name: t.column(name).to_numpy() for name in IDS_SCHEMA.names}
    order = np.lexsort((col["row"], col["file"], col["input"], col["record_id"]))
    rid = col["record_id"][order]
    later = np.zeros(len(rid), bool)
    later[1:] = rid[1:] == rid[:-1]
    if not later.any():
        return 0, []
    run_start = np.maximum.accumulate(np.where(~later, np.arange(len(rid)), 0))  # the first row of each id
    dup, first = order[later], order[run_start[later]]
    found = pa.table({**{k: pa.array(col[k][dup]) for k in (*_PART, "pos", "record_id")},
                      "first_input": pa.array(col["input"][first]), "first_file": pa.array(col["file"][first]),
                      "first_row": pa.array(col["row"][first])}, schema=FOUND_SCHEMA)
    h, valid = key_hash(found, ["input", "file"])
    write_buckets(found, h, valid, n_buckets, Path(root) / SCRATCH / kind / "found", f"from-{bucket:05d}")
    return len(dup), sorted({(int(i), int(f)) for i, f in zip(col["input"][dup], col["file"][dup])})


def _accepted_again(task: ChunkTask, wanted: set[int], chunk_rows: int, today_year: int):
    """(chunk index, ChunkResult: accepted rows and their identities' groups) of the chunks
    ``wanted`` of one reading task, in one read of its rows (the part files hold a declared
    row's own columns and its identity once per signature): read and checked again as the
    ingest task did (same input, same rows, same values)."""
    from nirlink.engine.io._readers import read_chunks

    from ._ingest_rows import process_chunk

    left = set(wanted)
    for chunk in read_chunks(task, chunk_rows=chunk_rows):
        if chunk.index in left:
            left.discard(chunk.index)
            yield chunk.index, process_chunk(chunk, task, today_year=today_year)
        if not left:
            return
    raise StageError(f"ingest: chunk(s) {sorted(left)} of {task.path} are gone on a second read (file changed "
                     "during the stage?): run the job again")


def _move(root: str, kind: str, bucket: int, names: dict[int, str], files: dict[tuple[int, int], str],
          tasks: dict[tuple[int, int, int], ChunkTask], chunk_rows: int, today_year: int) -> list[dict]:
    """Move the duplicate rows of the input files of one bucket from accepted to rejects. A
    rejected row keeps its fields as text (``raw``), the identity among them, which the part
    files no longer hold: the chunks holding a duplicate are read and checked again (one read
    of each reading task's rows; only files with a duplicate, rare); their part files and
    identities files are written again from what stays."""
    from nirlink.linkage._buckets import read_bucket

    found = read_bucket(Path(root) / SCRATCH / kind / "found", bucket, FOUND_SCHEMA)
    if found.num_rows == 0:
        return []
    found = found.sort_by([(k, "ascending") for k in (*_PART, "pos")])
    part = np.stack([found.column(k).to_numpy().astype(np.int64) for k in _PART])
    starts = np.flatnonzero(np.r_[True, (part[:, 1:] != part[:, :-1]).any(axis=0), True])
    stats = []
    where = {tuple(int(v) for v in part[:, a]): (a, b) for a, b in zip(starts[:-1], starts[1:])}
    by_task: dict[tuple[int, int, int], set[int]] = {}
    for inp, fil, group, chunk in where:
        by_task.setdefault((inp, fil, group), set()).add(chunk)
    for (inp, fil, group), chunks in sorted(by_task.items()):
        stats += _move_chunks(root, kind, names, files, (inp, fil, group), found, where,
                              _accepted_again(tasks[(inp, fil, group)], chunks, chunk_rows, today_year))
    return stats


def _move_chunks(root: str, kind: str, names: dict[int, str], files: dict[tuple[int, int], str],
                 task_key: tuple[int, int, int], found: pa.Table, where: dict[tuple[int, ...], tuple[int, int]],
                 accepted) -> list[dict]:
    """The moves of one reading task's chunks (``accepted``: its chunks holding a duplicate,
    read again), each part file and its identities file written again from what stays."""
    from ._ingest_identity import full_rows, split_accepted

    inp, fil, group = task_key
    stats = []
    for chunk, result in accepted:
        table = result.accepted
        a, b = where[(inp, fil, group, chunk)]
        mine = found.slice(a, b - a)
        name = part_name(inp, fil, group, chunk)
        path = Path(root) / names[inp] / name
        if table.num_rows != pq.read_metadata(path).num_rows or not table.column("record_id").equals(
                pq.read_table(path, columns=["record_id"]).column("record_id")):
            raise StageError(f"ingest: {files[(inp, fil)]} gave other rows on a second read (file changed "
                             "during the stage?): run the job again")
        moved = np.zeros(table.num_rows, bool)
        moved[mine.column("pos").to_numpy()] = True
        kept = table.filter(pa.array(~moved))
        identities_path = Path(root) / IDENTITIES / names[inp] / name
        if kept.num_rows:
            rows, identities = split_accepted(kept, kind, result.groups)
            write_parquet(rows, path, store_schema=identities is None)
            if identities is not None:
                write_parquet(identities, identities_path)
        else:
            path.unlink()
            identities_path.unlink(missing_ok=True)
        rejects = _rejects(full_rows(table.filter(pa.array(moved)), kind, result.groups), mine, kind, names, files)
        write_parquet(rejects, Path(root) / "rejects" / names[inp] / name.replace(".parquet", "-duplicates.parquet"))
        k = int(moved.sum())
        stats.append({"input": names[inp], "file": files[(inp, fil)], "accepted": -k, "rejected": k,
                      "reason_duplicate_record_id": k})
    return stats


def _rejects(rows: pa.Table, found: pa.Table, kind: str, names: dict[int, str],
             files: dict[tuple[int, int], str]) -> pa.Table:
    schema = rejects_schema(kind)
    n = rows.num_rows
    where = [f"{rid} (kept: input {names[i]}, {files[(i, f)]} row {r})" for rid, i, f, r in zip(
        *(found.column(c).to_pylist() for c in ("record_id", "first_input", "first_file", "first_row")))]
    raw = [pc.cast(rows.column(c.name), pa.string()).combine_chunks() for c in COLUMNS[kind]]
    return pa.table({
        "source_file": rows.column("source_file"),
        "row_number": rows.column("row_number"),
        "record_id": rows.column("record_id"),
        "column": pa.array(["record_id"] * n, pa.string()),
        "reason": pa.array(["duplicate_record_id"] * n, pa.string()),
        "reasons": pa.array(["record_id:duplicate_record_id"] * n, pa.string()),
        "value": pa.array(where, pa.string()),
        "raw": pa.StructArray.from_arrays(raw, fields=list(schema.field("raw").type)),
        "line": pa.nulls(n, pa.string()),
    }, schema=schema)


def reject_duplicates(client, root: Path, tasks: list[ChunkTask], kinds: set[str],
                      summaries: list[dict], chunk_rows: int, today_year: int) -> tuple[list[dict], dict]:
    """Find and move every duplicate of ``kinds`` under the stage directory ``root``, given the
    ingest tasks' ``id_summary`` of each chunk. Returns the per-file count changes (to add to
    the ingest results) and, per kind, how many chunks there were, were checked and how many
    rows were moved. Removes the scratch files."""
    from nirlink.linkage._tasks import run_tasks

    names = {t.input_index: t.input_name for t in tasks}
    files = {(t.input_index, t.file_index): t.path for t in tasks}
    stats: list[dict] = []
    report: dict = {}
    for kind in sorted(kinds):
        mine = [s for s in summaries if s["kind"] == kind]
        check = chunks_to_check(mine)
        report[kind] = {"chunks": len(mine), "chunks_checked": len(check), "duplicates": 0}
        if not check:
            continue
        n_buckets = int(min(1024, max(1, math.ceil(sum(s["rows"] for s in check) / _ROWS_PER_BUCKET))))
        run_tasks(client, _write_ids, [(str(root), names[s["input"]], s, n_buckets) for s in check],
                  name=f"ingest-{kind}-ids")
        found = run_tasks(client, _find, [(str(root), kind, b, n_buckets) for b in range(n_buckets)],
                          name=f"ingest-{kind}-duplicates")
        report[kind]["duplicates"] = int(sum(n for n, _ in found))
        if report[kind]["duplicates"]:
            affected = {pair for _, pairs in found for pair in pairs}
            # the reading tasks of the files holding a duplicate (the chunks to read again)
            by_part = {(t.input_index, t.file_index, t.first_group): t for t in tasks
                       if (t.input_index, t.file_index) in affected}
            moved = run_tasks(client, _move, [(str(root), kind, b, names, files, by_part, chunk_rows, today_year)
                                              for b in range(n_buckets)],
                              name=f"ingest-{kind}-duplicates-moved")
            stats += [s for per_bucket in moved for s in per_bucket]
    shutil.rmtree(root / SCRATCH, ignore_errors=True)
    return stats, report
