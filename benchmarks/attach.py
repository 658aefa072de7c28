"""The attach stage alone, at the job's person-bucket count and at ten times it, against DuckDB
regrouping the same rows: `python -m benchmarks.attach [--persons 200000] [--seed 3]
[--buckets-factor 10] [--repeats 3] [--dir DIR] [--keep] [--name attach]
[--baseline-python PYTHON]`.

`nirlink synth` then `nirlink run` of the ingest and link stages (kept), then, on the same
ingested rows and link table, repeated `--repeats` times each (median):
- nirlink: the attach stage (`run_attach`, 2 worker processes): each row's signature looked
  up in the link table, the rows written into person buckets, sorted by person; at the
  bucket count the job would use, and at `--buckets-factor` times it (the bucket count of a
  ten times larger job: a stage whose cost grew with the buckets would show it here);
- DuckDB (2 threads), the named baseline: the same rows read once and written once with the
  columns the attach stage writes, partitioned into as many buckets by a hash of the record
  id (`COPY ... PARTITION_BY`): the regrouping without the join, the sort or nirlink's file
  layout - a floor, not the same work.
- with ``--baseline-python`` (another checkout's interpreter, its ``nirlink`` installed in
  editable mode): that checkout's attach stage on the same rows, this checkout's and the
  baseline's each in a fresh process per repeat, in turns (A B A B ...).
Reported: rows, seconds, rows/s, the ratio nirlink / DuckDB (and this / baseline), output
bytes and files. With ``--dir``, data and the job of a previous run there are reused.
Results: benchmarks/results/<name>.json and <name>.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ._common import local_client, markdown_table, write_results
from .end_to_end import _json_document, _nirlink, _run, timed_duckdb, tree_bytes

THREADS = 2


def _prepare(base: Path, persons: int, seed: int) -> tuple[Path, int]:
    """Synthetic data and a job of the ingest and link stages, both kept; the job directory."""
    from nirlink.engine.synth import write_job_file

    data, job, log = base / "data", base / "job", base / "log.txt"
    base.mkdir(parents=True, exist_ok=True)
    import pyarrow.parquet as pq

    if (job / "link" / "links").is_dir() and any((job / "ingest" / "career").glob("*.parquet")):  # a previous run's
        return job, sum(pq.read_metadata(f).num_rows for s in ("career", "resource")
                        for f in (job / "ingest" / s).glob("*.parquet"))
    _run(_nirlink("synth", "--persons", str(persons), "--out", str(data), "--seed", str(seed), "--overwrite",
                  "--output", "json"), log)
    job_file = write_job_file(data, base / "job.toml", output=job, name=f"attach-{persons}", stages=["ingest", "link"])
    out, _, _, _ = _run(_nirlink("run", str(job_file), "--restart", "--output", "json"), log,
                        env={**os.environ, "DASK_NIRLINK__JOBS__KEEP": "ingest, link"})
    if _json_document(out)["status"] != "succeeded":
        raise RuntimeError(f"job {job_file} failed; see {log}")
    rows = sum(pq.read_metadata(f).num_rows for s in ("career", "resource") for f in (job / "ingest" / s).glob("*.parquet"))
    return job, rows


def _nirlink_attach(job: Path, out: Path, buckets: int, repeats: int) -> dict[str, Any]:
    from nirlink.engine.stages._attach import run_attach

    times = []
    with local_client(n_workers=THREADS) as client:
        for _ in range(repeats):
            shutil.rmtree(out, ignore_errors=True)
            t0 = time.perf_counter()
            run_attach(job / "ingest", job / "link", out, client=client, person_buckets=buckets)
            times.append(time.perf_counter() - t0)
    files = sum(1 for _ in out.rglob("*.parquet"))
    size = tree_bytes(out)
    shutil.rmtree(out, ignore_errors=True)
    return {"median_s": statistics.median(times), "times_s": times, "output_bytes": size, "files": files}


def _attach_in(python: str, job: Path, out: Path, buckets: int) -> dict[str, Any]:
    """One timed attach stage in a fresh process of ``python`` (this or another checkout's)."""
    code = ("import json; from pathlib import Path; from nirlink.benchmarks.attach import _nirlink_attach; "
            f"print(json.dumps(_nirlink_attach(Path({str(job)!r}), Path({str(out)!r}), {buckets}, 1)))")
    done = subprocess.run([python, "-c", code], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"attach with {python} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _paired(job: Path, out: Path, buckets: int, repeats: int, baseline: str) -> tuple[dict, dict]:
    """This checkout's and the baseline's attach stage, in turns, each run a process of its own."""
    runs: dict[str, list[dict]] = {"this": [], "baseline": []}
    for _ in range(repeats):
        for side, python in (("this", sys.executable), ("baseline", baseline)):
            runs[side].append(_attach_in(python, job, out, buckets))
    return tuple({"median_s": statistics.median(t for r in runs[side] for t in r["times_s"]),
                  "times_s": [t for r in runs[side] for t in r["times_s"]], "output_bytes": runs[side][-1]["output_bytes"],
                  "files": runs[side][-1]["files"]} for side in ("this", "baseline"))


def _duckdb_regroup(job: Path, out: Path, buckets: int, repeats: int) -> dict[str, Any]:
    import pyarrow.parquet as pq

    from nirlink.engine.stages._attach import PERSON_COLUMNS, attached_columns

    statements = []
    for source in ("career", "resource"):
        names = pq.read_schema(next((job / "ingest" / source).glob("*.parquet"))).names
        cols = ", ".join(c for c in attached_columns(source) if c in names and c not in PERSON_COLUMNS)
        statements.append(f"COPY (SELECT {cols}, hash(record_id) % {buckets} AS b FROM "
                          f"read_parquet('{(job / 'ingest' / source).as_posix()}/*.parquet')) "
                          f"TO '{(out / source).as_posix()}' (FORMAT parquet, PARTITION_BY (b), COMPRESSION zstd)")
    return timed_duckdb(statements, out, THREADS, repeats)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--persons", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--buckets-factor", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None, help="scratch directory (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch data")
    ap.add_argument("--name", default="attach")
    ap.add_argument("--baseline-python", default=None, help="another checkout's interpreter, run in turns with this one")
    args = ap.parse_args(argv)
    from nirlink.engine.stages._attach import person_bucket_count

    base = args.dir or Path(tempfile.mkdtemp(prefix="nirlink-attach-"))
    job, rows = _prepare(base / f"p{args.persons}-s{args.seed}", args.persons, args.seed)
    default = person_bucket_count(rows)
    runs = []
    for buckets in (default, default * args.buckets_factor):
        baseline = None
        if args.baseline_python:
            ours, baseline = _paired(job, base / "out-nirlink", buckets, args.repeats, args.baseline_python)
        else:
            ours = _nirlink_attach(job, base / "out-nirlink", buckets, args.repeats)
        floor = _duckdb_regroup(job, base / "out-duckdb", buckets, args.repeats)
        runs.append({"buckets": buckets, "rows": rows, "nirlink": ours, "duckdb": floor, "baseline": baseline,
                     "ratio": ours["median_s"] / floor["median_s"], "load_average": os.getloadavg()})
    table = markdown_table(
        ["persons", "rows", "buckets", "nirlink s", "nirlink M rows/s", "DuckDB regroup s", "nirlink / DuckDB",
         "nirlink MB", "DuckDB MB", "nirlink files", "DuckDB files"],
        [[args.persons, r["rows"], r["buckets"], r["nirlink"]["median_s"], r["rows"] / r["nirlink"]["median_s"] / 1e6,
          r["duckdb"]["median_s"], f"{r['ratio']:.2f}x", r["nirlink"]["output_bytes"] / 1e6,
          r["duckdb"]["output_bytes"] / 1e6, r["nirlink"]["files"], r["duckdb"]["files"]] for r in runs])
    if args.baseline_python:
        table += "\n\n" + markdown_table(
            ["buckets", "this s", "baseline s", "this / baseline", "this runs", "baseline runs"],
            [[r["buckets"], r["nirlink"]["median_s"], r["baseline"]["median_s"],
              f"{r['nirlink']['median_s'] / r['baseline']['median_s']:.2f}x",
              ", ".join(f"{t:.2f}" for t in r["nirlink"]["times_s"]), ", ".join(f"{t:.2f}" for t in r["baseline"]["times_s"])]
             for r in runs])
    table = ("# The attach stage against DuckDB regrouping the same rows (medians of "
             f"{args.repeats}; load at the end: {', '.join(f'{x:.1f}' for x in runs[-1]['load_average'])})\n\n" + table)
    write_results(args.name, {"persons": args.persons, "seed": args.seed, "runs": runs,
                              "baseline_python": args.baseline_python}, table,
                  scratch=None if args.keep or args.dir else base)


if __name__ == "__main__":
    main()
