"""`nirlink link` against plain Splink: `python -m benchmarks.link_front [--records 10000,100000,1000000]`.

Generated person records with known truth (engine/synth/_people.py: string ids, names, date
of birth, postcode, city, email; two CSV files per size, the right one holding 70% of the
left persons again, with typos, swapped dates, moves and missing fields), linked with the
shipped example model `linkage/models/person-link.json` by
- nirlink: `nirlink link` as a user runs it (a fresh process: reading, checks, training,
  scoring, the best-match decision, outputs; in its own process below
  `nirlink.linkage.in-process-rows`, on a local cluster of one worker per core above);
- plain Splink (the named baseline), a fresh process too: the same CSV files read by pyarrow
  as text with empty fields null, the same comparisons and blocking rules (the model file's
  Splink settings), trained with the same estimators, seed and sample sizes, every pair
  above the same prediction floor (0.01) written to Parquet.
Per size (medians of alternating runs: the machine is shared): wall time, CPU time and peak RSS
of the whole process tree (Dask workers included), and pair
precision / recall / F1 of both against the truth at p >= 0.5, 0.9 and 0.99, and the share of
nirlink's pairs at p >= 0.9 that Splink also gives. Results: benchmarks/results/link_front.json
and link_front.md.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ._common import RESULTS, PeakRSS, markdown_table, write_results

MODEL = Path(__file__).parent.parent / "linkage" / "models" / "person-link.json"
THRESHOLDS = (0.5, 0.9, 0.99)

# The baseline, as a Splink user writes it (run in its own process).
SPLINK_SCRIPT = r"""
import json, sys
import duckdb, pyarrow as pa, pyarrow.csv as pacsv, pyarrow.parquet as pq
from splink import DuckDBAPI, Linker, block_on

settings, training, files, out = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3:5], sys.argv[5]
def read(path):
    names = pacsv.read_csv(path, read_options=pacsv.ReadOptions(skip_rows_after_names=10**9)).column_names
    return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
        column_types={c: pa.string() for c in names}, strings_can_be_null=True))
db_api = DuckDBAPI(connection=duckdb.connect())
linker = Linker([db_api.register(read(f)) for f in files], settings)
linker.training.estimate_probability_two_random_records_match(training["deterministic_rules"],
                                                              recall=training["deterministic_recall"])
linker.training.estimate_u_using_random_sampling(max_pairs=training["u_max_pairs"], seed=training["seed"])
for keys in training["em_blocking"]:
    linker.training.estimate_parameters_using_expectation_maximisation(block_on(*keys), record_sample_proportion=1.0)
pairs = linker.inference.predict(threshold_match_probability=0.01).as_pyarrow_table()
pq.write_table(pairs.select(["id_l", "id_r", "match_weight", "match_probability"]), out)
"""


def _generate(base: Path, records: int) -> tuple[list[Path], Path]:
    from nirlink.engine.synth._people import people, true_pairs

    d = base / f"people-{records}"
    files = [d / "left.csv", d / "right.csv"]
    if not (d / "true_pairs.parquet").exists():
        d.mkdir(parents=True, exist_ok=True)
        tables = people(records, mode="link", seed=records % 9973)
        for t, f in zip(tables, files):
            pacsv.write_csv(t.drop_columns(["person_id"]), f)
        pq.write_table(true_pairs(tables), d / "true_pairs.parquet")
    return files, d / "true_pairs.parquet"


def _timed(cmd: list[str]) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (user + system, the process and every process it waited for:
    its Dask workers) and peak RSS of the process tree."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:4]} failed:\n{proc.stderr[-3000:]}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return seconds, cpu, rss.peak


def _alternating(commands: dict[str, list[str]], repeats: int) -> dict[str, dict]:
    """Each command ``repeats`` times, alternating (the machine's load hits both alike): median
    and every wall time, the largest peak RSS."""
    runs: dict[str, list] = {name: [] for name in commands}
    for _ in range(repeats):
        for name, cmd in commands.items():
            runs[name].append(_timed(cmd))
    return {name: {"seconds": statistics.median(s for s, _, _ in r), "times_s": [s for s, _, _ in r],
                   "cpu_s": statistics.median(c for _, c, _ in r), "cpu_times_s": [c for _, c, _ in r],
                   "peak_rss_bytes": max(m for _, _, m in r)} for name, r in runs.items()}


def _accuracy(pairs: Path, truth: Path) -> dict:
    p = pq.read_table(pairs)
    t = pq.read_table(truth)
    true = set(zip(t.column("id_l").to_pylist(), t.column("id_r").to_pylist()))
    ids = list(zip(p.column(p.column_names[0]).to_pylist(), p.column(p.column_names[1]).to_pylist()))
    prob = p.column("match_probability").to_numpy()
    hit = np.array([k in true for k in ids], bool)
    out = {}
    for th in THRESHOLDS:
        sel = prob >= th
        tp = int((hit & sel).sum())
        precision = tp / max(int(sel.sum()), 1)
        recall = tp / max(len(true), 1)
        out[str(th)] = {"pairs": int(sel.sum()), "precision": precision, "recall": recall,
                        "f1": 2 * precision * recall / max(precision + recall, 1e-12)}
    out["_pairs_at_0.9"] = {k for k, s in zip(ids, prob >= 0.9) if s}
    return out


def run_size(base: Path, records: int, repeats: int) -> dict:
    from nirlink.linkage import load_model

    files, truth = _generate(base, records)
    out = base / f"nirlink-{records}"
    shutil.rmtree(out, ignore_errors=True)
    nirlink_cmd = [sys.executable, "-m", "nirlink", "link", "--model", str(MODEL), "--input", str(files[0]),
                   "--input", str(files[1]), "--out", str(out), "--no-charts", "--output", "json"]
    model = load_model(MODEL)
    settings = {**model.splink_settings(), "unique_id_column_name": "id",
                "blocking_rules_to_generate_predictions": [b.sql for b in model.blocking]}
    training = {"deterministic_rules": model.training["deterministic_rules"],
                "deterministic_recall": model.training["deterministic_recall"],
                "u_max_pairs": model.training["u_max_pairs"], "seed": model.training["seed"],
                "em_blocking": model.training["em_blocking"]}
    splink_pairs = base / f"splink-{records}.parquet"
    splink_cmd = [sys.executable, "-c", SPLINK_SCRIPT, json.dumps(settings), json.dumps(training), str(files[0]),
                  str(files[1]), str(splink_pairs)]
    timing = _alternating({"nirlink": nirlink_cmd, "splink": splink_cmd}, repeats)
    manifest = json.loads((out / "_manifest.json").read_text())
    ours, theirs = _accuracy(out / "pairs", truth), _accuracy(splink_pairs, truth)
    a, b = ours.pop("_pairs_at_0.9"), theirs.pop("_pairs_at_0.9")
    return {"records": records, "true_pairs": pq.read_metadata(truth).num_rows,
            "nirlink": {**timing["nirlink"], "where": manifest["execution"]["where"], "accuracy": ours,
                        "pairs": manifest["result"]["scoring"]["pairs"], "decision": manifest["result"]["decision"]},
            "splink": {**timing["splink"], "accuracy": theirs},
            "same_pairs_at_0.9": len(a & b) / max(len(a | b), 1)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", default="10000,100000,1000000")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each engine per size below 1M (1M: one)")
    ap.add_argument("--dir", default=None, help="keep the generated data here between runs")
    ap.add_argument("--merge", action="store_true", help="add to the sizes already in results/link_front.json")
    args = ap.parse_args(argv)
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="nirlink-link-front-"))
    results = []
    for r in args.records.split(","):
        n = int(float(r))
        results.append(run_size(base, n, args.repeats if n < 1_000_000 else 1))
    if args.merge and (RESULTS / "link_front.json").exists():
        sizes = {r["records"] for r in results}
        old = json.loads((RESULTS / "link_front.json").read_text())["results"]
        results = sorted([r for r in old if r["records"] not in sizes] + results, key=lambda r: r["records"])
    rows = []
    for r in results:
        for who in ("nirlink", "splink"):
            x = r[who]
            acc = x["accuracy"]
            rows.append([f"{r['records']:,}", who if who == "splink" else f"nirlink ({x['where']})",
                         len(x["times_s"]),
                         round(x["seconds"], 2), round(x["seconds"] / r["splink"]["seconds"], 2),
                         round(x["cpu_s"], 2), round(x["cpu_s"] / r["splink"]["cpu_s"], 2),
                         round(x["peak_rss_bytes"] / 2**30, 2),
                         *(f"{acc[str(t)]['precision']:.4f} / {acc[str(t)]['recall']:.4f} / {acc[str(t)]['f1']:.4f}"
                           for t in THRESHOLDS),
                         f"{r['same_pairs_at_0.9']:.4f}" if who == "nirlink" else ""])
    table = markdown_table(["records", "engine", "runs", "wall s (median)", "wall vs Splink", "CPU s (median)",
                            "CPU vs Splink", "peak RSS GiB",
                            *(f"P / R / F1 at p >= {t}" for t in THRESHOLDS), "same pairs as Splink at 0.9"], rows)
    write_results("link_front", {"model": str(MODEL.name), "results": results}, table,
                  scratch=None if args.dir else base)


if __name__ == "__main__":
    main()
