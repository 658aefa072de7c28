"""The whole job against the cost of reading and writing its inputs once:
`python -m benchmarks.end_to_end [--persons 200000,2000000] [--seed 3] [--repeats 3] [--evaluate] [--evaluate-memory 4GB]
[--dir DIR] [--keep] [--name end_to_end]`.

For every size (200,000 persons are ~25M data rows, 2,000,000 ~250M): `nirlink synth` (timed:
data rows per second), then `nirlink run` of the job synth writes (every default stage) in a
subprocess, sampling the peak RSS of its process tree and the size of its job directory
(every 0.5 s: the peak disk); then, in the same run and on the same files, the floor: DuckDB
with as many threads as the job has cores reading each input Parquet dataset once and
writing it once as Parquet (`COPY (SELECT * FROM read_parquet(...)) TO ...`), median of
`--repeats`. With `--evaluate`, `nirlink evaluate` of the links against the synthetic truth
(precision and recall per signature and per row) beside the costs.

Reported per size: data rows, synth rows/s, each stage's seconds and rows/s, job wall
seconds, the floor's seconds, the ratio job / floor, peak RSS, the input's size, the job
directory's peak and final sizes and their ratios to the input (and the sizes the job's own
manifests record, when they do). Goals (issue "a billion rows"): job <= 4x the floor at 250M
rows; peak job directory <= 1.5x the input.
Results: benchmarks/results/<name>.json and <name>.md.
"""

from __future__ import annotations

import argparse
import contextlib
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

from ._common import PeakRSS, markdown_table, write_results

INPUTS = ("register", "career", "resource")
STAGES = ("ingest", "link", "attach", "aggregate", "signals", "export")
GOAL_FLOOR_RATIO = 4.0  # at 250M rows
GOAL_DISK_RATIO = 1.5


def _nirlink(*args: str) -> list[str]:
    return [sys.executable, "-m", "nirlink", *args]


def tree_bytes(path: Path) -> int:
    """Bytes of every file under ``path`` (0 when it does not exist); files that vanish while
    walking (a stage publishing or releasing) are skipped."""
    total = 0
    stack = [path]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        for e in entries:
            try:
                if e.is_dir(follow_symlinks=False):
                    stack.append(Path(e.path))
                elif e.is_file(follow_symlinks=False):
                    total += e.stat(follow_symlinks=False).st_size
            except FileNotFoundError:
                continue
    return total


class PeakDisk(PeakRSS):
    """Samples the size of a directory tree every ``interval`` seconds; ``peak`` is the largest."""

    def __init__(self, path: Path, interval: float = 0.5):
        super().__init__(interval)
        self.path = path

    def _sample(self) -> int:
        return tree_bytes(self.path)


def _run(cmd: list[str], log: Path, watch: Path | None = None, env: dict | None = None) -> tuple[str, float, int, int]:
    """Run ``cmd`` (stdout captured, stderr appended to ``log``; ``env``: its environment): stdout,
    wall seconds, peak RSS of the process tree, peak size of ``watch``."""
    disk = PeakDisk(watch) if watch is not None else None
    with PeakRSS() as rss, disk or contextlib.nullcontext(), open(log, "ab") as err:
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[2:])} failed ({proc.returncode}); see {log}")
    return proc.stdout, seconds, rss.peak, disk.peak if disk else 0


def timed_duckdb(statements: list[str], out: Path, threads: int, repeats: int) -> dict[str, Any]:
    """Seconds for DuckDB (``threads`` threads, insertion order not kept) to run ``statements``,
    which write under ``out`` (median of ``repeats``; ``out`` emptied before each repeat and
    removed at the end), the bytes and Parquet files they wrote."""
    import duckdb

    times = []
    for _ in range(repeats):
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        con = duckdb.connect()
        con.execute(f"SET threads = {threads}")
        con.execute("SET preserve_insertion_order = false")
        t0 = time.perf_counter()
        for statement in statements:
            con.execute(statement)
        times.append(time.perf_counter() - t0)
        con.close()
    size, files = tree_bytes(out), sum(1 for _ in out.rglob("*.parquet"))
    shutil.rmtree(out, ignore_errors=True)
    return {"median_s": statistics.median(times), "times_s": times, "output_bytes": size, "files": files}


def duckdb_floor(data: Path, out: Path, threads: int, repeats: int) -> dict[str, Any]:
    """Seconds for DuckDB to read each input Parquet dataset once and write it once as
    Parquet (median of ``repeats``; the output is removed after each repeat)."""
    copies = [f"COPY (SELECT * FROM read_parquet('{(data / name).as_posix()}/*.parquet')) TO "
              f"'{(out / name).as_posix()}' (FORMAT parquet, PER_THREAD_OUTPUT true)" for name in INPUTS]
    timed = timed_duckdb(copies, out, threads, repeats)
    return {"median_s": timed["median_s"], "times_s": timed["times_s"], "threads": threads,
            "output_bytes": timed["output_bytes"]}


def _manifest_sizes(job: Path) -> dict[str, Any]:
    """Peak and final sizes as the job's own manifests record them, where they do."""
    found = {}
    for m in [job / "export" / "_manifest.json", *sorted((job / "_job").glob("runs/*/state.json")),
              *sorted((job / "_job").glob("runs/*/disk.json"))]:
        try:
            data = json.loads(m.read_text())
        except (OSError, ValueError):
            continue
        for k, v in data.items():
            if "size" in k or "disk" in k or (m.name == "disk.json" and not isinstance(v, (dict, list))):
                found[f"{m.parent.name}/{k}"] = v
    return found


def one_size(base: Path, persons: int, args) -> dict[str, Any]:
    from nirlink.engine.synth import write_job_file

    run_dir = base / f"p{persons}-s{args.seed}"
    data, job, log = run_dir / "data", run_dir / "job", run_dir / "log.txt"
    run_dir.mkdir(parents=True, exist_ok=True)
    out, synth_s, _, _ = _run(_nirlink("synth", "--persons", str(persons), "--out", str(data), "--seed",
                                       str(args.seed), "--overwrite", "--output", "json"), log)
    synth_summary = _json_document(out)
    data_rows = synth_summary["rows"]["career"] + synth_summary["rows"]["resource"]
    input_bytes = sum(tree_bytes(data / name) for name in INPUTS)
    job_file = write_job_file(data, run_dir / "job.toml", output=job, name=f"e2e-{persons}")
    # `nirlink evaluate` reads the ingested rows: kept then (the disk figures include them)
    keep = "link,ingest" if args.evaluate else "link"
    out, run_s, run_rss, peak_disk = _run(_nirlink("run", str(job_file), "--restart", "--output", "json"), log,
                                          watch=job, env={**os.environ, "DASK_NIRLINK__JOBS__KEEP": keep})
    summary = _json_document(out)
    if summary["status"] != "succeeded":
        raise RuntimeError(f"job {job_file} {summary['status']}: {summary.get('error')}")
    final_disk = tree_bytes(job)
    cores = os.cpu_count() or 1  # the local cluster of `nirlink run`: one worker per core
    floor = duckdb_floor(data, run_dir / "floor", threads=cores, repeats=args.repeats)
    stage_s = {k: v for k, v in summary["stage_seconds"].items()}
    record: dict[str, Any] = {
        "persons": persons, "seed": args.seed, "data_rows": data_rows,
        "register_rows": synth_summary["rows"]["register"],
        "synth_s": synth_s, "synth_rows_per_s": data_rows / synth_s,
        "run_s": run_s, "stage_s": stage_s,
        "stage_rows_per_s": {k: data_rows / v for k, v in stage_s.items() if v},
        "rows_per_s": data_rows / run_s,
        "floor": floor, "ratio_to_floor": run_s / floor["median_s"],
        "run_peak_rss_bytes": run_rss, "input_bytes": input_bytes,
        "peak_disk_bytes": peak_disk, "final_disk_bytes": final_disk,
        "peak_disk_ratio": peak_disk / input_bytes, "final_disk_ratio": final_disk / input_bytes,
        "manifest_sizes": _manifest_sizes(job), "keep": keep,
        "load_average": os.getloadavg(),
    }
    if args.evaluate:
        # its temporary files (every row's signature, DuckDB's spill) on the disk given to the
        # benchmark (--dir), not in the system's temporary directory, and a failure recorded: at
        # 1e9 rows its spill filled the disk and the run's figures were lost with the exception
        scratch = run_dir / "evaluate-tmp"
        scratch.mkdir(exist_ok=True)
        try:
            out, eval_s, eval_rss, _ = _run(_nirlink("evaluate", "--links", str(job / "link"), "--rows",
                                                     str(job / "ingest"), "--truth", str(data / "truth"),
                                                     "--memory-limit", args.evaluate_memory, "--temp-dir",
                                                     str(scratch), "--output", "json"), log)
        except RuntimeError as exc:
            record["evaluate_error"] = str(exc)
        else:
            report = _json_document(out)
            record["evaluate"] = {"seconds": eval_s, "peak_rss_bytes": eval_rss,
                                  **{f"{unit}_{k}": report[unit][k] for unit in ("signatures", "rows")
                                     for k in ("precision", "recall", "f1")},
                                  "report": report}  # the whole report (counts only): by NIR status, blocking, duplicates
        shutil.rmtree(scratch, ignore_errors=True)
    if not args.keep:
        shutil.rmtree(run_dir, ignore_errors=True)
    return record


def _json_document(out: str) -> dict[str, Any]:
    start = 0 if out.startswith("{") else out.find("\n{") + 1
    return json.loads(out[start:])


def render(runs: list[dict[str, Any]]) -> str:
    gib = 1024 ** 3
    headers = ["persons", "data rows", "synth rows/s", *[f"{s} s" for s in STAGES], "job s", "job rows/s",
               "DuckDB floor s", "job / floor", "peak RSS GiB", "input GB", "peak disk / input", "final disk / input"]
    rows = []
    for r in runs:
        rows.append([f"{r['persons']:,}", f"{r['data_rows']:,}", f"{r['synth_rows_per_s'] / 1e6:.2f}M",
                     *[f"{r['stage_s'][s]:.1f}" if s in r["stage_s"] else "-" for s in STAGES],
                     f"{r['run_s']:.1f}", f"{r['rows_per_s'] / 1e6:.2f}M", f"{r['floor']['median_s']:.1f}",
                     f"{r['ratio_to_floor']:.2f}x", f"{r['run_peak_rss_bytes'] / gib:.2f}",
                     f"{r['input_bytes'] / 1e9:.2f}", f"{r['peak_disk_ratio']:.2f}x", f"{r['final_disk_ratio']:.2f}x"])
    text = ["# End to end: synth + `nirlink run` against a DuckDB read-once-write-once floor", "",
            markdown_table(headers, rows), ""]
    for r in runs:
        if "evaluate_error" in r:
            text += [f"`nirlink evaluate` failed at {r['persons']:,} persons: {r['evaluate_error']}", ""]
    if any("evaluate" in r for r in runs):
        text += ["Accuracy of the same runs (`nirlink evaluate`):", "",
                 markdown_table(["persons", "signature precision", "signature recall", "row precision", "row recall"],
                                [[f"{r['persons']:,}", *[f"{r['evaluate'][k]:.5f}" for k in
                                  ("signatures_precision", "signatures_recall", "rows_precision", "rows_recall")]]
                                 for r in runs if "evaluate" in r]), ""]
    goals = []
    for r in runs:
        goals.append(f"- {r['persons']:,} persons: peak disk {r['peak_disk_ratio']:.2f}x the input "
                     f"({'met' if r['peak_disk_ratio'] <= GOAL_DISK_RATIO else 'NOT met'}, goal <= {GOAL_DISK_RATIO}x)"
                     + (f"; job {r['ratio_to_floor']:.2f}x the floor "
                        f"({'met' if r['ratio_to_floor'] <= GOAL_FLOOR_RATIO else 'NOT met'}, goal <= "
                        f"{GOAL_FLOOR_RATIO}x at 250M rows)" if r["data_rows"] >= 2e8 else
                        f"; job {r['ratio_to_floor']:.2f}x the floor (the goal of <= {GOAL_FLOOR_RATIO}x is set at "
                        "250M rows)"))
    text += ["Goals:", "", *goals, "",
             "Load average (1, 5, 15 min) at the end of each run: "
             + "; ".join(f"{r['persons']:,}: {', '.join(f'{x:.1f}' for x in r['load_average'])}" for r in runs)]
    return "\n".join(text)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--persons", default="200000", help="comma-separated sizes (200000 ~ 25M rows)")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3, help="repeats of the DuckDB floor (median)")
    ap.add_argument("--evaluate", action="store_true", help="also evaluate the links against the truth")
    ap.add_argument("--evaluate-memory", default="4GB", help="nirlink evaluate --memory-limit")
    ap.add_argument("--dir", default=None, help="where datasets and jobs go (default: a temporary directory)")
    ap.add_argument("--keep", action="store_true", help="keep each size's data and job")
    ap.add_argument("--name", default="end_to_end")
    args = ap.parse_args(argv)
    base = Path(args.dir or tempfile.mkdtemp(prefix="nirlink-bench-e2e-"))
    runs = []
    for persons in [int(float(x)) for x in args.persons.split(",") if x.strip()]:
        print(f"persons {persons:,} ...", flush=True)
        runs.append(one_size(base, persons, args))
    write_results(args.name, {"runs": runs, "goals": {"floor_ratio_at_250M": GOAL_FLOOR_RATIO,
                                                     "peak_disk_ratio": GOAL_DISK_RATIO}},
                  render(runs), scratch=None if (args.keep or args.dir) else base)


if __name__ == "__main__":
    main()
