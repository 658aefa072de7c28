"""Synthetic data generation throughput: `python -m benchmarks.synth [--sizes 1e6,1e7] [--repeats 3]`.

Measures `nirlink synth` on a local cluster (one worker process per core) at each target
size (career + resource + register rows), and two baselines on the same files in the same
run:
- `parquet-rewrite`: reading the generated datasets and writing them again with pyarrow
  (the I/O floor: what writing these bytes costs with no generation at all);
- `numpy-draw`: drawing as many uniform random numbers as the datasets have cells (the
  floor of any random generator).
Results: benchmarks/results/synth.json and synth.md.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from ._common import local_client, markdown_table, measure, write_results

ROWS_PER_PERSON = 37 + 90 + 1.01  # career + resource + register (defaults)


def _rewrite(src: Path, dst: Path) -> int:
    rows = 0
    for name in ("register", "career", "resource", "truth"):
        (dst / name).mkdir(parents=True, exist_ok=True)
        for f in sorted((src / name).glob("*.parquet")):
            t = pq.read_table(f)
            pq.write_table(t, dst / name / f.name, compression="snappy")
            rows += t.num_rows if name != "truth" else 0
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="1e6,1e7", help="target data rows, comma separated")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--dir", default=None, help="scratch directory (default: a temporary one)")
    args = ap.parse_args(argv)
    from nirlink.engine.synth._generate import synth
    from nirlink.engine.synth._params import SynthParams

    scratch = Path(args.dir or tempfile.mkdtemp(prefix="nirlink-bench-synth-"))
    rows_out, results = [], []
    with local_client(n_workers=args.workers) as client:
        # warm the workers (imports, Numba cache)
        synth(scratch / "warm", persons=2000, client=client, partitions=args.workers, overwrite=True)
        for size in (int(float(s)) for s in args.sizes.split(",")):
            persons = max(1, int(size / ROWS_PER_PERSON))
            partitions = max(args.workers, -(-persons // 50_000))
            partitions += (-partitions) % args.workers
            out = scratch / f"synth-{size}"

            def run():
                return synth(out, persons=persons, client=client, partitions=partitions,
                             params=SynthParams(seed=1), overwrite=True)

            m = measure(run, args.repeats)
            s = m["result"]["rows"]
            data_rows = s["register"] + s["career"] + s["resource"]
            rew = measure(lambda: _rewrite(out, scratch / "rewrite"), args.repeats)
            cells = data_rows * 12
            draw = measure(lambda: np.random.default_rng(0).random(cells).sum(), args.repeats)
            entry = {
                "target_rows": size, "persons": persons, "partitions": partitions, "data_rows": data_rows,
                "truth_rows": s["truth"], "synth": {k: m[k] for k in ("median_s", "times_s", "peak_rss_bytes")},
                "parquet_rewrite": {k: rew[k] for k in ("median_s", "times_s", "peak_rss_bytes")},
                "numpy_draw": {k: draw[k] for k in ("median_s", "times_s")},
                "rows_per_s": data_rows / m["median_s"],
            }
            results.append(entry)
            rows_out.append([f"{data_rows:,}", persons, f"{m['median_s']:.2f}", f"{data_rows / m['median_s'] / 1e6:.2f}",
                             f"{m['peak_rss_bytes'] / 2**30:.2f}", f"{rew['median_s']:.2f}",
                             f"{m['median_s'] / rew['median_s']:.2f}", f"{draw['median_s']:.2f}"])
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(scratch / "rewrite", ignore_errors=True)
    table = markdown_table(
        ["data rows", "persons", "synth s (median)", "M rows/s", "peak RSS GiB", "parquet-rewrite s",
         "synth / rewrite", "numpy-draw s"], rows_out)
    header = (f"Synthetic generation, {args.workers} worker processes, median of {args.repeats} runs. "
              "Data rows = register + career + resource (the truth dataset is written too, not counted). "
              "Goal: >= 10M rows/s.\n\n")
    write_results("synth", {"workers": args.workers, "repeats": args.repeats, "results": results}, header + table,
                  scratch=None if args.dir else scratch)


if __name__ == "__main__":
    main()
