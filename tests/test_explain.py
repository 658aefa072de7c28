"""Explaining decisions from a finished job, the clerical review dataset, and clerical
decisions honoured on the next run."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import stat

import duckdb
import pytest
from typer.testing import CliRunner

from nirlink.engine.cli import app
from nirlink.engine.jobs._runner import Job
from nirlink.engine.jobs._spec import load_job
from nirlink.kernels import SpecError
from nirlink.linkage import load_model
from nirlink.linkage._clerical import load_decisions
from nirlink.linkage._explain import explain_signature
from nirlink.linkage._register import register_files
from nirlink.linkage._signatures import signature_files

runner = CliRunner()
NIR_RE = re.compile(r"(?<![0-9A-Za-z.])[1-8][0-9]{4}(?:[0-9]{2}|2[AB])[0-9]{6}(?:[0-9]{2})?(?![0-9A-Za-z])")


def _sql(query: str) -> list[tuple]:
    con = duckdb.connect()
    try:
        return con.execute(query).fetchall()
    finally:
        con.close()


def _level_weights(model) -> dict[tuple[str, str], float]:
    """log2(m/u) of every trained level, from the model file itself (the oracle)."""
    out = {}
    for comp in model.settings()["comparisons"]:
        for lv in comp["comparison_levels"]:
            if lv.get("m_probability") and lv.get("u_probability"):
                out[(comp["output_column_name"], lv["label_for_charts"])] = math.log2(lv["m_probability"] /
                                                                                      lv["u_probability"])
    return out


def test_waterfalls_add_up_to_the_scored_weights(job_run):
    _, out, _ = job_run
    link = out / "link"
    model = load_model(link / "model.json")
    levels = _level_weights(model)
    lam = model.settings()["probability_two_random_records_match"]
    # the weights scoring stored for each signature's best candidates (link/candidates)
    sigs = [r[0] for r in _sql(f"""select signature from read_parquet('{link}/candidates/**/*.parquet')
                                  group by signature having bool_and(method = 'model')
                                  order by count(*) desc, signature limit 12""")]
    assert len(sigs) == 12
    for sig in sigs:
        stored = dict(_sql(f"""select register_id, match_weight from read_parquet('{link}/candidates/**/*.parquet')
                               where signature = {sig}"""))
        data = explain_signature(link, sig)
        assert data["candidates"], sig
        for cand in data["candidates"]:
            w = cand["waterfall"]
            assert w["steps"][0]["weight"] == pytest.approx(math.log2(lam / (1 - lam)), abs=1e-12)
            assert w["sum_of_steps"] == pytest.approx(w["match_weight"], abs=1e-9)
            assert w["match_weight"] == pytest.approx(stored[cand["register_id"]], abs=1e-9)
            for step in w["steps"][1:]:
                if (step["step"], step["level"]) in levels:  # null levels weigh nothing
                    assert step["weight"] == pytest.approx(levels[(step["step"], step["level"])], abs=1e-9)
                else:
                    assert step["weight"] == 0.0


def test_explain_cli_by_record_masks_nirs(job_run, tmp_path):
    _, out, _ = job_run
    from nirlink.engine.stages._ingest import ingested_rows_sql

    rid = _sql(f"""select record_id from ({ingested_rows_sql(out / 'ingest', 'career')})
                   where nir_status = 'bad_key' order by record_id limit 1""")[0][0]
    html = tmp_path / "w.html"
    result = runner.invoke(app, ["explain", str(out), str(rid), "--show-values", "--html", str(html)])
    assert result.exit_code == 0, result.output
    assert f"record {rid} (export/career_rows/" in result.output and "decision: " in result.output
    assert "candidate 1:" in result.output and "prior" in result.output and "final" in result.output
    assert not NIR_RE.search(result.output)
    page = html.read_text()
    assert "vega" in page.lower() and not NIR_RE.search(page)
    assert stat.S_IMODE(os.stat(html).st_mode) == 0o600
    result = runner.invoke(app, ["explain", str(out), str(rid), "--output", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["record_id"] == rid and data["decision"]["status"] in ("linked", "ambiguous", "unlinked")
    assert "record" not in data and not NIR_RE.search(result.stdout)
    assert all("values" not in s for c in data["candidates"] for s in c["waterfall"]["steps"])


def test_explain_cli_errors(job_run):
    _, out, _ = job_run
    result = runner.invoke(app, ["explain", str(out), "999999999999"])
    assert result.exit_code == 1 and "record 999999999999 is in no career or resource row" in result.output
    result = runner.invoke(app, ["explain", str(out)])
    assert result.exit_code == 1 and "give a record id or --signature" in result.output
    result = runner.invoke(app, ["explain", str(out), "--signature=12345"])
    assert result.exit_code == 1 and "signature 12345 is not in" in result.output


def test_review_lists_every_unlinked_and_ambiguous_signature(job_run):
    _, out, _ = job_run
    link = out / "link"
    manifest = json.loads((link / "_manifest.json").read_text())
    review = link / "review"
    for name in ("review.parquet", "review.csv"):
        assert stat.S_IMODE(os.stat(review / name).st_mode) == 0o600
    expected = {r[0] for r in _sql(f"""select signature from read_parquet('{link}/links/*.parquet')
                                      where status in ('unlinked', 'ambiguous')""")}
    rows = _sql(f"select * from read_parquet('{review}/review.parquet')")
    cols = [r[0] for r in _sql(f"describe select * from read_parquet('{review}/review.parquet')")]
    got = [dict(zip(cols, r)) for r in rows]
    assert {r["signature"] for r in got} == expected
    assert manifest["review"]["signatures"] == len(expected)
    csv_rows = _sql(f"select count(*) from read_csv('{review}/review.csv')")[0][0]
    assert csv_rows == len(got)
    model = load_model(link / "model.json")
    lam = model.settings()["probability_two_random_records_match"]
    names = [c["output_column_name"] for c in model.settings()["comparisons"]]
    for r in got:
        if r["rank"] is not None:
            total = math.log2(lam / (1 - lam)) + sum(r[f"{n}_weight"] for n in names)
            assert total == pytest.approx(r["match_weight"], abs=1e-9)
            assert r["candidate_nir"] == r["register_nir"] and all(r[f"{n}_level"] for n in names)


@pytest.fixture(scope="module")
def clerical_job(job_run, tmp_path_factory):
    """A copy of the session's job (its published stages), to re-run with decisions."""
    root, out, job_file = job_run
    base = tmp_path_factory.mktemp("clerical")
    shutil.copytree(out, base / "out")
    text = open(job_file, encoding="utf-8").read().replace(str(out.resolve().as_posix()), str((base / "out").as_posix()))
    return root, base, text


def test_bad_decisions_are_refused_naming_their_lines(clerical_job):
    _, base, _ = clerical_job
    link = base / "out" / "link"
    sig = _sql(f"select signature from read_parquet('{link}/links/*.parquet') order by signature limit 1")[0][0]
    nir = _sql(f"select nir from read_parquet('{link}/register/*.parquet') order by nir limit 1")[0][0]
    path = base / "bad.csv"
    path.write_text("signature,record_id,register_nir\n"
                    f"{sig},,{nir}\n"          # fine
                    "42,,none\n"               # line 3: unknown signature
                    f"{sig},,299999999999999\n"  # line 4: NIR not in the register
                    f",999999999999,{nir}\n"   # line 5: unknown record
                    f"{sig},1,none\n"          # line 6: both ids
                    "abc,,none\n")             # line 7: not an integer
    with pytest.raises(SpecError) as err:
        load_decisions(path, signature_files(link), register_files(link), [])
    lines = {p for p, _ in err.value.errors}
    assert lines == {"line 3", "line 4", "line 5", "line 6", "line 7"}
    assert not NIR_RE.search(str(err.value))
    (base / "header.csv").write_text("sig,nir\n1,2\n")
    with pytest.raises(SpecError, match="expected the columns register_nir and signature or record_id, found sig, nir"):
        load_decisions(base / "header.csv", signature_files(link), register_files(link), [])


def test_clerical_decisions_rerun_link_and_after_and_take_precedence(clerical_job, dask_client):
    root, base, text = clerical_job
    out = base / "out"
    link = out / "link"
    # a signature the model linked, sent by the agent to another person; one decided "none";
    # one given by a record id
    (a, person_a), (b, _) = _sql(f"""select signature, person from read_parquet('{link}/links/*.parquet')
                                    where method = 'model' and status = 'linked' order by signature limit 2""")
    other = _sql(f"""select nir from read_parquet('{link}/register/*.parquet') where nir <> '{person_a}'
                     and nir not in (select nir from read_parquet('{link}/clusters.parquet') c
                                     join read_parquet('{link}/register/*.parquet') r using (unique_id))
                     order by nir limit 1""")[0][0]
    rid, person_c = _sql(f"""select i.record_id, l.person from read_parquet('{out}/attach/career/**/*.parquet') i
                             join read_parquet('{link}/links/*.parquet') l on l.person = i.person
                             where l.method = 'nir' order by i.record_id limit 1""")[0]
    decisions = base / "decisions.csv"
    decisions.write_text(f"signature,record_id,register_nir\n{a},,{other}\n{b},,none\n,{rid},{person_c}\n")
    job_file = base / "job.toml"
    job_file.write_text(text + f'\n[linkage]\ndecisions = "{decisions.as_posix()}"\n')
    state = Job(load_job(job_file), client=dask_client).run()
    assert state.status == "succeeded", state.error
    assert list(state.skipped) == ["ingest"]
    got = {r[0]: r[1:] for r in _sql(f"""select signature, method, status, person
                                          from read_parquet('{link}/links/*.parquet') where method = 'clerical'""")}
    assert got[a] == ("clerical", "linked", other) and got[b] == ("clerical", "unlinked", None)
    assert len(got) == 3 and [v for k, v in got.items() if k not in (a, b)] == [("clerical", "linked", person_c)]
    manifest = json.loads((link / "_manifest.json").read_text())
    assert manifest["clerical"]["decisions"] == 3 and manifest["decisions"]["decided_by_clerical"] == 3
    rows = _sql(f"""select count(*) filter (where link_method = 'clerical' and person = '{other}')
                    from read_parquet('{out}/attach/career/**/*.parquet')""")[0][0]
    assert rows > 0
    # a second run with the same decisions skips everything
    state = Job(load_job(job_file), client=dask_client).run()
    assert list(state.skipped) == ["ingest", "link", "attach", "aggregate", "export"]
