"""Monthly increments of a synthetic dataset (`nirlink synth --increment-of`) and the union of a
base and its increments (`--union`): determinism, the register snapshot against pandas on the
files, the month's rows and their truth, counts that reconcile, errors, month parsing."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import tomllib
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from typer.testing import CliRunner

from nirlink.engine import InputError, SpecError
from nirlink.engine.cli import app
from nirlink.engine.synth._describe import format_month, parse_month
from nirlink.engine.synth._generate import synth
from nirlink.engine.synth._increment import increment
from nirlink.engine.synth._params import SynthParams
from nirlink.engine.synth._union import union

runner = CliRunner()


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """A base of 1,500 persons and two increments (2026-01, 2026-02)."""
    root = tmp_path_factory.mktemp("increments")
    synth(root / "base", persons=1500, partitions=2, params=SynthParams(seed=5))
    i1 = increment(root / "base", root / "i1", month="2026-01")
    i2 = increment(root / "i1", root / "i2", month="2026-02")
    return root, i1, i2


def _digest(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(root).glob("*/*.parquet"))}


def _df(root, name) -> pd.DataFrame:
    return duckdb.sql(f"select * from read_parquet('{Path(root) / name}/*.parquet')").df()


def _register(root) -> pd.DataFrame:
    """Register rows in register order (file, then row)."""
    return duckdb.sql(f"""select * exclude (filename, file_row_number), filename, file_row_number
        from read_parquet('{Path(root)}/register/*.parquet', filename = true, file_row_number = true)
        order by filename, file_row_number""").df()


def test_same_seed_and_base_give_byte_identical_increments(chain, tmp_path):
    root, i1, _ = chain
    again = increment(root / "base", tmp_path / "a", month="2026-01")
    other = increment(root / "base", tmp_path / "b", month="2026-01", seed=6)
    assert again["rows"] == i1["rows"] and i1["seed"] == 5
    da = _digest(root / "i1")
    assert len(da) == 9  # 3 register, 3 truth, career, resource, changes
    assert _digest(tmp_path / "a") == da
    assert _digest(tmp_path / "b") != da and other["seed"] == 6


@pytest.mark.parametrize("prev,cur,month", [("base", "i1", "2026-01"), ("i1", "i2", "2026-02")])
def test_register_is_previous_plus_new_minus_merged_with_deaths_and_corrections(chain, prev, cur, month):
    root = chain[0]
    before, after = _register(root / prev), _register(root / cur)
    changes = _df(root / cur, "truth_register_changes")
    by = {k: changes[changes.kind == k] for k in ("new_person", "death", "correction", "merge")}
    assert all(len(v) >= 1 for v in by.values()) and set(changes.month) == {month}
    assert len(by["new_person"]) >= 0.001 * len(before)
    # entries: the previous ones minus the merged-away, plus the new ones appended in a new file
    assert set(after.nir) == (set(before.nir) - set(by["merge"].register_nir)) | set(by["new_person"].register_nir)
    new_rows = after[after.nir.isin(by["new_person"].register_nir)]
    assert new_rows.filename.nunique() == 1 and new_rows.filename.iloc[0] > before.filename.max()
    assert new_rows.death_date.isna().all()
    # merges: the surviving entry stays and was registered before the removed one, both of one person
    position = {n: i for i, n in enumerate(before.nir)}
    truth_before = _df(root / prev, "truth").query("source == 'register'").set_index("register_nir").true_nir
    for m in by["merge"].itertuples():
        assert m.surviving_nir in set(after.nir) and position[m.surviving_nir] < position[m.register_nir]
        assert truth_before[m.surviving_nir] == truth_before[m.register_nir] == m.surviving_nir == m.true_nir
    # every other entry is unchanged but for the deaths and corrections
    old = before.set_index("nir").drop(columns=["filename", "file_row_number"])
    new = after.set_index("nir").drop(columns=["filename", "file_row_number"]).loc[old.index.intersection(after.nir)]
    old = old.loc[new.index]
    differs = (old != new) & ~(old.isna() & new.isna())
    changed = {(nir, col) for nir, col in differs.stack()[lambda s: s].index}
    expected = ({(n, "death_date") for n in by["death"].register_nir}
                | {(r.register_nir, r.field) for r in by["correction"].itertuples()})
    assert changed == expected
    first = pd.Timestamp(month + "-01")
    dead = pd.to_datetime(new.loc[by["death"].register_nir, "death_date"])
    assert ((dead >= first) & (dead < first + pd.offsets.MonthBegin(1))).all()
    assert old.loc[by["death"].register_nir, "death_date"].isna().all()
    # the truth of the snapshot's register rows matches the register row for row
    truth = _df(root / cur, "truth").query("source == 'register'")
    assert sorted(truth.register_nir) == sorted(after.nir)


def test_new_rows_are_of_the_month_and_truth_covers_them(chain):
    root, i1, i2 = chain
    for name, summary, month in (("i1", i1, "2026-01"), ("i2", i2, "2026-02")):
        career, resource = _df(root / name, "career"), _df(root / name, "resource")
        first = dt.date.fromisoformat(month + "-01")
        assert (resource.period == pd.Timestamp(first)).all() and len(resource) == summary["rows"]["resource"]
        assert (career.start_date == pd.Timestamp(first)).all() and (career.year == first.year).all()
        assert (pd.to_datetime(career.end_date).dt.month == first.month).all()
        assert set(career.kind) == {"salary", "unemployment"}
        # about 1% of the base's rows
        assert 0.005 < summary["share_of_base_rows"] < 0.02
        truth = _df(root / name, "truth")
        rows = truth[truth.source != "register"]
        assert sorted(rows.record_id) == sorted([*career.record_id, *resource.record_id])
        assert rows.true_nir.isin(truth[truth.source == "register"].true_nir).all()
        # no row for a person dead before the month began
        reg = _register(root / name).set_index("nir")
        death = pd.to_datetime(reg.death_date).reindex(rows.true_nir)
        assert not (death < pd.Timestamp(first)).any()
    # a declarant's rows keep the identity it declares (one identity version, one declared identity)
    both = duckdb.sql(f"""
        with r as (select * from read_parquet(['{root}/base/resource/*.parquet', '{root}/i1/resource/*.parquet'])),
             t as (select * from read_parquet(['{root}/base/truth/*.parquet', '{root}/i1/truth/*.parquet'])
                   where source = 'resource')
        select t.identity_version, count(distinct coalesce(r.declared_nir, '?') || r.last_name || r.birth_date) n
        from r join t using (record_id) group by 1 having count(distinct r.period) > 1""").df()
    assert len(both) > 100 and (both.n == 1).all()


def test_union_counts_reconcile(chain, tmp_path):
    root, i1, i2 = chain
    u = union(root / "i2", tmp_path / "u")
    base = json.loads((root / "base" / "_synth.json").read_text())
    for kind in ("career", "resource"):
        assert u["rows"][kind] == base["rows"][kind] + i1["rows"][kind] + i2["rows"][kind]
        assert len(_df(tmp_path / "u", kind)) == u["rows"][kind]
    assert u["rows"]["register"] == i2["rows"]["register"]
    assert _digest(tmp_path / "u")["register/part-00003.parquet"] == _digest(root / "i2")["register/part-00003.parquet"]
    counts = _df(tmp_path / "u", "truth").groupby("source").size().to_dict()
    assert counts == {"career": u["rows"]["career"], "resource": u["rows"]["resource"],
                      "register": u["rows"]["register"]}
    ids = _df(tmp_path / "u", "resource").record_id
    assert ids.is_unique
    assert len(_df(tmp_path / "u", "truth_register_changes")) == sum(sum(s["register_changes"].values())
                                                                      for s in (i1, i2))
    # a union can be built on further
    i3 = increment(tmp_path / "u", tmp_path / "i3", month="2026-03")
    assert i3["rows"]["register"] > u["rows"]["register"] - 10


def test_increment_cli_and_its_job_file(chain, tmp_path):
    root = chain[0]
    result = runner.invoke(app, ["synth", "--increment-of", str(root / "i2"), "--month", "2026-04", "--out",
                                 str(tmp_path / "i3"), "--write-job", str(tmp_path / "job.toml"), "--output", "json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["month"] == "2026-04" and summary["increment_of"] == str(root / "i2") and summary["seed"] == 5
    job = tomllib.loads((tmp_path / "job.toml").read_text())
    assert job["increment"] == {"previous": str(root / "job-2026-02"), "month": "2026-04"}
    assert job["output"]["directory"] == str(tmp_path / "job-2026-04")
    assert [i["paths"] for i in job["inputs"]] == [[str(tmp_path / "i3" / k)] for k in ("register", "career",
                                                                                      "resource")]
    again = runner.invoke(app, ["synth", "--increment-of", str(root / "i2"), "--month", "2026-04", "--out",
                                str(tmp_path / "i3"), "--overwrite", "--write-job", str(tmp_path / "job2.toml"),
                                "--previous-job", str(tmp_path / "jobs" / "march")])
    assert again.exit_code == 0, again.output
    assert tomllib.loads((tmp_path / "job2.toml").read_text())["increment"]["previous"] == str(tmp_path / "jobs/march")
    text = runner.invoke(app, ["synth", "--union", str(tmp_path / "i3"), "--out", str(tmp_path / "u")])
    assert text.exit_code == 0, text.output
    assert "union of 4 datasets up to 2026-04" in text.stdout


@pytest.mark.parametrize("args,code,fragment", [
    (["--increment-of", "{tmp}/missing", "--month", "2026-01"], 1, "missing does not exist"),
    (["--increment-of", "{tmp}", "--month", "2026-01"], 1, "is not a synthetic dataset written by nirlink synth"),
    (["--increment-of", "{base}", "--month", "2026-1"], 1, "--month must be a month as YYYY-MM"),
    (["--increment-of", "{base}", "--month", "2025-12"], 1, "must come after 2025-12, the last month of the base"),
    (["--increment-of", "{i1}", "--month", "2026-01"], 1, "must come after 2026-01, the last month of the increment"),
    (["--increment-of", "{base}", "--month", "2027-01"], 1, "last year of the reference tables"),
    (["--increment-of", "{base}"], 2, "--month and --increment-of go together"),
    (["--increment-of", "{base}", "--month", "2026-01", "--persons", "5"], 2, "exactly one of"),
    (["--increment-of", "{base}", "--month", "2026-01", "--partitions", "2"], 2, "--partitions applies to a base"),
    (["--union", "{tmp}/missing"], 1, "--union:"),
    (["--increment-of", "{base}", "--month", "2026-01", "--previous-job", "{tmp}"], 2, "--previous-job goes with"),
])
def test_bad_increment_arguments_are_clear_errors(chain, tmp_path, args, code, fragment):
    root = chain[0]
    (tmp_path / "x").mkdir()
    args = [a.format(tmp=tmp_path / "x", base=root / "base", i1=root / "i1") for a in args]
    result = runner.invoke(app, ["synth", *args, "--out", str(tmp_path / "out")])
    assert result.exit_code == code, result.output
    assert fragment in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


def test_an_increment_refuses_to_write_into_its_base(chain):
    root = chain[0]
    with pytest.raises(InputError, match="must lie outside"):
        increment(root / "i1", root / "i1" / "next", month="2026-05")


def _reference_month(text: str) -> int | None:
    """The oracle: datetime's own parser, with exactly four year and two month digits."""
    try:
        d = dt.datetime.strptime(text, "%Y-%m")
    except ValueError:
        return None
    if len(text) != 7 or not text.isascii() or not text[:4].isdigit() or not text[5:].isdigit():
        return None
    return d.year * 12 + d.month - 1


@given(st.one_of(st.text(max_size=9), st.builds(lambda y, m: f"{y:04d}-{m:02d}", st.integers(1, 9999),
                                                 st.integers(0, 13))))
@example("2026-01")
@example("2026-1")
@example("2026-13")
@example("2026-00")
@example(" 2026-01")
@example("2026-01\n")
@example("２０２６-01")  # non-ASCII digits
def test_parse_month_matches_the_reference(text):
    expected = _reference_month(text)
    if expected is None:
        with pytest.raises(InputError, match="YYYY-MM"):
            parse_month(text)
    else:
        assert parse_month(text) == expected
        assert format_month(expected) == text


def test_evaluate_scores_a_job_on_an_increment_against_its_truth(chain, tmp_path, dask_client):
    """The truth of an increment serves `nirlink evaluate`: every row of the month is found in it
    and linked to the register entry of its person."""
    from nirlink.engine.jobs._runner import Job
    from nirlink.engine.jobs._spec import load_job
    from nirlink.engine.synth._jobfile import write_job_file

    root, i1, _ = chain
    job = write_job_file(root / "i1", tmp_path / "job.toml", output=tmp_path / "job", stages=["ingest", "link"])
    state = Job(load_job(job), client=dask_client).run()
    assert state.status == "succeeded", state.error
    result = runner.invoke(app, ["evaluate", "--links", str(tmp_path / "job" / "link"), "--rows",
                                 str(tmp_path / "job" / "ingest"), "--truth", str(root / "i1" / "truth"),
                                 "--output", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    rows = report["rows"]
    assert rows["true_positives"] + rows["false_negatives"] == i1["rows"]["career"] + i1["rows"]["resource"]
    assert rows["recall"] > 0.97 and rows["precision"] > 0.97
    changes = report["register_changes"]
    assert changes["changes"] == i1["register_changes"]
    assert changes["links_to_merged_away_entries"] == 0
    new = changes["rows_by_kind"]["new_person"]
    assert new["true_positives"] + new["false_negatives"] == i1["rows_of_new_persons"]
    text = runner.invoke(app, ["evaluate", "--links", str(tmp_path / "job" / "link"), "--rows",
                               str(tmp_path / "job" / "ingest"), "--truth", str(root / "i1" / "truth")])
    assert "signatures linked to an entry merged away" in text.stdout and "rows of persons with a merge" in text.stdout


def test_increment_rates_are_settings(chain, tmp_path):
    import dask.config

    root = chain[0]
    with dask.config.set({"nirlink.synth.increment.new-persons": 0.02, "nirlink.synth.increment.merges": 1.0}):
        s = increment(root / "base", tmp_path / "a", month="2026-01")
    assert s["register_changes"]["merge"] == len(_df(root / "base", "truth").query(
        "source == 'register' and register_nir != true_nir"))
    assert s["register_changes"]["new_person"] >= 0.02 * 1500 and s["rates"]["new_persons"] == 0.02
    with dask.config.set({"nirlink.synth.increment.deaths": 2}), pytest.raises(SpecError, match="increment.deaths: must be <= 1"):
        increment(root / "base", tmp_path / "b", month="2026-01")


def test_new_persons_rows_follow_the_base_noise_model(chain, tmp_path):
    import dask.config

    root = chain[0]
    with dask.config.set({"nirlink.synth.increment.new-persons": 0.5}):
        increment(root / "base", tmp_path / "a", month="2026-01")
    new = set(_df(tmp_path / "a", "truth_register_changes").query("kind == 'new_person'").true_nir)
    assert len(new) == 750
    rows = duckdb.sql(f"""select t.nir_noise, t.true_nir, t.identity_version, r.declared_nir, r.last_name
        from read_parquet('{tmp_path}/a/resource/*.parquet') r
        join read_parquet('{tmp_path}/a/truth/*.parquet') t on t.source = 'resource' and t.record_id = r.record_id
        """).df()
    rows = rows[rows.true_nir.isin(new)]
    assert set(rows.true_nir) == new  # every new person has rows
    versions = rows.drop_duplicates("identity_version")
    noisy = versions.nir_noise != "none"
    assert 0.02 < noisy.mean() < 0.12  # 5.3% of the identities by the NIR noise rates
    assert (rows.declared_nir.isna() == (rows.nir_noise == "missing-nir")).all()
    clean = rows[rows.nir_noise == "none"]
    assert (clean.declared_nir == clean.true_nir).mean() > 0.95  # the rest: a register duplicate's number


def test_new_persons_are_young_or_born_abroad(chain):
    root = chain[0]
    new = _df(root / "i1", "truth_register_changes").query("kind == 'new_person'").register_nir
    reg = _register(root / "i1").set_index("nir").loc[new]
    young = reg.birth_date.str[:4].astype(int) >= 2026 - 30
    assert (young | reg.birth_place.str.startswith("99")).all()


def test_rows_split_into_carried_and_new_persons(chain):
    _, i1, i2 = chain
    for s in (i1, i2):
        assert s["rows_carried"] + s["rows_of_new_persons"] == s["rows"]["career"] + s["rows"]["resource"]
        assert s["rows_of_new_persons"] >= s["register_changes"]["new_person"] // 2


def test_aggregate_synthetic_refuses_an_increment(chain, tmp_path):
    """`nirlink aggregate --synthetic` attaches the truth block by block, which only a base allows."""
    from nirlink.engine.synth._truth import attach_truth

    root = chain[0]
    with pytest.raises(InputError, match="is an increment: the truth is attached to a base dataset only"):
        attach_truth(root / "i1", tmp_path / "rows")
    assert not (tmp_path / "rows").exists()
