"""The signals stage: case datasets for fraud, non-take-up and data-quality work, from the
linked rows and aggregates the job already holds.

Mechanism: the register's facts the rules need (each NIR's person, birth, death) are sorted
once into an Arrow IPC file that every task memory-maps (as the attach stage does with the
link table); a task looks its bucket's NIRs up by binary search on the file's fixed-width NIR
keys, so it reads the pages of those rows only (``Register``). Then one task per person bucket of the attach stage (``b=<k>/``, read once:
every row of its persons) runs the person-level rules (engine/stages/_signals_rules.py) and
writes its cases, plus small partial tables (engine/stages/_signals_partials.py): (declared
NIR, person) pairs, counts per declarant and month, distinct persons per declarant. A last task sums those partials with DuckDB (out of core) into the
``nir_shared`` cases and the declarant scorecard, adding the ingest rejects per declarant.
Rows without a person (``b=nulls``) count for the declarants only.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from nirlink.engine.io._datasets import describe_dataset, staged_directory, write_json, write_parquet
from nirlink.kernels import InputError

from ._signals_partials import declarant_counts, declarant_persons, nir_pairs
from ._signals_scorecard import rank_scorecard
from ._signals_rules import (CASE_SCHEMAS, PERSON_RULES, RULES, Register, SignalSettings, register_file_table,
                             settings_label)

__all__ = ["run_signals", "SignalSettings", "RULES", "latest_month"]

CAREER_COLUMNS = ["record_id", "person", "nir", "nir_status", "link_status", "link_method", "employer_id",
                  "start_date", "kind", "gross_salary"]
RESOURCE_COLUMNS = ["record_id", "person", "nir", "nir_status", "link_status", "link_method", "payer_id", "period",
                    "kind", "amount"]


def _build_register(ingest_dir: str, link_dir: str, out: str) -> int:
    import duckdb

    con = duckdb.connect()
    con.execute("SET threads = 1")
    clusters = Path(link_dir) / "clusters.parquet"
    has_clusters = clusters.exists() and pq.read_metadata(clusters).num_rows > 0
    cluster_sql = f"""left join (select r.nir, c.person from read_parquet('{clusters}') c
                                join read_parquet('{link_dir}/register/*.parquet') r using (unique_id)) c
                      on c.nir = g.nir""" if has_clusters else ""
    owner = "coalesce(c.person, g.nir)" if has_clusters else "g.nir"
    table = con.sql(f"""
        with g as (select nir, any_value(birth_year) as birth_year, any_value(birth_month) as birth_month,
                          min(death_date) as death_date
                   from read_parquet('{ingest_dir}/register/**/*.parquet') group by nir)
        select g.nir, {owner} as owner, g.birth_year, g.birth_month, g.death_date
        from g {cluster_sql} order by g.nir""").to_arrow_table()
    con.close()
    table = register_file_table(table.combine_chunks())
    with pa.OSFile(out, "wb") as sink, ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return table.num_rows


def latest_month(resource_dir: Path) -> int | None:
    """The latest resource month of the attached rows, from the Parquet statistics (no data read)."""
    best = None
    for f in sorted(resource_dir.rglob("*.parquet")):
        md = pq.read_metadata(f)
        col = md.schema.to_arrow_schema().get_field_index("period")
        for g in range(md.num_row_groups):
            st = md.row_group(g).column(col).statistics
            if st is not None and st.has_min_max and st.max is not None:
                value = st.max if isinstance(st.max, _dt.date) else _dt.date.fromordinal(
                    _dt.date(1970, 1, 1).toordinal() + int(st.max))
                best = max(best, value) if best else value
    return best.year * 12 + best.month - 1 if best else None


_STRINGS = {"person", "nir", "nir_status", "link_status", "link_method", "employer_id", "payer_id", "kind"}


def _read(files: list[str], columns: list[str]) -> pa.Table | None:
    if not files:
        return None
    names = pq.read_schema(files[0]).names
    missing = [c for c in columns if c not in names]
    if missing:
        raise InputError(f"signals: {files[0]} lacks column(s) {', '.join(missing)}")
    # strings read as dictionaries: the rules work per distinct value (5x faster to read, measured
    # on a 200k-person bucket: 2.1 s instead of 11.6 s)
    strings = [c for c in columns if c in _STRINGS]
    return pa.concat_tables([pq.read_table(f, columns=columns, use_threads=False, read_dictionary=strings)
                             for f in files], promote_options="permissive")


def _bucket_task(bucket: str, career: list[str], resource: list[str], quarters: str | None, register: str,
                 out: str, settings: SignalSettings, as_of: int | None) -> dict[str, Any]:
    from ._signals_rules import person_signals

    c = _read(career, CAREER_COLUMNS)
    r = _read(resource, RESOURCE_COLUMNS)
    part = f"part-{bucket}.parquet"
    counts: dict[str, Any] = {"bucket": bucket}
    if bucket != "nulls":
        with pa.memory_map(register, "r") as source:
            reg = Register.from_table(ipc.open_file(source).read_all())
            q = pq.read_table(quarters, columns=["person", "quarters"]) if quarters else None
            cases = person_signals(c, r, q, reg, settings, as_of=as_of)
        for rule, t in cases.items():
            counts[rule] = t.num_rows
            if t.num_rows:
                write_parquet(t, Path(out) / rule / part)
        pairs = nir_pairs(c, r)
        if pairs.num_rows:
            write_parquet(pairs, Path(out) / ".pairs" / part)
    parts = [declarant_counts(c, "career"), declarant_counts(r, "resource")]
    dc = pa.concat_tables(parts)
    if dc.num_rows:
        write_parquet(dc, Path(out) / ".declarants" / part)
    dp = pa.concat_tables([declarant_persons(c, "career"), declarant_persons(r, "resource")])
    if dp.num_rows:
        write_parquet(dp, Path(out) / ".declarant_persons" / part)
    return counts


def _reduce_task(out: str, register: str, rejects: list[tuple[str, str]], settings: SignalSettings,
                 max_ids: int) -> dict[str, int]:
    """nir_shared and declarant_quality from the buckets' partial tables."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET threads = 1")
    root = Path(out)
    result = {}
    if (root / ".pairs").exists():
        with pa.memory_map(register, "r") as source:
            reg = ipc.open_file(source).read_all().select(["nir", "owner"])
            con.register("reg", reg)
            label = settings_label("nir_shared", settings)
            t = con.sql(f"""
                with p as (select p.*, reg.owner from read_parquet('{root}/.pairs/*.parquet') p
                           join reg using (nir)),
                     s as (select nir from p group by nir having count(distinct person) >= 2)
                select owner as person, 'nir_shared' as rule,
                       make_date(cast(min(month) // 12 as integer), cast(min(month) % 12 + 1 as integer), 1) as period,
                       cast(count(distinct person) - 1 as double) as score, '{label}' as settings,
                       cast(sum(rows) as integer) as rows,
                       list(record_id order by record_id)[1:{max_ids}] as record_ids,
                       cast(count(distinct person) as integer) as persons,
                       list(distinct person order by person) filter (where person <> owner) as other_persons
                from p join s using (nir) group by nir, owner order by person""").to_arrow_table()
        t = t.cast(CASE_SCHEMAS["nir_shared"])
        result["nir_shared"] = t.num_rows
        if t.num_rows:
            write_parquet(t, root / "nir_shared" / "part-00000.parquet")
    reject_sql = " union all ".join(
        f"""select coalesce(raw.{decl}, '') as declarant,
                   cast(coalesce(year(try_cast(substr(raw.{day}, 1, 7) || '-01' as date)) * 12
                        + month(try_cast(substr(raw.{day}, 1, 7) || '-01' as date)) - 1, -1) as integer) as month,
                   reason from read_parquet('{path}')"""
        for path, kind in rejects for decl, day in [("employer_id", "start_date") if kind == "career"
                                                    else ("payer_id", "period")])
    reject_sql = reject_sql or "select '' as declarant, 0 as month, '' as reason where false"
    counts = f"read_parquet('{root}/.declarants/*.parquet')" if (root / ".declarants").exists() else \
        "(select '' as declarant, 0 as month, 0 as rows, 0 as nir_missing, 0 as nir_bad_key, 0 as nir_bad_format, " \
        "0 as unlinked, 0 as ambiguous, 0 as problem_rows where false)"
    con.execute(f"""create table dm as
        with c as (select declarant, month, cast(sum(rows) as bigint) as rows, cast(sum(nir_missing) as bigint) as nir_missing,
                          cast(sum(nir_bad_key) as bigint) as nir_bad_key, cast(sum(nir_bad_format) as bigint) as nir_bad_format,
                          cast(sum(unlinked) as bigint) as unlinked, cast(sum(ambiguous) as bigint) as ambiguous, cast(sum(problem_rows) as bigint) as problem_rows
                   from {counts} group by declarant, month),
             r as (select declarant, month, count(*) as rejects, histogram(reason) as rejects_by_reason
                   from ({reject_sql}) group by declarant, month)
        select declarant, month, coalesce(rows, 0) as rows, coalesce(nir_missing, 0) as nir_missing,
               coalesce(nir_bad_key, 0) as nir_bad_key, coalesce(nir_bad_format, 0) as nir_bad_format,
               coalesce(unlinked, 0) as unlinked, coalesce(ambiguous, 0) as ambiguous,
               coalesce(problem_rows, 0) as problem_rows, coalesce(rejects, 0) as rejects, rejects_by_reason
        from c full outer join r using (declarant, month)""")
    label = settings_label("declarant_quality", settings)
    shares = """, nir_missing / rows as nir_missing_share, nir_bad_key / rows as nir_bad_key_share,
               nir_bad_format / rows as nir_bad_format_share, (unlinked + ambiguous) / rows as unlinked_or_ambiguous_share,
               (problem_rows + rejects) / (rows + rejects) as score"""
    monthly = con.sql(f"""select declarant, 'declarant_quality' as rule,
               case when month >= 0 then make_date(cast(month // 12 as integer), cast(month % 12 + 1 as integer), 1)
               end as period, rows, nir_missing, nir_bad_key, nir_bad_format, unlinked, ambiguous, problem_rows,
               rejects, rejects_by_reason {shares.replace('/ rows', '/ nullif(rows, 0)')}, '{label}' as settings
        from dm order by declarant, period nulls first""").to_arrow_table()
    persons = f"read_parquet('{root}/.declarant_persons/*.parquet')" if (root / ".declarant_persons").exists() \
        else "(select '' as declarant, 0 as persons, 0 as problem_persons where false)"
    sums = ", ".join(f"cast(sum({c}) as bigint) as {c}" for c in (
        "rows", "nir_missing", "nir_bad_key", "nir_bad_format", "unlinked", "ambiguous", "problem_rows", "rejects"))
    card = con.sql(f"""
        with p as (select declarant, cast(sum(persons) as bigint) as persons,
                          cast(sum(problem_persons) as bigint) as problem_persons from {persons} group by declarant),
             t as (select declarant, {sums}, count(*) as months from dm group by declarant)
        select declarant, 'declarant_quality' as rule, months, rows, coalesce(p.persons, 0) as persons,
               coalesce(p.problem_persons, 0) as problem_persons, nir_missing, nir_bad_key,
               nir_bad_format, unlinked, ambiguous, problem_rows, rejects
               {shares.replace('/ rows', '/ nullif(rows, 0)')},
               (coalesce(p.problem_persons, 0) + rejects) / nullif(coalesce(p.persons, 0) + rejects, 0)
                   as problem_persons_share, '{label}' as settings
        from t left join p using (declarant)""").to_arrow_table()
    # ranked on the excess of problem persons over the population's share (_signals_scorecard)
    card, p0 = rank_scorecard(card, int(settings.min_declarant_rows), float(settings.declarant_excess_ratio))
    result["population_problem_share"] = p0
    con.close()
    write_parquet(monthly, root / "declarant_quality" / "part-00000.parquet")
    write_parquet(card, root / "declarant_scorecard" / "part-00000.parquet")
    result["declarant_quality"] = monthly.num_rows
    result["declarant_scorecard"] = card.num_rows
    return result


def _buckets(directory: Path) -> dict[str, list[str]]:
    if not directory.exists():
        return {}
    return {b.name[2:]: sorted(str(f) for f in b.glob("*.parquet"))
            for b in sorted(p for p in directory.glob("b=*") if p.is_dir())}


def run_signals(job_dir: str | Path, out_dir: str | Path, *, client=None, settings: SignalSettings | None = None,
                progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """Run every rule on a job directory holding the ingest, link, attach and aggregate outputs."""
    from nirlink.linkage._tasks import run_tasks

    settings = settings or SignalSettings()
    job_dir = Path(job_dir).resolve()
    for needed in ("ingest", "link", "attach", "aggregate"):
        if not (job_dir / needed / "_manifest.json").exists():
            raise InputError(f"signals: {job_dir / needed} is not a published stage output (the signals stage "
                             "needs ingest, link, attach and aggregate)")
    attach = job_dir / "attach"
    career, resource = _buckets(attach / "career"), _buckets(attach / "resource")
    # the aggregate stage numbers its career partitions in sorted bucket order (part-<i>)
    quarters = {name: job_dir / "aggregate" / "career_person" / f"part-{i:05d}.parquet"
                for i, name in enumerate(career)}
    if settings.as_of_month:
        y, m = (int(x) for x in settings.as_of_month.split("-"))
        as_of = y * 12 + m - 1
    else:
        as_of = latest_month(attach / "resource") if (attach / "resource").exists() else None
    rejects = []
    for d in sorted((job_dir / "ingest" / "rejects").glob("*")) if (job_dir / "ingest" / "rejects").exists() else []:
        for f in sorted(d.rglob("*.parquet")):
            names = pq.read_schema(f).field("raw").type
            kinds = {names.field(i).name for i in range(names.num_fields)}
            if "payer_id" in kinds or "employer_id" in kinds:
                rejects.append((str(f), "resource" if "payer_id" in kinds else "career"))
    with staged_directory(out_dir) as work:
        work = work.resolve()
        register = str(work / ".register.arrow")
        run_tasks(client, _build_register, [(str(job_dir / "ingest"), str(job_dir / "link"), register)],
                  name="signals-register", progress=progress)
        args = [(b, career.get(b, []), resource.get(b, []),
                 str(quarters[b]) if b in quarters and quarters[b].exists() else None, register, str(work),
                 settings, as_of) for b in sorted(set(career) | set(resource))]
        results = run_tasks(client, _bucket_task, args, name="signals", progress=progress)
        reduced = run_tasks(client, _reduce_task, [(str(work), register, rejects, settings, settings.max_record_ids)],
                            name="signals-reduce", progress=progress)[0]
        import shutil

        for scratch in (".pairs", ".declarants", ".declarant_persons"):
            shutil.rmtree(work / scratch, ignore_errors=True)
        (work / ".register.arrow").unlink()
        cases = {rule: sum(r.get(rule, 0) for r in results) for rule in PERSON_RULES}
        p0 = reduced.pop("population_problem_share", None)
        cases.update(reduced)
        tables = {}
        for rule in (*RULES, "declarant_scorecard"):
            d = work / rule
            if not d.exists() and rule in CASE_SCHEMAS:
                write_parquet(CASE_SCHEMAS[rule].empty_table(), d / "part-00000.parquet")
            if d.exists():
                tables[rule] = describe_dataset(d, relative_to=work)
        manifest = {
            "stage": "signals",
            "settings": settings.as_json(),
            "as_of_month": f"{as_of // 12:04d}-{as_of % 12 + 1:02d}" if as_of is not None else None,
            "buckets": len(args),
            "cases": cases,
            "scorecard": {"population_problem_share": p0, "ranked_from_rows": int(settings.min_declarant_rows),
                          "reference_share": min(settings.declarant_excess_ratio * p0, 0.999) if p0 else None},
            "tables": tables,
        }
        write_json(work / "_manifest.json", manifest)
    return manifest
