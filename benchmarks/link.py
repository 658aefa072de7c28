"""Linkage: `python -m benchmarks.link [--persons 30000] [--repeats 3]`.

On the same synthetic data and the same trained identity model:
- scoring: nirlink's distributed scoring (one Splink call per blocking-rule bucket, Dask
  workers of one thread) with 1 and 2 workers, against Splink in one process on DuckDB with
  all cores (the named baseline: `predict_between` with every blocking rule), scoring every
  signature against the register; wall time (median), comparisons per second, speed-up;
- the whole link stage with 2 workers, time per phase;
- accuracy (precision / recall / F1 at the signature and row level) at the default noise
  and at double noise (`--noise-scale 2`).
Results: benchmarks/results/link.json and link.md.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ._common import local_client, markdown_table, measure, write_results


def _prepare(base: Path, persons: int, noise: float, client) -> Path:
    from dataclasses import replace

    from nirlink.engine.io._readers import InputSpec
    from nirlink.engine.stages._ingest import run_ingest
    from nirlink.engine.synth._generate import synth
    from nirlink.engine.synth._params import SynthParams

    data = base / f"data-{noise}"
    if not (data / "_synth.json").exists():
        p = SynthParams(seed=9)
        p = replace(p, noise=p.noise.scaled(noise))
        synth(data, persons=persons, client=client, params=p, overwrite=True)
    ingest = base / f"ingest-{noise}"
    if not (ingest / "_manifest.json").exists():
        run_ingest([InputSpec(k, k, (str(data / k),)) for k in ("register", "career", "resource")], ingest,
                   client=client)
    return data


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--persons", type=int, default=30_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args(argv)
    from nirlink.engine.stages._link import ingested_files, run_link
    from nirlink.linkage import LinkConfig, load_model
    from nirlink.linkage._evaluate import evaluate
    from nirlink.linkage._prepare import LINK_COLUMNS
    from nirlink.linkage._register import register_files
    from nirlink.linkage._scoring import score_rules
    from nirlink.linkage._signatures import signature_files
    from nirlink.linkage._splink import predict_all, tf_tables

    base = Path(args.dir or tempfile.mkdtemp(prefix="nirlink-bench-link-"))
    results: dict = {"persons": args.persons, "repeats": args.repeats}
    accuracy_rows, phase_rows, score_rows = [], [], []
    with local_client(n_workers=2) as client:
        for noise in (1.0, 2.0):
            data = _prepare(base, args.persons, noise, client)
            link_dir = base / f"link-{noise}"
            manifest = run_link(base / f"ingest-{noise}", link_dir, client=client, config=LinkConfig())
            files = ingested_files(base / f"ingest-{noise}")
            model = load_model(link_dir / "model.json")
            report = evaluate(link_dir, files["career"] + files["resource"], data / "truth", model=model)
            results[f"noise_{noise}"] = {"link_manifest": manifest, "accuracy": report}
            for level in ("signatures", "rows"):
                s = report[level]
                accuracy_rows.append([f"x{noise:g}", level, s["true_positives"] + s["false_negatives"],
                                      f"{s['precision']:.5f}", f"{s['recall']:.5f}", f"{s['f1']:.5f}",
                                      s["ambiguous"]])
            if noise == 1.0:
                phase_rows = [[k, v] for k, v in manifest["timings_s"].items()]
                results["blocking_reach"] = report.get("blocking")
    # scoring: distributed (1 and 2 workers) vs Splink in one process, all signatures vs the register
    link_dir = base / "link-1.0"
    model = load_model(link_dir / "model.json")
    left = pa.concat_tables([pq.read_table(f) for f in signature_files(link_dir)]).select(LINK_COLUMNS.names)
    right = pa.concat_tables([pq.read_table(f) for f in register_files(link_dir)])
    tf = tf_tables(model, right)
    single = measure(lambda: predict_all(model, left, right, tf, threads=2, threshold=None).num_rows, args.repeats)
    comparisons = single["result"]
    score_rows.append(["Splink, one process (DuckDB, 2 threads)", f"{single['median_s']:.2f}",
                       f"{comparisons / single['median_s'] / 1e6:.2f}", "1.00"])
    results["scoring"] = {"left": left.num_rows, "right": right.num_rows, "comparisons": comparisons,
                          "splink_single_process": {k: single[k] for k in ("median_s", "times_s")}}
    for workers in (1, 2):
        with local_client(n_workers=workers) as client:
            work = base / f"score-{workers}"

            def run():
                shutil.rmtree(work, ignore_errors=True)
                cfg = LinkConfig(prediction_floor=None, rows_per_scoring_task=max(20_000, left.num_rows // 8))
                info = score_rules(work, model, tf, cfg, left_files=signature_files(link_dir),
                                   right_files=register_files(link_dir), out=work / "pairs", schema=LINK_COLUMNS,
                                   client=client)
                return info["pairs"]

            m = measure(run, args.repeats)
            assert m["result"] == comparisons, (m["result"], comparisons)
            results["scoring"][f"nirlink_{workers}_workers"] = {k: m[k] for k in ("median_s", "times_s")}
            score_rows.append([f"nirlink distributed, {workers} worker(s)", f"{m['median_s']:.2f}",
                               f"{comparisons / m['median_s'] / 1e6:.2f}",
                               f"{single['median_s'] / m['median_s']:.2f}"])
    s1 = results["scoring"]["nirlink_1_workers"]["median_s"]
    s2 = results["scoring"]["nirlink_2_workers"]["median_s"]
    results["scoring"]["speedup_1_to_2_workers"] = s1 / s2
    md = (f"Synthetic data: {args.persons:,} persons ({left.num_rows:,} signatures, {right.num_rows:,} register rows), "
          f"median of {args.repeats} runs.\n\n"
          f"Scoring every signature against the register ({comparisons:,} comparisons; same pairs and weights in "
          f"both):\n\n" + markdown_table(["engine", "seconds", "M comparisons/s", "speed vs Splink"], score_rows) +
          f"\n\n1 -> 2 workers: {s1 / s2:.2f}x (goal >= 1.8x).\n\nLink stage, 2 workers, seconds per phase:\n\n" +
          markdown_table(["phase", "seconds"], phase_rows) + "\n\nAccuracy (goal at x1: precision >= 0.9995, recall "
          ">= 0.999 per signature):\n\n" +
          markdown_table(["noise", "level", "true links", "precision", "recall", "F1", "ambiguous"], accuracy_rows))
    write_results("link", results, md, scratch=None if args.dir else base)


if __name__ == "__main__":
    main()
