"""The ingest stage: plan every input (all problems reported at once), read and check every
chunk as a Dask task, reject later rows of a record id already seen (_ingest_duplicates.py),
publish accepted rows and rejects atomically with a manifest whose counts reconcile per file
(rows read = accepted + rejected). A declared row's identity is written once per signature
and part file, in ``identities/<input>/`` beside the rows (``split_accepted``).
"""

from __future__ import annotations

import datetime as _dt
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from nirlink.engine.io._datasets import describe_dataset, staged_directory, write_json, write_parquet
from nirlink.engine.io._readers import ChunkTask, InputSpec, plan_input, read_chunks
from nirlink.engine.io._schemas import IDENTITIES, REASONS, identities_file
from nirlink.kernels import InputFileError, StageError

from ._ingest_duplicates import checked_kinds, id_summary, part_name, reject_duplicates
from ._ingest_identity import split_accepted
from ._ingest_rows import process_chunk

__all__ = ["run_ingest", "plan_ingest", "ingest_task", "ingested_rows_sql", "with_identity"]


def plan_ingest(inputs: list[InputSpec], *, chunk_rows: int) -> list[ChunkTask]:
    """Reading tasks of every input; raises with every problem of every input at once."""
    names = [i.name for i in inputs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputFileError(f"duplicate input names: {', '.join(dup)}")
    tasks: list[ChunkTask] = []
    problems: list[Exception] = []
    for index, spec in enumerate(inputs):
        try:
            tasks.extend(plan_input(spec, index, chunk_rows=chunk_rows))
        except (InputFileError, Exception) as exc:  # noqa: BLE001 - gathered and re-raised together
            problems.append(exc)
    if problems:
        if len(problems) == 1:
            raise problems[0]
        first = problems[0]
        raise type(first)("\n".join(str(p) for p in problems))
    return tasks


def ingest_task(task: ChunkTask, out_dir: str, chunk_rows: int, today_year: int,
                check_ids: bool = False) -> list[dict[str, Any]]:
    """Read, check and write one task's chunks; one stats dict per chunk. With ``check_ids``
    each dict also has the chunk's ``id_summary`` (key ``_ids``) for the duplicate check."""
    results = []
    first = task.first_group
    for chunk in read_chunks(task, chunk_rows=chunk_rows):
        res = process_chunk(chunk, task, today_year=today_year)
        name = part_name(task.input_index, task.file_index, first, chunk.index)
        if res.accepted.num_rows:
            rows, identities = split_accepted(res.accepted, task.kind, res.groups)
            write_parquet(rows, Path(out_dir) / task.input_name / name, store_schema=identities is None)
            if identities is not None:
                write_parquet(identities, Path(out_dir) / IDENTITIES / task.input_name / name)
        if res.rejects.num_rows:
            write_parquet(res.rejects, Path(out_dir) / "rejects" / task.input_name / name)
        results.append({"input": task.input_name, "file": task.path, **res.stats})
        if check_ids and res.accepted.num_rows:
            results[-1]["_ids"] = id_summary(res.accepted, task, chunk.index)
    return results


def ingested_rows_sql(ingest_dir: str | Path, input_name: str) -> str:
    """A DuckDB query (text) of an input's ingested declared rows with their identity columns:
    each part file's rows joined to its identities file on the signature (the columns the
    ingested rows had before the identity moved to ``identities/``, but the declared names,
    birth date and the surname's normalised form, which no longer are kept)."""
    from nirlink.engine.io._datasets import read_json
    from nirlink.kernels import InputError

    ingest_dir = Path(ingest_dir)
    inputs = read_json(ingest_dir / "_manifest.json")["inputs"] if (ingest_dir / "_manifest.json").exists() else {}
    if input_name not in inputs or inputs[input_name]["kind"] == "register":
        declared = sorted(n for n, i in inputs.items() if i["kind"] != "register")
        raise InputError(f"{ingest_dir}: {input_name!r} is not an ingested career or resource input "
                         f"(those here: {', '.join(declared) or 'none'})")
    if not any((ingest_dir / IDENTITIES / input_name).glob("*.parquet")):
        raise InputError(f"{ingest_dir / IDENTITIES / input_name}: no identities (every row of {input_name!r} "
                         "rejected, or released once the job no longer needed them: nirlink.jobs.keep)")
    root = str(ingest_dir).replace("'", "''")
    name = input_name.replace("'", "''")
    return f"""select r.* exclude (filename), i.* exclude (signature, rows, filename)
               from read_parquet('{root}/{name}/*.parquet', filename = true) r
               join read_parquet('{root}/{IDENTITIES}/{name}/*.parquet', filename = true) i
                 on i.signature = r.signature and parse_filename(i.filename) = parse_filename(r.filename)"""


def with_identity(path: str | Path, columns: list[str], identity: list[str]) -> pa.Table:
    """``columns`` of an ingested part file of declared rows, then the ``identity`` columns of
    each row's signature, from the part's identities file (``identities_file``, written with
    every part file of declared rows)."""
    rows = pq.read_table(path, columns=list(dict.fromkeys([*columns, "signature"])), use_threads=False)
    source = identities_file(path)
    ids = pq.read_table(source, columns=["signature", *identity], use_threads=False) if source.exists() else None
    at = pc.index_in(rows.column("signature"), value_set=ids.column("signature")) if ids is not None else None
    if at is None or at.null_count:
        raise StageError(f"{path}: its identities file {source} is missing or lacks a row's signature (removed, "
                         "or from another ingest): run the job again with --restart")
    return pa.table({**{c: rows.column(c) for c in columns}, **{c: ids.column(c).take(at) for c in identity}})


def run_ingest(inputs: list[InputSpec], out_dir: str | Path, *, client=None, chunk_rows: int = 1_000_000,
               today: _dt.date | None = None, progress: Callable[..., None] | None = None) -> dict[str, Any]:
    """Run the stage; publish ``out_dir`` (accepted datasets per input, ``rejects/``, ``_manifest.json``)."""
    tasks = plan_ingest(inputs, chunk_rows=chunk_rows)
    today_year = (today or _dt.date.today()).year
    out_dir = Path(out_dir)
    kinds = checked_kinds(tasks)
    with staged_directory(out_dir) as tmp:
        from nirlink.linkage._tasks import run_tasks, without_step

        root = tmp.resolve()
        per_task = run_tasks(client, ingest_task, [(t, str(root), chunk_rows, today_year, t.kind in kinds)
                                                   for t in tasks],
                             name="ingest", progress=without_step(progress),
                             rows=lambda chunks: sum(c["rows_read"] for c in chunks))
        results: list[dict[str, Any]] = [r for rs in per_task for r in rs]
        summaries = [s for s in (r.pop("_ids", None) for r in results) if s is not None]
        checks = {}
        if kinds:
            moved, checks = reject_duplicates(client, root, tasks, kinds, summaries, chunk_rows, today_year)
            results += moved
        manifest = _manifest(inputs, tasks, results, tmp)
        if checks:
            manifest["duplicate_check"] = checks
        write_json(tmp / "_manifest.json", manifest)
    return manifest


def _manifest(inputs, tasks, results, root: Path) -> dict[str, Any]:
    per_file: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for r in results:
        c = per_file[(r["input"], r["file"])]
        for k, v in r.items():
            if k not in ("input", "file"):
                c[k] += v
    report: dict[str, Any] = {"stage": "ingest", "inputs": {}, "reasons": REASONS}
    for spec in inputs:
        files = {}
        totals: Counter = Counter()
        for (inp, path), c in sorted(per_file.items()):
            if inp != spec.name:
                continue
            if c["rows_read"] != c["accepted"] + c["rejected"]:
                raise StageError(f"ingest: counts do not reconcile for {path}: read {c['rows_read']}, accepted "
                                 f"{c['accepted']}, rejected {c['rejected']}")
            files[path] = _shape(c)
            totals.update(c)
        for t in tasks:  # files with no chunk result (cannot happen, but never lose one silently)
            if t.input_name == spec.name and t.path not in files:
                raise StageError(f"ingest: no result for {t.path}")
        accepted_dir = root / spec.name
        rejects_dir = root / "rejects" / spec.name
        identities_dir = root / IDENTITIES / spec.name
        report["inputs"][spec.name] = {
            "kind": spec.kind,
            "files": files,
            "totals": _shape(totals),
            "accepted": describe_dataset(accepted_dir, relative_to=root) if accepted_dir.exists() else {"rows": 0, "files": []},
            "rejects": describe_dataset(rejects_dir, relative_to=root) if rejects_dir.exists() else {"rows": 0, "files": []},
            **({"identities": describe_dataset(identities_dir, relative_to=root)} if identities_dir.exists() else {}),
        }
    return report


def _shape(c: Counter) -> dict[str, Any]:
    return {
        "rows_read": c["rows_read"], "accepted": c["accepted"], "rejected": c["rejected"],
        "reasons": {k.removeprefix("reason_"): v for k, v in sorted(c.items()) if k.startswith("reason_")},
        "nir_status": {k.removeprefix("nir_"): v for k, v in sorted(c.items())
                       if k.startswith("nir_") and k != "nir_key_computed"},
        "nir_key_computed": c["nir_key_computed"],
        "values_transcoded_from_latin1": c["values_transcoded_from_latin1"],
    }
