"""`nirlink explain`: why a row (or a signature) linked or did not, from a finished job's directory."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import typer

from . import app
from ._utilities import OutputFormat, emit, handle_errors


def _fmt(x: Any, spec: str = "+.2f") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return format(x, spec)


def _rule_text(rule: dict[str, Any]) -> str:
    if not rule:
        return "no decision rule recorded"
    if rule.get("rule"):
        return str(rule["rule"])
    return ", ".join(f"{k} {v}" for k, v in rule.items() if not isinstance(v, dict) and not k.startswith(
        ("signatures_", "rows_", "linked_by_", "decided_by_")))


def _render(d: dict[str, Any], show_values: bool) -> None:
    dec = d["decision"]
    head = f"signature {d['signature']}"
    if d.get("record_id") is not None:
        head = f"record {d['record_id']} ({d['record_file']}): " + head
    typer.echo(f"{head}: {dec['rows']} row(s), declared NIR {dec['nir_status']}")
    typer.echo(f"decision: {dec['status']}" + (f" by {dec['method']}" if dec.get("method") else "") +
               (f" to person {dec['person']}" if dec.get("person") else "") +
               f"; best probability {_fmt(dec.get('match_probability'), '.4f')}, weight "
               f"{_fmt(dec.get('match_weight'))}; runner-up probability "
               f"{_fmt(dec.get('runner_up_probability'), '.4f')}; {dec['candidates']} candidate(s)")
    typer.echo(f"rule: {_rule_text(d['rule'])}")
    if d.get("deterministic_rule"):
        typer.echo(f"deterministic pass: {d['deterministic_rule']}")
    if show_values and d.get("record"):
        rec = d["record"]
        typer.echo("record: " + ", ".join(f"{k}={rec[k]}" for k in ("nir", "last_name_key", "first_names_norm",
                                                                   "birth_year", "birth_month", "birth_day", "sex",
                                                                   "birth_place") if k in rec))
    if not d["candidates"]:
        typer.echo("no candidate: no blocking rule paired this signature with a register row")
    for c in d["candidates"]:
        typer.echo(f"\ncandidate {c['rank']}: person {c['person']} (register {c['register_nir']}), {c['method']}, "
                   f"weight {_fmt(c['match_weight'])}, probability {_fmt(c['match_probability'], '.4f')}")
        w = c.get("waterfall")
        if not w:
            continue
        typer.echo(f"  {'step':<12} {'level':<48} {'weight':>8} {'tf adj':>7} {'total':>8}")
        for s in w["steps"]:
            tf = _fmt(s.get("tf_adjustment")) if s.get("tf_adjustment") else ""
            line = f"  {s['step']:<12} {str(s['level'])[:48]:<48} {_fmt(s['weight']):>8} {tf:>7} {_fmt(s['cumulative']):>8}"
            if show_values and s.get("values"):
                line += "  " + "; ".join(f"{k}: {a} | {b}" for k, (a, b) in s["values"].items())
            typer.echo(line)
        typer.echo(f"  {'final':<12} {'':<48} {'':>8} {'':>7} {_fmt(w['match_weight']):>8}  "
                   f"(probability {_fmt(w['match_probability'], '.6f')})")


def _rows_with_signatures(directory: Path) -> list[str]:
    """The files that say which signature a record id has: the linked rows of the export (or
    of the aggregate stage, when there is no export) carry it; else the ingested rows, whose
    identity gives it."""
    import pyarrow.parquet as pq

    from nirlink.engine.jobs._release import released
    from nirlink.engine.stages._link import ingested_files
    from nirlink.kernels import InputError

    for stage in ("export", "aggregate"):
        files = [str(f) for name in ("career_rows", "resource_rows")
                 for f in sorted((directory / stage / name).glob("**/*.parquet"))]
        if files and "signature" in pq.read_schema(files[0]).names:
            return files
    if "*" in released(directory, "ingest"):
        raise InputError(f"{directory}: the ingested rows were released once the job no longer needed them "
                         "(setting nirlink.jobs.keep) and no linked rows of the job carry their signature: "
                         "give --signature, or run the job again with --restart, keeping ingest "
                         "(DASK_NIRLINK__JOBS__KEEP=ingest)")
    files = ingested_files(directory / "ingest")
    return files["career"] + files["resource"]


@app.command("explain")
@handle_errors
def explain(
    job: str = typer.Argument(..., help="Job id or job directory (a finished job)."),
    record_id: int = typer.Argument(None, help="A record id of a career or resource row."),
    signature: int = typer.Option(None, "--signature",
                                  help="Explain a signature instead of a record (negative ids: --signature=-123)."),
    html: Path = typer.Option(None, "--html", help="Also write Splink's waterfall chart of the candidates here."),
    show_values: bool = typer.Option(False, "--show-values",
                                     help="Show the identity values compared (names, birth dates; NIRs stay masked)."),
    output: OutputFormat = typer.Option(OutputFormat.text, "--output", help="text or json."),
) -> None:
    """Why a row linked or did not: its signature, its best candidates, and for each the comparison
    levels with the match weight each contributes, from the prior to the final weight; the rule
    and thresholds applied. Reads the job directory only (nothing re-runs); NIRs are masked.

    Example: nirlink explain /jobs/careers-2026 4711
    """
    from nirlink.engine.jobs._joblog import mask_fields, mask_nirs
    from nirlink.engine.jobs._registry import find_job
    from nirlink.kernels import InputError
    from nirlink.linkage._explain import explain_signature, signatures_of_records

    if (record_id is None) == (signature is None):
        raise InputError("give a record id or --signature (one of them)")
    directory = find_job(job)
    where: dict[str, Any] = {}
    if record_id is not None:
        files = _rows_with_signatures(directory)
        found = signatures_of_records(files, [record_id]).get(int(record_id), [])
        if not found:
            raise InputError(f"record {record_id} is in no career or resource row of {directory}")
        sigs = sorted({s for _, s in found})
        if len(sigs) > 1:
            raise InputError(f"record id {record_id} stands in {len(found)} rows with different identities "
                             f"(signatures {', '.join(map(str, sigs))}): give --signature")
        signature = sigs[0]
        where = {"record_id": int(record_id), "record_file": os.path.relpath(found[0][0], directory)}
    data = explain_signature(directory / "link", int(signature), chart=html is not None, show_values=show_values)
    chart = data.pop("chart_html")
    if html is not None:
        if chart is None:
            raise InputError(f"signature {signature} has no candidate: there is no waterfall to draw")
        html.write_text(mask_nirs(chart), encoding="utf-8")
        if show_values:
            os.chmod(html, 0o600)
    if not show_values:
        data.pop("record", None)
        for c in data["candidates"]:
            for s in (c["waterfall"] or {}).get("steps", []):
                s.pop("values", None)
    data.update(where)
    data = mask_fields(data)
    emit(data, output, lambda d: _render(d, show_values))
    if html is not None and output == OutputFormat.text:
        typer.echo(f"\nwaterfall chart: {html}")

