"""A month's increment against a full run: `python -m benchmarks.incremental [--persons 200000]
[--seed 3] [--dir DIR] [--keep] [--name incremental]`.

`nirlink synth` writes the dataset; it is split, file by file, into a base and one month:
the month holds the resource rows of the last month and the career rows whose record id is
0 modulo 128 (together about 0.8% of the rows), and the persons registered that month
(the base's register lacks 0.1% of the entries). Then three `nirlink run`s, each in a
subprocess on the local cluster `nirlink run` starts (keeping the outputs an increment
reads: `DASK_NIRLINK__JOBS__KEEP=increment`):

- base: the main job on the base (trains the model);
- increment: `[increment] previous = base` on the month (the base's model);
- full: the main job on the union of both with the base's trained models (no training).

Reported: each stage's seconds for the three, their wall seconds, increment / full (goal:
<= 5% at 200,000 persons), the rows of each, and whether the increment's links and
aggregates equal the full run's (decisions per signature; person aggregates row by row).
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


def split(data: Path, out: Path) -> dict[str, int]:
    """``data`` as ``out/base`` and ``out/month`` (file by file) and ``out/union`` (links to ``data``)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    last = pc.max(pq.read_table(data / "resource", columns=["period"])["period"])
    rows = {"base": 0, "month": 0}
    for kind in ("career", "resource"):
        for f in sorted((data / kind).glob("*.parquet")):
            t = pq.read_table(f)
            month = (pc.equal(t["period"], last) if kind == "resource"
                     else pc.equal(pc.bit_wise_and(t["record_id"], 127), 0))
            for name, sel in (("base", pc.invert(month)), ("month", month)):
                part = t.filter(sel)
                (out / name / kind).mkdir(parents=True, exist_ok=True)
                pq.write_table(part, out / name / kind / f.name)
                rows[name] += part.num_rows
    import numpy as np

    reg = pq.read_table(data / "register")
    added = pa.array(np.arange(reg.num_rows) % 1000 == 7)  # one entry in 1,000, registered this month
    for name, t in (("base", reg.filter(pc.invert(added))), ("month", reg)):
        (out / name / "register").mkdir(parents=True, exist_ok=True)
        pq.write_table(t, out / name / "register" / "part-00000.parquet")
    (out / "union").mkdir(parents=True, exist_ok=True)
    for kind in ("career", "resource"):
        (out / "union" / kind).symlink_to(data / kind, target_is_directory=True)
    (out / "union" / "register").symlink_to(out / "month" / "register", target_is_directory=True)
    return {**rows, "register_added": int(pc.sum(added).as_py())}


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
    _run(_nirlink("synth", "--persons", str(persons), "--out", str(data), "--seed", str(args.seed), "--overwrite",
                  "--output", "json"), run_dir / "log.txt")
    rows = split(data, run_dir / "split")
    jobs = run_dir / "jobs"
    record: dict[str, Any] = {"persons": persons, "seed": args.seed, "rows": rows,
                              "load_average_before": os.getloadavg()}
    record["base"] = _job(run_dir, "base", run_dir / "split" / "base", jobs / "base")
    record["increment"] = _job(run_dir, "increment", run_dir / "split" / "month", jobs / "increment",
                               extra=f'[increment]\nprevious = "{jobs / "base"}"\nmonth = "2025-12"\n')
    models = (f'[linkage]\nmodel = "{jobs / "base/link/model.json"}"\n'
              f'register_model = "{jobs / "base/link/register_model.json"}"\n')
    record["full"] = _job(run_dir, "full", run_dir / "split" / "union", jobs / "full", extra=models)
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
                   f"{r['rows']['month']:,} rows ({r['rows']['month'] / (r['rows']['base'] + r['rows']['month']):.2%}), "
                   f"{r['rows']['register_added']:,} persons registered that month\n")
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
