"""The signals stage: each rule against a pandas/DuckDB oracle on random buckets, the job-file
section, the stage in a job (skips, export, pseudonyms) and the planted truth."""

from __future__ import annotations


import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nirlink.engine import SpecError
from nirlink.engine.jobs._spec import parse_job
from nirlink.engine.reference._tables import aspa_table, cohort_table
from nirlink.engine.stages._signals_partials import declarant_counts, declarant_persons, nir_pairs
from nirlink.engine.stages._signals_rules import Register, SignalSettings, person_signals
from nirlink.engine.stages._signals_scorecard import excess_z

AS_OF = 2025 * 12 + 11  # 2025-12


def _nir(i: int) -> str:
    return f"{100000000000000 + i:015d}"


def _bucket(seed: int, n_persons: int = 30, n_rows: int = 400):
    """Random rows of some persons, a register (with a duplicate and deaths) and quarters."""
    rng = np.random.default_rng(seed)
    persons = [_nir(i) for i in range(n_persons)]
    birth_year = rng.integers(1930, 1990, n_persons)
    death = np.where(rng.random(n_persons) < 0.3, rng.integers(17900, 20450, n_persons), -1)  # 2019-2025
    owner = list(persons)
    owner[1] = persons[0]  # the register holds person 0 twice (NIRs 0 and 1)
    register = pa.table({
        "nir": pa.array(persons), "owner": pa.array(owner),
        "birth_year": pa.array(birth_year, pa.int16()), "birth_month": pa.array(rng.integers(0, 13, n_persons), pa.int8()),
        "death_date": pa.array(death, pa.int32(), mask=death < 0).cast(pa.date32()),
    })
    person = rng.choice(persons, n_rows)
    person = np.where(person == persons[1], persons[0], person)  # rows link to the cluster's representative
    declared = np.where(rng.random(n_rows) < 0.85, person, rng.choice(persons + ["199999999999999"], n_rows))
    status = rng.choice(["valid", "valid", "valid", "missing", "bad_key", "valid_temporary"], n_rows)
    months = rng.integers(2018 * 12, 2026 * 12, n_rows)
    days = (months - 1970 * 12).astype("datetime64[M]").astype("datetime64[D]").astype(np.int32)
    kinds = rng.choice(["salary", "pension", "complementary_pension", "minimum_old_age_benefit"], n_rows)
    amount = np.round(rng.uniform(0, 900, n_rows), 2)
    half = n_rows // 2

    def table(sl, source):
        t = {"record_id": pa.array(np.arange(n_rows)[sl] + (0 if source == "career" else 10_000)),
             "person": pa.array(person[sl]), "nir": pa.array(declared[sl]), "nir_status": pa.array(status[sl]),
             "link_status": pa.array(rng.choice(["linked", "linked", "unlinked", "ambiguous"], len(person[sl]))),
             "link_method": pa.array(["model"] * len(person[sl]))}
        if source == "career":
            t.update(employer_id=pa.array(rng.choice(["E1", "E2", "E3"], len(person[sl]))),
                     start_date=pa.array(days[sl]).cast(pa.date32()), kind=pa.array(["salary"] * len(person[sl])),
                     gross_salary=pa.array(amount[sl]))
        else:
            t.update(payer_id=pa.array(rng.choice(["P1", "P2"], len(person[sl]))),
                     period=pa.array(days[sl]).cast(pa.date32()), kind=pa.array(kinds[sl]), amount=pa.array(amount[sl]))
        return pa.table(t)

    quarters = pa.table({"person": pa.array(persons), "quarters": pa.array(rng.integers(100, 180, n_persons), pa.int32())})
    return table(slice(0, half), "career"), table(slice(half, None), "resource"), register, quarters


def _frames(career, resource, register):
    c = career.to_pandas().rename(columns={"start_date": "day", "gross_salary": "amount", "employer_id": "declarant"})
    r = resource.to_pandas().rename(columns={"period": "day", "payer_id": "declarant"})
    c["source"], r["source"] = "career", "resource"
    rows = pd.concat([c, r], ignore_index=True)
    rows["month"] = pd.to_datetime(rows["day"]).dt.year * 12 + pd.to_datetime(rows["day"]).dt.month - 1
    reg = register.to_pandas()
    death = pd.to_datetime(reg["death_date"])
    reg["death_month"] = (death.dt.year * 12 + death.dt.month - 1).fillna(10**9)
    return rows, reg.set_index("nir")


def _age(reg, nir):
    bm = reg.loc[nir, "birth_month"]
    return AS_OF - (int(reg.loc[nir, "birth_year"]) * 12 + (int(bm) if 1 <= bm <= 12 else 1) - 1)


@settings(max_examples=15)
@given(seed=st.integers(0, 10_000), grace=st.integers(0, 3))
def test_person_rules_match_pandas(seed, grace):
    career, resource, register, quarters = _bucket(seed)
    settings = SignalSettings(death_grace_months=grace, max_record_ids=5)
    out = person_signals(career, resource, quarters, Register.from_table(register), settings, as_of=AS_OF)
    rows, reg = _frames(career, resource, register)

    # income_after_death
    after = rows[rows["month"] > rows["person"].map(reg["death_month"]) + grace]
    want = after.groupby("person").agg(rows=("record_id", "size"), amount=("amount", "sum"), first=("month", "min"))
    got = out["income_after_death"].to_pandas().set_index("person")
    assert sorted(got.index) == sorted(want.index)
    for p in want.index:
        assert got.loc[p, "rows"] == want.loc[p, "rows"]
        assert got.loc[p, "amount"] == pytest.approx(want.loc[p, "amount"], abs=0.011)
        assert list(got.loc[p, "record_ids"]) == sorted(after[after["person"] == p]["record_id"])[:5]

    # identity_conflict: valid declared NIR of a registered person other than the row's person
    ok = rows[rows["nir_status"].isin(["valid", "valid_temporary"]) & rows["nir"].isin(reg.index)].copy()
    ok["owner"] = ok["nir"].map(reg["owner"])
    ok = ok[ok["owner"] != ok["person"]]
    want = ok.groupby(["person", "owner"]).size()
    got = out["identity_conflict"].to_pandas().set_index(["person", "nir_owner"])["rows"]
    assert got.sort_index().to_dict() == want.sort_index().to_dict()

    # possible_pension_non_take_up and low_resources_no_minimum
    ct, ceiling = cohort_table(), aspa_table().yearly_ceiling([AS_OF])[0]
    q = quarters.to_pandas().set_index("person")["quarters"]
    res = rows[(rows["source"] == "resource") & (rows["month"] > AS_OF - 12) & (rows["month"] <= AS_OF)]
    want_ntu, want_low = set(), set()
    for p in rows["person"].unique():
        alive = reg.loc[p, "death_month"] > AS_OF
        by, bm = int(reg.loc[p, "birth_year"]), int(reg.loc[p, "birth_month"])
        age = _age(reg, p)
        mine = res[res["person"] == p]
        full = q.get(p, 0) >= ct.required_quarters([by], [bm])[0] or age >= ct.full_rate_age([by], [bm])[0]
        if alive and age >= ct.legal_age([by], [bm])[0] and full and not (mine["kind"] == "pension").any():
            want_ntu.add(p)
        if alive and age >= 65 * 12 and round(mine["amount"].sum(), 2) < ceiling and \
                not (mine["kind"] == "minimum_old_age_benefit").any():
            want_low.add(p)
    assert set(out["possible_pension_non_take_up"].column("person").to_pylist()) == want_ntu
    assert set(out["low_resources_no_minimum"].column("person").to_pylist()) == want_low
    for rule, t in out.items():  # every case names the settings that produced it
        assert len(set(t.column("settings").to_pylist())) <= 1
    if out["income_after_death"].num_rows:
        assert out["income_after_death"].column("settings")[0].as_py() == f'{{"death_grace_months":{grace}}}'



@settings(max_examples=15)
@given(seed=st.integers(0, 10_000))
def test_partials_match_duckdb(seed):
    career, resource, register, _ = _bucket(seed)
    pairs = nir_pairs(career, resource)
    con = duckdb.connect()
    con.register("c", career)
    con.register("r", resource)
    want = con.sql("""select nir, person, count(*) n from (select nir, person, nir_status from c union all
                      select nir, person, nir_status from r) where nir_status in ('valid', 'valid_temporary')
                      group by all order by all""").fetchall()
    got = sorted(zip(*[pairs.column(c).to_pylist() for c in ("nir", "person", "rows")]))
    assert got == want
    counts = declarant_counts(career, "career")
    want = con.sql("""select employer_id, count(*), sum((nir_status = 'missing')::int), sum((nir_status = 'bad_key')::int),
                      sum((link_status = 'unlinked')::int),
                      sum((nir_status not in ('valid', 'valid_temporary') or link_status <> 'linked')::int)
                      from c group by employer_id, year(start_date) * 12 + month(start_date) - 1 order by all""").fetchall()
    t = counts.to_pandas()
    got = sorted(map(tuple, t[["declarant", "rows", "nir_missing", "nir_bad_key", "unlinked", "problem_rows"]].values.tolist()))
    assert got == [tuple(w) for w in want]
    persons = declarant_persons(career, "career").to_pylist()
    want = con.sql("""select employer_id, count(distinct who), count(distinct who) filter (where problem)
                      from (select employer_id, coalesce(person, nir, '') as who,
                                   coalesce(nir_status, '') not in ('valid', 'valid_temporary')
                                   or coalesce(link_status, '') <> 'linked' as problem from c)
                      group by 1 order by 1""")
    assert sorted((p["declarant"], p["persons"], p["problem_persons"]) for p in persons) == want.fetchall()


def test_signals_section_of_the_job_file(tmp_path):
    base = """[job]\nname = "s"\nstages = {stages}\n[[inputs]]\nname = "register"\nkind = "register"
paths = ["r.parquet"]\n[output]\ndirectory = "out"\n{extra}"""
    spec = parse_job(base.format(stages='["ingest", "link", "attach", "aggregate", "signals"]',
                                 extra='[signals]\nas_of_month = "2024-06"\npension_kinds = ["pension", "x"]'),
                     path=str(tmp_path / "j.toml"), check_files=False)
    assert spec.signals.as_of_month == "2024-06" and spec.signals.pension_kinds == ("pension", "x")
    assert "signals" not in parse_job(base.format(stages='["ingest"]', extra=""), check_files=False).stages
    with pytest.raises(SpecError) as err:
        parse_job(base.format(stages='["ingest", "signals"]',
                              extra='[signals]\nas_of_month = "2024-13"\nmax_record_ids = 0\nthreshold = 1'),
                  check_files=False)
    text = str(err.value)
    for fragment in ("signals.as_of_month", "signals.max_record_ids", "signals.threshold",
                     "the signals stage needs the aggregate stage"):
        assert fragment in text


def test_stage_runs_after_aggregate_and_exports_pseudonyms(signals_job):
    root, out, state = signals_job
    assert list(state.skipped) == ["ingest", "link", "attach", "aggregate"]
    manifest = pq.read_table(out / "signals" / "identity_conflict")
    exported = pq.read_table(out / "export" / "signals" / "identity_conflict")
    assert manifest.num_rows == exported.num_rows > 0
    assert all(len(p) == 64 for p in exported.column("person").to_pylist() + exported.column("nir_owner").to_pylist())
    shared = pq.read_table(out / "export" / "signals" / "nir_shared")
    assert all(len(p) == 64 for lst in shared.column("other_persons").to_pylist() for p in lst)
    assert (out / "export" / "signals" / "declarant_scorecard").exists()


def test_stage_output_is_deterministic(signals_job, tmp_path):
    from nirlink.engine.stages._signals import run_signals

    _, out, _ = signals_job
    run_signals(out, tmp_path / "again")
    for f in sorted((out / "signals").rglob("*.parquet")):
        assert f.read_bytes() == (tmp_path / "again" / f.relative_to(out / "signals")).read_bytes(), f


def test_planted_truth(signals_job):
    """At 3,000 persons the person-level rules find the planted truth (the 0.95 goal is measured
    at 200k persons in benchmarks/signals.py); the planted bad declarants rank first."""
    from nirlink.engine.synth._evaluate_signals import evaluate_signals

    root, out, _ = signals_job
    report = evaluate_signals(out, root)
    for rule, s in report["rules"].items():
        assert s["truth"] > 0, rule
        assert s["precision"] >= 0.85 and s["recall"] >= 0.85, (rule, s)
    assert report["declarants"]["planted_ranked"] >= 1
    assert report["declarants"]["top_k"]["precision"] == 1.0


def test_scorecard_counts_rejects_per_declarant_and_ranks(tmp_path):
    """Ingest rejects count for their declarant (by month when their date parses); declarants
    under min_declarant_rows are not ranked; the ranking follows the excess of problem persons."""
    from nirlink.engine.io._schemas import rejects_schema
    from nirlink.engine.stages._signals import _reduce_task

    career, resource, _, _ = _bucket(3)
    counts = pa.concat_tables([declarant_counts(career, "career"), declarant_counts(resource, "resource")])
    persons = pa.concat_tables([declarant_persons(career, "career"), declarant_persons(resource, "resource")])
    for name, t in ((".declarants", counts), (".declarant_persons", persons)):
        (tmp_path / name).mkdir()
        pq.write_table(t, tmp_path / name / "part-0.parquet")
    schema = rejects_schema("resource")
    raw_type = schema.field("raw").type
    raws = [{f.name: None for f in raw_type} for _ in range(3)]
    for r, (payer, period) in zip(raws, [("P1", "2024-03-01"), ("P1", "not a date"), ("P9", "2024-03")]):
        r.update(payer_id=payer, period=period)
    rejects = pa.table({"source_file": ["f"] * 3, "row_number": [1, 2, 3], "record_id": [None] * 3,
                        "column": ["amount"] * 3, "reason": ["bad_number", "bad_date", "negative_amount"],
                        "reasons": ["x"] * 3, "value": ["v"] * 3, "raw": pa.array(raws, raw_type), "line": [None] * 3},
                       schema=schema)
    pq.write_table(rejects, tmp_path / "rejects.parquet")
    result = _reduce_task(str(tmp_path), "", [(str(tmp_path / "rejects.parquet"), "resource")],
                          SignalSettings(min_declarant_rows=50), 5)
    card = pq.read_table(tmp_path / "declarant_scorecard").to_pandas().set_index("declarant")
    assert result["declarant_scorecard"] == len(card)
    assert card.loc["P1", "rejects"] == 2 and card.loc["P9", "rejects"] == 1 and pd.isna(card.loc["P9", "rank"])
    c = counts.to_pandas().groupby("declarant")[["rows", "problem_rows"]].sum()
    for d in ("E1", "E2", "E3", "P1", "P2"):
        assert card.loc[d, "rows"] == c.loc[d, "rows"]
        rej = card.loc[d, "rejects"]
        assert card.loc[d, "score"] == pytest.approx((c.loc[d, "problem_rows"] + rej) / (c.loc[d, "rows"] + rej))
    ranked = card.dropna(subset=["rank"]).sort_values("rank")
    assert list(ranked["excess_z"]) == sorted(ranked["excess_z"], reverse=True)
    p = persons.to_pandas().groupby("declarant")[["persons", "problem_persons"]].sum()
    k = p["problem_persons"].reindex(ranked.index) + ranked["rejects"]
    n = p["persons"].reindex(ranked.index) + ranked["rejects"]
    assert result["population_problem_share"] == pytest.approx(k.sum() / n.sum())
    assert list(ranked["excess_z"]) == pytest.approx(list(excess_z(k, n, min(2 * k.sum() / n.sum(), 0.999))))
    monthly = pq.read_table(tmp_path / "declarant_quality").to_pandas()
    p1 = monthly[(monthly["declarant"] == "P1") & (monthly["rejects"] > 0)]
    assert sorted(str(x) if pd.notna(x) else "no month" for x in p1["period"]) == ["2024-03-01", "no month"]


def test_evaluate_signals_command(signals_job):
    import json

    from typer.testing import CliRunner

    from nirlink.engine.cli import app
    from nirlink.engine.synth._evaluate_signals import evaluate_signals

    root, out, _ = signals_job
    runner = CliRunner()
    result = runner.invoke(app, ["evaluate", "--signals", str(out), "--truth", str(root / "truth"), "--output", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == json.loads(json.dumps(evaluate_signals(out, root)))
    text = runner.invoke(app, ["evaluate", "--signals", str(out), "--truth", str(root / "truth")])
    assert text.exit_code == 0 and "possible_pension_non_take_up" in text.stdout
    missing = runner.invoke(app, ["evaluate", "--truth", str(root / "truth")])
    assert missing.exit_code == 1 and "--links and --rows" in missing.output


def test_signals_fingerprint_follows_its_settings(tmp_path):
    """The stage re-runs when its settings change, not when another section does."""
    from nirlink.engine.jobs._fingerprint import stage_fingerprint

    base = """[job]\nname = "s"\nstages = ["ingest", "link", "attach", "aggregate", "signals"]
[[inputs]]\nname = "register"\nkind = "register"\npaths = ["r.parquet"]
[output]\ndirectory = "{out}"\n{extra}"""

    def fingerprint(extra):
        spec = parse_job(base.format(out=tmp_path / "out", extra=extra), path=str(tmp_path / "j.toml"),
                         check_files=False)
        return stage_fingerprint(spec, "signals", "previous")

    default = fingerprint("")
    assert fingerprint("[signals]\ndeath_grace_months = 0") == default
    assert fingerprint("[aggregate]\nfirst_review_month = \"2022-01\"") == default
    assert fingerprint("[signals]\ndeath_grace_months = 2") != default
    assert fingerprint("[signals]\nas_of_month = \"2024-01\"") != default


def test_explain_takes_a_case_record_id(signals_job):
    """`nirlink explain JOB RECORD_ID` with a record id of a case row explains that row's link:
    its signature's decision links it to the case's person (the NIR masked in the output)."""
    import json

    import pyarrow.compute as pc
    from typer.testing import CliRunner

    from nirlink.engine.cli import app

    _, out, _ = signals_job
    case = pq.read_table(out / "signals" / "identity_conflict").slice(0, 1).to_pylist()[0]
    rid = case["record_ids"][0]
    result = CliRunner().invoke(app, ["explain", str(out), str(rid), "--output", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["record_id"] == rid and data["decision"]["status"] == "linked"
    assert case["person"] not in result.stdout  # masked
    links = pq.read_table(out / "link" / "links")
    row = links.filter(pc.equal(links.column("signature"), data["signature"])).to_pylist()[0]
    assert row["person"] == case["person"] and row["method"] == case["link_method"]


@settings(max_examples=60)
@given(nirs=st.lists(st.text(alphabet="0123456789AB", min_size=13, max_size=15), max_size=40, unique=True),
       probes=st.lists(st.none() | st.text(alphabet="0123456789ABé\x00", max_size=17), max_size=40))
def test_register_lookup_is_a_dictionary_lookup(nirs, probes):
    """The register file's binary search finds each NIR at its row and nothing else (nulls,
    longer or non-ASCII values, prefixes of a NIR). Oracle: a Python dict."""
    from nirlink.engine.stages._signals_rules import register_file_table

    table = pa.table({"nir": pa.array(nirs, pa.string()), "owner": pa.array([f"o{n}" for n in nirs], pa.string()),
                      "birth_year": pa.array([1950] * len(nirs), pa.int16()),
                      "birth_month": pa.array([None] * len(nirs), pa.int8()),
                      "death_date": pa.array([None] * len(nirs), pa.date32())})
    stored = register_file_table(table)
    reg = Register.from_table(stored)
    row_of = {n: i for i, n in enumerate(stored.column("nir").to_pylist())}
    values = probes + nirs + [n[:-1] for n in nirs] + [n + "\x00" for n in nirs]
    got = reg.find(pa.array(values, pa.string()))
    assert got.tolist() == [row_of.get(v, -1) for v in values]
    assert reg.owner.take(pa.array([row_of[n] for n in nirs], pa.int64())).to_pylist() == [f"o{n}" for n in nirs]
    assert reg.birth_month.tolist() == [0] * len(nirs) and reg.death_day.tolist() == [-1] * len(nirs)
