"""Operators' view: job files run, resumed, re-run byte for byte, submitted detached, watched,
cancelled; exports readable by DuckDB and Polars; pseudonyms stable and keyed; no NIR leaks."""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path

import dask.config
import duckdb
import polars as pl
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from nirlink.engine.cli import app
from nirlink.engine.jobs._registry import job_paths, read_state, request_cancel
from nirlink.engine.jobs._runner import Job
from nirlink.engine.jobs._spec import load_job
from nirlink.engine.stages._ingest import ingested_rows_sql

from conftest import write_job

runner = CliRunner()
NIR_RE = re.compile(r"(?<![0-9A-Za-z.])[1-8][0-9]{4}(?:[0-9]{2}|2[AB])[0-9]{6}(?:[0-9]{2})?(?![0-9A-Za-z])")


def _digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.parquet")) if "_job" not in p.parts}


def test_run_cli_json_then_resume_skips_everything(job_run, dask_client):
    root, out, job_file = job_run
    result = runner.invoke(app, ["run", job_file, "--output", "json", "--scheduler", dask_client.scheduler.address])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["status"] == "succeeded"
    assert summary["skipped"] == ["ingest", "link", "attach", "aggregate", "export"]
    assert summary["ingest"]["career"]["rows_read"] == summary["ingest"]["career"]["accepted"] + \
        summary["ingest"]["career"]["rejected"]
    assert summary["link"]["signatures_linked"] > 0 and summary["aggregate"]["career_person"] > 2500
    assert Path(summary["report"]).exists()


def test_restart_publishes_byte_identical_datasets(job_run, dask_client):
    root, out, job_file = job_run
    before = _digest(out)
    assert len(before) > 20
    state = Job(load_job(job_file), client=dask_client, restart=True).run()
    assert state.status == "succeeded" and not state.skipped
    assert _digest(out) == before


def test_report_has_the_numbers(job_run):
    _, out, _ = job_run
    from nirlink.engine.jobs._registry import latest_run, run_report

    html = run_report(out, latest_run(out)).read_text()  # a later re-run that skipped every stage wrote none
    for needle in ("Inputs", "Rejects by reason", "Linkage", "linked by NIR", "Register duplicates", "Aggregates",
                   "Total quarters per person", "SAM in euros", "Export"):
        assert needle in html, needle


def test_exports_read_with_no_options(job_run):
    _, out, _ = job_run
    manifest = json.loads((out / "export" / "_manifest.json").read_text())
    assert set(manifest["tables"]) >= {"career_rows", "resource_rows", "career_person_year", "career_person",
                                       "resource_person_month", "resource_person_year", "resource_person_review",
                                       "links"}
    for name, info in manifest["tables"].items():
        d = out / "export" / name
        n = duckdb.sql(f"select count(*) from read_parquet('{d}/**/*.parquet')").fetchall()[0][0]
        assert n == info["rows"], name
        df = pl.read_parquet(d)  # a dataset directory: Polars finds the files and the hive partitions
        assert df.height == info["rows"], name
        if info["hive_partitioning"]:
            col = info["hive_partitioning"]
            assert col in duckdb.sql(f"select * from read_parquet('{d}/**/*.parquet') limit 1").columns
            assert col in df.columns


def _identities(root: Path) -> tuple[set[str], set[str]]:
    """Every register name (words of 5+ letters) and birth date before 1990 (later dates could
    be career periods) of a synthetic dataset."""
    reg = pq.read_table(root / "register", columns=["last_name", "usage_name", "first_names", "birth_date"])
    names = {w for col in ("last_name", "usage_name", "first_names") for v in reg.column(col).to_pylist() if v
             for w in re.split(r"[ -]", v) if len(w) >= 5}
    dates = {d for d in reg.column("birth_date").to_pylist() if d and d < "1990"}
    return names, dates


def _leaks(text: str, names: set[str], dates: set[str]) -> set[str]:
    # the inline libraries' comments (licences, "/* BEGIN bokeh.min.js */") are not data; the
    # chart data is checked like everything else
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    found = {m.group(0) for m in NIR_RE.finditer(text)}
    found |= {w for w in re.findall(r"(?<![\w])[A-ZÀ-Ý][A-ZÀ-Ý']{4,}(?![\w])", text) if w in names}
    return found | (set(re.findall(r"\d{4}-\d{2}-\d{2}", text)) & dates)


def test_logs_state_manifests_and_report_hold_no_identity(job_run):
    """No NIR, name or birth date of any person in the job's log, events, state, manifests or report."""
    root, out, _ = job_run
    names, dates = _identities(root)
    assert len(names) > 1000 and len(dates) > 1000
    runs = [p.name for p in job_paths(out)["runs"].iterdir()]  # every run of the job so far
    files = [f for run in runs for k in ("log", "events", "state", "report") if (f := job_paths(out, run)[k]).exists()]
    assert any(f.name == "report.html" for f in files)
    files += list(out.glob("*/_manifest.json"))
    for f in files:
        found = _leaks(f.read_text(encoding="utf-8"), names, dates)
        assert not found, (f, sorted(found)[:5])


def test_job_outputs_and_registry_are_private(job_run):
    """Directories 0700 and files 0600 (the defaults of nirlink.privacy.*) across the job directory."""
    _, out, _ = job_run
    entries = [out, *out.rglob("*")]
    assert len(entries) > 50
    for p in entries:
        mode = p.stat().st_mode & 0o777
        assert mode == (0o700 if p.is_dir() else 0o600), (p, oct(mode))


def test_header_less_csv_leaks_no_identity_anywhere(tmp_path, dask_client):
    """A CSV without a header line: its first row would be read as the header; the job stops
    naming the file, and that row's NIR, names and birth date appear in no message or file."""
    row = ["7", "177127400100163", "ZYGOMATIX", "PHILIBERTINE", "1931-07-23", "12345678200010", "2015",
           "2015-01-01", "2015-12-31", "salary", "25000.50", "365"]
    data = tmp_path / "career.csv"
    data.write_text(";".join(row) + "\n" + ";".join(row).replace("ZYGOMATIX", "ZYGOMATOX") + "\n")
    job_file = tmp_path / "job.toml"
    job_file.write_text(f'[job]\nname = "leak"\nstages = ["ingest"]\n[[inputs]]\nname = "career"\n'
                        f'kind = "career"\npaths = ["{data}"]\n[output]\ndirectory = "{tmp_path / "out"}"\n')
    result = runner.invoke(app, ["run", str(job_file), "--scheduler", dask_client.scheduler.address])
    assert result.exit_code == 1
    assert "career.csv" in result.stderr and "looks like a data row" in result.stderr
    paths = job_paths(tmp_path / "out")
    texts = [result.stdout, result.stderr, *(paths[k].read_text() for k in ("state", "events", "log", "report"))]
    assert "looks like a data row" in paths["state"].read_text()
    for text in texts:
        for value in ("177127400100163", "ZYGOMATIX", "PHILIBERTINE", "1931-07-23", "12345678200010"):
            assert value not in text, (value, text[:300])


def test_status_jobs_logs_and_check_commands(job_run):
    _, out, job_file = job_run
    st = runner.invoke(app, ["status", str(out), "--output", "json"])
    assert st.exit_code == 0 and json.loads(st.stdout)["status"] == "succeeded"
    by_id = runner.invoke(app, ["status", json.loads(st.stdout)["job_id"]])
    assert by_id.exit_code == 0 and "succeeded" in by_id.stdout
    jobs = runner.invoke(app, ["jobs", "--output", "json"])
    assert jobs.exit_code == 0 and any(j["directory"] == str(out.resolve()) for j in json.loads(jobs.stdout))
    logs = runner.invoke(app, ["logs", str(out), "--output", "json"])
    assert logs.exit_code == 0 and any(r["message"] == "job succeeded" for r in json.loads(logs.stdout))
    check = runner.invoke(app, ["job", "check", job_file, "--output", "json"])
    assert check.exit_code == 0 and json.loads(check.stdout)["valid"] is True
    missing = runner.invoke(app, ["status", "no-such-job"])
    assert missing.exit_code == 1 and "no job 'no-such-job'" in missing.stderr


def test_job_check_reports_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[job]\nname = 1\n[linkage]\nthreshold = 3\n")
    result = runner.invoke(app, ["job", "check", str(bad)])
    assert result.exit_code == 1
    assert "job.name: expected a string" in result.stderr and "linkage.threshold" in result.stderr


def test_resume_after_a_stage_failure(synth_small, tmp_path, dask_client):
    root, _ = synth_small
    job_file = write_job(tmp_path / "job.toml", root, tmp_path / "out", stages=["ingest", "link", "attach", "aggregate"])
    with dask.config.set({"nirlink.testing.fail-before-stage": "attach"}):
        result = runner.invoke(app, ["run", job_file, "--scheduler", dask_client.scheduler.address])
    assert result.exit_code == 1 and "stage attach: failure injected" in result.stderr
    state = read_state(tmp_path / "out")
    assert state.status == "failed" and state.stage == "attach"
    assert not (tmp_path / "out" / "attach").exists()
    again = Job(load_job(job_file), client=dask_client).run()
    assert again.status == "succeeded" and again.skipped == ("ingest", "link")
    assert set(again.stage_seconds) == {"attach", "aggregate"}


def test_output_of_an_earlier_ingest_layout_is_ingested_again(synth_small, tmp_path, dask_client, monkeypatch):
    """The same nirlink version can hold another layout of a stage's output (a source
    checkout): its format number is part of the fingerprint, so a job directory written by
    the earlier layout runs that stage again (and with it every later one) instead of failing."""
    from nirlink.engine.jobs import _fingerprint

    root, _ = synth_small
    job_file = write_job(tmp_path / "job.toml", root, tmp_path / "out", stages=["ingest"])
    with monkeypatch.context() as m:
        m.setitem(_fingerprint.OUTPUT_FORMATS, "ingest", 1)  # as an earlier layout wrote it
        assert Job(load_job(job_file), client=dask_client).run().status == "succeeded"
    again = Job(load_job(job_file), client=dask_client).run()
    assert again.status == "succeeded" and again.skipped == () and set(again.stage_seconds) == {"ingest"}
    assert Job(load_job(job_file), client=dask_client).run().skipped == ("ingest",)  # now up to date


def test_cancel_stops_a_running_job(synth_small, tmp_path, dask_client):
    root, _ = synth_small
    job_file = write_job(tmp_path / "job.toml", root, tmp_path / "out")

    def progress(stage, step, done, total, rows):
        if stage == "link":
            request_cancel(tmp_path / "out")

    state = Job(load_job(job_file), client=dask_client, progress=progress).run()
    assert state.status == "cancelled" and state.stage == "link"
    assert not (tmp_path / "out" / "link").exists()
    st = runner.invoke(app, ["status", str(tmp_path / "out")])
    assert "cancelled" in st.stdout
    # the cancel command itself, on a finished job, says so
    c = runner.invoke(app, ["cancel", str(tmp_path / "out")])
    assert c.exit_code == 0 and "already cancelled" in c.stdout


def test_detached_job_survives_its_client(synth_small, tmp_path, dask_client):
    root, _ = synth_small
    job_file = write_job(tmp_path / "job.toml", root, tmp_path / "out", stages=["ingest", "link"])
    result = runner.invoke(app, ["submit", job_file, "--scheduler", dask_client.scheduler.address, "--output", "json"])
    assert result.exit_code == 0, result.output
    job_id = json.loads(result.stdout)["job_id"]
    # the submitting client is gone; follow the job through `status` only
    deadline = time.time() + 300
    status = None
    while time.time() < deadline:
        st = runner.invoke(app, ["status", job_id, "--output", "json"])
        assert st.exit_code == 0, st.output
        status = json.loads(st.stdout)["status"]
        if status in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(1)
    assert status == "succeeded", json.loads(st.stdout)
    assert (tmp_path / "out" / "link" / "_manifest.json").exists()


def test_a_silent_running_job_shows_as_failed(tmp_path):
    from nirlink.engine.io._datasets import write_json
    from nirlink.engine.jobs._state import JobState

    from nirlink.engine.jobs._registry import set_current

    old = JobState(job_id="x", name="x", stages=("ingest",), status="running", stage_index=0, stage="ingest",
                   submitted_at=1.0, started_at=1.0, heartbeat=time.time() - 3600)
    write_json(job_paths(tmp_path, "x")["state"], old.to_json())
    set_current(tmp_path, "x")
    st = runner.invoke(app, ["status", str(tmp_path), "--output", "json"])
    data = json.loads(st.stdout)
    assert data["status"] == "failed" and "no heartbeat" in data["error"]
    assert read_state(tmp_path, "x").status == "failed"  # recorded, with the event that says why
    assert '"event": "DriverLost"' in job_paths(tmp_path, "x")["events"].read_text()


def test_pseudonyms_are_keyed_stable_and_hide_every_nir(job_run, tmp_path, monkeypatch):
    from nirlink.engine.stages._export import run_export

    root, out, _ = job_run
    run_export(out, tmp_path / "a", key=b"k" * 32)
    run_export(out, tmp_path / "b", key=b"k" * 32)
    run_export(out, tmp_path / "c", key=b"z" * 32)
    persons_a = pq.read_table(tmp_path / "a" / "career_person").column("person").to_pylist()
    persons_b = pq.read_table(tmp_path / "b" / "career_person").column("person").to_pylist()
    persons_c = pq.read_table(tmp_path / "c" / "career_person").column("person").to_pylist()
    assert persons_a == persons_b and set(persons_a).isdisjoint(persons_c)
    assert all(re.fullmatch(r"[0-9a-f]{64}", p) for p in persons_a)
    nirs = set(pq.read_table(root / "register", columns=["nir"]).column("nir").to_pylist())
    for f in (tmp_path / "a").rglob("*.parquet"):
        t = pq.read_table(f)
        for col in t.column_names:
            if t.schema.field(col).type == "string":
                assert nirs.isdisjoint(set(t.column(col).to_pylist())), (f, col)
    manifest = (tmp_path / "a" / "_manifest.json").read_text()
    assert "k" * 32 not in manifest and json.loads(manifest)["pseudonymised"] is True


def test_pseudonymising_job_reads_its_key_from_the_environment(synth_small, tmp_path, dask_client, monkeypatch):
    root, _ = synth_small
    monkeypatch.setenv("NIRLINK_TEST_KEY", "a-test-key-of-enough-length")
    extra = 'pseudonymise = true\nkey_env = "NIRLINK_TEST_KEY"\n'
    job_file = write_job(tmp_path / "job.toml", root, tmp_path / "out", stages=["ingest"], extra=extra)
    spec = load_job(job_file)
    assert spec.output.pseudonymise and spec.output.key_env == "NIRLINK_TEST_KEY"
    state = Job(spec, client=dask_client).run()
    assert state.status == "succeeded"
    logs = job_paths(tmp_path / "out")["log"].read_text()
    assert "a-test-key-of-enough-length" not in logs


def test_ingest_then_aggregate_on_declared_nirs(tmp_path, synth_small, dask_client):
    """Without linkage the aggregate stage takes each row's own valid NIR as its person:
    the persons, and the rows left without one, match DuckDB over the ingested rows."""
    root, _ = synth_small
    out = tmp_path / "out"
    job_file = write_job(tmp_path / "job.toml", root, out, stages=["ingest", "aggregate"])
    state = Job(load_job(job_file), client=dask_client).run()
    assert state.status == "succeeded", state.error
    manifest = json.loads((out / "aggregate" / "_manifest.json").read_text())
    for source, table in (("career", "career_person"), ("resource", "resource_person_year")):
        rows = f"({ingested_rows_sql(out / 'ingest', source)})"  # each row with its identity (its NIR)
        persons, without, total = duckdb.sql(f"select count(distinct nir), count(*) - count(nir), count(*) "
                                             f"from {rows}").fetchall()[0]
        assert manifest["rows_without_person"][source] == without > 0
        assert manifest["inputs"][source]["rows_in"] == total
        got = duckdb.sql(f"select count(distinct person) from read_parquet('{out}/aggregate/{table}/*.parquet')")
        assert got.fetchall()[0][0] == persons
    assert not (out / ".aggregate-input").exists()  # the temporary input is gone once published


def _fail_with(key):
    raise ValueError("task failed on purpose")


def test_the_pseudonymisation_key_never_shows_in_a_failed_tasks_log(dask_client, caplog):
    """A PseudonymKey (how the key travels to a submitted job's driver and to export tasks)
    prints hidden (Dask before 2024.12 logged a failed task's arguments) and survives pickling
    whole; a failed task holding one logs no key."""
    import logging
    import pickle

    from nirlink.engine.stages._export import PseudonymKey

    secret = b"never-print-this-key-0123456789"
    key = PseudonymKey(secret)
    assert f"{key} {key!r} {[key]}".count("PseudonymKey(<hidden>)") == 3 and secret.decode() not in f"{key!r}"
    assert pickle.loads(pickle.dumps(key)).value == secret
    with caplog.at_level(logging.WARNING, logger="distributed.worker"):
        future = dask_client.submit(_fail_with, key, pure=False)
        with pytest.raises(ValueError, match="on purpose"):
            future.result()
    # the worker logs the failure, no key in it: distributed's block, or the one line naming the
    # task once nirlink's worker plugin has set its filter in this process (cluster/_plugin.py)
    assert "Compute Failed" in caplog.text or "failed (its error is in the nirlink job's log)" in caplog.text
    assert "_fail_with-" in caplog.text and secret.decode() not in caplog.text


def test_a_short_or_missing_key_stops_check_run_and_submit_before_anything(synth_small, tmp_path, monkeypatch,
                                                                          dask_client):
    root, _ = synth_small
    out = tmp_path / "out"
    job_file = write_job(tmp_path / "job.toml", root, out, stages=["ingest", "export"],
                         extra='pseudonymise = true\nkey_env = "NIRLINK_TEST_SHORT_KEY"\n')
    address = dask_client.scheduler.address
    for value, fragment in (("5byte", "NIRLINK_TEST_SHORT_KEY is 5 bytes; it needs at least 16"),
                            (None, "NIRLINK_TEST_SHORT_KEY is not set: set it in the shell that runs")):
        if value is None:
            monkeypatch.delenv("NIRLINK_TEST_SHORT_KEY")
        else:
            monkeypatch.setenv("NIRLINK_TEST_SHORT_KEY", value)
        for args in (["job", "check", job_file], ["run", job_file, "--scheduler", address],
                     ["submit", job_file, "--scheduler", address]):
            result = runner.invoke(app, args)
            assert result.exit_code == 1, (args, result.output)
            assert "output.key_env: pseudonymisation key" in result.stderr and fragment in result.stderr, args
            assert "5byte" not in result.stderr
    assert not out.exists()  # no stage ran, no job was registered


def test_a_cancelled_run_exits_1(synth_small, tmp_path, dask_client, monkeypatch):
    """`nirlink run` of a job cancelled while it runs prints its status and exits 1 (README,
    exit codes: 0 is a job that ran and succeeded)."""
    from nirlink.engine.jobs._runner import Job

    root, _ = synth_small
    out = tmp_path / "out"
    job_file = write_job(tmp_path / "job.toml", root, out)
    run = Job.run

    def cancelled_in_link(self):
        shown = self.on_progress

        def progress(stage, *args, **kwargs):
            if stage == "link":
                request_cancel(out, self.job_id)  # an operator's `nirlink cancel` while the link stage runs
            if shown is not None:
                shown(stage, *args, **kwargs)

        self.on_progress = progress
        return run(self)

    monkeypatch.setattr(Job, "run", cancelled_in_link)
    r = runner.invoke(app, ["run", str(job_file), "--scheduler", dask_client.scheduler.address, "--output", "json"])
    assert r.exit_code == 1 and json.loads(r.stdout)["status"] == "cancelled"
