"""Link accuracy and cost against size: `python -m benchmarks.link_scale [--persons 30000,200000,1000000]
[--seeds 1,2,3] [--noise 1,2] [--workers N] [--memory-limit 4GB] [--dir DIR] [--keep] [--resume]`.

For every (persons, noise, seed): `nirlink synth` (seed, `--noise-scale`), then `nirlink run` on a
job with the stages ingest and link only, then `nirlink evaluate` with the link stage's trained
model (hence blocking reach), each a subprocess so that the peak RSS of all its processes
(driver and Dask workers) is measured. Recorded per run: precision, recall and F1 per signature
and per row; recall by NIR status; ambiguous and unlinked counts; blocking reach; link-stage
seconds by phase (the link manifest's `timings_s`, training's parts `training.*` among them, and
training's share of the link stage); peak RSS of the run and of evaluate; the
trained prior and the decision rule (link manifest). A dataset is deleted as soon as its run is
evaluated (`--keep` keeps them, under `--dir`).

Markdown: one row per size x noise x seed plus a "worst seed" row per size x noise (the worst
value of each column over the seeds), the least-squares slope of per-signature recall against
log10(persons) per noise level, and the goals checked on the worst seed: noise x1 precision >=
0.9995, recall >= 0.999 per signature and recall >= 0.99 for each NIR status; noise x2 recall >=
0.995 and precision >= 0.999 per signature.
Results: benchmarks/results/link_scale.json and link_scale.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ._common import PeakRSS, markdown_table, write_results

GOALS = {  # noise scale -> [(figure, key in the run record, bound, at least (True) or at most)]
    1.0: [("signature precision", "sig_precision", 0.9995), ("signature recall", "sig_recall", 0.999),
          ("recall of each NIR status (signatures)", "min_status_recall", 0.99)],
    2.0: [("signature recall", "sig_recall", 0.995), ("signature precision", "sig_precision", 0.999)],
}


# "frequencies" (the register's term frequencies, which scoring needs whether the model is
# trained or given) was a part of training, "training.frequencies", in results before 2026-12-02
PHASES = ("signatures", "register", "frequencies", "training", "training.frequencies", "training.sample", "training.u",
          "training.em",
          "register_dedupe", "deterministic", "scoring", "decisions", "review")


def _training_share(r: dict[str, Any]) -> str:
    """Training's share of the link stage's wall time."""
    t, link = r["link_phase_s"].get("training"), r.get("link_stage_s")
    return f"{100 * t / link:.0f}%" if t is not None and link else "n/a"


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _nirlink(*args: str) -> list[str]:
    return [sys.executable, "-m", "nirlink", *args]


def _measured(cmd: list[str], log: Path) -> tuple[str, float, int]:
    """Run ``cmd`` (stdout captured, stderr to ``log``); stdout, wall seconds, peak RSS of the
    process tree (this benchmark's own process included: a few hundred MB at most)."""
    with PeakRSS() as rss, open(log, "ab") as err:
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[2:])} failed ({proc.returncode}); see {log}")
    return proc.stdout, seconds, rss.peak


def one_run(base: Path, persons: int, seed: int, noise: float, args) -> dict[str, Any]:
    from nirlink.engine.synth import write_job_file

    run_dir = base / f"p{persons}-n{noise:g}-s{seed}"
    data, job, log = run_dir / "data", run_dir / "job", run_dir / "log.txt"
    run_dir.mkdir(parents=True, exist_ok=True)
    workers = ["--workers", str(args.workers)] if args.workers else []
    _, synth_s, _ = _measured(_nirlink("synth", "--persons", str(persons), "--out", str(data), "--seed", str(seed),
                                       "--noise-scale", str(noise), "--overwrite", "--output", "json", *workers), log)
    job_file = write_job_file(data, run_dir / "job.toml", output=job, name=f"scale-{persons}-{seed}-{noise:g}",
                              stages=["ingest", "link"])
    if args.workers:
        job_file.write_text(job_file.read_text() + f"workers = {args.workers}\n")
    out, run_s, run_rss = _measured(_nirlink("run", str(job_file), "--restart", "--output", "json"), log)
    summary = _json_document(out)
    if summary["status"] != "succeeded":
        raise RuntimeError(f"job {job_file} {summary['status']}: {summary.get('error')}")
    out, eval_s, eval_rss = _measured(_nirlink("evaluate", "--links", str(job / "link"), "--rows", str(job / "ingest"),
                                               "--truth", str(data / "truth"), "--memory-limit", args.memory_limit,
                                               "--output", "json"), log)
    report = _json_document(out)
    manifest = json.loads((job / "link" / "_manifest.json").read_text())
    sig, rows = report["signatures"], report["rows"]
    by_status = {k: v["recall"] for k, v in report["signatures_by_nir_status"].items()}
    worst_status = min(by_status, key=by_status.get) if by_status else None
    decisions = manifest.get("decisions", {})
    record = {
        "persons": persons, "seed": seed, "noise": noise,
        "sig_precision": sig["precision"], "sig_recall": sig["recall"], "sig_f1": sig["f1"],
        "row_precision": rows["precision"], "row_recall": rows["recall"], "row_f1": rows["f1"],
        "signatures": sig["true_positives"] + sig["false_positives"] + sig["false_negatives"],
        "rows": rows["true_positives"] + rows["false_positives"] + rows["false_negatives"],
        "sig_recall_by_nir_status": by_status,
        "row_recall_by_nir_status": {k: v["recall"] for k, v in report["rows_by_nir_status"].items()},
        "min_status_recall": by_status[worst_status] if worst_status else 1.0, "min_status": worst_status,
        "sig_ambiguous": sig["ambiguous"], "sig_unlinked": sig["unlinked"],
        "row_ambiguous": rows["ambiguous"], "row_unlinked": rows["unlinked"],
        "blocking_reach": report["blocking"]["reach"] if "blocking" in report else None,
        "link_phase_s": manifest.get("timings_s", {}),
        "link_stage_s": summary["stage_seconds"].get("link"), "ingest_stage_s": summary["stage_seconds"].get("ingest"),
        "synth_s": synth_s, "run_s": run_s, "evaluate_s": eval_s,
        "run_peak_rss_bytes": run_rss, "evaluate_peak_rss_bytes": eval_rss,
        "prior": manifest.get("training", {}).get("identity", {}).get("probability_two_random_records_match"),
        # the decision rule: the manifest's decision settings, without its counts
        "decision": {k: v for k, v in decisions.items()
                     if k != "by_nir_status" and not k.startswith(("signatures_", "rows_", "linked_"))},
        "training": {k: {a: b for a, b in v.items() if a != "sample_years"} if isinstance(v, dict) else v
                     for k, v in manifest.get("training", {}).items()},
        "level_weights": _level_weights(job / "link" / "model.json"),
        "report": report,
    }
    if not args.keep:
        shutil.rmtree(run_dir, ignore_errors=True)
    return record


def _json_document(out: str) -> dict[str, Any]:
    """The JSON document a command printed with ``--output json``: its stdout from the first line
    that opens an object (a worker process may have written a line to the shared stdout first)."""
    start = 0 if out.startswith("{") else out.find("\n{") + 1
    return json.loads(out[start:])


def _level_weights(path: Path) -> dict[str, float | None]:
    """log2(m/u) of every trained level of the identity model, as "comparison / level"."""
    settings = json.loads(path.read_text())["splink"]
    out = {}
    for comp in settings["comparisons"]:
        for lv in comp["comparison_levels"]:
            if lv.get("is_null_level"):
                continue
            m, u = lv.get("m_probability"), lv.get("u_probability")
            out[f"{comp['output_column_name']} / {lv['label_for_charts']}"] = math.log2(m / u) if m and u else None
    return out


def _spread(runs: list[dict[str, Any]]) -> list[list[str]]:
    """Per size x noise and level: the match weight's min, max and spread over the seeds."""
    rows = []
    groups: dict[tuple[int, float], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["persons"], r["noise"]), []).append(r)
    for (persons, noise), rs in sorted(groups.items()):
        for level in rs[0]["level_weights"]:
            vals = [r["level_weights"].get(level) for r in rs]
            vals = [v for v in vals if v is not None]
            rows.append([f"{persons:,}", f"x{noise:g}", level, str(len(vals)),
                         *([f"{min(vals):+.2f}", f"{max(vals):+.2f}", f"{max(vals) - min(vals):.2f}"] if vals
                           else ["untrained"] * 3)])
    return rows


def _worst(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The worst value of each figure over the seeds of one size x noise."""
    lo = ("sig_precision", "sig_recall", "sig_f1", "row_precision", "row_recall", "row_f1", "min_status_recall",
          "blocking_reach")
    hi = ("sig_ambiguous", "sig_unlinked", "row_ambiguous", "row_unlinked", "link_stage_s", "run_peak_rss_bytes",
          "evaluate_peak_rss_bytes")
    w: dict[str, Any] = {"persons": runs[0]["persons"], "noise": runs[0]["noise"], "seed": f"worst of {len(runs)}"}
    for k in lo:
        vals = [r[k] for r in runs if r[k] is not None]
        w[k] = min(vals) if vals else None
    for k in hi:
        vals = [r[k] for r in runs if r[k] is not None]
        w[k] = max(vals) if vals else None
    w["signatures"] = f"{min(r['signatures'] for r in runs):,}-{max(r['signatures'] for r in runs):,}"
    w["min_status"] = min(runs, key=lambda r: r["min_status_recall"])["min_status"]
    return w


def _slope(runs: list[dict[str, Any]]) -> float | None:
    """Least-squares slope of per-signature recall against log10(persons)."""
    xs = [math.log10(r["persons"]) for r in runs]
    ys = [r["sig_recall"] for r in runs]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else None


def _fmt(v: Any, digits: int = 5) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def render(runs: list[dict[str, Any]], args) -> tuple[str, dict[str, Any]]:
    groups: dict[tuple[int, float], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["persons"], r["noise"]), []).append(r)
    table, phase_rows, status_rows, goal_rows = [], [], [], []
    statuses = sorted({s for r in runs for s in r["sig_recall_by_nir_status"]})
    seen = {p for r in runs for p in r["link_phase_s"]}
    phases = [p for p in PHASES if p in seen] + sorted(seen - set(PHASES))  # pipeline order, then any new phase
    worst_rows = []
    for (persons, noise), rs in sorted(groups.items()):
        w = _worst(rs)
        worst_rows.append(w)
        for r in [*rs, w] if len(rs) > 1 else rs:
            table.append([f"{persons:,}", f"x{noise:g}", r["seed"], _fmt(r.get("signatures")), _fmt(r["sig_precision"]), _fmt(r["sig_recall"]),
                          _fmt(r["sig_f1"]), _fmt(r["row_precision"]), _fmt(r["row_recall"]), _fmt(r["row_f1"]),
                          f"{_fmt(r['min_status_recall'], 4)} ({r['min_status']})", r["sig_ambiguous"],
                          r["sig_unlinked"], r["row_ambiguous"], r["row_unlinked"], _fmt(r["blocking_reach"]),
                          _fmt(r["link_stage_s"], 1), _fmt(r["run_peak_rss_bytes"] / 2**30, 2),
                          _fmt(r["evaluate_peak_rss_bytes"] / 2**30, 2)])
        for r in rs:
            phase_rows.append([f"{persons:,}", f"x{noise:g}", r["seed"],
                               *[_fmt(r["link_phase_s"].get(p), 1) for p in phases], _training_share(r),
                               f"{r['prior']:.4g}" if r["prior"] is not None else "n/a",
                               ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                         for k, v in r["decision"].items() if k != "rule") or "n/a"])
            status_rows.append([f"{persons:,}", f"x{noise:g}", r["seed"],
                                *[_fmt(r["sig_recall_by_nir_status"].get(s), 4) for s in statuses]])
        for name, key, bound in GOALS.get(noise, []):
            value = w[key]
            goal_rows.append([f"{persons:,}", f"x{noise:g}", f"{name} >= {bound:g}", _fmt(value),
                              "PASS" if value is not None and value >= bound else "FAIL"])
    slopes = {}
    for noise in sorted({r["noise"] for r in runs}):
        slopes[noise] = _slope([r for r in runs if r["noise"] == noise])
    headers = ["persons", "noise", "seed", "signatures", "sig P", "sig R", "sig F1", "row P", "row R", "row F1",
               "min NIR-status R (sig)", "sig ambiguous", "sig unlinked", "row ambiguous", "row unlinked",
               "blocking reach", "link s", "run peak RSS GiB", "evaluate peak RSS GiB"]
    md = (f"Link stage at scale: persons {args.persons}, seeds {args.seeds}, noise {args.noise}; "
          f"{args.workers or 'default'} workers; peak RSS = all processes of the command (driver and workers). "
          "A \"worst of N\" row holds the worst value of each column over the seeds.\n\n"
          + markdown_table(headers, table)
          + "\n\nSlope of per-signature recall against log10(persons) (least squares over all runs):\n\n"
          + markdown_table(["noise", "slope (recall per decade)"],
                           [[f"x{n:g}", "n/a (one size)" if s is None else f"{s:+.6f}"] for n, s in slopes.items()])
          + "\n\nGoals, on the worst seed:\n\n"
          + (markdown_table(["persons", "noise", "goal", "worst value", "result"], goal_rows) if goal_rows
             else "(no goal defined for these noise levels)")
          + "\n\nRecall by NIR status (signatures):\n\n"
          + markdown_table(["persons", "noise", "seed", *statuses], status_rows)
          + "\n\nLink stage seconds by phase, trained prior and decision rule (link manifest):\n\n"
          + markdown_table(["persons", "noise", "seed", *phases, "training share", "prior", "decision"], phase_rows)
          + "\n\nTrained match weights, log2(m/u), over the seeds of each size (training stability):\n\n"
          + markdown_table(["persons", "noise", "level", "runs", "min", "max", "spread"], _spread(runs)))
    summary = {"worst": worst_rows, "slopes": {f"x{n:g}": s for n, s in slopes.items()},
               "goals": [dict(zip(["persons", "noise", "goal", "worst_value", "result"], g)) for g in goal_rows]}
    return md, summary


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--persons", default="30000,200000,1000000", help="comma-separated sizes")
    ap.add_argument("--seeds", default="1,2,3", help="comma-separated synth seeds")
    ap.add_argument("--noise", default="1,2", help="comma-separated noise scales (synth --noise-scale)")
    ap.add_argument("--workers", type=int, default=None, help="local cluster workers (default: one per core)")
    ap.add_argument("--memory-limit", default="4GB", help="nirlink evaluate --memory-limit")
    ap.add_argument("--dir", default=None, help="scratch directory (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep every dataset and job output (under --dir)")
    ap.add_argument("--name", default="link_scale", help="results file name (benchmarks/results/NAME.json|md)")
    ap.add_argument("--resume", action="store_true",
                    help="skip the runs already recorded in results/NAME.partial.json (written after every run)")
    ap.add_argument("--merge", default=None,
                    help="comma-separated result names: render their runs together as NAME (no new run); "
                         "large sizes can then run as separate invocations")
    args = ap.parse_args(argv)
    # `nirlink evaluate` reads the ingested rows, which the default setting releases
    os.environ.setdefault("DASK_NIRLINK__JOBS__KEEP", "ingest, link")
    if args.merge:
        from ._common import RESULTS

        runs = [r for name in args.merge.split(",") for r in json.loads((RESULTS / f"{name}.json").read_text())["runs"]]
        args.persons = ",".join(str(p) for p in sorted({r["persons"] for r in runs}))
        args.seeds = ",".join(str(s) for s in sorted({r["seed"] for r in runs}))
        args.noise = ",".join(f"{n:g}" for n in sorted({r["noise"] for r in runs}))
        md, summary = render(runs, args)
        write_results(args.name, {"merged": args.merge.split(","), "runs": runs, **summary}, md)
        return
    sizes, seeds, noises = _ints(args.persons), _ints(args.seeds), _floats(args.noise)
    base = Path(args.dir or tempfile.mkdtemp(prefix="nirlink-bench-link-scale-"))
    base.mkdir(parents=True, exist_ok=True)
    from ._common import RESULTS

    # every finished run is kept at once: a 1M-person run takes 10-45 min, an interrupted
    # invocation resumes with --resume instead of starting over
    partial = RESULTS / f"{args.name}.partial.json"
    runs = json.loads(partial.read_text())["runs"] if args.resume and partial.exists() else []
    done = {(r["persons"], r["seed"], r["noise"]) for r in runs}
    for persons in sizes:
        for noise in noises:
            for seed in seeds:
                if (persons, seed, noise) in done:
                    print(f"persons {persons:,} noise x{noise:g} seed {seed}: recorded in {partial}", flush=True)
                    continue
                print(f"persons {persons:,} noise x{noise:g} seed {seed} ...", flush=True)
                r = one_run(base, persons, seed, noise, args)
                print(f"  signatures P {r['sig_precision']:.5f} R {r['sig_recall']:.5f}; link {r['link_stage_s']} s; "
                      f"peak RSS {r['run_peak_rss_bytes'] / 2**30:.2f} GiB", flush=True)
                runs.append(r)
                RESULTS.mkdir(parents=True, exist_ok=True)
                partial.write_text(json.dumps({"runs": runs}, indent=2, default=str) + "\n")
    md, summary = render(runs, args)
    payload = {"persons": sizes, "seeds": seeds, "noise": noises, "workers": args.workers,
               "evaluate_memory_limit": args.memory_limit, "runs": runs, **summary}
    write_results(args.name, payload, md, scratch=None if (args.keep or args.dir) else base)
    partial.unlink(missing_ok=True)
    if args.keep:
        print(f"datasets and job outputs kept under {base}")


if __name__ == "__main__":
    main()
