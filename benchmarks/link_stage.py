"""The link stage of a whole job alone, this checkout against a baseline checkout.

Builds once per ``--dir`` the ingest output of a synthetic dataset (``nirlink synth``, then a job
with the stage ingest only, every output kept) and trains the models once (a first link stage by
this checkout, whose ``model.json`` and ``register_model.json`` both sides then use: the same
models, so both score the same pairs). Then the link stage (``run_link``, on a local cluster of
2 single-threaded workers) runs in a fresh process per repeat, this checkout and the baseline's
(``--baseline-python``: another checkout's interpreter, its ``nirlink`` installed in editable
mode) in turn, ``--repeats`` times each; each process runs the stage twice (the first also pays
the workers' imports): both count. Reported: medians of the stage's seconds and of each timed
phase (the manifest's ``timings_s``), this / baseline, and whether the links (every column
of ``links``, row for row) are equal from run to run on each side and across the sides, and
across the sides but for the register entry each link names (``register_nir``).

With ``--level-sql own`` each side scores with the same trained weights but the comparison
levels' SQL of its own code (each level's condition taken by label from that checkout's
built-in model): for a change in how a level is written, not in what it selects.

    python -m benchmarks.link_stage --persons 1000000 --dir DIR --baseline-python /path/to/base/.venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

STAGE_RUNS = 2  # per process


def _links_digest(out: Path, drop: tuple[str, ...] = ()) -> str:
    """SHA-256 of the stage's links, rows in (signature) order, every column but ``drop``."""
    import hashlib

    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted((out / "links").rglob("*.parquet"))
    t = pa.concat_tables([pq.read_table(f) for f in files])
    t = t.sort_by("signature").drop_columns(list(drop))
    h = hashlib.sha256()
    for batch in t.to_batches():
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as w:
            w.write_batch(batch)
        h.update(sink.getvalue().to_pybytes())
    return h.hexdigest()


def _own_level_sql(models: Path, to: Path) -> Path:
    """The run's models (trained weights) with each comparison level's SQL taken, by label,
    from this interpreter's built-in models: written into ``to``."""
    from nirlink.linkage import identity_model, register_model
    from nirlink.linkage._model import _suffix_form

    to.mkdir(parents=True, exist_ok=True)
    for name in ("model.json", "register_model.json"):
        data = json.loads((models / name).read_text())
        builtin = {"identity": identity_model, "register": register_model}[data["name"]]()
        sql = {(c.name, lv.label): lv.sql for c in builtin.comparisons for lv in c.levels}
        missing = {(c["name"], lv["label"]) for c in data["comparisons"] for lv in c["levels"]} - set(sql)
        if missing:
            raise SystemExit(f"--level-sql own: {models / name} has levels this checkout's built-in "
                             f"{data['name']} model lacks: {sorted(missing)}")
        for comp in data["comparisons"]:
            for lv in comp["levels"]:
                lv["sql"] = sql[(comp["name"], lv["label"])]
        for comp in data["splink"]["comparisons"]:
            for lv in comp["comparison_levels"]:
                lv["sql_condition"] = _suffix_form(sql[(comp["output_column_name"], lv["label_for_charts"])])
        (to / name).write_text(json.dumps(data))
    return to


def _one(run_dir: Path, out: Path, level_sql: str = "shared") -> list[dict[str, Any]]:
    """This interpreter's nirlink: the link stage, STAGE_RUNS times, with the run's models."""
    from distributed import Client, LocalCluster

    from nirlink.engine.stages._link import run_link

    models = run_dir / "models"
    if level_sql == "own":
        models = _own_level_sql(models, out.parent / f"{out.name}-models")
    results = []
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as cluster, Client(cluster) as client:
        for _ in range(STAGE_RUNS):
            shutil.rmtree(out, ignore_errors=True)
            t0 = time.perf_counter()
            m = run_link(run_dir / "job" / "ingest", out, client=client, model_path=models / "model.json",
                         register_model_path=models / "register_model.json")
            results.append({"stage_s": round(time.perf_counter() - t0, 3), "timings_s": m["timings_s"],
                            "links_sha256": _links_digest(out),
                            # the person, status, weights...: all but which entry of a person's
                            # register entries the link names
                            "decisions_sha256": _links_digest(out, ("register_nir",))})
    shutil.rmtree(out, ignore_errors=True)
    return results


def _prepare(run_dir: Path, persons: int, seed: int) -> None:
    """The dataset, its ingest output and the models both sides use (once per --dir)."""
    from nirlink.engine.synth import write_job_file

    if not (run_dir / "job" / "ingest" / "_manifest.json").exists():
        subprocess.run([sys.executable, "-m", "nirlink", "synth", "--persons", str(persons), "--seed", str(seed),
                        "--out", str(run_dir / "data"), "--overwrite", "--output", "json"],
                       check=True, stdout=subprocess.DEVNULL)
        job = write_job_file(run_dir / "data", run_dir / "ingest.toml", output=run_dir / "job",
                             name="link-stage-bench", stages=["ingest"])
        subprocess.run([sys.executable, "-m", "nirlink", "run", str(job), "--restart"], check=True,
                       stdout=subprocess.DEVNULL, env={**os.environ, "DASK_NIRLINK__JOBS__KEEP": "all"})
    if not (run_dir / "models" / "register_model.json").exists():
        from distributed import Client, LocalCluster

        from nirlink.engine.stages._link import run_link

        out = run_dir / "train"
        shutil.rmtree(out, ignore_errors=True)
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as cluster, Client(cluster) as client:
            run_link(run_dir / "job" / "ingest", out, client=client)
        (run_dir / "models").mkdir(exist_ok=True)
        for name in ("model.json", "register_model.json"):
            shutil.copy(out / name, run_dir / "models" / name)
        shutil.rmtree(out, ignore_errors=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", required=True, help="scratch directory (the dataset and models are reused by a later run)")
    p.add_argument("--persons", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--baseline-python", required=True, help="the baseline checkout's interpreter")
    p.add_argument("--repeats", type=int, default=2, help="processes per side")
    p.add_argument("--name", default="link_stage")
    p.add_argument("--level-sql", choices=("shared", "own"), default="shared",
                   help="own: the same weights, each side's own comparison level SQL (see above)")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # child mode: output directory
    args = p.parse_args(argv)
    run_dir = Path(args.dir) / f"p{args.persons}-s{args.seed}"
    if args.one:
        print(json.dumps(_one(run_dir, Path(args.one), args.level_sql)))
        return
    from benchmarks._common import alternate_checkouts, markdown_table, stage_phase_rows, write_results

    run_dir.mkdir(parents=True, exist_ok=True)
    _prepare(run_dir, args.persons, args.seed)
    runs = alternate_checkouts(str(Path(__file__).resolve()),
                               ["--dir", args.dir, "--persons", str(args.persons), "--seed", str(args.seed),
                                "--baseline-python", args.baseline_python, "--level-sql", args.level_sql],
                               args.baseline_python, args.repeats, run_dir)
    med, rows = stage_phase_rows(runs)

    def same(side, key):
        return len({r[key] for r in (runs[side] if side else [r for rs in runs.values() for r in rs])}) == 1

    equal = {"this_runs_links": same("this", "links_sha256"), "baseline_runs_links": same("baseline", "links_sha256"),
             "both_sides_links": same(None, "links_sha256"), "both_sides_decisions": same(None, "decisions_sha256")}
    loads = [x for rs in runs.values() for r in rs for x in (r["load_average"], r["load_after"])]
    yes = {True: "yes", False: "NO"}
    models = ("the same models on both sides" if args.level_sql == "shared"
              else "the same weights on both sides, each side's own level SQL")
    table = (f"### The link stage, {args.persons:,} persons, seed {args.seed}, {models}: "
             f"medians of {len(runs['this'])} runs per side (1-minute load {min(loads):.1f}-{max(loads):.1f})\n\n"
             f"Links (every column, row for row) equal in every run of this checkout: "
             f"{yes[equal['this_runs_links']]}; of the baseline: {yes[equal['baseline_runs_links']]}; "
             f"on both sides: {yes[equal['both_sides_links']]}; on both sides but for the register entry named "
             f"(`register_nir`): {yes[equal['both_sides_decisions']]}\n\n"
             + markdown_table(["seconds", "this", "baseline", "this / baseline"], rows) + "\n")
    write_results(args.name, {"runs": runs, "medians_s": med, "argv": sys.argv[1:], "persons": args.persons,
                              "seed": args.seed, "baseline_python": args.baseline_python,
                              "level_sql": args.level_sql,
                              "equal": equal}, table)


if __name__ == "__main__":
    main()
