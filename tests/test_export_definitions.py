"""The exports other systems read, against their definitions in the README ("Aggregation rules",
"Exports for other systems"), computed again by DuckDB from the exported linked rows alone:
the yearly resources (`resource_person_year`) and the housing-aid review
(`resource_person_review`); and the export manifest's signals entries (schemas, counts)."""

from __future__ import annotations

import json

import duckdb
import pyarrow.parquet as pq

from nirlink.engine.synth._evaluate_signals import PERSON_RULES

KINDS = ("salary", "pension", "complementary_pension", "unemployment_benefit", "daily_allowance", "other",
         "minimum_old_age_benefit")


def _con(export):
    con = duckdb.connect()
    # the definition's input: every exported resource row that has a person, amounts in cents
    con.execute(f"""create view r as select person, year(period) as year,
                           year(period) * 12 + month(period) - 1 as m, kind, cast(round(amount * 100) as bigint) as cents
                    from read_parquet('{export}/resource_rows/**/*.parquet', hive_partitioning = true)
                    where person is not null""")
    return con


def test_resource_person_year_is_its_definition(signals_job):
    """Per person and calendar year: the amounts of each kind and their total (rows' amounts in
    cents, summed exactly) and the months of the year with at least one row."""
    _, out, _ = signals_job
    export = out / "export"
    con = _con(export)
    per_kind = ", ".join(f"sum(cents) filter (where kind = '{k}') as k_{k}" for k in KINDS)
    want = con.sql(f"""select person, year, {per_kind}, sum(cents) as total, count(distinct m) as months
                       from r group by person, year""")
    got = con.sql(f"""select person, cast(year as bigint) as year,
                             {', '.join(f'cast(round(amount_{k} * 100) as bigint) as k_{k}' for k in KINDS)},
                             cast(round(total * 100) as bigint) as total, months
                      from read_parquet('{export}/resource_person_year/**/*.parquet', hive_partitioning = true)""")
    con.register("want", want.to_arrow_table())
    con.register("got", got.to_arrow_table())
    cols = ["person", "year", *[f"k_{k}" for k in KINDS], "total", "months"]
    fill = ", ".join(c if c in ("person", "year", "months") else f"coalesce({c}, 0)" for c in cols)
    n_want, n_got = con.execute("select count(*) from want").fetchall()[0][0], con.execute("select count(*) from got").fetchall()[0][0]
    assert n_want == n_got > 1000
    diff = con.sql(f"(select {fill} from want except select {fill} from got) union all "
                   f"(select {fill} from got except select {fill} from want)").fetchall()
    assert diff == []


def test_resource_person_review_is_its_definition(signals_job):
    """For each quarterly review month M (January, April, July, October) from the job's
    first_review_month whose window M-13 .. M-2 holds at least one of the person's rows: the
    window's first and last months, the income of the window (cents, exact) and its months with
    at least one row."""
    _, out, _ = signals_job
    export = out / "export"
    first = json.loads((out / "aggregate" / "_manifest.json").read_text())["first_review_month"]
    fy, fm = (int(x) for x in first.split("-"))
    con = _con(export)
    con.execute("create table pm as select person, m, sum(cents) as cents from r group by person, m")
    want = con.sql(f"""
        with reviews as (select distinct person, m + k as review from pm, range(2, 14) t(k)
                         where (m + k) % 3 = 0 and m + k >= {fy * 12 + fm - 1})
        select v.person, v.review, sum(pm.cents) as cents, count(*) as months
        from reviews v join pm on pm.person = v.person and pm.m between v.review - 13 and v.review - 2
        group by v.person, v.review""").to_arrow_table()
    got = con.sql(f"""select person, year(review_month) * 12 + month(review_month) - 1 as review,
                             cast(round(income_12m * 100) as bigint) as cents, months_with_income as months,
                             date_diff('month', window_start, review_month) as lo,
                             date_diff('month', window_end, review_month) as hi,
                             day(review_month) as d
                      from read_parquet('{export}/resource_person_review/**/*.parquet')""").to_arrow_table()
    con.register("want", want)
    con.register("got", got)
    assert con.sql("select distinct lo, hi, d from got").fetchall() == [(13, 2, 1)]
    assert con.execute("select count(*) filter (where review % 3 <> 0) from got").fetchall()[0][0] == 0
    assert want.num_rows == got.num_rows > 1000
    cols = "person, review, cents, months"
    diff = con.sql(f"(select {cols} from want except select {cols} from got) union all "
                   f"(select {cols} from got except select {cols} from want)").fetchall()
    assert diff == []


def test_export_manifest_lists_the_signals_datasets(signals_job):
    """signals/<rule> for every rule and the scorecard, each with the schema and row count of
    what was exported, and the same rows as the signals stage published."""
    _, out, _ = signals_job
    manifest = json.loads((out / "export" / "_manifest.json").read_text())
    signals = json.loads((out / "signals" / "_manifest.json").read_text())
    names = (*PERSON_RULES, "declarant_quality", "declarant_scorecard")
    for name in names:
        entry = manifest["tables"][f"signals/{name}"]
        table = pq.read_table(out / "export" / "signals" / name)
        assert entry["rows"] == table.num_rows == signals["tables"][name]["rows"], name
        assert [c["name"] for c in entry["schema"]] == table.schema.names, name
        assert sum(f["rows"] for f in entry["files"]) == entry["rows"]
        assert all((out / "export" / f["path"]).exists() for f in entry["files"])
    assert {k for k in manifest["tables"] if k.startswith("signals/")} == {f"signals/{n}" for n in names}
    card = manifest["tables"]["signals/declarant_scorecard"]["schema"]
    assert {"declarant", "rank", "excess_z", "persons", "problem_persons"} <= {c["name"] for c in card}
