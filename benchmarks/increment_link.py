"""The link stage of a monthly increment alone, this checkout against a baseline checkout.

Takes a run kept by ``python -m benchmarks.incremental --keep --dir DIR`` (its month's data and
base job, ``DIR/p<persons>-s<seed>/``). The month is ingested once (an ingest-only job written
beside them); then the increment's link stage (``run_link`` with the job's increment options,
on a local cluster of 2 single-threaded workers) runs in a fresh process per repeat, this
checkout and the baseline's (``--baseline-python``: another checkout's interpreter, its
``nirlink`` installed in editable mode) in turn, ``--repeats`` times each. Each process runs the
stage twice (the first also pays the workers' imports): both count. Reported: medians of the
stage's seconds and of each timed phase (the manifest's ``timings_s``), and this / baseline.

    python -m benchmarks.increment_link --dir DIR --baseline-python /path/to/main/.venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

STAGE_RUNS = 2  # per process


def _one(run_dir: Path, out: Path) -> list[dict[str, Any]]:
    """This interpreter's nirlink: the increment's link stage, STAGE_RUNS times."""
    from distributed import Client, LocalCluster

    from nirlink.engine.jobs._increment import IncrementOptions
    from nirlink.engine.stages._link import run_link

    base = run_dir / "jobs" / "base"
    month = tomllib.loads((run_dir / "increment.toml").read_text())["increment"]["month"]
    results = []
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as cluster, Client(cluster) as client:
        for _ in range(STAGE_RUNS):
            shutil.rmtree(out, ignore_errors=True)
            t0 = time.perf_counter()
            m = run_link(run_dir / "month-ingest" / "ingest", out, client=client,
                         model_path=base / "link" / "model.json",
                         register_model_path=base / "link" / "register_model.json",
                         increment=IncrementOptions(str(base), month))
            results.append({"stage_s": round(time.perf_counter() - t0, 3), "timings_s": m["timings_s"]})
    shutil.rmtree(out, ignore_errors=True)
    return results


def _ingest_month(run_dir: Path) -> None:
    from nirlink.engine.synth import write_job_file

    if (run_dir / "month-ingest" / "ingest" / "_manifest.json").exists():
        return
    job = write_job_file(run_dir / "month", run_dir / "month-ingest.toml", output=run_dir / "month-ingest",
                         name="month-ingest", stages=["ingest"])
    subprocess.run([sys.executable, "-m", "nirlink", "run", str(job), "--restart"],
                   check=True, stdout=subprocess.DEVNULL, env={**os.environ, "DASK_NIRLINK__JOBS__KEEP": "all"})


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", required=True, help="the --dir of a kept benchmarks.incremental run")
    p.add_argument("--persons", type=int, default=200000)
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--baseline-python", required=True, help="the baseline checkout's interpreter")
    p.add_argument("--repeats", type=int, default=3, help="processes per side")
    p.add_argument("--name", default="increment_link")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # child mode: output directory
    args = p.parse_args(argv)
    run_dir = Path(args.dir) / f"p{args.persons}-s{args.seed}"
    if args.one:
        print(json.dumps(_one(run_dir, Path(args.one))))
        return
    from benchmarks._common import alternate_checkouts, markdown_table, stage_phase_rows, write_results

    _ingest_month(run_dir)
    runs = alternate_checkouts(str(Path(__file__).resolve()),
                               ["--dir", args.dir, "--persons", str(args.persons), "--seed", str(args.seed),
                                "--baseline-python", args.baseline_python],
                               args.baseline_python, args.repeats, run_dir)
    med, rows = stage_phase_rows(runs)
    loads = [r["load_average"] for rs in runs.values() for r in rs]
    table = (f"### The increment's link stage, {args.persons:,} persons, seed {args.seed}: medians of "
             f"{len(runs['this'])} runs per side (1-minute load {min(loads):.1f}-{max(loads):.1f})\n\n"
             + markdown_table(["seconds", "this", "baseline", "this / baseline"], rows) + "\n")
    write_results(args.name, {"runs": runs, "medians_s": med, "argv": sys.argv[1:],
                              "baseline_python": args.baseline_python}, table)


if __name__ == "__main__":
    main()
