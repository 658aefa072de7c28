"""The aggregate stage on synthetic data against an independent DuckDB SQL implementation."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nirlink.engine.reference._tables import year_table
from nirlink.engine.stages._aggregate import run_aggregate
from nirlink.engine.synth._truth import attach_truth


@pytest.fixture(scope="module")
def attached(tmp_path_factory, synth_small, dask_client):
    root, _ = synth_small
    out = tmp_path_factory.mktemp("attached")
    attach_truth(root, out, client=dask_client)
    return out


@pytest.fixture(scope="module")
def aggregated(tmp_path_factory, attached, dask_client):
    out = tmp_path_factory.mktemp("agg") / "aggregate"
    manifest = run_aggregate(career=attached / "career", resource=attached / "resource", out_dir=out,
                             client=dask_client, partitioned_by_person=True)
    return out, manifest


def _floats(table: pa.Table, column: str) -> np.ndarray:
    """A money column (decimal(18, 2)) as float64, for comparing with the SQL's doubles."""
    return table.column(column).cast(pa.float64()).to_numpy()


def _con(attached):
    t = year_table()
    con = duckdb.connect()
    con.register("ref", pa.table({"year": t.years.astype(np.int64), "pass": t.pass_annual, "salval": t.salval,
                                  "reval": t.reval}))
    con.execute(f"create view career as select * from read_parquet('{attached}/career/*.parquet')")
    con.execute(f"create view resource as select * from read_parquet('{attached}/resource/*.parquet')")
    return con


CAREER_SQL = """
with py as (
  select person, year,
         sum(case when kind = 'salary' then round(gross_salary * 100) else 0 end) / 100.0 as gross,
         sum(case when kind = 'unemployment' then days else 0 end) as d_unemp,
         sum(case when kind = 'sickness' then days else 0 end) as d_sick,
         sum(case when kind = 'maternity' then 1 else 0 end) as n_mat
  from career group by person, year),
q as (
  select py.*, ref.pass, ref.reval,
         case when gross > 0 then least(4, floor(gross / ref.salval)) else 0 end as q_sal,
         n_mat + d_unemp // 50 + d_sick // 60 as q_assim
  from py join ref using (year)),
y as (
  select *, least(4, q_sal + q_assim) as quarters, least(gross, pass) as capped,
         least(gross, pass) * reval as revalued,
         gross > 0 and (year < 2004 or least(4, q_sal + q_assim) >= 1) as eligible
  from q)
select * from y order by person, year
"""


def test_career_person_year_equals_sql(aggregated, attached):
    out, _ = aggregated
    expected = _con(attached).execute(CAREER_SQL).to_arrow_table()
    got = pq.read_table(out / "career_person_year").sort_by([("person", "ascending"), ("year", "ascending")])
    assert got.num_rows == expected.num_rows
    assert got.column("person").to_pylist() == expected.column("person").to_pylist()
    assert got.column("year").to_pylist() == expected.column("year").to_pylist()
    assert got.schema.field("gross_salary").type == pa.decimal128(18, 2)  # money: exact cents
    assert np.allclose(_floats(got, "gross_salary"), expected.column("gross").to_numpy(), atol=1e-6)
    assert np.allclose(_floats(got, "capped_salary"), expected.column("capped").to_numpy(), atol=0.006)
    assert np.allclose(_floats(got, "revalued_capped_salary"), expected.column("revalued").to_numpy(), atol=0.005 + 1e-9)
    assert got.column("quarters_salary").to_pylist() == expected.column("q_sal").to_pylist()
    assert got.column("quarters_assimilated").to_pylist() == expected.column("q_assim").to_pylist()
    assert got.column("quarters").to_pylist() == expected.column("quarters").to_pylist()
    assert got.column("counts_for_sam").to_pylist() == expected.column("eligible").to_pylist()


def test_career_person_equals_sql(aggregated, attached):
    out, _ = aggregated
    con = _con(attached)
    expected = con.execute(f"""
        with y as ({CAREER_SQL}),
        births as (select person, max(person_birth_year) as by from career group by person),
        ranked as (select y.*, row_number() over (partition by person order by revalued desc) as rk
                   from y where eligible)
        select b.person, sum(y.quarters) as quarters, min(y.year) as first_year, max(y.year) as last_year,
               coalesce((select avg(revalued) from ranked r where r.person = b.person and r.rk <= 25), 0) as sam
        from births b join y using (person) group by b.person order by b.person""").to_arrow_table()
    got = pq.read_table(out / "career_person").sort_by("person")
    assert got.column("person").to_pylist() == expected.column("person").to_pylist()
    assert got.column("quarters").to_pylist() == expected.column("quarters").to_pylist()
    assert got.column("first_year").to_pylist() == expected.column("first_year").to_pylist()
    assert np.allclose(_floats(got, "sam"), expected.column("sam").to_numpy(), rtol=1e-9, atol=0.01)
    # synthetic cohorts are all >= 1935, so N = 25 only from 1948 (the cohort table), checked on a few
    by = dict(zip(got.column("person").to_pylist(), got.column("birth_year").to_pylist()))
    best = dict(zip(got.column("person").to_pylist(), got.column("sam_best_years").to_pylist()))
    assert all(best[p] == 25 for p, y in by.items() if y is not None and y >= 1948)
    assert any(best[p] < 25 for p, y in by.items() if y is not None and y < 1944)


def test_resources_equal_sql(aggregated, attached):
    out, _ = aggregated
    con = _con(attached)
    expected = con.execute("""
        select person, period, sum(round(amount * 100)) / 100.0 as total, count(*) as n,
               sum(case when kind = 'pension' then round(amount * 100) else 0 end) / 100.0 as pension
        from resource group by 1, 2 order by 1, 2""").to_arrow_table()
    got = pq.read_table(out / "resource_person_month").sort_by([("person", "ascending"), ("period", "ascending")])
    assert got.column("person").to_pylist() == expected.column("person").to_pylist()
    assert "total" not in got.column_names  # the sum of the kinds' columns (README, "Exports")
    total = sum(_floats(got, c) for c in got.column_names if c.startswith("amount_"))
    assert np.allclose(total, expected.column("total").to_numpy(), atol=1e-6)
    assert np.allclose(_floats(got, "amount_pension"), expected.column("pension").to_numpy(), atol=1e-6)
    assert got.column("rows").to_pylist() == expected.column("n").to_pylist()
    # rolling 12 months from M-13 to M-2 at quarterly reviews from 2021-01
    review = con.execute("""
        with m as (select person, period, sum(round(amount * 100)) as cents from resource group by 1, 2),
        grid as (select distinct person, r::date as review from m,
                 range(date '2021-01-01', date '2027-03-01', interval 3 month) t(r))
        select g.person, g.review, sum(m.cents) / 100.0 as income, count(*) as months
        from grid g join m on m.person = g.person
         and m.period between g.review - interval 13 month and g.review - interval 2 month
        group by 1, 2 order by 1, 2""").to_arrow_table()
    got_r = pq.read_table(out / "resource_person_review").sort_by([("person", "ascending"),
                                                                    ("review_month", "ascending")])
    assert got_r.num_rows == review.num_rows
    assert got_r.column("person").to_pylist() == review.column("person").to_pylist()
    assert [d.isoformat() for d in got_r.column("review_month").to_pylist()] == \
        [d.isoformat()[:10] for d in review.column("review").to_pylist()]
    assert np.allclose(_floats(got_r, "income_12m"), review.column("income").to_numpy(), atol=1e-6)
    assert got_r.column("months_with_income").to_pylist() == review.column("months").to_pylist()


def test_shuffle_path_gives_the_same_tables(aggregated, attached, dask_client, tmp_path):
    out, _ = aggregated
    other = tmp_path / "shuffled"
    run_aggregate(career=attached / "career", resource=attached / "resource", out_dir=other, client=dask_client,
                  partitioned_by_person=False, npartitions=4)
    for name in ("career_person_year", "career_person", "resource_person_month", "resource_person_review"):
        keys = [("person", "ascending")] + ([("year", "ascending")] if "year" in name else []) + \
               ([("period", "ascending")] if "month" in name else []) + \
               ([("review_month", "ascending")] if "review" in name else [])
        a = pq.read_table(out / name).sort_by(keys)
        b = pq.read_table(other / name).sort_by(keys)
        assert a.equals(b), name


def test_rows_without_person_are_counted(attached, tmp_path):
    t = pq.read_table(attached / "career")
    person = t.column("person").to_pylist()
    person[:100] = [None] * 100
    t = t.set_column(t.column_names.index("person"), "person", pa.array(person, pa.string()))
    (tmp_path / "c").mkdir()
    pq.write_table(t, tmp_path / "c" / "part-00000.parquet")
    m = run_aggregate(career=tmp_path / "c", out_dir=tmp_path / "o", partitioned_by_person=True)
    assert m["rows_without_person"]["career"] == 100
    assert m["inputs"]["career"]["rows_in"] == t.num_rows


def test_two_runs_publish_identical_bytes(attached, tmp_path):
    import hashlib

    def digest(root):
        return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*.parquet"))}

    run_aggregate(career=attached / "career", out_dir=tmp_path / "a", partitioned_by_person=True)
    run_aggregate(career=attached / "career", out_dir=tmp_path / "b", partitioned_by_person=True)
    assert digest(tmp_path / "a") == digest(tmp_path / "b") != {}
    # without the increment's accumulators (a job that keeps nothing for increments): the same
    # published tables, no career_person_year_state
    m = run_aggregate(career=attached / "career", out_dir=tmp_path / "c", partitioned_by_person=True, state=False)
    state = {k for k in digest(tmp_path / "a") if k.startswith("career_person_year_state/")}
    assert state and m["state"] == {} and not (tmp_path / "c" / "career_person_year_state").exists()
    assert digest(tmp_path / "c") == {k: v for k, v in digest(tmp_path / "a").items() if k not in state}


def test_dictionary_columns_from_other_writers_give_the_same_tables():
    """person and kind arrive as Parquet dictionaries; a dictionary holding a value twice or
    values no row uses (possible from other writers) must not split or invent persons."""
    from nirlink.engine.stages._aggregate_partitions import career_partition, resource_partition

    people = ["P3", "P1", "P2", "P1", "P9"]  # P1 twice, P9 unused
    idx = pa.array([0, 1, 2, 3, 3, None, 1], pa.int32())
    person = pa.DictionaryArray.from_arrays(idx, pa.array(people))
    kinds = pa.DictionaryArray.from_arrays(pa.array([0, 1, 0, 0, 1, 0, 0], pa.int32()),
                                           pa.array(["salary", "unemployment", "sickness"]))
    career = pa.table({"person": person, "year": pa.array([2001, 2001, 2002, 2001, 2003, 2001, 2005], pa.int16()),
                       "kind": kinds, "gross_salary": [9000.0, None, 12000.0, 500.0, None, 1.0, 30000.0],
                       "days": [0, 120, 0, 0, 60, 0, 0]})
    plain = career.set_column(0, "person", person.cast(pa.string())).set_column(2, "kind", kinds.cast(pa.string()))
    got, stats = career_partition(career)
    expected, expected_stats = career_partition(plain)
    assert stats == expected_stats and stats["rows_without_person"] == 1
    assert got["career_person"].column("person").to_pylist() == ["P1", "P2", "P3"]
    for name in got:
        assert got[name].equals(expected[name]), name
    resource = pa.table({"person": person, "period": pa.array([11000, 11000, 11031, 11031, 11000, 11000, 11400],
                                                              pa.int32()).cast(pa.date32()),
                         "kind": pa.DictionaryArray.from_arrays(pa.array([0] * 7, pa.int32()), pa.array(["salary"])),
                         "amount": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]})
    plain = resource.set_column(0, "person", person.cast(pa.string())).set_column(
        2, "kind", resource.column("kind").cast(pa.string()))
    got, _ = resource_partition(resource)
    expected, _ = resource_partition(plain)
    for name in got:
        assert got[name].equals(expected[name]), name


def test_a_failed_write_on_the_writing_thread_fails_the_file(tmp_path):
    """The rows file's writes run on a thread: an error there reaches the task (at its next
    write or at the end), the partial file is removed, nothing is published; writes run in
    the order they were queued."""
    from nirlink.engine.stages._aggregate import MAX_PENDING_WRITES, _RowsFile

    order = []
    target = tmp_path / "rows" / "part-00000.parquet"
    table = pa.table({"person": ["a", "b"], "amount": [1, 2]})

    def failing():
        order.append("fail")
        raise OSError("No space left on device (on purpose)")

    with pytest.raises(OSError, match="on purpose"):
        with _RowsFile(target) as rows:
            rows.write(table)
            rows.submit(order.append, "after the first rows")
            rows.submit(failing)
            for _ in range(MAX_PENDING_WRITES + 1):  # waits for the oldest: the failure surfaces here
                rows.submit(order.append, "later")
    assert order[:2] == ["after the first rows", "fail"]
    assert not target.exists() and not list(target.parent.glob(".*.tmp"))

    with _RowsFile(target) as rows:
        rows.write(table)
        rows.write(table)
    assert pq.read_table(target).num_rows == 4
