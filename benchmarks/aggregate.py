"""Aggregation throughput: `python -m benchmarks.aggregate [--career-rows 1e7,1e8] [--repeats 3]`.

The same career and resource aggregations, Parquet in to Parquet out, on the same files
(synthetic rows with their true person attached), by:
- nirlink: the aggregate stage (Dask, 2 worker processes, Numba kernels), input
  partitioned by person (as the attach stage writes it), and with a Dask shuffle;
- DuckDB SQL (2 threads), Polars (2 threads) and pandas, each computing the five tables:
  career person-year (salary, PASS cap, quarters by salary and assimilated periods,
  revalued capped salary, SAM eligibility), career person (quarters, first/last year,
  SAM = mean of the best 25 eligible years), resource person-month and person-year totals
  by kind, and quarterly 12-month reviews (months M-13..M-2) from 2021-01.
pandas and Polars run only where the rows fit comfortably in memory (--pandas-max-rows,
--polars-max-rows); skipped engines are named in the table's header.
Also the kernels alone (in memory) against a one-pass read of the same input arrays.
Results: benchmarks/results/aggregate.json and aggregate.md.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ._common import local_client, markdown_table, measure, write_results

THREADS = 2


def _ref_table():
    from nirlink.engine.reference._tables import year_table

    t = year_table()
    return pa.table({"year": t.years.astype(np.int16), "pass": t.pass_annual, "salval": t.salval, "reval": t.reval})


# ---------------------------------------------------------------- DuckDB

def duckdb_run(rows: Path, out: Path) -> None:
    import duckdb

    con = duckdb.connect()
    con.execute(f"set threads = {THREADS}")
    con.execute("set preserve_insertion_order = false")
    con.register("ref", _ref_table())
    out.mkdir(parents=True, exist_ok=True)
    con.execute(f"create view career as select * from read_parquet('{rows}/career/*.parquet')")
    con.execute(f"create view resource as select * from read_parquet('{rows}/resource/*.parquet')")
    con.execute("""create temp table py as
      with a as (select person, year, max(person_birth_year) birth_year,
        sum(case when kind = 'salary' then round(gross_salary * 100) else 0 end)::bigint cents,
        sum(case when kind = 'unemployment' then days else 0 end) du, sum(case when kind = 'sickness' then days else 0 end) ds,
        sum(case when kind = 'maternity' then 1 else 0 end) nm,
        sum(case when kind in ('disability', 'military') then days else 0 end) d90
        from career group by person, year)
      select a.*, least(cents, round(ref.pass * 100)) capped, ref.reval,
        case when cents > 0 then least(4, floor(cents / (ref.salval * 100))) else 0 end qs,
        nm + du // 50 + ds // 60 + d90 // 90 qa
      from a join ref using (year)""")
    con.execute(f"""copy (select person, year, cents / 100.0 gross_salary, capped / 100.0 capped_salary, qs quarters_salary,
        qa quarters_assimilated, least(4, qs + qa) as quarters, capped / 100.0 * reval revalued_capped_salary,
        cents > 0 and (year < 2004 or least(4, qs + qa) >= 1) counts_for_sam from py)
        to '{out}/career_person_year.parquet' (format parquet)""")
    con.execute(f"""copy (with e as (select person, capped / 100.0 * reval v,
          row_number() over (partition by person order by capped / 100.0 * reval desc) rk
          from py where cents > 0 and (year < 2004 or least(4, qs + qa) >= 1))
        select p.person, p.q as quarters, p.fy first_year, p.ly last_year, coalesce(s.sam, 0) sam
        from (select person, sum(least(4, qs + qa)) q, min(year) fy, max(year) ly from py group by person) p
        left join (select person, avg(v) sam from e where rk <= 25 group by person) s using (person))
        to '{out}/career_person.parquet' (format parquet)""")
    kinds = ["salary", "pension", "complementary_pension", "unemployment_benefit", "daily_allowance", "other"]
    cols = ", ".join(f"sum(case when kind = '{k}' then round(amount * 100) else 0 end) / 100.0 amount_{k}" for k in kinds)
    con.execute(f"create temp table pm as select person, period, {cols}, sum(round(amount * 100))::bigint cents, "
                "count(*) n from resource group by person, period")
    con.execute(f"copy (select * exclude (cents), cents / 100.0 total from pm) to '{out}/resource_person_month.parquet' (format parquet)")
    ysum = ", ".join(f"sum(amount_{k}) amount_{k}" for k in kinds)
    con.execute(f"copy (select person, year(period) y, {ysum}, sum(cents) / 100.0 as total, count(*) as months from pm "
                f"group by person, y) to '{out}/resource_person_year.parquet' (format parquet)")
    con.execute(f"""copy (with b as (select person, min(period) lo, max(period) hi from pm group by person),
        g as (select person, r::date review from b, range(date '2021-01-01', date '2027-03-01', interval 3 month) t(r)
              where r >= lo + interval 2 month and r <= hi + interval 13 month)
        select g.person, g.review, sum(pm.cents) / 100.0 as income_12m, count(*) as months
        from g join pm on pm.person = g.person and pm.period between g.review - interval 13 month
                                                                and g.review - interval 2 month
        group by g.person, g.review) to '{out}/resource_person_review.parquet' (format parquet)""")


# ---------------------------------------------------------------- Polars

def polars_run(rows: Path, out: Path) -> None:
    import polars as pl

    out.mkdir(parents=True, exist_ok=True)
    ref = pl.from_arrow(_ref_table())
    c = pl.scan_parquet(f"{rows}/career/*.parquet")
    py = (c.group_by("person", "year").agg(
        cents=pl.when(pl.col("kind") == "salary").then((pl.col("gross_salary") * 100).round()).otherwise(0).sum().cast(pl.Int64),
        du=pl.when(pl.col("kind") == "unemployment").then(pl.col("days")).otherwise(0).sum(),
        ds=pl.when(pl.col("kind") == "sickness").then(pl.col("days")).otherwise(0).sum(),
        nm=(pl.col("kind") == "maternity").sum(),
        d90=pl.when(pl.col("kind").is_in(["disability", "military"])).then(pl.col("days")).otherwise(0).sum())
        .join(ref.lazy(), on="year")
        .with_columns(capped=pl.min_horizontal("cents", (pl.col("pass") * 100).round()),
                      qs=pl.when(pl.col("cents") > 0).then((pl.col("cents") / (pl.col("salval") * 100)).floor().clip(0, 4)).otherwise(0),
                      qa=pl.col("nm") + pl.col("du") // 50 + pl.col("ds") // 60 + pl.col("d90") // 90)
        .with_columns(quarters=pl.min_horizontal(pl.col("qs") + pl.col("qa"), pl.lit(4)),
                      revalued=pl.col("capped") / 100 * pl.col("reval"))
        .with_columns(eligible=(pl.col("cents") > 0) & ((pl.col("year") < 2004) | (pl.col("quarters") >= 1)))
        .collect())
    py.select("person", "year", gross_salary=pl.col("cents") / 100, capped_salary=pl.col("capped") / 100,
              quarters_salary="qs", quarters_assimilated="qa", quarters="quarters",
              revalued_capped_salary="revalued", counts_for_sam="eligible").write_parquet(out / "career_person_year.parquet")
    sam = (py.filter("eligible").sort("revalued", descending=True).group_by("person")
           .agg(sam=pl.col("revalued").head(25).mean()))
    (py.group_by("person").agg(quarters=pl.col("quarters").sum(), first_year=pl.col("year").min(),
                               last_year=pl.col("year").max())
     .join(sam, on="person", how="left").with_columns(pl.col("sam").fill_null(0))
     .write_parquet(out / "career_person.parquet"))
    kinds = ["salary", "pension", "complementary_pension", "unemployment_benefit", "daily_allowance", "other"]
    r = pl.scan_parquet(f"{rows}/resource/*.parquet")
    pm = (r.group_by("person", "period").agg(
        *[pl.when(pl.col("kind") == k).then((pl.col("amount") * 100).round()).otherwise(0).sum().alias(f"amount_{k}")
          for k in kinds], cents=(pl.col("amount") * 100).round().sum().cast(pl.Int64), rows=pl.len()).collect())
    pm.with_columns([(pl.col(f"amount_{k}") / 100) for k in kinds], total=pl.col("cents") / 100).drop("cents") \
      .write_parquet(out / "resource_person_month.parquet")
    (pm.group_by("person", pl.col("period").dt.year().alias("year"))
       .agg([pl.col(f"amount_{k}").sum() / 100 for k in kinds], total=pl.col("cents").sum() / 100, months=pl.len())
       .write_parquet(out / "resource_person_year.parquet"))
    # each month counts in the reviews 2 to 13 months after it: shift it into those, keep the
    # quarterly ones from 2021-01, sum (the same idea as the pandas baseline; no cross join)
    m = pm.select("person", (pl.col("period").dt.year() * 12 + pl.col("period").dt.month() - 1).alias("m"), "cents")
    shifted = pl.concat([m.with_columns(review=pl.col("m") + lo) for lo in range(2, 14)])
    (shifted.filter((pl.col("review") % 3 == 0) & (pl.col("review") >= 2021 * 12))
     .group_by("person", "review").agg(income_12m=pl.col("cents").sum() / 100, months=pl.len())
     .write_parquet(out / "resource_person_review.parquet"))


# ---------------------------------------------------------------- pandas

def pandas_run(rows: Path, out: Path) -> None:
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    ref = _ref_table().to_pandas()
    c = pd.read_parquet(rows / "career", columns=["person", "year", "kind", "gross_salary", "days"])
    c["cents"] = np.where(c.kind == "salary", (c.gross_salary.fillna(0) * 100).round(), 0).astype(np.int64)
    for k, col in (("unemployment", "du"), ("sickness", "ds")):
        c[col] = np.where(c.kind == k, c.days, 0)
    c["nm"] = (c.kind == "maternity").astype(np.int64)
    c["d90"] = np.where(c.kind.isin(["disability", "military"]), c.days, 0)
    py = c.groupby(["person", "year"], sort=False)[["cents", "du", "ds", "nm", "d90"]].sum().reset_index()
    py = py.merge(ref, on="year")
    py["capped"] = np.minimum(py.cents, (py["pass"] * 100).round())
    py["qs"] = np.where(py.cents > 0, np.clip(np.floor(py.cents / (py.salval * 100)), 0, 4), 0)
    py["qa"] = py.nm + py.du // 50 + py.ds // 60 + py.d90 // 90
    py["quarters"] = np.minimum(py.qs + py.qa, 4)
    py["revalued"] = py.capped / 100 * py.reval
    py["eligible"] = (py.cents > 0) & ((py.year < 2004) | (py.quarters >= 1))
    py.to_parquet(out / "career_person_year.parquet")
    top = (py[py.eligible].sort_values("revalued", ascending=False).groupby("person").head(25)
           .groupby("person").revalued.mean().rename("sam"))
    per = py.groupby("person").agg(quarters=("quarters", "sum"), first_year=("year", "min"), last_year=("year", "max"))
    per.join(top).fillna({"sam": 0}).reset_index().to_parquet(out / "career_person.parquet")
    r = pd.read_parquet(rows / "resource", columns=["person", "period", "kind", "amount"])
    r["cents"] = (r.amount * 100).round().astype(np.int64)
    pm = r.pivot_table(index=["person", "period"], columns="kind", values="cents", aggfunc="sum", fill_value=0)
    pm["total"] = pm.sum(axis=1)
    pm = pm.reset_index()
    pm.to_parquet(out / "resource_person_month.parquet")
    pm["year"] = pd.to_datetime(pm.period).dt.year
    pm.drop(columns=["period"]).groupby(["person", "year"]).sum().reset_index().to_parquet(out / "resource_person_year.parquet")
    pm["m"] = pd.to_datetime(pm.period).dt.year * 12 + pd.to_datetime(pm.period).dt.month - 1
    rows_out = []
    for lo in range(2, 14):  # review M covers months M-13..M-2: shift each month into its reviews
        s = pm[["person", "m", "total"]].copy()
        s["review"] = s.m + lo
        rows_out.append(s[s.review % 3 == 0])
    rv = pd.concat(rows_out)
    rv = rv[rv.review >= 2021 * 12].groupby(["person", "review"]).total.agg(["sum", "size"]).reset_index()
    rv.to_parquet(out / "resource_person_review.parquet")


# ---------------------------------------------------------------- kernels alone

def kernel_vs_read(rows: Path, repeats: int) -> dict:
    from nirlink.engine.reference._tables import year_table
    from nirlink.engine.stages._aggregate_partitions import _codes, _persons
    from nirlink.kernels._career import CAREER_KINDS, aggregate_career

    f = sorted((rows / "career").glob("*.parquet"))[0]
    table = pq.read_table(f)

    t, idx, persons, _ = _persons(table)
    kinds = _codes(t.column("kind"), CAREER_KINDS, "bench")
    gross = t.column("gross_salary").to_numpy(zero_copy_only=False).astype(np.float64)
    years = t.column("year").to_numpy().astype(np.int64)
    days = t.column("days").to_numpy().astype(np.int64)
    best = np.full(len(persons), 25)
    def kern(arrays):
        return lambda: aggregate_career(arrays[0], len(persons), *arrays[1:], best_years=best, table=year_table())

    arrays = [idx, years, kinds, gross, days]
    by_person = np.argsort(idx, kind="stable")
    sorted_arrays = [a[by_person].copy() for a in arrays]

    def one_pass():
        return sum(float(a.sum()) for a in arrays)

    # one call of each first: Numba compiles per argument types and flags (a read-only
    # array is another type), and the first call must not be timed
    kern(arrays)()
    kern(sorted_arrays)()
    repeats = max(repeats, 5)  # the kernels take a fraction of a second: always a median of several
    k = measure(kern(arrays), repeats)
    ks = measure(kern(sorted_arrays), repeats)
    r = measure(one_pass, repeats)
    return {"rows": len(idx), "kernel_s": k["median_s"], "kernel_sorted_s": ks["median_s"],
            "one_pass_read_s": r["median_s"], "ratio": k["median_s"] / r["median_s"],
            "ratio_sorted": ks["median_s"] / r["median_s"], "input_bytes": int(sum(a.nbytes for a in arrays))}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--career-rows", default="1e7,1e8")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--pandas-max-rows", type=float, default=1.2e7,
                    help="career + resource rows above which pandas is skipped (it holds everything in memory)")
    ap.add_argument("--polars-max-rows", type=float, default=1.5e8,
                    help="career + resource rows above which Polars is skipped")
    ap.add_argument("--shuffle-max-rows", type=float, default=1.5e8,
                    help="career + resource rows above which the Dask-shuffle path is skipped (at 343M rows on "
                         "a 24 GiB machine its workers were restarted again and again at 95%% of their memory; "
                         "jobs use disk buckets instead)")
    ap.add_argument("--dir", default=None)
    ap.add_argument("--results-name", default="aggregate",
                    help="results/<name>.json and .md (e.g. aggregate-1e8 for a separate 100M-row run)")
    args = ap.parse_args(argv)
    from nirlink.engine.stages._aggregate import run_aggregate
    from nirlink.engine.synth._generate import synth
    from nirlink.engine.synth._params import SynthParams
    from nirlink.engine.synth._truth import attach_truth

    scratch = Path(args.dir or tempfile.mkdtemp(prefix="nirlink-bench-agg-"))
    results, table = [], []
    with local_client(n_workers=args.workers) as client:
        for size in (int(float(s)) for s in args.career_rows.split(",")):
            persons = max(1000, int(size / 37))
            data, rows = scratch / f"data-{size}", scratch / f"rows-{size}"
            if not (rows / "career").exists():
                synth(data, persons=persons, client=client, params=SynthParams(seed=4), overwrite=True)
                attach_truth(data, rows, client=client)
                shutil.rmtree(data, ignore_errors=True)
            n_career = sum(pq.read_metadata(f).num_rows for f in (rows / "career").glob("*.parquet"))
            n_res = sum(pq.read_metadata(f).num_rows for f in (rows / "resource").glob("*.parquet"))
            total = n_career + n_res
            runs = {
                "nirlink (partitioned)": lambda: run_aggregate(career=rows / "career", resource=rows / "resource",
                                                               out_dir=scratch / "o-nl", client=client,
                                                               partitioned_by_person=True),
                "nirlink (shuffle)": lambda: run_aggregate(career=rows / "career", resource=rows / "resource",
                                                           out_dir=scratch / "o-nls", client=client),
                "duckdb": lambda: duckdb_run(rows, scratch / "o-duck"),
            }
            if total <= args.polars_max_rows:
                runs["polars"] = lambda: polars_run(rows, scratch / "o-pl")
            if total <= args.pandas_max_rows:
                runs["pandas"] = lambda: pandas_run(rows, scratch / "o-pd")
            if total > args.shuffle_max_rows:
                runs.pop("nirlink (shuffle)")
            measured = {}
            for name, fn in runs.items():
                m = measure(fn, args.repeats)
                measured[name] = {k: m[k] for k in ("median_s", "times_s", "peak_rss_bytes")}
            duck = measured["duckdb"]["median_s"]
            for name, m in measured.items():
                table.append([f"{n_career:,}", f"{total:,}", name, f"{m['median_s']:.2f}",
                              f"{total / m['median_s'] / 1e6:.2f}", f"{m['peak_rss_bytes'] / 2**30:.2f}",
                              f"{duck / m['median_s']:.2f}"])
            kern = kernel_vs_read(rows, args.repeats)
            results.append({"career_rows": n_career, "resource_rows": n_res, "persons": persons, "runs": measured,
                            "kernel": kern})
    md = (f"Career + resource aggregation, Parquet to Parquet, {args.workers} workers / {THREADS} threads each engine, "
          f"median of {args.repeats} runs. Speed vs DuckDB > 1 means faster than DuckDB. Goal: >= 5x DuckDB.\n\n")
    md += markdown_table(["career rows", "all rows", "engine", "seconds", "M rows/s", "peak RSS GiB", "speed vs DuckDB"],
                         table)
    md += ("\n\nKernels alone (career, one partition in memory, median of at least 5 runs after a first call) vs "
           "one pass reading the same input arrays:\n\n")
    md += markdown_table(["rows", "input order", "kernel s", "one-pass read s", "ratio (goal <= 3)"],
                         [row for r in results for row in (
                             [f"{r['kernel']['rows']:,}", "as the attach stage writes it",
                              f"{r['kernel']['kernel_s']:.3f}", f"{r['kernel']['one_pass_read_s']:.3f}",
                              f"{r['kernel']['ratio']:.1f}"],
                             [f"{r['kernel']['rows']:,}", "sorted by person", f"{r['kernel']['kernel_sorted_s']:.3f}",
                              f"{r['kernel']['one_pass_read_s']:.3f}", f"{r['kernel']['ratio_sorted']:.1f}"])])
    write_results(args.results_name, {"workers": args.workers, "repeats": args.repeats, "results": results}, md,
                  scratch=None if args.dir else scratch)


if __name__ == "__main__":
    main()
