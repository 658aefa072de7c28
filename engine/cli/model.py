"""`nirlink model train|show`: linkage models (Splink settings plus their training recipe)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import typer

from . import app
from ._linkfront import CsvArgs, load_model_arg, read_inputs
from ._utilities import OutputFormat, emit, handle_errors

model_app = typer.Typer(help="Linkage models (Splink settings plus their training recipe).\n\n"
                             "Example: nirlink model show identity", no_args_is_help=True)
app.add_typer(model_app, name="model")


@model_app.command("train")
@handle_errors
def model_train(
    inputs: list[Path] = typer.Option(..., "--input", help="One dataset (dedupe) or two (records, register)."),
    out: Path = typer.Option(..., "--out", help="Where to write the trained model (JSON)."),
    model: str = typer.Option("identity", "--model", help="Model file or built-in name."),
    id_column: str = typer.Option(None, "--id-column", help="The records' unique id column (default: the model's)."),
    fmt: str = typer.Option("auto", "--format", help="auto (from the extension), csv or parquet."),
    separator: str = typer.Option("auto", "--separator", help="CSV separator: auto, ';', ',', tab, '|'."),
    encoding: str = typer.Option("auto", "--encoding", help="CSV encoding: auto, utf-8 or latin-1."),
    decimal: str = typer.Option("auto", "--decimal", help="Decimal separator of 'number' columns."),
    output: OutputFormat = typer.Option(OutputFormat.text, "--output", help="text or json."),
) -> None:
    """Train a model on data and save it (plain Splink loads the 'splink' part unchanged); the inputs are
    read and checked as `nirlink link` reads them.

    Example: nirlink model train --model linkage/models/person-dedupe.json --input people.csv --out trained.json
    """
    from nirlink.linkage import save_model
    from nirlink.linkage._front import prepare, save_charts, train_on

    spec = load_model_arg(model)
    id_column = id_column or spec.id_column
    tables = read_inputs(spec, inputs, id_column=id_column, csv=CsvArgs(fmt, separator, encoding, decimal))
    prep = prepare(spec, tables, id_column=id_column)
    sides = [s.train for s in prep.sides]
    info = train_on(spec, sides[0], sides[1] if len(sides) > 1 else None, threads=os.cpu_count() or 1)
    save_model(spec, out)
    info["charts"] = save_charts(spec, out.parent, out.stem)
    emit(info, output, lambda d: typer.echo(f"trained {spec.name!r} -> {out} (charts: {', '.join(d['charts'])})"))


_DECISION_MEANING = {
    "rule": "'evidence' (the job): decide among a signature's candidates on their evidence (match weight without "
            "the prior); 'clusters' / 'best-match': nirlink link's decisions (docs/model-file.md)",
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
    spec = load_model_arg(model)
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
            "levels": rows, "blocking": [{"name": b.name, "sql": b.sql, "fallback": list(b.fallback)}
                                          for b in spec.blocking],
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
            # a fallback rule pairs only the left records with no right record equal on its columns
            only = (f"  (fallback: only records without an equal right record on {', '.join(b['fallback'])})"
                    if b["fallback"] else "")
            blocking.add_row(b["name"], b["sql"] + only)
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
