"""Synthetic data generation throughput: `python -m benchmarks.synth [--sizes 1e6,1e7] [--repeats 3]
[--baseline-ref REF]`.

Measures `nirlink synth` on a local cluster (one worker process per core) at each target
size (career + resource + register rows): data rows per second, median of the repeats. In
the same run, for each size:
- `baseline`: the implementation at git ref ``--baseline-ref`` (default: the last commit
  before the row expansion moved into Numba), checked out in a temporary git worktree and
  run the same way (skipped with a note when the ref cannot be checked out);
- `parquet-rewrite`: reading the generated datasets and writing them again with pyarrow
  (snappy; what merely re-writing these bytes costs, no generation at all);
- `numpy-draw`: drawing as many uniform random numbers as the datasets have cells (the
  floor of any random generator).
Each run is a process of its own (its own cluster, warmed), current and baseline alternating
run by run (A B A B ...); the median of each is reported.
The 1-minute load average is recorded beside every figure (the machine may be shared).
Results: benchmarks/results/synth.json and synth.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from ._common import local_client, markdown_table, measure, write_results

ROWS_PER_PERSON = 37 + 90 + 1.01  # career + resource + register (defaults)
BASELINE_REF = "775b1c7"  # main before the synth-speed changes (noise kernel, Arrow names, kept heap)
REPO = Path(__file__).resolve().parent.parent


def _rewrite(src: Path, dst: Path) -> int:
    rows = 0
    for name in ("register", "career", "resource", "truth"):
        (dst / name).mkdir(parents=True, exist_ok=True)
        for f in sorted((src / name).glob("*.parquet")):
            t = pq.read_table(f)
            pq.write_table(t, dst / name / f.name, compression="snappy")
            rows += t.num_rows if name != "truth" else 0
    return rows


def _plan(size: int, workers: int) -> tuple[int, int]:
    persons = max(1, int(size / ROWS_PER_PERSON))
    partitions = max(workers, -(-persons // 50_000))
    partitions += (-partitions) % workers
    return persons, partitions


def _child(args) -> None:
    """Measure the `nirlink` importable in this process (the current tree or a baseline's)."""
    from nirlink.engine.synth._generate import synth
    from nirlink.engine.synth._params import SynthParams

    out = Path(args.dir)
    size = int(float(args.sizes))
    persons, partitions = _plan(size, args.workers)
    with local_client(n_workers=args.workers) as client:
        # warm the workers (imports, Numba cache)
        synth(out / "warm", persons=2000, client=client, partitions=args.workers, overwrite=True)
        shutil.rmtree(out / "warm", ignore_errors=True)
        load = os.getloadavg()[0]
        m = measure(lambda: synth(out / "data", persons=persons, client=client, partitions=partitions,
                                  params=SynthParams(seed=1), overwrite=True), args.repeats)
    s = m["result"]["rows"]
    written = sum(f.stat().st_size for f in (out / "data").rglob("*.parquet"))
    result = {"parquet_bytes": written, "persons": persons, "partitions": partitions, "data_rows": s["register"] + s["career"] + s["resource"],
              "truth_rows": s["truth"], "load_1min": [load, os.getloadavg()[0]],
              **{k: m[k] for k in ("median_s", "times_s", "peak_rss_bytes")}}
    (out / "result.json").write_text(json.dumps(result))


def _run_child(size: int, args, work: Path, pythonpath: str | None) -> dict:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    work.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "benchmarks.synth", "--child", "--sizes", str(size), "--repeats",
                    "1", "--workers", str(args.workers), "--dir", str(work)],
                   cwd=REPO, env=env, check=True)
    return json.loads((work / "result.json").read_text())


def _merged(runs: list[dict]) -> dict:
    """Single-run child results as one: the median and every time, the largest peak RSS, every load."""
    out = dict(runs[0])
    out["times_s"] = [t for r in runs for t in r["times_s"]]
    out["median_s"] = float(np.median(out["times_s"]))
    out["peak_rss_bytes"] = max(r["peak_rss_bytes"] for r in runs)
    out["load_1min"] = [x for r in runs for x in r["load_1min"]]
    return out


def _baseline_tree(ref: str, scratch: Path) -> tuple[str | None, str]:
    """A git worktree of ``ref`` importable as `nirlink` (the PYTHONPATH to use), or None and why not."""
    tree = scratch / "baseline-tree"
    _drop_tree(scratch)  # a previous run's, if it was interrupted
    done = subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), ref],
                          capture_output=True, text=True)
    if done.returncode:
        return None, f"baseline ref {ref!r} not checked out ({done.stderr.strip().splitlines()[-1]})"
    pkg = scratch / "baseline-pkg"
    pkg.mkdir(exist_ok=True)
    (pkg / "nirlink").symlink_to(tree, target_is_directory=True)
    commit = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    return str(pkg), f"baseline: {ref} ({commit})"


def _drop_tree(scratch: Path) -> None:
    subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(scratch / "baseline-tree")],
                   capture_output=True)
    shutil.rmtree(scratch / "baseline-tree", ignore_errors=True)
    subprocess.run(["git", "-C", str(REPO), "worktree", "prune"], capture_output=True)
    shutil.rmtree(scratch / "baseline-pkg", ignore_errors=True)  # holds only the link to the tree


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="1e6,1e7", help="target data rows, comma separated")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each implementation (alternating)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--baseline-ref", default=BASELINE_REF, help="git ref of the baseline ('' for none)")
    ap.add_argument("--dir", default=None, help="scratch directory (default: a temporary one)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return _child(args)

    scratch = Path(args.dir or tempfile.mkdtemp(prefix="nirlink-bench-synth-"))
    scratch.mkdir(parents=True, exist_ok=True)
    base_path, base_note = (None, "no baseline") if not args.baseline_ref else _baseline_tree(args.baseline_ref,
                                                                                            scratch)
    rows_out, results = [], []
    try:
        for size in (int(float(s)) for s in args.sizes.split(",")):
            # one run at a time, current and baseline alternating (A B A B ...): a change of the
            # machine's load during the measurement falls on both
            cur_runs, base_runs = [], []
            for _ in range(args.repeats):
                cur_runs.append(_run_child(size, args, scratch / "current", None))
                if base_path:
                    base_runs.append(_run_child(size, args, scratch / "baseline", base_path))
            cur = _merged(cur_runs)
            base = _merged(base_runs) if base_runs else None
            data = scratch / "current" / "data"
            rew = measure(lambda: _rewrite(data, scratch / "rewrite"), args.repeats)
            cells = cur["data_rows"] * 12
            draw = measure(lambda: np.random.default_rng(0).random(cells).sum(), args.repeats)
            rate = cur["data_rows"] / cur["median_s"]
            entry = {"target_rows": size, "current": cur, "baseline": base,
                     "parquet_rewrite": {k: rew[k] for k in ("median_s", "times_s", "peak_rss_bytes")},
                     "numpy_draw": {k: draw[k] for k in ("median_s", "times_s")}, "rows_per_s": rate,
                     "baseline_rows_per_s": base["data_rows"] / base["median_s"] if base else None}
            results.append(entry)
            load = max(cur["load_1min"] + (base["load_1min"] if base else []))
            rows_out.append([f"{cur['data_rows']:,}", cur["persons"], cur["partitions"], f"{cur['median_s']:.2f}",
                             f"{rate / 1e6:.2f}", f"{cur['peak_rss_bytes'] / 2**30:.2f}",
                             f"{base['median_s']:.2f}" if base else "-",
                             f"{entry['baseline_rows_per_s'] / 1e6:.2f}" if base else "-",
                             f"{base['median_s'] / cur['median_s']:.2f}x" if base else "-",
                             f"{cur['parquet_bytes'] / 1e6:,.0f}" + (f" / {base['parquet_bytes'] / 1e6:,.0f}" if base else ""),
                             f"{rew['median_s']:.2f}", f"{draw['median_s']:.2f}", f"{load:.1f}"])
            for d in ("current", "baseline", "rewrite"):
                shutil.rmtree(scratch / d, ignore_errors=True)
    finally:
        if base_path:
            _drop_tree(scratch)
    table = markdown_table(
        ["data rows", "persons", "blocks", "synth s (median)", "M rows/s", "peak RSS GiB", "baseline s",
         "baseline M rows/s", "speed-up", "Parquet MB (current / baseline)", "parquet-rewrite s", "numpy-draw s", "load (1 min, max)"], rows_out)
    header = (f"Synthetic generation, {args.workers} worker processes, median of {args.repeats} runs; {base_note}. "
              "Data rows = register + career + resource (the truth datasets are written too, not counted). "
              "Goal: >= 10M rows/s.\n\n")
    write_results("synth", {"workers": args.workers, "repeats": args.repeats, "baseline": base_note,
                            "results": results}, header + table, scratch=None if args.dir else scratch)


if __name__ == "__main__":
    main()
