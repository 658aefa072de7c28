"""The job report as a person opens it: report.html and performance.html in headless Chromium
with the network cut off, every chart drawn; the report's numbers and run metadata; its
histograms binned right; a re-run that skips every stage leaves the reports as they were.

The browser is Debian's ``chromium`` with ``chromium-driver`` (``make browser`` installs
them; ``make test`` and ``.ci/run`` do it first). Without them the browser test fails: it is
not skipped.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nirlink.engine.jobs._registry import job_paths, latest_run, reporting_run
from nirlink.engine.jobs._runner import Job
from nirlink.engine.jobs._spec import load_job
from nirlink.engine.report._page import histogram_bins, write_report


def _colored(png: bytes, *, saturated: bool) -> float:
    """Share of a screenshot's pixels that are drawn: not white (``saturated=False``), or
    coloured - not a shade of grey, so not an axis, a grid line or a label (``saturated=True``)."""
    import numpy as np
    from PIL import Image

    px = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16).reshape(-1, 3)
    if saturated:
        drawn = px.max(axis=1) - px.min(axis=1) > 60
    else:
        drawn = px.min(axis=1) < 235
    return float(drawn.mean()) if len(px) else 0.0


@pytest.fixture(scope="module")
def browser():
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver_path, ("Debian's chromium and chromium-driver are needed for the report test: "
                                      "`make browser` installs them")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1300,1000", "--host-resolver-rules=MAP * ~NOTFOUND"):  # no name resolves
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.emulateNetworkConditions",
                           {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
    yield driver
    driver.quit()


def _wait(predicate, what: str, timeout: float = 60.0):
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > end:
            assert value, f"{what}: not drawn within {timeout:.0f} s"
            return value
        time.sleep(0.25)


def _no_remote_resources(page: Path) -> None:
    """No script, style sheet, image or frame from elsewhere (a favicon link may stay)."""
    text = page.read_text(encoding="utf-8")
    tags = re.finditer(r"<(script|link|img|iframe)[^>]+(src|href)=[\"']?(https?:)?//[^>]*>", text, re.I)
    remote = [m.group(0) for m in tags if "icon" not in m.group(0)]
    assert not remote, (page, remote)


def _published(out):
    """The files of the run that published the job's outputs (later re-runs that skip every
    stage, by other tests, write no report of their own)."""
    return job_paths(out, reporting_run(out, latest_run(out)))


def test_report_charts_draw_offline(job_run, browser):
    _, out, _ = job_run
    page = _published(out)["report"]
    _no_remote_resources(page)
    browser.get(page.resolve().as_uri())
    names = browser.execute_script("return [...document.querySelectorAll('.chart')].map(e => e.dataset.chart)")
    assert {"stages", "decisions", "match-weights", "m-u", "quarters", "sam"} <= set(names), names
    for name in names:
        el = browser.find_element("css selector", f'.chart[data-chart="{name}"]')
        # data drawn in colour, not just axes: an empty histogram (bins of width 0) fails here
        share = _wait(lambda: (s := _colored(el.screenshot_as_png, saturated=True)) > 0.005 and s, f"chart {name}")
        assert share > 0.005, name
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not severe, severe


def test_performance_report_draws_offline(job_run, browser):
    _, out, _ = job_run
    page = _published(out)["performance"]
    _no_remote_resources(page)
    browser.get(page.resolve().as_uri())
    tabs = _wait(lambda: browser.execute_script(
        "const t = document.querySelector('.bk-Tabs'); "
        "return t && t.shadowRoot ? [...t.shadowRoot.querySelectorAll('.bk-tab')].map(e => e.textContent) : null"),
        "the performance report's tabs")
    assert {"Task Stream", "System", "Worker Profile (compute)"} <= set(tabs), tabs
    for i, title in enumerate(tabs):
        browser.execute_script("document.querySelector('.bk-Tabs').shadowRoot.querySelectorAll('.bk-tab')"
                               f"[{i}].click()")

        def panel():
            rect = browser.execute_script(
                "const t = document.querySelector('.bk-Tabs').shadowRoot; "
                "const p = [...t.children].find(c => c.matches('div:not(.bk-header)') && c.offsetHeight > 0); "
                "if (!p) return null; const r = p.getBoundingClientRect(); "
                "return [r.left, r.top, r.right, r.bottom];")
            if not rect:
                return 0.0
            from PIL import Image

            shot = Image.open(io.BytesIO(browser.get_screenshot_as_png())).crop(tuple(int(v) for v in rect))
            buf = io.BytesIO()
            shot.save(buf, "PNG")
            return _colored(buf.getvalue(), saturated=False)

        assert _wait(lambda: panel() > 0.005, f"performance tab {title}")
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE" and "favicon" not in e["message"]]
    assert not severe, severe


def test_report_holds_the_run_and_its_numbers(job_run):
    _, out, _ = job_run
    page = _published(out)["report"].read_text(encoding="utf-8")
    ingest = json.loads((out / "ingest" / "_manifest.json").read_text())
    from nirlink.engine.jobs._registry import version

    for needle in ("Warnings", "Inputs", "Rejects by reason", "Linkage", "linked by NIR", "Register duplicates",
                   "Aggregates", "Total quarters per person", "SAM in euros", "Export", "nirlink version",
                   version(), "linkage threshold", "linkage margin", "cluster", "2 workers",
                   "performance.html"):
        assert needle in page, needle
    for name, inp in ingest["inputs"].items():  # every input with its row count, formatted as a count
        assert re.search(rf"<td>{name}</td><td>{inp['kind']}</td><td>\d+</td><td>{inp['totals']['rows_read']:,}</td>",
                         page), name
    assert re.search(r"<h1>nirlink job t-\d{8}-\d{6}-[0-9a-f]{4}</h1>", page)
    assert "no published coefficient" in page  # the aggregate stage's note is a warning of the run
    # BokehJS (1.3 MB) and the Vega libraries (0.8 MB) once, binned chart data: the size does not
    # follow the job's (it was 5 MB here, 19.5 MB at 200k persons, with a bar per distinct SAM)
    assert _published(out)["report"].stat().st_size < 3 * 2**20


@settings(max_examples=40)
@given(st.lists(st.floats(-1e3, 3e5, allow_nan=False) | st.sampled_from([0.0, 1999.999, 2000.0, 80_000.0]),
                min_size=1, max_size=60))
def test_histogram_bins_floor_doubles(values):
    """SAM is a DOUBLE: DuckDB 2's `//` does not floor it (each distinct SAM was a bar of width
    0); the bins are floor(v / 2000) * 2000, capped at 80,000, negatives in the first bin.
    Oracle: numpy."""
    import duckdb
    import numpy as np

    with duckdb.connect() as con:
        con.register("t", pa.table({"sam": pa.array(values, pa.float64())}))
        got = histogram_bins(con, "t", "sam", width=2000, cap=80_000)
    left = (np.floor(np.clip(np.array(values), 0, 80_000) / 2000) * 2000).astype(np.int64)
    edges, counts = np.unique(left, return_counts=True)
    assert got == [(int(e), int(c)) for e, c in zip(edges, counts)]
    assert len(got) <= 41


def test_report_histograms_from_a_career_person_table(tmp_path):
    person = tmp_path / "aggregate" / "career_person"
    person.mkdir(parents=True)
    pq.write_table(pa.table({"quarters": pa.array([0, 9, 10, 19, 150, 199, 200, 260, 5], pa.int32()),
                             "sam": pa.array([0.0, 0.5, 1999.99, 2000.0, 4100.3, 4100.7, 79999.0, 250000.0, 1234.0]),
                             "sam_years": pa.array([1] * 8 + [0], pa.int16())}), person / "part-0.parquet")
    (tmp_path / "aggregate" / "_manifest.json").write_text(json.dumps({"tables": {}, "inputs": {}}))
    page = write_report(tmp_path, tmp_path / "report.html").read_text(encoding="utf-8")
    assert 'data-chart="quarters"' in page and 'data-chart="sam"' in page
    assert "<td>9</td><td>94.7</td>" in page  # persons, mean quarters (one decimal)
    assert "42,775 €" in page  # mean SAM of the 8 persons with a SAM year, in whole euros


def test_a_rerun_that_skips_every_stage_keeps_the_reports(job_run, dask_client):
    _, out, job_file = job_run
    paths = _published(out)
    before = {k: hashlib.sha256(paths[k].read_bytes()).hexdigest() for k in ("report", "performance")}
    state = Job(load_job(job_file), client=dask_client).run()
    assert state.status == "succeeded" and len(state.skipped) == 5
    assert {k: hashlib.sha256(paths[k].read_bytes()).hexdigest() for k in ("report", "performance")} == before
    own = job_paths(out, state.job_id)
    assert not own["report"].exists() and not own["performance"].exists()
    assert not list(own["dir"].glob(".*tmp*"))  # the no-op run's performance report went nowhere
    assert reporting_run(out, state.job_id) == paths["dir"].name  # what `run` and `status` name


def test_report_signals_section_from_the_data(signals_job):
    """The signals job's report: cases per rule and month as the datasets count them, the top of
    the scorecard in rank order, links that resolve to the datasets, and no person."""
    import pandas as pd

    from nirlink.engine.report._signals import PERSON_RULES, TOP_DECLARANTS

    _, out, state = signals_job
    page = job_paths(out, state.job_id)["report"]
    text = page.read_text(encoding="utf-8")
    section = text[text.index("<h2>Signals</h2>"):text.index("<h2>Export</h2>")]
    assert 'data-chart="signals"' in section
    per_rule, persons = {}, set()
    for rule in PERSON_RULES:
        t = pq.read_table(out / "signals" / rule, columns=["person", "period"]).to_pandas()
        persons |= set(t["person"])
        months = pd.to_datetime(t["period"]).dt.strftime("%Y-%m")
        per_rule[rule] = months.value_counts().to_dict()
        assert re.search(rf"<tr><td>{rule}</td><td>{len(t):,}</td><td>{len(per_rule[rule])}</td></tr>", section), rule
    rules = [r for r in PERSON_RULES if per_rule[r]]
    assert sum(map(len, per_rule.values())) > 3  # cases spread over several months
    for month in sorted({m for c in per_rule.values() for m in c}):
        cells = [per_rule[r].get(month, 0) for r in rules]
        row = "".join(f"<td>{v:,}</td>" for v in (*cells, sum(cells)))
        assert f"<tr><td>{month}</td>{row}</tr>" in section, month
    card = pq.read_table(out / "signals" / "declarant_scorecard").to_pandas().dropna(subset=["rank"])
    top = card.sort_values("rank").head(TOP_DECLARANTS)
    at = [section.index(f"<tr><td>{int(d.rank)}</td><td>{d.declarant}</td><td>{d.rows:,}</td><td>{d.persons:,}</td>"
                        f"<td>{d.problem_persons:,}</td><td>{100 * d.problem_persons_share:.2f} %</td>")
          for d in top.itertuples()]
    assert at == sorted(at) and len(at) == min(TOP_DECLARANTS, len(card))
    hrefs = re.findall(r"<a href='([^']+)'>", section)
    targets = {(page.parent / h).resolve() for h in hrefs}
    want = {(out / d / "signals" / r).resolve() for d in ("", "export")
            for r in (*PERSON_RULES, "declarant_quality", "declarant_scorecard")}
    assert targets == want and all(not h.startswith("/") for h in hrefs)
    assert all(any(t.rglob("*.parquet")) for t in targets)
    assert not [p for p in persons if p in text]  # register NIRs: none on the page


def test_report_signals_chart_draws_offline(signals_job, browser):
    _, out, state = signals_job
    browser.get(job_paths(out, state.job_id)["report"].resolve().as_uri())
    el = _wait(lambda: browser.find_elements("css selector", '.chart[data-chart="signals"]'), "the signals chart")[0]
    assert _wait(lambda: _colored(el.screenshot_as_png, saturated=True) > 0.005, "chart signals")
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
