"""`nirlink link` (any model, one dataset or two) and `nirlink evaluate` (a job's links, or a
`nirlink link` run, against a truth)."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from . import app
from ._linkfront import CsvArgs, link_config, load_model_arg, read_inputs, read_manifest, write_manifest
from ._utilities import OutputFormat, emit, handle_errors, scheduler_address


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and read_manifest(out) is None)):
        raise typer.BadParameter(f"--out {out} exists and is not the output of an earlier `nirlink link`: "
                                 "give a new or empty directory")


def _where(run_on: str, scheduler: str | None, records: int) -> tuple[str, str]:
    from nirlink.engine import _config

    limit = int(_config.get("linkage.in-process-rows", 300_000))
    if scheduler is not None or run_on == "cluster":
        return "cluster", "--scheduler given" if scheduler is not None else "--run-on cluster"
    if run_on == "process":
        return "process", "--run-on process"
    if records <= limit:
        return "process", f"{records:,} records <= nirlink.linkage.in-process-rows ({limit:,})"
    return "cluster", f"{records:,} records > nirlink.linkage.in-process-rows ({limit:,})"


@app.command("link")
@handle_errors
def link(
    model: str = typer.Option("identity", "--model", help="Model file (nirlink model, plain Splink settings or a "
                                                          "trained Splink model), or 'identity' / 'register'."),
    inputs: list[Path] = typer.Option(..., "--input", help="One dataset (dedupe) or two (link): CSV or Parquet "
                                                           "files, directories or globs."),
    out: Path = typer.Option(..., "--out", help="Output directory: pairs/, clusters/ or links/, model.json, "
                                                "_manifest.json."),
    id_column: str = typer.Option(None, "--id-column", help="The records' unique id column (default: the model's "
                                                            "id_column, else unique_id)."),
    threshold: float = typer.Option(None, "--threshold", help="Match probability to cluster or link at "
                                                              "(default: the model's decision.threshold)."),
    decision: str = typer.Option(None, "--decision", help="clusters (default) or best-match (link only)."),
    margin: float = typer.Option(None, "--margin", help="best-match: bits of match weight the best candidate must "
                                                        "lead the runner-up by (default: the model's, else 1)."),
    min_probability: float = typer.Option(None, "--min-probability", help="Pairs below it are not kept (default: "
                                                                          "nirlink.linkage.prediction-floor, 0.01)."),
    run_on: str = typer.Option("auto", "--run-on", help="auto (by size: nirlink.linkage.in-process-rows), process "
                                                        "or cluster."),
    fmt: str = typer.Option("auto", "--format", help="auto (from the extension), csv or parquet."),
    separator: str = typer.Option("auto", "--separator", help="CSV separator: auto, ';', ',', tab, '|'."),
    encoding: str = typer.Option("auto", "--encoding", help="CSV encoding: auto, utf-8 or latin-1."),
    decimal: str = typer.Option("auto", "--decimal", help="Decimal separator of 'number' columns: auto, '.' or ','."),
    null_values: list[str] = typer.Option([], "--null-value", help="A text read as null, besides empty fields "
                                                                   "(repeatable)."),
    charts: bool = typer.Option(True, "--charts/--no-charts", help="Write Splink's model charts beside model.json."),
    scheduler: str = typer.Option(None, "--scheduler", callback=scheduler_address, help="Dask scheduler address (runs on that cluster)."),
    workers: int = typer.Option(None, "--workers", help="Workers of the local cluster."),
    output: OutputFormat = typer.Option(OutputFormat.text, "--output", help="text or json."),
) -> None:
    """Link two datasets or dedupe one with any model file, training it first if it is untrained.

    Everything is checked before anything runs: the model file, the inputs and their columns,
    the record ids, every SQL condition of the model. Small inputs run in this process, large
    ones on a Dask cluster (local unless --scheduler).

    Example: nirlink link --model linkage/models/person-link.json --input a.csv --input b.csv --out run/
    """
    from nirlink.engine.io._datasets import staged_directory
    from nirlink.linkage._front import FrontOptions, prepare, run

    if threshold is not None and not 0 < threshold < 1:
        raise typer.BadParameter("--threshold must be within (0, 1)")
    if min_probability is not None and not 0 <= min_probability < 1:
        raise typer.BadParameter("--min-probability must be within [0, 1)")
    if decision not in (None, "clusters", "best-match"):
        raise typer.BadParameter(f"--decision must be clusters or best-match, got {decision!r}")
    if run_on not in ("auto", "process", "cluster"):
        raise typer.BadParameter(f"--run-on must be auto, process or cluster, got {run_on!r}")
    if margin is not None and margin < 0:
        raise typer.BadParameter("--margin must be >= 0")
    _check_out(out)
    spec = load_model_arg(model)
    if decision == "best-match" and len(inputs) != 2:
        raise typer.BadParameter("--decision best-match links two inputs: a deduplication makes clusters")
    id_column = id_column or spec.id_column
    csv = CsvArgs(fmt, separator, encoding, decimal, tuple(null_values))
    tables = read_inputs(spec, inputs, id_column=id_column, csv=csv)
    prep = prepare(spec, tables, id_column=id_column)
    cfg, floor = link_config(min_probability)
    where, why = _where(run_on, scheduler, prep.rows)
    from nirlink.engine import _config

    threads = int(_config.get("linkage.in-process-threads", 0)) or os.cpu_count() or 1
    opts = FrontOptions(threshold=threshold, decision=decision, margin=margin, min_probability=floor, config=cfg,
                        charts=charts, threads=threads)
    settings = {"min_probability": floor, "min_probability_from": "--min-probability" if min_probability is not None
                else "nirlink.linkage.prediction-floor", "rows_per_scoring_task": cfg.rows_per_scoring_task,
                "duckdb_threads": cfg.duckdb_threads if where == "cluster" else threads,
                "duckdb_memory_limit": cfg.duckdb_memory_limit if where == "cluster" else None}
    with staged_directory(out) as tmp:
        if where == "process":
            info = run(prep, tmp, options=opts)
            execution = {"where": "this process", "why": why}
        else:
            from nirlink.cluster import open_client

            with open_client(scheduler, n_workers=workers, dashboard=False) as client:
                info = run(prep, tmp, options=opts, client=client)
                execution = {"where": "cluster", "why": why, "workers": len(client.scheduler_info()["workers"])}
        manifest = write_manifest(tmp, model_arg=model, model=spec, inputs=tables, csv=csv, id_column=id_column,
                                  execution=execution, settings=settings, info=info)

    def render(m):
        r = m["result"]
        d = r["decision"]
        typer.echo(f"{r['scoring']['pairs']:,} pairs at p >= {m['settings']['min_probability']} -> {out / 'pairs'} "
                   f"({m['execution']['where']}: {m['execution']['why']})")
        if d["rule"] == "clusters":
            typer.echo(f"{d['clusters']:,} clusters of {d['records']:,} records at p >= {d['threshold']} "
                       f"({d['records_in_clusters_of_two_or_more']:,} in clusters of two or more) -> {out / 'clusters'}")
        else:
            typer.echo(f"best match at p >= {d['threshold']}, margin {d['margin']} bits: {d['linked']:,} linked, "
                       f"{d['ambiguous']:,} ambiguous, {d['unlinked']:,} unlinked -> {out / 'links'}")
        typer.echo(f"model: {out / 'model.json'}; manifest: {out / '_manifest.json'}")

    emit(manifest, output, render)


@app.command("evaluate")
@handle_errors
def evaluate(
    link_dir: Path = typer.Option(None, "--links", help="A link stage output (JOB/link) or a `nirlink link` output."),
    rows: Path = typer.Option(None, "--rows", help="Job: the ingest stage output the links were made from."),
    truth: Path = typer.Option(None, "--truth", help="Job: the truth dataset (nirlink synth's truth/)."),
    signals: Path = typer.Option(None, "--signals", help="Evaluate a signals stage output (job_dir or "
                                                         "job_dir/signals) instead of links: per rule precision "
                                                         "and recall against the planted truth."),
    labels: str = typer.Option(None, "--labels", help="`nirlink link` run: the inputs' column holding each record's "
                                                      "true cluster (entity) label."),
    true_pairs: Path = typer.Option(None, "--true-pairs", help="`nirlink link` run: a CSV or Parquet file of true "
                                                               "pairs (<id>_l, <id>_r, or its first two columns)."),
    thresholds: str = typer.Option("0.5,0.8,0.9,0.95,0.99", "--thresholds", help="`nirlink link` run: match "
                                                                                 "probabilities to evaluate at."),
    memory_limit: str = typer.Option("4GB", "--memory-limit", help="DuckDB memory limit (e.g. 4GB, 500MB); "
                                                                    "beyond it DuckDB spills to disk."),
    temp_dir: Path = typer.Option(None, "--temp-dir", help="Where the temporary files go (removed afterwards); "
                                                           "default: the system's temporary directory."),
    output: OutputFormat = typer.Option(OutputFormat.text, "--output", help="text or json."),
) -> None:
    """A job's links against the synthetic truth (precision, recall, F1 per signature and row, by NIR
    status, blocking reach, register duplicates); with --signals, each signal rule's precision and recall
    against the planted truth; or a `nirlink link` run's pairs against true labels or true pairs (pair
    precision, recall and F1 at several thresholds, blocking reach).

    Example: nirlink evaluate --links demo/job/link --rows demo/job/ingest --truth demo/data/truth
    Example: nirlink evaluate --links run/ --labels person_id
    """
    if signals is not None:
        if truth is None:
            raise InputError("evaluate: --signals needs --truth")
        from ._evaluate_job import evaluate_signals

        return evaluate_signals(signals, truth, output)
    from nirlink.kernels import InputError

    if link_dir is None:
        raise InputError("evaluate: give --links and --rows (or --signals JOB_DIR), or --links with --labels or "
                         "--true-pairs for a `nirlink link` run")
    if read_manifest(link_dir) is not None or labels is not None or true_pairs is not None:
        return _evaluate_front(link_dir, labels, true_pairs, thresholds, output)
    if rows is None or truth is None:
        raise InputError("evaluate: a job's links need --links and --rows and --truth; a `nirlink link` run "
                         "needs --labels or --true-pairs")
    from ._evaluate_job import evaluate_job

    evaluate_job(link_dir, rows, truth, memory_limit=memory_limit, temp_dir=temp_dir, output=output)


def _evaluate_front(run_dir: Path, labels: str | None, true_pairs: Path | None, thresholds: str,
                    output: OutputFormat) -> None:
    from nirlink.linkage import load_model
    from nirlink.linkage._front import prepare
    from nirlink.linkage._front_evaluate import evaluate_run

    manifest = read_manifest(run_dir)
    if manifest is None:
        raise typer.BadParameter(f"{run_dir} is not the output of `nirlink link` (no _manifest.json of one)")
    if (labels is None) == (true_pairs is None):
        raise typer.BadParameter("give the truth as --labels COLUMN or --true-pairs FILE (one of them)")
    try:
        ts = sorted({float(t) for t in thresholds.split(",") if t.strip()})
    except ValueError:
        raise typer.BadParameter(f"--thresholds must be numbers separated by commas, got {thresholds!r}") from None
    model = load_model(run_dir / "model.json")
    id_column = manifest["id_column"]
    csv = CsvArgs(**{**manifest["reading"], "null_values": tuple(manifest["reading"]["null_values"])})
    paths = [Path(i["path"]) for i in manifest["inputs"]]
    tables = read_inputs(model, paths, id_column=id_column, csv=csv, extra=(labels,) if labels else ())
    prep = prepare(model, tables, id_column=id_column)
    label_arrays = [t.column(labels).combine_chunks() for _, t in tables] if labels else None
    pairs_table = None
    if true_pairs is not None:
        from nirlink.engine.io._tables import read_table, table_columns

        present = table_columns(true_pairs)
        wanted = [f"{id_column}_l", f"{id_column}_r"]
        cols = wanted if all(c in present for c in wanted) else present[:2]
        if len(cols) < 2:
            raise typer.BadParameter(f"--true-pairs {true_pairs}: needs two id columns ({', '.join(wanted)})")
        pairs_table = read_table(true_pairs, cols, keep_native=cols, what="true pairs")
    run_threshold = manifest["result"]["decision"]["threshold"]
    report = evaluate_run(prep, run_dir / "pairs", thresholds=sorted({*ts, run_threshold}), labels=label_arrays,
                          true_pairs=pairs_table, floor=manifest["settings"]["min_probability"])

    def render(r):
        from rich.console import Console
        from rich.table import Table

        console = Console(width=max(160, Console().width), highlight=False)
        console.print(f"{r['true_pairs']:,} true pairs; {r['scored_pairs']:,} scored pairs kept (p >= {r['floor']})")
        table = Table()
        for col in ("threshold", "predicted pairs", "true pos.", "false pos.", "false neg.", "precision", "recall",
                    "F1"):
            table.add_column(col, justify="right", no_wrap=True)
        for row in r["thresholds"]:
            table.add_row(f"{row['threshold']:g}", f"{row['predicted']:,}", f"{row['true_positives']:,}",
                          f"{row['false_positives']:,}", f"{row['false_negatives']:,}", f"{row['precision']:.5f}",
                          f"{row['recall']:.5f}", f"{row['f1']:.5f}")
        console.print(table)
        b = r["blocking"]
        console.print(f"blocking reaches {b['reach']:.4%} of the true pairs ({b['reached']:,}/{r['true_pairs']:,}); "
                      "by rule (first admitting): " + ", ".join(f"{n} {v:,}" for n, v in b["by_rule"].items()))

    emit(report, output, render)

