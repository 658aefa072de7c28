"""The report's signals section: cases per rule and month (a chart and a table), the top of the
declarant scorecard, and links to the datasets.

Built from the signals stage's manifest and datasets with DuckDB (counts per rule and month,
the scorecard's first rows): no person appears, only counts, declarant ids (employers' and
payers' SIRETs; anything shaped like a NIR masked) and their rates. Links are relative to the report's own directory, so they
follow the job directory when it is moved.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

from nirlink.engine.jobs._joblog import mask_nirs

from . import _format as f
from ._charts import Charts

__all__ = ["signals_section", "case_counts", "top_declarants", "PERSON_RULES", "TOP_DECLARANTS"]

PERSON_RULES = ("income_after_death", "nir_shared", "identity_conflict", "possible_pension_non_take_up",
                "low_resources_no_minimum")
TOP_DECLARANTS = 20


def _files(directory: Path) -> str | None:
    return f"read_parquet('{directory}/**/*.parquet')" if directory.exists() and any(
        directory.rglob("*.parquet")) else None


def case_counts(signals: Path) -> dict[str, dict[str, int]]:
    """``{rule: {"YYYY-MM": cases}}`` of the person-level rules (month of each case's period)."""
    import duckdb

    out: dict[str, dict[str, int]] = {}
    with duckdb.connect() as con:
        for rule in PERSON_RULES:
            src = _files(signals / rule)
            if src is None:
                continue
            rows = con.execute(f"select strftime(period, '%Y-%m') as m, count(*) from {src} group by 1 order by 1"
                               ).fetchall()
            out[rule] = {m: int(n) for m, n in rows}
    return out


def top_declarants(signals: Path, n: int = TOP_DECLARANTS) -> list[dict[str, Any]]:
    """The first ``n`` ranked declarants of the scorecard, by rank."""
    import duckdb

    src = _files(signals / "declarant_scorecard")
    if src is None:
        return []
    with duckdb.connect() as con:
        cur = con.execute(f"""select rank, declarant, rows, persons, problem_persons, problem_persons_share,
                                     rejects, score, excess_z from {src} where rank is not null
                              order by rank limit {int(n)}""")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]


def _link(target: Path, report: Path, label: str) -> str:
    href = os.path.relpath(target, report.parent)
    return f"<a href='{html.escape(href)}'>{html.escape(label)}</a>"


def signals_section(m: dict, job: Path, report: Path, charts: Charts, export: dict | None = None) -> str:
    """The section for the signals manifest ``m`` of the job in ``job``, for a page at ``report``."""
    signals = job / "signals"
    counts = case_counts(signals)
    out = ["<h2>Signals</h2>",
           f"<p>Judged at month {html.escape(str(m.get('as_of_month') or '–'))}; settings: "
           f"<code>{html.escape(', '.join(f'{k} = {v}' for k, v in sorted(m.get('settings', {}).items())))}</code></p>"]
    cases = m.get("cases", {})
    out.append(f.table(["rule", "cases", "months with cases"],
                       [[rule, cases.get(rule, 0), len(counts.get(rule, {}))] for rule in PERSON_RULES]))
    months = sorted({mo for per in counts.values() for mo in per})
    if months:
        rules = [r for r in PERSON_RULES if counts.get(r)]
        out.append(charts.stacked_columns(
            "signals", months, {r: [counts[r].get(mo, 0) for mo in months] for r in rules},
            title="Cases per month of their period, by rule", value_label="cases"))
        out.append("<p>Cases per rule and month (months with at least one case)</p>" + f.table(
            ["month", *rules, "all"],
            [[mo, *[counts[r].get(mo, 0) for r in rules], sum(counts[r].get(mo, 0) for r in rules)]
             for mo in months]))
    top = top_declarants(signals)
    card = m.get("scorecard", {})
    if top:
        out.append(f"<p>Declarant scorecard: the first {len(top)} of {f.count(cases.get('declarant_scorecard'))} "
                   f"declarants (ranked from {f.count(card.get('ranked_from_rows'))} rows), by the evidence that "
                   f"their share of problem persons exceeds {f.share(card.get('reference_share'), 1)} "
                   f"(the population's is {f.share(card.get('population_problem_share'), 1)})</p>")
        out.append(f.table(
            ["rank", "declarant", "rows", "persons", "problem persons", "% of persons", "rejects",
             "problem rows %", "excess z"],
            [[int(d["rank"]), mask_nirs(str(d["declarant"])), d["rows"], d["persons"], d["problem_persons"],
              f.Raw(f.share(d["problem_persons_share"], 1)), d["rejects"], f.Raw(f.share(d["score"], 1)),
              f.Raw(f.decimal(d["excess_z"], 1))] for d in top]))
    links = []
    for rule in (*PERSON_RULES, "declarant_quality", "declarant_scorecard"):
        if (signals / rule).exists():
            parts = [_link(signals / rule, report, f"signals/{rule}/")]
            if export and f"signals/{rule}" in export.get("tables", {}):
                parts.append(_link(job / "export" / "signals" / rule, report, f"export/signals/{rule}/"))
            rows = m.get("tables", {}).get(rule, {}).get("rows")
            links.append([f.Raw(" · ".join(parts)), rows])
    if links:
        out.append("<p>Datasets (Parquet; persons pseudonymised in the export)</p>"
                   + f.table(["dataset", "rows"], links))
    return "".join(out)
