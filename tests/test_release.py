"""Disk-bounded jobs (nirlink.jobs.keep = link, the smallest setting): intermediates released once their
readers published (or removed by their last reader as it reads them), the exports the same
bytes as a job that keeps everything, the sizes recorded, and re-runs that need a released
output running its stage again - also after a failure half-way through a consuming stage."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import dask.config
import pyarrow.parquet as pq
import pytest

from nirlink.engine.jobs._registry import job_paths
from nirlink.engine.jobs._runner import Job
from nirlink.engine.jobs._spec import load_job
from nirlink.engine.stages import _export

from conftest import write_job

STAGES = ("ingest", "link", "attach", "aggregate", "export")


def _digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.parquet"))}


def _data_files(d: Path) -> list[str]:
    return sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file()
                  and p.name not in ("_manifest.json", "_fingerprint.json", "_released.json"))


# what the ingest output held while the link stage scored (after its first steps, before it
# published), filled by released_job
SEEN_DURING_LINK: dict[str, list[str]] = {}


@pytest.fixture(scope="module")
def released_job(synth_small, job_run, tmp_path_factory, dask_client):
    import nirlink.linkage._deterministic as det

    root, _ = synth_small
    base = tmp_path_factory.mktemp("released")
    job_file = write_job(base / "job.toml", root, base / "out")
    real = det.deterministic_pass

    def watching(work, *a, **k):
        ingest = base / "out" / "ingest"
        SEEN_DURING_LINK["ingest"] = sorted(p.name for p in ingest.iterdir())
        SEEN_DURING_LINK["link_published"] = [str((base / "out" / "link" / "_manifest.json").exists())]
        return real(work, *a, **k)

    det.deterministic_pass = watching
    try:
        with dask.config.set({"nirlink.jobs.keep": "link"}):  # the smallest job directory
            state = Job(load_job(job_file), client=dask_client).run()
    finally:
        det.deterministic_pass = real
    assert state.status == "succeeded", state.error
    return base / "out", job_file, state


def test_the_register_goes_while_the_link_stage_runs(released_job):
    """The link stage, the ingested register's last reader in a job without a signals stage,
    removes it once its first step has read it, not when it publishes (marked released first:
    a re-run that must run the link stage runs the ingest stage again, tests/test_disk.py);
    the declared rows' identities (its only reader) likewise."""
    out, _, _ = released_job
    assert SEEN_DURING_LINK["link_published"] == ["False"]
    assert "register" not in SEEN_DURING_LINK["ingest"], SEEN_DURING_LINK["ingest"]
    assert "identities" not in SEEN_DURING_LINK["ingest"], SEEN_DURING_LINK["ingest"]
    assert {"career", "resource"} <= set(SEEN_DURING_LINK["ingest"])  # the rows: the attach stage reads them
    assert {"register", "identities"} <= set(json.loads((out / "ingest" / "_released.json").read_text())["released"])


def test_intermediates_go_and_exports_are_the_same_bytes(released_job, job_run):
    out, _, state = released_job
    for stage in ("ingest", "attach", "aggregate"):
        assert _data_files(out / stage) == [], stage
        assert (out / stage / "_manifest.json").exists() and (out / stage / "_fingerprint.json").exists()
    assert "*" in json.loads((out / "attach" / "_released.json").read_text())["released"]
    assert list((out / "link" / "links").glob("*.parquet"))  # kept: `nirlink explain` reads it
    _, kept_out, _ = job_run  # the same job keeping everything (the tests' setting)
    assert _digest(out / "export") == _digest(kept_out / "export")
    assert len(_digest(out / "export")) >= 8


def test_sizes_are_recorded(released_job, synth_small):
    out, _, state = released_job
    disk = json.loads(job_paths(out, state.job_id)["disk"].read_text())
    root, _ = synth_small
    inputs = sum(f.stat().st_size for d in ("register", "career", "resource") for f in (root / d).rglob("*.parquet"))
    assert disk["input_bytes"] == inputs
    assert set(disk["stages"]) == set(STAGES)
    assert disk["peak_bytes"] >= max(s["bytes_at_publication"] for s in disk["stages"].values())
    assert disk["peak_bytes"] >= max(s["bytes_after_release"] for s in disk["stages"].values())
    assert disk["peak_bytes"] >= disk["final_bytes"] == disk["stages"]["export"]["bytes_after_release"]
    # what no later stage reads is released as stages publish (the ingest stage's rejects once
    # the export has published); what its last reader removes as it reads it is marked in its
    # stage's _released.json, not listed here (the rows by the attach stage, the register by
    # the link stage: tests/test_disk.py)
    assert "ingest/rejects" in disk["released"], disk["released"]
    assert {"*", "register"} <= set(json.loads((out / "ingest" / "_released.json").read_text())["released"])
    assert disk["peak_over_input"] == round(disk["peak_bytes"] / inputs, 3)


def test_a_rerun_skips_released_stages_that_are_up_to_date(released_job, dask_client):
    out, job_file, _ = released_job
    with dask.config.set({"nirlink.jobs.keep": "link"}):
        again = Job(load_job(job_file), client=dask_client).run()
    assert again.status == "succeeded" and again.skipped == STAGES


def test_a_rerun_needing_released_outputs_runs_their_stages_again(released_job, tmp_path, monkeypatch):
    """A new key makes the export stale; the export reads the aggregate stage's output, which
    it removed as it read it, so the aggregate, attach and ingest stages run again. The
    first try fails half-way through the export, after it removed some of its inputs; the
    next one starts from the ingest stage and publishes the pseudonymised exports."""
    out, job_file, _ = released_job
    rows_before = json.loads((out / "export" / "_manifest.json").read_text())["tables"]["career_rows"]["rows"]
    monkeypatch.setenv("NIRLINK_RELEASE_KEY", "a-release-test-key-0123456789")
    text = Path(job_file).read_text().replace("[output]", '[output]\npseudonymise = true\nkey_env = "NIRLINK_RELEASE_KEY"')
    Path(job_file).write_text(text)
    real, calls = _export._export_group, []

    def failing(*args, **kwargs):
        calls.append(args[1])
        n = real(*args, **kwargs)
        if len(calls) == 3:
            raise ValueError("export task failed on purpose")
        return n

    monkeypatch.setattr(_export, "_export_group", failing)
    with dask.config.set({"nirlink.jobs.keep": "link"}), pytest.raises(Exception, match="failed on purpose"):
        Job(load_job(job_file), client=None).run()
    assert (out / "export" / "_manifest.json").exists()  # the old export stays published
    assert json.loads((out / "export" / "_manifest.json").read_text())["pseudonymised"] is False
    assert "*" in json.loads((out / "aggregate" / "_released.json").read_text())["released"]
    monkeypatch.setattr(_export, "_export_group", real)
    with dask.config.set({"nirlink.jobs.keep": "link"}):
        state = Job(load_job(job_file), client=None).run()
    assert state.status == "succeeded", state.error
    assert set(state.stage_seconds) == set(STAGES) and not state.skipped
    manifest = json.loads((out / "export" / "_manifest.json").read_text())
    assert manifest["pseudonymised"] is True and manifest["tables"]["career_rows"]["rows"] == rows_before
    persons = pq.read_table(out / "export" / "career_rows", columns=["person"]).column("person").drop_null()
    assert all(re.fullmatch(r"[0-9a-f]{64}", p) for p in persons.unique().to_pylist())


def test_the_default_keeps_what_explain_of_a_record_id_needs(synth_small, tmp_path, dask_client, job_run):
    """With the packaged default of nirlink.jobs.keep, a finished job explains a row by its
    record id: the link outputs stay, the exported rows carry each row's signature (the same
    as the ingested row's identity gives), and ingest, attach and aggregate go."""
    import yaml
    from typer.testing import CliRunner

    from nirlink.engine.cli import app
    from nirlink.engine.stages._link import ingested_files
    from nirlink.linkage._explain import signatures_of_records

    default = yaml.safe_load((Path(_export.__file__).parents[1] / "nirlink.yaml").read_text())["nirlink"]["jobs"]["keep"]
    root, _ = synth_small
    job_file = write_job(tmp_path / "job.toml", root, tmp_path / "out")
    with dask.config.set({"nirlink.jobs.keep": default}):
        state = Job(load_job(job_file), client=dask_client).run()
    assert state.status == "succeeded", state.error
    out = tmp_path / "out"
    for stage in ("ingest", "attach", "aggregate"):
        assert _data_files(out / stage) == [], stage
    rows = pq.read_table(out / "export" / "career_rows", columns=["record_id", "signature"]).slice(0, 50)
    _, kept_out, _ = job_run  # the same job keeping everything: its ingested rows give the signatures
    files = ingested_files(kept_out / "ingest")
    found = signatures_of_records(files["career"], rows.column("record_id").to_pylist())
    assert {rid: found[rid][0][1] for rid in found} == dict(zip(*(rows.column(c).to_pylist()
                                                                   for c in ("record_id", "signature"))))
    rid, sig = rows.column("record_id")[0].as_py(), rows.column("signature")[0].as_py()
    result = CliRunner().invoke(app, ["explain", str(out), str(rid), "--output", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["record_id"] == rid and doc["signature"] == sig and doc["record_file"].startswith("export/")


@pytest.mark.parametrize("stages, gone_after", [
    (("ingest", "link", "attach"), "link"),  # the link stage is their one reader
    (("ingest", "aggregate"), "aggregate"),  # no link stage: they go with the rows
    (("ingest", "link", "aggregate"), "aggregate"),  # no attach: each row's own NIR, from its identity
])
def test_the_identities_go_once_their_reader_has_published(tmp_path, stages, gone_after):
    from nirlink.engine.jobs._release import release_after, released

    ingest = tmp_path / "ingest"
    for part in ("career", "identities/career"):
        (ingest / part).mkdir(parents=True)
        (ingest / part / "part-00.parquet").write_bytes(b"x")
    (ingest / "_manifest.json").write_text(json.dumps({"inputs": {"career": {"kind": "career"}}}))
    published: set[str] = set()
    with dask.config.set({"nirlink.jobs.keep": "none"}):
        for stage in stages:
            published.add(stage)
            release_after(tmp_path, stages, published)
            assert (ingest / "identities").exists() == (stages.index(stage) < stages.index(gone_after)), stage
    assert "identities" in released(tmp_path, "ingest") or "*" in released(tmp_path, "ingest")
