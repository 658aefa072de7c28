"""The job report: one self-contained HTML file per run, numbers first, charts where they help.

Sections: the run (job id, dates, nirlink version, cluster, thresholds) and its warnings;
stage timings; inputs and their row counts; rejects by reason; linkage by method, status and
NIR status; register duplicates; the Splink model charts (match weights, m and u);
distributions of quarters and SAM; the signals (engine/report/_signals.py); the export.
The Dask performance report of the run is a file of its own beside this one (it carries its own copy of BokehJS and its task stream
grows with the run: inside this page it would double the page's size), linked from it.

Everything is inline (see ``_charts``): the page reads on a machine without network. No NIR
and no identity value appears in it: it is built from manifests (counts, reasons, timings)
and from per-person aggregates binned into histograms.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

from nirlink.engine.io._datasets import read_json
from nirlink.engine.jobs._joblog import mask_nirs

from . import _format as f
from ._charts import Charts

__all__ = ["write_report", "histogram_bins", "STAGES"]

STAGES = ("ingest", "link", "attach", "aggregate", "signals", "export")

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:.25em .8em;border-bottom:1px solid #eee;text-align:right}
th{background:#f5f5f5}td:first-child,th:first-child{text-align:left}.small{color:#666;font-size:.9em}
.warn{background:#fff6e0;border-left:4px solid #e1a12c;padding:.4em .8em}.chart{margin:.8em 0}
table.kv td{text-align:left}table.kv td:first-child{color:#555}
"""


def _state_dict(state: Any) -> dict[str, Any]:
    if state is None:
        return {}
    return state.to_json() if hasattr(state, "to_json") else dict(state)


def _run_section(state: dict, cluster: dict | None, manifests: dict, job: Path) -> str:
    from nirlink.engine.jobs._registry import version

    started, finished = state.get("started_at"), state.get("finished_at")
    status = html.escape(str(state.get("status", "unknown")))
    if state.get("error"):
        status += ": " + html.escape(mask_nirs(str(state["error"])))
    rows: list[list[Any]] = [
        ["job id", str(state.get("job_id", job.name))], ["job name", state.get("name")],
        ["status", f.Raw(f"<b>{status}</b>")],
        ["started", f.when(started)], ["finished", f.when(finished)],
        ["duration", f.seconds(finished - started) if started and finished else None],
        ["nirlink version", version()], ["output directory", str(job.resolve())],
        ["scheduler", state.get("scheduler") or "a local cluster started by the job"],
    ]
    if cluster:
        rows.append(["cluster", f"{f.count(cluster.get('workers'))} workers, "
                                f"{f.count(cluster.get('threads'))} threads, "
                                f"{f.decimal(cluster.get('memory_bytes', 0) / 2**30, 1)} GiB of memory"])
    dec = manifests.get("link", {}).get("decisions", {})
    if dec:
        rows += [["linkage threshold", f.probability(dec.get("threshold"))],
                 ["linkage margin", f"{f.decimal(dec.get('margin_bits'), 1)} bits"],
                 ["weight of 'none'", f"{f.decimal(dec.get('none_weight_bits'), 1)} bits"]]
    agg = manifests.get("aggregate", {})
    if agg.get("first_review_month"):
        rows.append(["first review month", agg["first_review_month"]])
    if "export" in manifests:
        rows.append(["NIRs pseudonymised in the export", bool(manifests["export"].get("pseudonymised"))])
    return f"<h1>nirlink job {html.escape(str(state.get('job_id', job.name)))}</h1>" + f.table(["", ""], rows, css="kv")


def _warnings(state: dict, manifests: dict, extra: list[str]) -> list[str]:
    out = [mask_nirs(w) for w in extra]
    if state.get("status") not in (None, "succeeded"):
        out.append(f"the run ended {state.get('status')}" + (f": {mask_nirs(str(state['error']))}"
                                                             if state.get("error") else ""))
    for name, inp in manifests.get("ingest", {}).get("inputs", {}).items():
        t = inp["totals"]
        if t["rejected"]:
            out.append(f"input {name}: {f.count(t['rejected'])} rows rejected "
                       f"({f.share(t['rejected'], t['rows_read'])}), kept in ingest/rejects/{name}/ with their reason")
        if t.get("values_transcoded_from_latin1"):
            out.append(f"input {name}: {f.count(t['values_transcoded_from_latin1'])} values read as Latin-1")
    out.extend(manifests.get("link", {}).get("notes", []))  # an increment's drift check
    dec = manifests.get("link", {}).get("decisions", {})
    for status in ("ambiguous", "unlinked"):
        if dec.get(f"signatures_{status}"):
            out.append(f"{f.count(dec[f'signatures_{status}'])} signatures {status} "
                       f"({f.count(dec.get(f'rows_{status}'))} rows): see link/review/")
    agg = manifests.get("aggregate", {})
    for kind, n in sorted(agg.get("rows_without_person", {}).items()):
        if n:
            out.append(f"{f.count(n)} {kind} rows without a person are left out of the aggregates")
    out.extend(agg.get("notes", []))
    return out


def _stages_section(state: dict, manifests: dict, charts: Charts) -> str:
    times = state.get("stage_seconds", {})
    skipped = set(state.get("skipped", []))
    rows = []
    for s in state.get("stages", []):
        what = ("skipped (published output up to date)" if s in skipped else "done" if s in times
                else "failed" if s == state.get("stage") and state.get("status") == "failed" else "not run")
        rows.append([s, f.seconds(times.get(s)), what])
    ran = [s for s in state.get("stages", []) if s in times]
    chart = charts.bars("stages", ran, [float(times[s]) for s in ran], title="Seconds per stage (this run)",
                        value_label="seconds", seconds=True) if ran else ""
    return "<h2>Stages</h2>" + f.table(["stage", "time", "state"], rows) + chart


def _ingest_section(m: dict) -> str:
    rows, reasons, statuses = [], {}, {}
    tot = {"read": 0, "accepted": 0, "rejected": 0}
    for name, inp in m["inputs"].items():
        t = inp["totals"]
        rows.append([name, inp["kind"], len(inp.get("files", {})), t["rows_read"], t["accepted"], t["rejected"],
                     f.share(t["rejected"], t["rows_read"])])
        tot["read"] += t["rows_read"]
        tot["accepted"] += t["accepted"]
        tot["rejected"] += t["rejected"]
        for k, v in t["reasons"].items():
            reasons[k] = reasons.get(k, 0) + v
        for k, v in t["nir_status"].items():
            statuses[k] = statuses.get(k, 0) + v
    rows.append(["all", "", sum(r[2] for r in rows), tot["read"], tot["accepted"], tot["rejected"],
                 f.share(tot["rejected"], tot["read"])])
    meaning = m.get("reasons", {})
    out = ["<h2>Inputs</h2>",
           f.table(["input", "kind", "files", "rows read", "accepted", "rejected", "rejected %"], rows),
           "<p>Rejects by reason</p>",
           f.table(["reason", "meaning", "rows", "% of rows read"],
                   [[k, meaning.get(k, ""), v, f.share(v, tot["read"])]
                    for k, v in sorted(reasons.items(), key=lambda x: -x[1])])
           if reasons else "<p class='small'>none</p>"]
    n_status = sum(statuses.values())
    out += ["<p>NIR status of accepted rows</p>",
            f.table(["status", "rows", "%"], [[k, v, f.share(v, n_status)] for k, v in sorted(statuses.items())])]
    return "".join(out)


def _link_section(m: dict, charts: Charts, job: Path) -> str:
    sig, dec = m["signatures"], m["decisions"]
    out = ["<h2>Linkage</h2>", f.table(
        ["", "rows", "signatures"],
        [["career", sig.get("rows_career", 0), sig.get("signatures_career", 0)],
         ["resource", sig.get("rows_resource", 0), sig.get("signatures_resource", 0)],
         ["all", sig.get("rows", 0), sig.get("signatures", 0)]])]
    n_sig = sum(dec.get(f"signatures_{s}", 0) for s in ("linked", "ambiguous", "unlinked"))
    n_rows = sum(dec.get(f"rows_{s}", 0) for s in ("linked", "ambiguous", "unlinked"))
    out.append(f.table(["status", "signatures", "%", "rows", "% of rows"],
                       [[s, dec.get(f"signatures_{s}", 0), f.share(dec.get(f"signatures_{s}", 0), n_sig),
                         dec.get(f"rows_{s}", 0), f.share(dec.get(f"rows_{s}", 0), n_rows)]
                        for s in ("linked", "ambiguous", "unlinked")]))
    out.append(f.table(["method", "signatures linked"],
                       [["NIR (deterministic)", dec.get("linked_by_nir", 0)],
                        ["model (Splink)", dec.get("linked_by_model", 0)],
                        ["clerical decision", dec.get("linked_by_clerical", 0)]]))
    by = dec.get("by_nir_status", {})
    if by:
        keys = {"linked by NIR": "linked_nir", "linked by model": "linked_model", "ambiguous": "ambiguous",
                "unlinked": "unlinked"}
        labels = sorted(by)
        out.append("<p>By NIR status</p>" + f.table(
            ["NIR status", *keys], [[k, *[by[k].get(v, 0) for v in keys.values()]] for k in labels]))
        out.append(charts.stacked_bars("decisions", labels, {name: [by[k].get(v, 0) for k in labels]
                                                             for name, v in keys.items()},
                                       title="Signatures by NIR status and decision", value_label="signatures"))
    rd = m.get("register_dedupe", {})
    out.append(f"<p>Register duplicates: {f.count(rd.get('clusters', 0))} persons under more than one number "
               f"({f.count(rd.get('rows_in_clusters', 0))} register rows).</p>")
    out.append(f.table(["phase", "time"], [[k, f.seconds(v)] for k, v in m.get("timings_s", {}).items()]))
    out.append("<h2>Model</h2>" + _splink_charts(job / "link" / "model.json", charts))
    return "".join(out)


def _splink_charts(model_path: Path, charts: Charts) -> str:
    if not model_path.exists():
        return ""
    try:
        from splink.internals.settings_creator import SettingsCreator

        settings = read_json(model_path).get("splink")
        if not settings:
            return "<p class='small'>the model is not trained: no chart</p>"
        obj = SettingsCreator.from_path_or_dict(settings).get_settings("duckdb")
        return (charts.vega("match-weights", obj.match_weights_chart().chart_dict)
                + charts.vega("m-u", obj.m_u_parameters_chart().chart_dict))
    except Exception as exc:  # noqa: BLE001 - a chart that cannot render must not sink the report
        return f"<p class='small'>Splink charts unavailable: {html.escape(mask_nirs(str(exc)))}</p>"


def histogram_bins(con, source: str, column: str, *, width: int, cap: int,
                   where: str = "true") -> list[tuple[int, int]]:
    """``[(left edge, count)]`` of ``column`` in bins of ``width`` from 0, values past ``cap`` in
    the last bin, negative ones in the first (at most cap / width + 1 bins, whatever the rows)."""
    # floor(), not //: in DuckDB 2 `//` on a DOUBLE divides without flooring (a bin per value)
    return [(int(b), int(c)) for b, c in con.execute(
        f"select cast(floor(least(greatest({column}, 0), {cap}) / {width}) * {width} as bigint) as b, count(*) "
        f"from {source} where {where} group by 1 order by 1").fetchall()]


def _aggregate_section(m: dict, job: Path, charts: Charts) -> str:
    out = ["<h2>Aggregates</h2>", f.table(["table", "rows"], [[k, v["rows"]] for k, v in m["tables"].items()]),
           f.table(["input", "rows", "rows without a person"],
                   [[k, v.get("rows_in", 0), v.get("rows_without_person", 0)] for k, v in m["inputs"].items()])]
    person = job / "aggregate" / "career_person"
    if not person.exists():  # released once exported (nirlink.jobs.keep): the exported copy
        person = job / "export" / "career_person"
    if not (person.exists() and any(person.glob("*.parquet"))):
        return "".join(out)
    import duckdb

    files = f"read_parquet('{person}/*.parquet')"
    with duckdb.connect() as con:
        n, q_mean, q_med, sam_n, s_mean, s_med = con.execute(
            f"select count(*), avg(quarters), median(quarters), count(*) filter (where sam_years > 0), "
            f"avg(sam) filter (where sam_years > 0), median(sam) filter (where sam_years > 0) from {files}").fetchone()
        quarters = histogram_bins(con, files, "quarters", width=10, cap=200)
        sam = histogram_bins(con, files, "sam", width=2000, cap=80_000, where="sam_years > 0")
    out.append(f.table(["persons", "mean quarters", "median quarters", "persons with a SAM", "mean SAM", "median SAM"],
                       [[n, f.decimal(q_mean, 1), f.decimal(q_med, 1), sam_n, f.euros(s_mean), f.euros(s_med)]]))
    if quarters:
        out.append(charts.histogram("quarters", [b for b, _ in quarters], [c for _, c in quarters], bin_width=10,
                                    title="Total quarters per person (bins of 10; 200 and more in the last)",
                                    x_label="quarters", y_label="persons"))
    if sam:
        out.append(charts.histogram("sam", [b for b, _ in sam], [c for _, c in sam], bin_width=2000,
                                    title="SAM in euros (bins of 2,000 €; 80,000 € and more in the last)",
                                    x_label="SAM (€)", y_label="persons"))
    return "".join(out)


def _export_section(m: dict) -> str:
    return ("<h2>Export</h2>" + f"<p>NIRs pseudonymised: {'yes' if m.get('pseudonymised') else 'no'}</p>"
            + f.table(["dataset", "rows", "files"], [[k, v["rows"], len(v["files"])] for k, v in m["tables"].items()]))


def _performance_section(performance: Path | None, out: Path) -> str:
    if performance is None or not performance.exists():
        return ""
    link = os.path.relpath(performance, out.parent)
    return ("<h2>Dask performance report</h2>"
            f"<p><a href='{html.escape(link)}'>{html.escape(performance.name)}</a> "
            f"({f.decimal(performance.stat().st_size / 2**20, 1)} MiB, beside this file): the task stream, "
            "worker profiles, bandwidth and system use of this run, as the Dask dashboard showed them.</p>")


def write_report(job_dir: str | Path, out: str | Path, *, state: Any = None, cluster: dict | None = None,
                 performance: str | Path | None = None, warnings: list[str] | tuple[str, ...] = ()) -> Path:
    """Write the report of one run of the job in ``job_dir`` to ``out`` (atomically).

    ``state`` is the run's job state (a ``JobState`` or its JSON form); ``cluster`` its size
    (``workers``, ``threads``, ``memory_bytes``); ``performance`` the run's Dask performance
    report, linked from the page; ``warnings`` what the run logged as such. The datasets
    described are those published in ``job_dir`` when the run ended.
    """
    job, out = Path(job_dir), Path(out)
    st = _state_dict(state)
    manifests = {s: read_json(job / s / "_manifest.json") for s in STAGES if (job / s / "_manifest.json").exists()}
    charts = Charts()
    sec = [_run_section(st, cluster, manifests, job)]
    warns = _warnings(st, manifests, list(warnings))
    sec.append("<h2>Warnings</h2>" + ("".join(f"<p class='warn'>{html.escape(w)}</p>" for w in warns)
                                      if warns else "<p class='small'>none</p>"))
    sec.append(_stages_section(st, manifests, charts))
    if "ingest" in manifests:
        sec.append(_ingest_section(manifests["ingest"]))
    if "link" in manifests:
        sec.append(_link_section(manifests["link"], charts, job))
    if "aggregate" in manifests:
        sec.append(_aggregate_section(manifests["aggregate"], job, charts))
    if "signals" in manifests:
        from ._signals import signals_section

        sec.append(signals_section(manifests["signals"], job, out, charts, manifests.get("export")))
    if "export" in manifests:
        sec.append(_export_section(manifests["export"]))
    sec.append(_performance_section(Path(performance) if performance else None, out))
    doc = (f"<!doctype html><html><head><meta charset='utf-8'><title>nirlink report "
           f"{html.escape(str(st.get('job_id', job.name)))}</title><style>{_CSS}</style>{charts.head()}</head>"
           f"<body>{''.join(sec)}{charts.script()}</body></html>")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    tmp.write_text(doc, encoding="utf-8")
    os.replace(tmp, out)
    return out
