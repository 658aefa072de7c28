"""The career and resource rows a monthly increment declares, with their truth.

Resources: every resource row of the month the previous dataset ends with continues into
this month (same declarant, same declared identity: the identity version and so its noise
are kept) unless its person died before the month began, or it stops: with probability
1.5% a salary (the job ended), 10% an unemployment benefit, 0.2% a pension, 70% a daily
allowance. Amounts move by a normal factor (sd 2%). New persons get their first rows: a
pension and a complementary pension from 62, else a salary from an employer of the base's
pool (85%) or an unemployment benefit, at the base's levels; their declared identities
are drawn by the base's noise model (_noise.declare).

Careers are declared monthly (as a DSN declares the month's employment): one row per
salary of the month (its employer, the month's first to last day, the salary as gross
salary) and one unemployment row per unemployment benefit, with the same declared identity
as the resource row. The base's yearly rows end with its last year; an increment's rows
add up per year like any other rows.

Volume: about one resource row and half a career row per person, ~1.3% of a base's rows.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from nirlink.engine.reference._tables import year_table
from nirlink.kernels import InputError

from ._columns import dictionary_column, siret_column, write_dataset
from ._describe import Described
from ._generate import CAREER_SCHEMA, RESOURCE_FLAG, RESOURCE_SCHEMA
from ._noise import declare
from ._records import P_COMPLEMENTARY, P_PENSION, P_UNEMPLOYMENT, RESOURCE_KINDS, VersionSpace, _employers

__all__ = ["write_rows", "NOISE_NAMES", "IDENTITY"]

NOISE_NAMES = ("none", "missing-nir", "wrong-key", "transposed-digits", "other-person-nir", "nir-without-key")
IDENTITY = ("declared_nir", "last_name", "first_name", "birth_date")
STOP = {"salary": 0.015, "pension": 0.002, "complementary_pension": 0.002, "unemployment_benefit": 0.1,
        "daily_allowance": 0.7, "minimum_old_age_benefit": 0.002}
RETIREMENT_AGE = 62


def _first_day(month: int) -> dt.date:
    return dt.date(month // 12, month % 12 + 1, 1)


def _carried(prev: Described, month: int, survivors: pa.Table, rng: np.random.Generator) -> pa.Table:
    """The previous dataset's rows of its last month that go on into ``month``."""
    last = _first_day(prev.last_month)
    parts = []
    for path in sorted((prev.root / "resource").glob("part-*.parquet")):
        rows = pq.read_table(path, filters=[("period", "=", last)])
        if not rows.num_rows:
            continue
        truth = pq.read_table(prev.root / "truth" / path.name,
                              columns=["source", "record_id", "true_nir", "nir_noise", "identity_version"])
        truth = truth.filter(pc.equal(truth.column("source"), "resource"))
        pos = pc.index_in(rows.column("record_id"), value_set=truth.column("record_id"))
        if pos.null_count:
            raise InputError(f"{prev.root / 'truth' / path.name}: resource rows of {path} without truth")
        t = truth.take(pos)
        parts.append(pa.table({**{c: rows.column(c).cast(pa.string()) for c in IDENTITY},
                               "payer_id": rows.column("payer_id").cast(pa.string()),
                               "kind": rows.column("kind").cast(pa.string()), "amount": rows.column("amount"),
                               "true_nir": t.column("true_nir").cast(pa.string()),
                               "nir_noise": t.column("nir_noise").cast(pa.string()),
                               "identity_version": t.column("identity_version")}))
    if not parts:
        return _empty()
    src = pa.concat_tables(parts).combine_chunks()
    n = src.num_rows
    begin = (_first_day(month) - dt.date(1970, 1, 1)).days
    pos = pc.index_in(src.column("true_nir"), value_set=survivors.column("true_nir"))
    death = pc.fill_null(pc.take(survivors.column("death"), pos), -1).to_numpy()
    stop = np.array([STOP.get(k, 0.0) for k in src.column("kind").to_pylist()])
    u = rng.random(n)
    factor = 1 + rng.normal(0, 0.02, n)
    keep = ((death < 0) | (death >= begin)) & (u >= stop)
    amount = np.rint(np.maximum(src.column("amount").to_numpy() * factor, 1.0) * 100) / 100
    src = src.set_column(src.schema.get_field_index("amount"), "amount", pa.array(amount))
    return src.filter(pa.array(keep))


def _empty() -> pa.Table:
    return pa.table({**{c: pa.array([], pa.string()) for c in (*IDENTITY, "payer_id", "kind")},
                     "amount": pa.array([], pa.float64()), "true_nir": pa.array([], pa.string()),
                     "nir_noise": pa.array([], pa.string()), "identity_version": pa.array([], pa.int64())})


def _new_rows(prev: Described, month: int, persons, rng: np.random.Generator, tag: int) -> pa.Table:
    """The first rows of the new persons, grouped by person."""
    params = prev.params
    n = len(persons)
    n_employers = max(10, int(prev.base_persons * params.employers_per_1000_persons / 1000))
    year = month // 12
    yt = year_table()
    smic_month = float(yt.smic_hourly[yt.index(np.array([year]), what="increment year")][0]) * 1820.0 / 12
    age = year - persons.birth_year.astype(np.int64)
    retired = age >= RETIREMENT_AGE
    employed = ~retired & (rng.random(n) < 0.85)
    level = np.exp(rng.normal(np.log(1.4), 0.45, n)) * smic_month
    versions = VersionSpace(n, n_employers)
    who = np.flatnonzero(employed)
    employer = _employers(rng, len(who), n_employers)
    spell = versions.add(who, employer)
    # rows: (person, kind index, payer pool index, version, amount factor)
    retired_idx = np.flatnonzero(retired)
    idle = np.flatnonzero(~retired & ~employed)
    person = np.concatenate([who, idle, retired_idx, retired_idx])
    kind = np.repeat(np.array([0, 3, 1, 2], np.int8), [len(who), len(idle), len(retired_idx), len(retired_idx)])
    payer = np.concatenate([employer, np.full(len(idle), n_employers + P_UNEMPLOYMENT),
                            np.full(len(retired_idx), n_employers + P_PENSION),
                            np.full(len(retired_idx), n_employers + P_COMPLEMENTARY)]).astype(np.int64)
    version = np.concatenate([spell, versions.payer(idle, P_UNEMPLOYMENT), versions.payer(retired_idx, P_PENSION),
                              versions.payer(retired_idx, P_COMPLEMENTARY)]).astype(np.int64)
    order = np.lexsort((kind, person))
    person, kind, payer, version = person[order], kind[order], payer[order], version[order]
    factors = np.array([1.0, 0.45, 0.2, 0.57])[kind]
    amount = np.rint(np.maximum(level[person] * factors * rng.normal(1, 0.05, len(person)), 1.0) * 100) / 100
    v_person, _ = versions.arrays()
    used = np.zeros(len(v_person), bool)
    used[version] = True
    ident = declare(rng, persons, v_person, used, params.noise)
    cache: dict = {}
    cols = {
        "declared_nir": dictionary_column(ident.nir_idx, ident.nir_dict, cache, rows=version),
        "last_name": dictionary_column(ident.last_idx, ident.last_dict, cache, rows=version),
        "first_name": dictionary_column(ident.first_idx, ident.first_dict, cache, rows=version),
        "birth_date": dictionary_column(ident.birth_idx, ident.birth_dict, cache, rows=version),
    }
    return pa.table({
        **{c: v.cast(pa.string()) for c, v in cols.items()},
        "payer_id": siret_column(payer),
        "kind": pa.array(np.array(RESOURCE_KINDS, object)[kind].tolist(), pa.string()),
        "amount": pa.array(amount),
        "true_nir": persons.nir.cast(pa.string()).take(pa.array(person)),
        "nir_noise": pa.array(np.array(NOISE_NAMES, object)[ident.nir_noise[version]].tolist(), pa.string()),
        "identity_version": pa.array(version + (np.int64(tag) << 32)),
    })


def write_rows(prev: Described, out: Path, month: int, snapshot, *, seed: int, tag: int) -> dict[str, int]:
    """Write ``out/career``, ``out/resource`` and ``out/truth`` of the new file (the new rows'
    truth and the new persons' register rows); returns the row counts."""
    from ._increment_register import TRUTH_STRINGS, register_truth

    carried = _carried(prev, month, snapshot.survivors, np.random.default_rng(np.random.SeedSequence([seed, tag, 3])))
    new = _new_rows(prev, month, snapshot.new_persons, np.random.default_rng(np.random.SeedSequence([seed, tag, 4])),
                    tag)
    rows = pa.concat_tables([carried, new]).combine_chunks()
    nr = rows.num_rows
    first = _first_day(month)
    period = pa.array([first] * nr, pa.date32())
    resource_ids = RESOURCE_FLAG + (np.int64(tag) << 32) + np.arange(nr, dtype=np.int64)
    strings = list(IDENTITY) + ["kind"]
    resource = pa.table({"record_id": pa.array(resource_ids), **{c: rows.column(c) for c in IDENTITY},
                         "payer_id": rows.column("payer_id"), "period": period, "kind": rows.column("kind"),
                         "amount": rows.column("amount")})
    kinds = rows.column("kind").to_numpy(zero_copy_only=False)
    declared = np.flatnonzero((kinds == "salary") | (kinds == "unemployment_benefit"))
    salary = kinds[declared] == "salary"
    nc = len(declared)
    last = (dt.date(first.year + first.month // 12, first.month % 12 + 1, 1) - dt.timedelta(days=1))
    c = rows.take(pa.array(declared))
    career_ids = (np.int64(tag) << 32) + np.arange(nc, dtype=np.int64)
    career = pa.table({
        "record_id": pa.array(career_ids), **{k: c.column(k) for k in IDENTITY},
        "employer_id": c.column("payer_id"),
        "year": pa.array(np.full(nc, first.year, np.int16)),
        "start_date": pa.array([first] * nc, pa.date32()), "end_date": pa.array([last] * nc, pa.date32()),
        "kind": pa.array(np.where(salary, "salary", "unemployment").tolist(), pa.string()),
        "gross_salary": pa.array(c.column("amount").to_numpy(), mask=~salary),
        "days": pa.array(np.full(nc, last.day, np.int16)),
    })
    name = snapshot.new_file
    for sub in ("career", "resource", "truth"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    write_dataset(career, out / "career" / name, strings + ["employer_id"], CAREER_SCHEMA)
    write_dataset(resource, out / "resource" / name, strings + ["payer_id"], RESOURCE_SCHEMA)
    reg_truth = register_truth(snapshot.new_register.column("nir").combine_chunks(),
                               snapshot.new_persons.nir.take(pa.array(snapshot.new_register_person)))

    def rows_truth(source: str, t: pa.Table, ids: np.ndarray) -> pa.Table:
        return pa.table({"source": pa.array([source] * t.num_rows, pa.string()), "record_id": pa.array(ids),
                         "register_nir": pa.nulls(t.num_rows, pa.string()), "true_nir": t.column("true_nir"),
                         "nir_noise": t.column("nir_noise"), "identity_version": t.column("identity_version")})

    truth = pa.concat_tables([rows_truth("career", c, career_ids), rows_truth("resource", rows, resource_ids),
                              reg_truth])
    write_dataset(truth, out / "truth" / name, TRUTH_STRINGS)
    new_careers = int((declared >= carried.num_rows).sum())
    return {"career": nc, "resource": nr, "carried": carried.num_rows + nc - new_careers,
            "new_person_rows": new.num_rows + new_careers}
