"""The signals stage's cost and quality at scale: `python -m benchmarks.signals [--persons 200000]`.

Generates a synthetic dataset (with the planted signal cases), runs the main job with the
signals stage on a local cluster (one worker process per core) and reports, from the job's
own stage timings, the signals stage's wall time against the rest of the job in the same run
(goal: <= 10% more), then each rule's precision and recall against the planted truth
(`nirlink evaluate --signals`; goal: >= 0.99 for every person-level rule, the declarant
ranking's top 1% equal to the planted bad declarants).
Results: benchmarks/results/signals.json and signals.md (`--name N`: N.json and N.md).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from ._common import local_client, markdown_table, write_results


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--persons", type=int, default=200_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--dir", default=None, help="scratch directory (default: a temporary one)")
    ap.add_argument("--name", default="signals", help="results/<name>.json and .md (default: signals)")
    args = ap.parse_args(argv)
    from nirlink.engine.jobs._runner import Job
    from nirlink.engine.jobs._spec import load_job
    from nirlink.engine.synth._evaluate_signals import evaluate_signals
    from nirlink.engine.synth._generate import synth
    from nirlink.engine.synth._jobfile import write_job_file
    from nirlink.engine.synth._params import SynthParams

    scratch = Path(args.dir or tempfile.mkdtemp(prefix="nirlink-bench-signals-"))
    load_before = os.getloadavg()
    data, out = scratch / "data", scratch / "job"
    with local_client(n_workers=args.workers) as client:
        t0 = time.perf_counter()
        summary = synth(data, persons=args.persons, client=client, params=SynthParams(seed=args.seed), overwrite=True)
        synth_s = time.perf_counter() - t0
        job_file = write_job_file(data, scratch / "job.toml", output=out, name="bench-signals",
                                  stages=["ingest", "link", "attach", "aggregate", "signals", "export"])
        t0 = time.perf_counter()
        state = Job(load_job(job_file), client=client, restart=True).run()
        job_s = time.perf_counter() - t0
    load_after = os.getloadavg()
    stages = dict(state.stage_seconds)
    others = sum(v for k, v in stages.items() if k != "signals")
    report = evaluate_signals(out, data)
    manifest = json.loads((out / "signals" / "_manifest.json").read_text())
    rows = [[k, round(v, 1), f"{v / others:.1%}" if k == "signals" else ""] for k, v in stages.items()]
    rules = [[rule, s["cases"], s["truth"], f"{s['precision']:.4f}", f"{s['recall']:.4f}"]
             for rule, s in report["rules"].items()]
    d = report.get("declarants")
    if d:
        rules.append([f"declarants: top k (k = {d['planted_ranked']} planted of {d['ranked']} ranked)",
                      d["top_k"]["cases"], d["top_k"]["truth"], f"{d['top_k']['precision']:.4f}",
                      f"{d['top_k']['recall']:.4f}"])
        t1 = d["top_1_percent"]
        rules.append([f"declarants: top 1% ({t1['size']})", t1["cases"], t1["truth"], f"{t1['precision']:.4f}",
                      f"{t1['recall']:.4f}"])
    table = (f"{args.persons:,} persons ({summary['rows']['career'] + summary['rows']['resource']:,} rows), "
             f"{args.workers} workers; job {job_s:,.0f} s, synth {synth_s:,.0f} s; load average (1 min) "
             f"{load_before[0]:.1f} before, {load_after[0]:.1f} after\n\n"
             + markdown_table(["stage", "seconds", "signals / rest of the job"], rows) + "\n\n"
             + markdown_table(["rule", "cases", "truth", "precision", "recall"], rules))
    write_results(args.name, {"persons": args.persons, "load_average_before": load_before,
                              "load_average_after": load_after, "rows": summary["rows"], "stage_seconds": stages,
                              "signals_over_rest": stages.get("signals", 0) / others, "job_seconds": job_s,
                              "synth_seconds": synth_s, "evaluation": report, "cases": manifest["cases"]},
                  table, scratch=None if args.dir else scratch)


if __name__ == "__main__":
    main()
