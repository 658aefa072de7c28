"""Training of the link stage on its own: `python -m benchmarks.training [--persons 200000]
[--seed 3] [--repeats 5] [--baseline-ref REF] [--dir DIR] [--name training]`.

Builds a job (`nirlink synth`, then `nirlink run` with the stages ingest and link), then
trains the identity and register models on the link stage's output (`train_models`, as the
link stage calls it, term frequencies given) on a local cluster of 2 worker processes of one
thread, with Dask's task stream recorded. Reported, median over ``--repeats`` runs, each in a
process of its own after a warm-up training in it:
- training's wall seconds and its parts (`training.sample`, `training.u_em`);
- the workers' occupancy: the seconds its tasks computed over (workers x wall): how much of
  training the cores were busy, the issue's "training does not sit in one task while the other
  cores idle";
- its longest task, and the computing seconds of each kind of task;
- training's share of the job's link stage (its seconds in the link manifest of the job run);
- whether the trained models are the same bytes as the baseline's.
In the same run, the baseline: the code at git ref ``--baseline-ref`` (a temporary git
worktree), its runs alternating with the current code's (A B A B ...). The 1-minute load
average is recorded beside every run. Results: benchmarks/results/<name>.json and .md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ._common import markdown_table, write_results
from .synth import REPO, _baseline_tree, _drop_tree

WORKERS = 2


def _child(work: Path, out: Path) -> None:
    """One measured training (after a warm-up one) by the `nirlink` importable here."""
    from distributed import get_task_stream

    from nirlink.linkage import LinkConfig, identity_model, register_model
    from nirlink.linkage._training import model_frequencies, train_models

    from ._common import local_client

    with local_client(n_workers=WORKERS) as client:
        for warm in (True, False):
            models = {"identity": identity_model(), "register": register_model()}
            tf = model_frequencies(work, models, client=client)
            load = os.getloadavg()[0]
            t0 = time.perf_counter()
            with get_task_stream(client) as ts:
                trained = train_models(work, models, LinkConfig(), client=client, tf=tf)
            wall = time.perf_counter() - t0
    kinds: dict[str, float] = {}
    longest = ("", 0.0)
    busy = 0.0
    for task in ts.data:
        for ss in task["startstops"]:
            if ss["action"] != "compute":
                continue
            s = ss["stop"] - ss["start"]
            busy += s
            kind = "-".join(p for p in str(task["key"]).split("-")[1:-2])  # nirlink-<kind>-<i>-<token>
            kinds[kind] = kinds.get(kind, 0.0) + s
            if s > longest[1]:
                longest = (kind, s)
    digest = hashlib.sha256(json.dumps({n: m.splink for n, m in models.items()}, sort_keys=True).encode()).hexdigest()
    out.write_text(json.dumps({"wall_s": wall, "timings_s": trained["timings_s"], "busy_s": busy,
                               "occupancy": busy / (WORKERS * wall), "longest": list(longest), "kinds_s": kinds,
                               "models_sha256": digest, "load_1min": load}))


def _run_child(work: Path, out: Path, pythonpath: str | None) -> dict:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    subprocess.run([sys.executable, "-m", "benchmarks.training", "--child", str(work), "--out", str(out)],
                   cwd=REPO, env=env, check=True)
    return json.loads(out.read_text())


def _job(scratch: Path, persons: int, seed: int) -> tuple[Path, float]:
    """The link stage's output of a job on synthetic data (built once per --dir: a later run
    reuses it), and the link stage's seconds in that job's run."""
    from nirlink.engine.synth import write_job_file

    from .end_to_end import _json_document

    data, job = scratch / f"p{persons}-s{seed}", scratch / f"job-p{persons}-s{seed}"
    seconds = job / "link_stage_seconds.json"
    if not seconds.exists():
        subprocess.run([sys.executable, "-m", "nirlink", "synth", "--persons", str(persons), "--out", str(data),
                        "--seed", str(seed), "--overwrite", "--output", "json"], check=True, stdout=subprocess.DEVNULL)
        job_file = write_job_file(data, scratch / "job.toml", output=job, name="training-bench",
                                  stages=["ingest", "link"])
        done = subprocess.run([sys.executable, "-m", "nirlink", "run", str(job_file), "--restart", "--output", "json"],
                              check=True, stdout=subprocess.PIPE, text=True)
        seconds.write_text(json.dumps(_json_document(done.stdout)["stage_seconds"]["link"]))
    return job / "link", float(json.loads(seconds.read_text()))


def _summary(runs: list[dict]) -> dict:
    med = statistics.median
    return {"wall_s": med(r["wall_s"] for r in runs), "walls_s": [r["wall_s"] for r in runs],
            "sample_s": med(r["timings_s"].get("training.sample", 0.0) for r in runs),
            "u_em_s": med(r["timings_s"].get("training.u_em", 0.0) for r in runs),
            "occupancy": med(r["occupancy"] for r in runs), "busy_s": med(r["busy_s"] for r in runs),
            "longest_s": med(r["longest"][1] for r in runs),
            "longest": max((tuple(r["longest"]) for r in runs), key=lambda x: x[1]),
            "kinds_s": {k: med(r["kinds_s"].get(k, 0.0) for r in runs) for k in runs[0]["kinds_s"]},
            "models_sha256": sorted({r["models_sha256"] for r in runs}),
            "load_1min": [r["load_1min"] for r in runs]}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--persons", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5, help="runs of each version (alternating)")
    ap.add_argument("--baseline-ref", default="", help="git ref of the baseline ('' for none)")
    ap.add_argument("--dir", default=None, help="scratch directory (kept: the job is reused by a later run)")
    ap.add_argument("--name", default="training")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return _child(Path(args.child), Path(args.out))

    scratch = Path(args.dir or tempfile.mkdtemp(prefix="nirlink-bench-training-"))
    scratch.mkdir(parents=True, exist_ok=True)
    work, link_s = _job(scratch, args.persons, args.seed)
    base_path, base_note = (None, "no baseline") if not args.baseline_ref else _baseline_tree(args.baseline_ref,
                                                                                            scratch)
    current, baseline = [], []
    try:
        for i in range(args.repeats):
            current.append(_run_child(work, scratch / f"current-{i}.json", None))
            if base_path:
                baseline.append(_run_child(work, scratch / f"baseline-{i}.json", base_path))
    finally:
        if base_path:
            _drop_tree(scratch)
    cur = _summary(current)
    base = _summary(baseline) if baseline else None
    same = base is not None and cur["models_sha256"] == base["models_sha256"] and len(cur["models_sha256"]) == 1
    rows = []
    for label, s in (("current", cur), ("baseline", base)):
        if s is None:
            continue
        rows.append([label, f"{s['wall_s']:.2f}", f"{min(s['walls_s']):.2f}-{max(s['walls_s']):.2f}",
                     f"{s['sample_s']:.2f}", f"{s['u_em_s']:.2f}", f"{s['busy_s']:.2f}", f"{s['occupancy']:.2f}",
                     f"{s['longest'][0]} {s['longest'][1]:.2f}",
                     f"{100 * s['wall_s'] / link_s:.0f}%" if link_s else "-",
                     f"{cur['wall_s'] / s['wall_s']:.2f}" if label == "baseline" else "1.00",
                     f"{max(s['load_1min']):.1f}"])
    table = markdown_table(["version", "training s (median)", "range", "sample s", "u + EM s", "tasks' compute s",
                            "occupancy of the 2 workers", "longest task s (worst run)",
                            "share of the job's link stage", "current / version", "load (1 min, max)"], rows)
    kinds = sorted(set(cur["kinds_s"]) | set(base["kinds_s"] if base else []))
    table += "\n\nCompute seconds by kind of task (medians):\n\n" + markdown_table(
        ["kind", "current", *(["baseline"] if base else [])],
        [[k, f"{cur['kinds_s'].get(k, 0.0):.2f}", *([f"{base['kinds_s'].get(k, 0.0):.2f}"] if base else [])]
         for k in kinds])
    header = (f"Training alone at {args.persons:,} persons (seed {args.seed}), {WORKERS} worker processes, median of "
              f"{args.repeats} runs (each in its own process, after a warm-up); {base_note}; the job's link stage "
              f"took {link_s:.1f} s (current code). Trained models the same bytes as the baseline's: "
              f"{'yes' if same else ('no' if base else 'n/a')}.\n\n")
    write_results(args.name, {"persons": args.persons, "seed": args.seed, "repeats": args.repeats,
                              "baseline": base_note, "link_stage_s": link_s, "current": cur, "baseline_runs": base,
                              "same_models": same}, header + table)


if __name__ == "__main__":
    main()
