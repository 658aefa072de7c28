"""Data larger than memory: `python -m benchmarks.larger_than_memory [--gib 10] [--worker-memory 2GiB]`.

Generates synthetic data until its Parquet inputs (register + career + resource) weigh at
least --gib GiB, then runs the ingest and aggregate stages (aggregate on the declared valid
NIRs, through a Dask shuffle by person) on a local cluster of 2 workers limited to
--worker-memory each. Reports input size, rows, time per stage, the peak RSS of the process
tree, and whether it finished. Results: benchmarks/results/larger_than_memory.json and .md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from ._common import PeakRSS, markdown_table, write_results

BYTES_PER_PERSON = 1_900  # register + career + resource Parquet per synthetic person (measured)


def _size(paths) -> int:
    return sum(f.stat().st_size for p in paths for f in Path(p).rglob("*.parquet"))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--gib", type=float, default=10.0)
    ap.add_argument("--worker-memory", default="2GiB")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--resume", action="store_true",
                    help="keep the stages an earlier run in --dir published (their times come from the job's log)")
    args = ap.parse_args(argv)
    from nirlink.cluster import open_client
    from nirlink.engine.jobs._runner import Job
    from nirlink.engine.synth._generate import synth
    from nirlink.engine.synth._params import SynthParams

    base = Path(args.dir or tempfile.mkdtemp(prefix="nirlink-bench-ltm-"))
    data = base / "data"
    persons = int(args.gib * 2**30 / BYTES_PER_PERSON) + 1
    timings = {}
    with open_client(None, n_workers=args.workers, threads_per_worker=1, memory_limit=args.worker_memory,
                     local_directory=str(base / "dask"), dashboard=False) as client:
        if not (data / "_synth.json").exists():
            t0 = time.perf_counter()
            synth(data, persons=persons, client=client, params=SynthParams(seed=12), overwrite=True)
            timings["synth"] = time.perf_counter() - t0
        inputs = [data / k for k in ("register", "career", "resource")]
        size = _size(inputs)
        from nirlink.engine.jobs._spec import load_job
        from nirlink.engine.synth._jobfile import write_job_file

        spec = load_job(write_job_file(data, base / "job.toml", output=base / "job", name="larger-than-memory",
                                       stages=["ingest", "aggregate"]))
        with PeakRSS() as rss:
            t0 = time.perf_counter()
            state = Job(spec, client=client, restart=not args.resume).run()
            total = time.perf_counter() - t0
    import json

    stage_seconds = dict(state.stage_seconds)
    earlier = {}
    # stages kept from an earlier run: their time is in that run's log (one per run, oldest first)
    logs = sorted((base / "job" / "_job").glob("runs/*/job.log"), key=lambda p: p.stat().st_mtime)
    if state.skipped:
        for log in logs:
            for line in log.read_text().splitlines():
                event = json.loads(line)
                if event.get("stage") in state.skipped and "seconds" in event and "finished" in event.get("message", ""):
                    earlier[event["stage"]] = event["seconds"]
        stage_seconds = {**earlier, **stage_seconds}
    ingest = json.loads((base / "job" / "ingest" / "_manifest.json").read_text())
    rows = sum(v["totals"]["rows_read"] for v in ingest["inputs"].values())
    result = {"persons": persons, "input_bytes": size, "input_gib": size / 2**30, "rows": rows,
              "worker_memory": args.worker_memory, "workers": args.workers, "status": state.status,
              "stage_seconds": stage_seconds, "stages_from_an_earlier_run": sorted(earlier),
              "job_seconds": total, "peak_rss_bytes": rss.peak,
              "synth_seconds": timings.get("synth")}
    md = (f"Workers: {args.workers} x {args.worker_memory}. Input: {size / 2**30:.1f} GiB of Parquet, {rows:,} rows "
          f"({persons:,} persons).\n\n" + markdown_table(
              ["stage", "seconds", "M rows/s"],
              [[s + (" (earlier run)" if s in earlier else ""), f"{t:.0f}", f"{rows / t / 1e6:.2f}"]
               for s, t in stage_seconds.items()]) +
          f"\n\nStatus: {state.status}. Peak RSS of all processes: {rss.peak / 2**30:.1f} GiB.")
    write_results("larger_than_memory", result, md, scratch=None if args.dir else base)


if __name__ == "__main__":
    main()
