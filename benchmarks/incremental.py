"""A month's increment against a full run: `python -m benchmarks.incremental [--persons 200000]
[--seed 3] [--month 2026-01] [--dir DIR] [--keep] [--name incremental]`.

`nirlink synth` writes a base, `nirlink synth --increment-of` its increment of one month
(new persons entering the fund, deaths, corrections, duplicates merged away; the month's
career and resource rows: about 1.3% of the base's rows) and `nirlink synth --union` the
union of both. Then three `nirlink run`s, each in a subprocess on the local cluster
`nirlink run` starts, keeping what an increment reads (`DASK_NIRLINK__JOBS__KEEP=increment`):

- base: the main job on the base (trains the model);
- increment: `[increment] previous = base` on the month (the base's model);
- full: the main job on the union with the base's trained models (no training).

Reported: each stage's seconds for the three, their wall seconds, increment / full (goal:
<= 5% at 200,000 persons), the rows of each, the link stage's phases, what the increment
reused, and whether the increment's links and aggregates equal the full run's (decisions
per signature; person aggregates row by row).
Results: benchmarks/results/<name>.json and <name>.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from ._common import markdown_table, write_results
from .end_to_end import _json_document, _nirlink, _run

STAGES = ("ingest", "link", "attach", "aggregate", "export")
GOAL = 0.05
KEEP = "increment"


def _job(run_dir: Path, name: str, data: Path, job: Path, extra: str = "") -> dict[str, Any]:
    from nirlink.engine.synth import write_job_file

    job_file = write_job_file(data, run_dir / f"{name}.toml", output=job, name=f"inc-{name}", extra=extra)
    out, wall, rss, _ = _run(_nirlink("run", str(job_file), "--restart", "--output", "json"), run_dir / "log.txt",
                             env={**os.environ, "DASK_NIRLINK__JOBS__KEEP": KEEP})
    summary = _json_document(out)
    if summary["status"] != "succeeded":
        raise RuntimeError(f"job {job_file} {summary['status']}: {summary.get('error')}")
    return {"wall_s": wall, "peak_rss_bytes": rss, "stage_s": summary["stage_seconds"]}


def _equal(inc: Path, full: Path) -> dict[str, bool]:
    import duckdb

    decision = "signature, person, method, status, rows"
    out = {"links": duckdb.sql(f"""
        select count(*) = 0 from (
          (select {decision} from read_parquet('{inc}/link/links/*.parquet')
           except all select {decision} from read_parquet('{full}/link/links/*.parquet'))
          union all
          (select {decision} from read_parquet('{full}/link/links/*.parquet')
           except all select {decision} from read_parquet('{inc}/link/links/*.parquet')))""").fetchall()[0][0]}
    for table in ("career_person", "career_person_year", "resource_person_month", "resource_person_year"):
        a, b = f"read_parquet('{inc}/export/{table}/*.parquet')", f"read_parquet('{full}/export/{table}/*.parquet')"
        out[table] = duckdb.sql(f"select count(*) = 0 from ((select * from {a} except all select * from {b}) "
                                f"union all (select * from {b} except all select * from {a}))").fetchall()[0][0]
    return out


def one_size(base: Path, persons: int, args) -> dict[str, Any]:
    run_dir = base / f"p{persons}-s{args.seed}"
    data = run_dir / "data"
    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / "log.txt"
    _run(_nirlink("synth", "--persons", str(persons), "--out", str(data), "--seed", str(args.seed), "--overwrite",
                  "--output", "json"), log)
    _run(_nirlink("synth", "--increment-of", str(data), "--month", args.month, "--out", str(run_dir / "month"),
                  "--overwrite", "--output", "json"), log)
    _run(_nirlink("synth", "--union", str(run_dir / "month"), "--out", str(run_dir / "union"), "--overwrite",
                  "--output", "json"), log)
    rows = {name: sum(json.loads((d / "_synth.json").read_text())["rows"][k] for k in ("career", "resource"))
            for name, d in (("base", data), ("month", run_dir / "month"))}
    rows["register_changes"] = json.loads((run_dir / "month" / "_synth.json").read_text()).get("register_changes")
    jobs = run_dir / "jobs"
    record: dict[str, Any] = {"persons": persons, "seed": args.seed, "rows": rows,
                              "load_average_before": os.getloadavg()}
    record["base"] = _job(run_dir, "base", data, jobs / "base")
    record["increment"] = _job(run_dir, "increment", run_dir / "month", jobs / "increment",
                               extra=f'[increment]\nprevious = "{jobs / "base"}"\nmonth = "{args.month}"\n')
    models = (f'[linkage]\nmodel = "{jobs / "base/link/model.json"}"\n'
              f'register_model = "{jobs / "base/link/register_model.json"}"\n')
    record["full"] = _job(run_dir, "full", run_dir / "union", jobs / "full", extra=models)
    record["ratio"] = record["increment"]["wall_s"] / record["full"]["wall_s"]
    record["goal_met"] = record["ratio"] <= GOAL
    record["equal_to_full"] = _equal(jobs / "increment", jobs / "full")
    for name in ("increment",):
        for stage in ("link", "attach", "aggregate"):
            m = json.loads((jobs / name / stage / "_manifest.json").read_text())
            record.setdefault("increment_manifest", {})[stage] = m.get("increment")
    for name in ("increment", "full"):
        record[name]["link_timings_s"] = json.loads((jobs / name / "link" / "_manifest.json").read_text())["timings_s"]
    record["load_average_after"] = os.getloadavg()
    if not args.keep:
        shutil.rmtree(run_dir, ignore_errors=True)
    return record


def render(runs: list[dict[str, Any]]) -> str:
    out = []
    for r in runs:
        rows = [[s, r["base"]["stage_s"].get(s), r["increment"]["stage_s"].get(s), r["full"]["stage_s"].get(s)]
                for s in STAGES]
        rows.append(["wall (nirlink run)", r["base"]["wall_s"], r["increment"]["wall_s"], r["full"]["wall_s"]])
        out.append(f"### {r['persons']:,} persons, seed {r['seed']}: base {r['rows']['base']:,} rows, month "
                   f"{r['rows']['month']:,} rows ({r['rows']['month'] / (r['rows']['base'] + r['rows']['month']):.2%}); "
                   f"register changes {r['rows']['register_changes']}\n")
        out.append(markdown_table(["stage (s)", "base", "increment", "full (union, base's model)"], rows))
        out.append(f"\nincrement / full: {r['ratio']:.1%} (goal <= {GOAL:.0%}: "
                   f"{'met' if r['goal_met'] else 'NOT met'}); equal to the full run: "
                   f"{', '.join(f'{k} {v}' for k, v in r['equal_to_full'].items())}; load average before "
                   f"{r['load_average_before'][0]:.1f}, after {r['load_average_after'][0]:.1f}\n")
    return "\n".join(out)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--persons", default="200000", help="comma list of sizes")
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--month", default="2026-01", help="the increment's month (after the base's last)")
    p.add_argument("--dir", default=None, help="scratch directory (default: a temporary one)")
    p.add_argument("--keep", action="store_true", help="keep the data and job directories")
    p.add_argument("--name", default="incremental")
    args = p.parse_args(argv)
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="nirlink-incremental-"))
    runs = [one_size(base, int(n), args) for n in args.persons.split(",")]
    write_results(args.name, {"runs": runs, "argv": sys.argv[1:]}, render(runs),
                  scratch=None if args.keep or args.dir else base)


if __name__ == "__main__":
    main()
