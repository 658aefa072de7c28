"""`nirlink link`, `nirlink model train|show`, `nirlink evaluate`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer

from . import app
from ._utilities import OutputFormat, emit, handle_errors

model_app = typer.Typer(help="Linkage models (Splink settings plus their training recipe).\n\n"
                             "Example: nirlink model show identity", no_args_is_help=True)
app.add_typer(model_app, name="model")


def _model(path: str | None, builtin: str):
    from nirlink.linkage import identity_model, load_model, register_model

    if path in (None, "identity", "register"):
        return identity_model() if (path or builtin) == "identity" else register_model()
    return load_model(path)


@app.command("link")
@handle_errors
def link(
    model: str = typer.Option("identity", "--model", help="Model file (JSON), or the built-in 'identity' / 'register'."),
    inputs: list[Path] = typer.Option(..., "--input", help="One dataset (dedupe) or two (link); CSV or Parquet."),
    out: Path = typer.Option(..., "--out", help="Output directory: pairs/, clusters/, model.json, charts."),
    id_column: str = typer.Option("unique_id", "--id-column", help="The records' unique id column."),
    threshold: float = typer.Option(None, "--threshold", help="Match probability for clusters (default: the model's)."),
    scheduler: str = typer.Option(None, "--scheduler", help="Dask scheduler address; default: a local cluster."),
    workers: int = typer.Option(None, "--workers", help="Workers of the local cluster."),
    output: OutputFormat = typer.Option(OutputFormat.text, "--output", help="text or json."),
) -> None:
    """Score and cluster records with any nirlink model file (training it first if it is untrained).

    Example: nirlink link --model identity --input records.parquet --input register.parquet --out links/
    """
    from nirlink.cluster import open_client
    from nirlink.linkage._front import link_datasets

    spec = _model(model, "identity")
    if threshold is not None and not 0 < threshold < 1:
        raise typer.BadParameter("--threshold must be within (0, 1)")
    with open_client(scheduler, n_workers=workers, dashboard=False) as client:
        info = link_datasets(spec, [str(p) for p in inputs], out, id_column=id_column, threshold=threshold,
                             client=client)

    def render(d):
        typer.echo(f"{d['scoring']['pairs']:,} scored pairs in {d['scoring']['tasks']} tasks -> {out / 'pairs'}")
        typer.echo(f"{d['clusters']:,} clusters of {d['clustered_records']:,} records at p >= {d['threshold']} "
                   f"-> {out / 'clusters'}")
        typer.echo(f"model: {out / 'model.json'}")

    emit(info, output, render)


@model_app.command("train")
@handle_errors
def model_train(
    inputs: list[Path] = typer.Option(..., "--input", help="One dataset (dedupe) or two (records, register)."),
    out: Path = typer.Option(..., "--out", help="Where to write the trained model (JSON)."),
    model: str = typer.Option("identity", "--model", help="Model file or built-in name."),
    id_column: str = typer.Option("unique_id", "--id-column"),
    output: OutputFormat = typer.Option(OutputFormat.text, "--output", help="text or json."),
) -> None:
    """Train a model on data and save it (plain Splink loads the 'splink' part unchanged).

    Example: nirlink model train --input records.parquet --input register.parquet --out models/trained.json
    """
    from nirlink.linkage import save_model
    from nirlink.linkage._front import read_dataset, save_charts, train_on

    spec = _model(model, "identity")
    tables = [read_dataset(p, id_column=id_column) for p in inputs]
    info = train_on(spec, tables[0], tables[1] if len(tables) > 1 else None)
    save_model(spec, out)
    info["charts"] = save_charts(spec, out.parent, out.stem)
    emit(info, output, lambda d: typer.echo(f"trained {spec.name!r} -> {out} (charts: {', '.join(d['charts'])})"))


_DECISION_MEANING = {
    "rule": "'evidence': decide among a signature's candidates on their evidence (match weight without the prior)",
    "threshold": "share of the best person among the candidates and 'none' (2**e / sum) needed to link",
    "margin": "bits of evidence the best person must lead the runner-up by",
    "none_weight": "bits of evidence of the 'none of the candidates' option",
}


def _weight(p: float) -> float:
    """The match weight of a probability: log2(p / (1 - p))."""
    return math.log2(p / (1 - p))


def _level_cells(null: bool, m: float | None, u: float | None) -> tuple[str, str, str]:
    """m, u and match weight of one level as printed: never an empty cell."""
    if null:
        return "n/a (null level)", "n/a (null level)", "null level: no weight"
    m_s = "untrained" if m is None else f"{m:.6g}"
    u_s = "untrained" if u is None else f"{u:.6g}"
    if m is None or u is None:
        w = "untrained"
    elif u == 0:
        w = "+inf (u = 0)" if m > 0 else "undefined (m = u = 0)"
    elif m == 0:
        w = "-inf (m = 0)"
    else:
        w = f"{math.log2(m / u):+.2f}"
    return m_s, u_s, w


@model_app.command("show")
@handle_errors
def model_show(
    model: str = typer.Argument("identity", help="Model file or built-in name."),
    output: OutputFormat = typer.Option(OutputFormat.text, "--output", help="text or json."),
) -> None:
    """Comparisons and their levels in order with m, u and match weight log2(m/u); the prior and its
    weight; blocking rules; decision thresholds.

    Example: nirlink model show /jobs/careers-2026/link/model.json
    """
    spec = _model(model, "identity")
    trained = spec.settings() if spec.trained else None
    rows, null_levels = [], []
    for i, comp in enumerate(spec.comparisons):
        levels = trained["comparisons"][i]["comparison_levels"] if trained else [None] * len(comp.levels)
        for lv, tl in zip(comp.levels, levels):
            m = tl.get("m_probability") if tl else None
            u = tl.get("u_probability") if tl else None
            w = math.log2(m / u) if m and u else None
            rows.append({"comparison": comp.name, "level": lv.label, "m": m, "u": u, "weight": w,
                         "tf": lv.tf_column})
            null_levels.append(lv.null)
    prior = trained["probability_two_random_records_match"] if trained else None
    data = {"name": spec.name, "link_type": spec.link_type, "trained": spec.trained,
            "probability_two_random_records_match": prior,
            "prior_match_weight": _weight(prior) if prior is not None and 0 < prior < 1 else None,
            "levels": rows, "blocking": [{"name": b.name, "sql": b.sql} for b in spec.blocking],
            "decision": spec.decision}

    def render(d):
        from rich import box
        from rich.console import Console
        from rich.table import Table

        console = Console(width=max(Console().width, 240), highlight=False)
        console.print(f"model {d['name']} ({d['link_type']}, {'trained' if d['trained'] else 'untrained'})")
        p = d["probability_two_random_records_match"]
        if p is None:
            console.print("prior (probability two random records match): untrained")
        else:
            w = d["prior_match_weight"]
            console.print(f"prior (probability two random records match): {p:.6g}, match weight "
                          f"log2(p/(1-p)) = {'n/a' if w is None else f'{w:+.2f}'}")
        console.print("\ncomparison levels, in the order they are tried (the first that applies counts); "
                      "match weight = log2(m/u), added to the prior's:")
        levels = Table(box=box.SQUARE)
        for col, just in (("comparison", "left"), ("#", "right"), ("level", "left"), ("m", "right"),
                          ("u", "right"), ("match weight", "right"), ("term frequency", "left")):
            levels.add_column(col, justify=just, no_wrap=True)
        rs = d["levels"]
        k = 0
        for j, (r, null) in enumerate(zip(rs, null_levels)):
            k = 0 if j == 0 or rs[j - 1]["comparison"] != r["comparison"] else k + 1
            m_s, u_s, w_s = _level_cells(null, r["m"], r["u"])
            levels.add_row(r["comparison"], str(k), r["level"], m_s, u_s, w_s,
                           f"adjusted on {r['tf']}" if r["tf"] else "none",
                           end_section=j == len(rs) - 1 or rs[j + 1]["comparison"] != r["comparison"])
        console.print(levels)
        console.print("blocking rules (a pair is scored when any rule admits it):")
        blocking = Table(box=box.SQUARE)
        blocking.add_column("rule", no_wrap=True)
        blocking.add_column("condition", no_wrap=True)
        for b in d["blocking"]:
            blocking.add_row(b["name"], b["sql"])
        console.print(blocking)
        console.print("decision:")
        decision = Table(box=box.SQUARE)
        for col in ("setting", "value", "meaning"):
            decision.add_column(col, no_wrap=True)
        for key, value in d["decision"].items():
            meaning = _DECISION_MEANING.get(key, "(see the model file's decision section)")
            if key == "threshold" and isinstance(value, (int, float)) and 0 < value < 1:
                meaning += f" (a lone candidate: evidence >= none_weight {_weight(value):+.2f} bits)"
            decision.add_row(key, json.dumps(value), meaning)
        if not d["decision"]:
            decision.add_row("(none)", "n/a", "the model file sets no decision thresholds: the link defaults apply")
        console.print(decision)

    emit(data, output, render)


@app.command("evaluate")
@handle_errors
def evaluate(
    link_dir: Path = typer.Option(None, "--links", help="A link stage output (job_dir/link)."),
    rows: Path = typer.Option(None, "--rows", help="The ingest stage output the links were made from."),
    truth: Path = typer.Option(..., "--truth", help="Truth dataset (nirlink synth's truth/)."),
    signals: Path = typer.Option(None, "--signals", help="Evaluate a signals stage output (job_dir or "
                                                         "job_dir/signals) instead of links: per rule precision "
                                                         "and recall against the planted truth."),
    memory_limit: str = typer.Option("4GB", "--memory-limit", help="DuckDB memory limit (e.g. 4GB, 500MB); "
                                                                    "beyond it DuckDB spills to disk."),
    temp_dir: Path = typer.Option(None, "--temp-dir", help="Where the temporary files go (removed afterwards); "
                                                           "default: the system's temporary directory."),
    output: OutputFormat = typer.Option(OutputFormat.text, "--output", help="text or json."),
) -> None:
    """Precision, recall and F1 of a link table against the truth, per signature and per row, by NIR status;
    ambiguous and unlinked counts; blocking reach (with the link stage's model); register duplicates.
    With --signals, each signal rule's precision and recall against the planted truth instead.

    Example: nirlink evaluate --links demo/job/link --rows demo/job/ingest --truth demo/data/truth
    """
    if signals is not None:
        _evaluate_signals(signals, truth, output)
        return
    if link_dir is None or rows is None:
        from nirlink.kernels import InputError

        raise InputError("evaluate: give --links and --rows (or --signals JOB_DIR)")
    from nirlink.engine.stages._link import ingested_files
    from nirlink.linkage import load_model
    from nirlink.linkage._evaluate import evaluate as run

    files = ingested_files(rows)
    model = load_model(link_dir / "model.json") if (link_dir / "model.json").exists() else None
    report = run(link_dir, files["career"] + files["resource"], truth, model=model, memory_limit=memory_limit,
                 temp_dir=temp_dir)

    def render(r):
        from rich.console import Console
        from rich.table import Table

        table = Table()
        for col in ("level", "NIR status", "precision", "recall", "F1", "true pos.", "false pos.", "false neg.",
                    "ambiguous", "unlinked"):
            table.add_column(col, justify="left" if col in ("level", "NIR status") else "right", no_wrap=True)
        for level in ("signatures", "rows"):
            groups = [("all", r[level]), *r[f"{level}_by_nir_status"].items()]
            for i, (status, s) in enumerate(groups):
                table.add_row(level if i == 0 else "", status or "(none)", f"{s['precision']:.5f}",
                              f"{s['recall']:.5f}", f"{s['f1']:.5f}", f"{s['true_positives']:,}",
                              f"{s['false_positives']:,}", f"{s['false_negatives']:,}", f"{s['ambiguous']:,}",
                              f"{s['unlinked']:,}", end_section=i == len(groups) - 1)
        console = Console(width=max(200, Console().width), highlight=False)
        console.print("links against the truth (false negatives = ambiguous + unlinked):")
        console.print(table)
        if "blocking" in r:
            b = r["blocking"]
            console.print(f"blocking reaches the true pair of {b['reach']:.4%} of the signatures left to the model "
                          f"({b['true_pair_reached']:,}/{b['signatures_to_model']:,}); by rule: "
                          + ", ".join(f"{n} {v:,}" for n, v in b["reached_by_rule"].items()), highlight=False)
        else:
            console.print("blocking reach: not measured (no model.json or signatures/ in the link directory)",
                          highlight=False)
        if "register_duplicates" in r:
            d = r["register_duplicates"]
            console.print(f"register duplicates: precision {d['precision']:.4f} recall {d['recall']:.4f} "
                          f"(tp {d['true_positives']:,}, fp {d['false_positives']:,}, "
                          f"fn {d['false_negatives']:,})", highlight=False)

    emit(report, output, render)


def _evaluate_signals(signals: Path, truth: Path, output: OutputFormat) -> None:
    from nirlink.engine.synth._evaluate_signals import evaluate_signals

    report = evaluate_signals(signals, truth)

    def render(r):
        from rich.console import Console
        from rich.table import Table

        table = Table()
        for col in ("rule", "precision", "recall", "cases", "truth", "true pos.", "false pos.", "false neg."):
            table.add_column(col, justify="left" if col == "rule" else "right", no_wrap=True)
        rows = list(r["rules"].items())
        if "declarants" in r:
            d = r["declarants"]
            rows += [("declarants: top k", d["top_k"]), ("declarants: top 1%", d["top_1_percent"])]
        for name, s in rows:
            table.add_row(name, f"{s['precision']:.4f}", f"{s['recall']:.4f}", f"{s['cases']:,}", f"{s['truth']:,}",
                          f"{s['true_positives']:,}", f"{s['false_positives']:,}", f"{s['false_negatives']:,}")
        console = Console(width=max(160, Console().width), highlight=False)
        console.print("signals against the planted truth:")
        console.print(table)

    emit(report, output, render)
