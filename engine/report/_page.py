"""The job report: one self-contained HTML file, numbers first, pictures where they help.

Sections: job and stage timings; rows in and out of every stage; rejects by reason;
linkage by method, status and NIR status; register duplicates; the Splink model charts
(match weights, m and u); distributions of quarters and SAM; the Dask performance report
(embedded). No NIR appears in it.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from nirlink.engine.io._datasets import read_json
from nirlink.engine.jobs._joblog import mask_nirs

__all__ = ["write_report"]

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:.25em .8em;border-bottom:1px solid #eee;text-align:right}
th{background:#f5f5f5}td:first-child,th:first-child{text-align:left}.bar{fill:#4a78b5}.small{color:#666;font-size:.9em}
"""


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(v):
        if isinstance(v, float):
            return f"{v:,.4f}" if abs(v) < 10 else f"{v:,.1f}"
        if isinstance(v, int):
            return f"{v:,}"
        return html.escape(str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _histogram_svg(bins: list[tuple[str, int]], title: str) -> str:
    if not bins:
        return ""
    width, height, pad = 640, 180, 30
    top = max(c for _, c in bins) or 1
    bw = (width - pad) / len(bins)
    bars = []
    for i, (label, c) in enumerate(bins):
        h = (height - pad) * c / top
        x = pad + i * bw
        bars.append(f'<rect class="bar" x="{x:.1f}" y="{height - pad - h:.1f}" width="{bw * 0.9:.1f}" height="{h:.1f}">'
                    f"<title>{html.escape(label)}: {c:,}</title></rect>")
        if len(bins) <= 30 or i % max(1, len(bins) // 15) == 0:
            bars.append(f'<text x="{x:.1f}" y="{height - 10}" font-size="9">{html.escape(label)}</text>')
    return (f"<p>{html.escape(title)}</p><svg width='{width}' height='{height}' role='img'>{''.join(bars)}</svg>")


def _distributions(job: Path) -> str:
    import duckdb

    parts = []
    person = job / "aggregate" / "career_person"
    if person.exists() and any(person.glob("*.parquet")):
        con = duckdb.connect()
        q = con.execute(f"select least(quarters, 200) // 10 * 10 as b, count(*) from read_parquet('{person}/*.parquet') "
                        "group by 1 order by 1").fetchall()
        parts.append(_histogram_svg([(str(int(b)), int(c)) for b, c in q], "Total quarters per person (bins of 10)"))
        s = con.execute(f"select least(sam, 60000) // 2000 * 2000 as b, count(*) from read_parquet('{person}/*.parquet') "
                        "where sam_years > 0 group by 1 order by 1").fetchall()
        parts.append(_histogram_svg([(f"{int(b) // 1000}k", int(c)) for b, c in s], "SAM in euros (bins of 2,000)"))
        stats = con.execute(f"select count(*), avg(quarters), median(quarters), avg(sam), median(sam) "
                            f"from read_parquet('{person}/*.parquet')").fetchone()
        parts.insert(0, _table(["persons", "mean quarters", "median quarters", "mean SAM", "median SAM"],
                               [[int(stats[0]), float(stats[1] or 0), float(stats[2] or 0), float(stats[3] or 0),
                                 float(stats[4] or 0)]]))
        con.close()
    return "".join(parts)


def _splink_charts(model_path: Path) -> str:
    if not model_path.exists():
        return ""
    try:
        from splink.internals.settings_creator import SettingsCreator

        model = read_json(model_path)
        settings = model.get("splink")
        if not settings:
            return ""
        obj = SettingsCreator.from_path_or_dict(settings).get_settings("duckdb")
        charts = [obj.match_weights_chart(), obj.m_u_parameters_chart()]
        out = []
        for ch in charts:
            doc = ch.to_html(inline=True)
            data = base64.b64encode(doc.encode("utf-8")).decode("ascii")
            out.append(f'<iframe src="data:text/html;base64,{data}" width="1000" height="560" '
                       f'style="border:0"></iframe>')
        return "".join(out)
    except Exception as exc:  # noqa: BLE001 - a chart that cannot render must not sink the report
        return f"<p class='small'>Splink charts unavailable: {html.escape(str(exc))}</p>"


def write_report(job_dir: str | Path, out: str | Path) -> Path:
    job = Path(job_dir)
    state = read_json(job / "_job" / "state.json") if (job / "_job" / "state.json").exists() else {}
    manifests = {s: read_json(job / s / "_manifest.json") for s in ("ingest", "link", "attach", "aggregate", "export")
                 if (job / s / "_manifest.json").exists()}
    sec: list[str] = [f"<h1>nirlink job {html.escape(str(state.get('job_id', job.name)))}</h1>",
                      f"<p>status <b>{html.escape(str(state.get('status')))}</b>"
                      + (f": {html.escape(mask_nirs(str(state.get('error'))))}" if state.get("error") else "") + "</p>"]
    times = state.get("stage_seconds", {})
    sec.append("<h2>Stages</h2>" + _table(["stage", "seconds", "state"],
                                          [[s, times.get(s, ""), "skipped (up to date)" if s in state.get("skipped", [])
                                            else ("done" if s in manifests else "not run")]
                                           for s in state.get("stages", [])]))
    if "ingest" in manifests:
        rows = []
        reasons: dict[str, int] = {}
        statuses: dict[str, int] = {}
        for name, inp in manifests["ingest"]["inputs"].items():
            t = inp["totals"]
            rows.append([name, inp["kind"], t["rows_read"], t["accepted"], t["rejected"]])
            for k, v in t["reasons"].items():
                reasons[k] = reasons.get(k, 0) + v
            for k, v in t["nir_status"].items():
                statuses[k] = statuses.get(k, 0) + v
        sec.append("<h2>Ingest</h2>" + _table(["input", "kind", "rows read", "accepted", "rejected"], rows))
        sec.append("<p>Rejects by reason</p>" + (_table(["reason", "rows"], sorted(reasons.items(), key=lambda x: -x[1]))
                                                 if reasons else "<p class='small'>none</p>"))
        sec.append("<p>NIR status of accepted rows</p>" + _table(["status", "rows"], sorted(statuses.items())))
    if "link" in manifests:
        m = manifests["link"]
        sig, dec = m["signatures"], m["decisions"]
        sec.append("<h2>Linkage</h2>" + _table(
            ["", "rows", "signatures"],
            [["career", sig.get("rows_career", 0), sig.get("signatures_career", 0)],
             ["resource", sig.get("rows_resource", 0), sig.get("signatures_resource", 0)],
             ["all", sig.get("rows", 0), sig.get("signatures", 0)]]))
        sec.append(_table(["status", "signatures", "rows"],
                          [[s, dec.get(f"signatures_{s}", 0), dec.get(f"rows_{s}", 0)]
                           for s in ("linked", "ambiguous", "unlinked")]))
        sec.append(_table(["method", "signatures linked"], [["NIR (deterministic)", dec.get("linked_by_nir", 0)],
                                                            ["model (Splink)", dec.get("linked_by_model", 0)]]))
        by = dec.get("by_nir_status", {})
        if by:
            sec.append("<p>By NIR status</p>" + _table(["NIR status", "linked by NIR", "linked by model", "ambiguous",
                                                        "unlinked"],
                                                       [[k, v.get("linked_nir", 0), v.get("linked_model", 0),
                                                         v.get("ambiguous", 0), v.get("unlinked", 0)]
                                                        for k, v in sorted(by.items())]))
        rd = m.get("register_dedupe", {})
        sec.append(f"<p>Register duplicates: {rd.get('clusters', 0):,} persons under more than one number "
                   f"({rd.get('rows_in_clusters', 0):,} register rows).</p>")
        sec.append(_table(["phase", "seconds"], sorted(m.get("timings_s", {}).items())))
        sec.append("<h2>Model</h2>" + _splink_charts(job / "link" / "model.json"))
    if "aggregate" in manifests:
        a = manifests["aggregate"]
        sec.append("<h2>Aggregates</h2>" + _table(["table", "rows"], [[k, v["rows"]] for k, v in a["tables"].items()]))
        sec.append(_table(["input", "rows", "rows without a person"],
                          [[k, v.get("rows_in", 0), v.get("rows_without_person", 0)] for k, v in a["inputs"].items()]))
        sec.append(_distributions(job))
    if "export" in manifests:
        e = manifests["export"]
        sec.append("<h2>Export</h2>" + f"<p>pseudonymised: {e.get('pseudonymised')}</p>" +
                   _table(["dataset", "rows", "files"], [[k, v["rows"], len(v["files"])] for k, v in e["tables"].items()]))
    perf = job / "_job" / "performance.html"
    if perf.exists():
        data = base64.b64encode(perf.read_bytes()).decode("ascii")
        sec.append("<h2>Dask performance report</h2>"
                   f'<iframe src="data:text/html;base64,{data}" width="1100" height="800" style="border:0"></iframe>')
    doc = f"<!doctype html><html><head><meta charset='utf-8'><title>nirlink report</title><style>{_CSS}</style></head>" \
          f"<body>{''.join(sec)}</body></html>"
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(doc, encoding="utf-8")
    return out
