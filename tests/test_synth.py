"""The synthetic generator: valid NIRs (python-stdnum as the oracle), noise rates, determinism, schemas."""

from __future__ import annotations

import hashlib
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from stdnum.fr import nir as stdnir

from nirlink.engine import InputError
from nirlink.engine.synth._columns import siret_column
from nirlink.engine.synth._generate import CAREER_SCHEMA, RESOURCE_SCHEMA, TRUTH_SCHEMA, synth
from nirlink.engine.synth._identity import REGISTER_SCHEMA
from nirlink.engine.synth._params import NoiseRates, SynthParams
from nirlink.kernels import format_nir, nir_key

SCHEMAS = {"register": REGISTER_SCHEMA, "career": CAREER_SCHEMA, "resource": RESOURCE_SCHEMA, "truth": TRUTH_SCHEMA}


def _sql(root, query):
    con = duckdb.connect()
    for name in SCHEMAS:
        con.execute(f"create view {name} as select * from read_parquet('{Path(root) / name}/*.parquet')")
    return con.execute(query).fetchall()


# ---------------------------------------------------------------- NIR kernels vs stdnum


@given(
    sex=st.sampled_from([1, 2, 3, 4, 7, 8]),
    yy=st.integers(0, 99),
    mm=st.integers(1, 99),
    dept=st.integers(1, 99),
    commune=st.integers(0, 999),
    order=st.integers(1, 999),
    corsica=st.sampled_from([0, 1, 2]),
)
@example(sex=1, yy=53, mm=7, dept=18, commune=73, order=4, corsica=2)  # stdnum's 2B example
@example(sex=1, yy=53, mm=7, dept=19, commune=73, order=4, corsica=1)  # stdnum's 2A example
@example(sex=2, yy=95, mm=10, dept=99, commune=126, order=111, corsica=0)
@example(sex=1, yy=0, mm=1, dept=97, commune=411, order=1, corsica=0)  # overseas 974-11
def test_format_nir_and_key_match_stdnum(sex, yy, mm, dept, commune, order, corsica):
    if corsica:
        dept = 19 if corsica == 1 else 18
    body = ((((sex * 100 + yy) * 100 + mm) * 100 + dept) * 1000 + commune) * 1000 + order
    key = nir_key(np.array([body]))
    text = format_nir(np.array([body]), np.array([corsica]), key).to_pylist()[0]
    assert len(text) == 15
    assert stdnir.is_valid(text), text
    assert stdnir.calc_check_digits(text) == text[13:]
    if corsica:
        assert text[5:7] == ("2A" if corsica == 1 else "2B")


def test_format_nir_without_key_gives_13_characters():
    body = np.array([1_84_12_75_056_001, 2_90_01_19_004_010])
    out = format_nir(body, np.array([0, 1]), nir_key(body), with_key=np.array([False, True])).to_pylist()
    assert out[0] == "1841275056001" and len(out[1]) == 15 and out[1][5:7] == "2A"


def test_sirets_pass_luhn():
    from stdnum.fr import siren, siret

    values = siret_column(np.arange(0, 5000, 7)).to_pylist()
    assert len(set(values)) == len(values)
    assert all(siret.is_valid(v) and siren.is_valid(v[:9]) for v in values)


# ---------------------------------------------------------------- the 100k-person dataset


def test_every_generated_nir_is_valid_by_stdnum(synth_100k):
    root, summary = synth_100k
    assert summary["rows"]["career"] >= 3_000_000
    nirs = [r[0] for r in _sql(root, "select nir from register")]
    assert len(nirs) >= 100_000
    assert len(set(nirs)) == len(nirs), "register NIRs must be unique"
    bad = [n[:5] for n in nirs if not stdnir.is_valid(n)]
    assert not bad, f"{len(bad)} invalid register NIRs"
    # declared NIRs without NIR noise are the person's own valid numbers
    declared = [r[0] for r in _sql(root, """
        select distinct c.declared_nir from career c join truth t on t.source = 'career' and t.record_id = c.record_id
        where t.nir_noise = 'none'""")]
    assert declared and all(stdnir.is_valid(x) for x in declared)


def test_nir_agrees_with_the_identity(synth_100k):
    root, _ = synth_100k
    rows = _sql(root, "select nir, sex, birth_date, birth_place, nir_kind from register")
    for nir, sex, birth, place, kind in rows:
        digit = int(nir[0])
        if kind == "permanent":
            assert digit == sex
        else:
            assert digit in (sex + 2, sex + 6)
        assert nir[1:3] == birth[2:4]
        month = int(birth[5:7])
        nir_month = int(nir[3:5])
        if month == 0:
            assert 20 <= nir_month <= 42 or 50 <= nir_month <= 99
        else:
            assert nir_month == month
        assert nir[5:10] == place
        if place.startswith(("2A", "2B")):
            assert int(birth[:4]) >= 1976
    kinds = dict(_sql(root, "select nir_kind, count(*) from register group by 1"))
    share_temp = kinds["temporary"] / sum(kinds.values())
    assert 0.02 < share_temp < 0.06  # temporary-only persons (3%) + register duplicates (1%)
    places = dict(_sql(root, """select case when birth_place like '99%' then 'abroad'
        when birth_place like '97%' then 'overseas' else 'metro' end, count(*) from register group by 1"""))
    assert places["abroad"] / sum(places.values()) == pytest.approx(0.08 + 0.01, abs=0.015)
    assert places["overseas"] / sum(places.values()) == pytest.approx(0.03, abs=0.006)


def test_noise_rates_match_their_settings(synth_100k):
    root, _ = synth_100k
    noise = NoiseRates()
    # one row per identity version (a person as one declarant knows them)
    shares = dict(_sql(root, """
        with v as (select distinct identity_version, nir_noise from truth where source <> 'register')
        select nir_noise, count(*) / sum(count(*)) over () from v group by 1"""))
    for name in ("missing-nir", "wrong-key", "transposed-digits", "other-person-nir", "nir-without-key"):
        expected = getattr(noise, name.replace("-", "_"))
        assert shares.get(name, 0) == pytest.approx(expected, rel=0.2, abs=0.0005), name

    # ... and the data shows the noise the truth claims
    checks = _sql(root, """
        select t.nir_noise, c.declared_nir, t.true_nir from career c
        join truth t on t.source = 'career' and t.record_id = c.record_id
        where t.nir_noise <> 'none' using sample 20000 rows (reservoir, 7)""")
    for kind, declared, true in checks:
        if kind == "missing-nir":
            assert declared is None
        elif kind == "nir-without-key":
            assert len(declared) == 13 and stdnir.calc_check_digits(declared + "00") is not None
        elif kind in ("wrong-key", "transposed-digits"):
            assert len(declared) == 15 and not stdnir.is_valid(declared)
        elif kind == "other-person-nir":
            assert stdnir.is_valid(declared) and declared != true

    # name typos, swaps and casing show up as declared last names matching no register name
    (mismatch,) = _sql(root, """
        with v as (select distinct c.last_name, c.first_name, c.employer_id, t.true_nir from career c
                   join truth t on t.source = 'career' and t.record_id = c.record_id)
        select avg(case when v.last_name in (r.last_name, coalesce(r.usage_name, r.last_name)) then 0 else 1 end)
        from v join register r on r.nir = v.true_nir""")[0]
    expected = noise.name_typo + noise.names_swapped + noise.case_and_spacing
    assert mismatch == pytest.approx(expected, rel=0.25)


def test_rows_per_person_reach_the_configured_means(synth_100k):
    _, summary = synth_100k
    assert summary["career_rows_per_person"] == pytest.approx(37, rel=0.05)
    assert summary["resource_rows_per_person"] == pytest.approx(90, rel=0.05)


def test_careers_are_plausible(synth_100k):
    root, _ = synth_100k
    (bad_dates, out_of_year, negative, salary_null) = _sql(root, """
        select sum((end_date < start_date)::int), sum((year(start_date) <> year or year(end_date) <> year)::int),
               sum((gross_salary < 0)::int), sum((kind = 'salary' and gross_salary is null)::int) from career""")[0]
    assert (bad_dates, out_of_year, negative, salary_null) == (0, 0, 0, 0)
    (years_min, years_max) = _sql(root, "select min(year), max(year) from career")[0]
    assert 1990 <= years_min and years_max <= 2025
    kinds = dict(_sql(root, "select kind, count(*) from career group by 1"))
    assert set(kinds) == {"salary", "unemployment", "sickness", "maternity"}
    # maternity only for women
    (men,) = _sql(root, """select count(*) from career c join truth t on t.source='career' and t.record_id=c.record_id
                          join register r on r.nir = t.true_nir where c.kind='maternity' and r.sex = 1""")[0]
    assert men == 0
    # some yearly salaries exceed the PASS, most do not
    (above,) = _sql(root, """select avg((s > 40000)::int) from (select t.true_nir, year, sum(gross_salary) s from career c
                            join truth t on t.source='career' and t.record_id=c.record_id
                            where kind='salary' and year=2020 group by 1, 2)""")[0]
    assert 0.02 < above < 0.4


def test_common_names_collide(synth_100k):
    root, _ = synth_100k
    top = _sql(root, "select last_name, count(*) c from register group by 1 order by c desc limit 1")[0]
    assert top[0] == "MARTIN" and 200 < top[1] < 900
    (distinct,) = _sql(root, "select count(distinct last_name) from register")[0]
    assert 20_000 < distinct < 90_000


# ---------------------------------------------------------------- determinism, schemas, errors


def _digest(root):
    out = {}
    for path in sorted(Path(root).glob("*/*.parquet")):
        out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def test_same_seed_and_partitions_give_byte_identical_files(tmp_path, dask_client):
    a = synth(tmp_path / "a", persons=1500, partitions=3, params=SynthParams(seed=5))
    b = synth(tmp_path / "b", persons=1500, partitions=3, params=SynthParams(seed=5), client=dask_client)
    synth(tmp_path / "c", persons=1500, partitions=3, params=SynthParams(seed=6))
    assert a["rows"] == b["rows"]
    da, db, dc = _digest(tmp_path / "a"), _digest(tmp_path / "b"), _digest(tmp_path / "c")
    assert len(da) == 15 and da == db  # 4 datasets and the signals truth, 3 blocks each
    assert da != dc


def test_schemas(synth_small):
    root, _ = synth_small
    for name, schema in SCHEMAS.items():
        files = sorted((Path(root) / name).glob("*.parquet"))
        assert len(files) == 3
        got = pq.read_schema(files[0])
        assert got.names == schema.names
        assert [f.type for f in got] == [f.type for f in schema], name


def test_nirs_unique_across_many_small_blocks(tmp_path):
    summary = synth(tmp_path / "d", persons=4000, partitions=40, params=SynthParams(seed=3))
    nirs = [r[0] for r in _sql(tmp_path / "d", "select nir from register")]
    assert len(nirs) == summary["rows"]["register"] and len(set(nirs)) == len(nirs)


def test_truth_covers_every_record_and_register_row(synth_small):
    root, summary = synth_small
    counts = dict(_sql(root, "select source, count(*) from truth group by 1"))
    assert counts == {"career": summary["rows"]["career"], "resource": summary["rows"]["resource"],
                      "register": summary["rows"]["register"]}
    (orphans,) = _sql(root, """select count(*) from career c anti join truth t
                              on t.source = 'career' and t.record_id = c.record_id""")[0]
    assert orphans == 0
    # every duplicate register row maps to a permanent person of the register
    (dups, ok) = _sql(root, """select count(*), sum((p.nir is not null)::int) from truth t
        left join register p on p.nir = t.true_nir
        where t.source = 'register' and t.register_nir <> t.true_nir""")[0]
    assert dups > 0 and ok == dups


def test_a_block_made_in_parts_keeps_its_ids_and_versions_apart(tmp_path, monkeypatch):
    """A block's persons come in parts (row groups of its files): record ids and identity
    versions continue across the parts, and the truth covers each record once."""
    from nirlink.engine.synth import _generate

    monkeypatch.setattr(_generate, "PART_PERSONS", 300)
    summary = synth(tmp_path / "p", persons=1000, partitions=1, params=SynthParams(seed=4))
    assert pq.ParquetFile(tmp_path / "p" / "career" / "part-00000.parquet").metadata.num_row_groups == 4
    (records, distinct, covered) = _sql(tmp_path / "p", """
        with r as (select record_id from career union all select record_id from resource)
        select count(*), count(distinct record_id),
               (select count(*) from r join truth t using (record_id) where t.source <> 'register') from r""")[0]
    assert records == distinct == covered == summary["rows"]["career"] + summary["rows"]["resource"]
    # one person and one declared identity per version, in whichever part it was drawn
    (versions, persons, identities) = _sql(tmp_path / "p", """
        with v as (select t.identity_version, t.true_nir, c.declared_nir, c.last_name, c.first_name, c.birth_date
                   from career c join truth t on t.source = 'career' and t.record_id = c.record_id
                   union all
                   select t.identity_version, t.true_nir, r.declared_nir, r.last_name, r.first_name, r.birth_date
                   from resource r join truth t on t.source = 'resource' and t.record_id = r.record_id)
        select count(distinct identity_version), count(distinct (identity_version, true_nir)),
               count(distinct (identity_version, declared_nir, last_name, first_name, birth_date)) from v""")[0]
    assert versions == persons == identities > 4000
    (people,) = _sql(tmp_path / "p", "select count(distinct true_nir) from truth where source = 'career'")[0]
    assert people > 900


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"persons": 0}, "--persons"),
        ({"persons": 10, "partitions": 0}, "--partitions"),
        ({"persons": 3, "partitions": 5}, "cannot exceed"),
    ],
)
def test_bad_arguments_are_refused(tmp_path, kwargs, fragment):
    with pytest.raises(InputError, match=fragment):
        synth(tmp_path / "x", **kwargs)


def test_bad_settings_are_refused():
    with pytest.raises(InputError, match="noise.missing-nir"):
        SynthParams(noise=NoiseRates(missing_nir=1.5)).check()
    with pytest.raises(InputError, match="1990-2026"):
        SynthParams(first_career_year=1980).check()


def test_non_empty_output_needs_overwrite(tmp_path):
    synth(tmp_path / "o", persons=200, partitions=1)
    with pytest.raises(InputError, match="not empty"):
        synth(tmp_path / "o", persons=200, partitions=1)
    synth(tmp_path / "o", persons=300, partitions=1, overwrite=True)
    assert len(_sql(tmp_path / "o", "select * from register where nir_kind = 'permanent'")) > 250


def test_a_failed_write_fails_the_block(tmp_path):
    from nirlink.engine.synth._generate import generate_block

    (tmp_path / "register").mkdir()  # the other datasets' directories are missing: their writes fail
    with pytest.raises(FileNotFoundError, match="career"):
        generate_block(str(tmp_path), 0, 1, 0, 50, 50, SynthParams(seed=1))
    assert [p.name for p in (tmp_path / "register").iterdir()] == ["part-00000.parquet"]


@given(st.lists(st.lists(st.tuples(st.integers(-5, 40), st.integers(0, 9)), max_size=12), max_size=6))
@example([[(3, 1), (1, 2)], [(1, 5), (7, 0)], []])
def test_slots_taken_per_cell_behave_as_a_dict(steps):
    from nirlink.engine.synth._identity import _Taken

    taken, ref = _Taken(), {}
    for step in steps:
        cells = np.unique(np.array([c for c, _ in step], np.int64))
        add = np.array([dict(step)[c] for c in cells.tolist()], np.int64)
        base = taken.get(cells)
        assert base.tolist() == [ref.get(c, 0) for c in cells.tolist()]
        taken.set(cells, base + add)
        ref.update({c: ref.get(c, 0) + a for c, a in zip(cells.tolist(), add.tolist())})
    assert dict(zip(taken.cells.tolist(), taken.counts.tolist())) == ref


def test_the_kept_heap_is_restored_by_the_last_block_to_leave():
    from concurrent.futures import ThreadPoolExecutor

    from nirlink.engine.synth import _heap

    calls = []

    class Libc:  # records the settings instead of changing this process's allocator
        def mallopt(self, param, value):
            calls.append((param, value))
            return 1

        def malloc_trim(self, pad):
            calls.append(("trim", pad))
            return 1

    real = _heap._LIBC
    _heap._LIBC = Libc()
    try:
        def block(_):
            with _heap.kept_heap():
                return np.ones(1 << 20).sum()

        with _heap.kept_heap():
            with ThreadPoolExecutor(4) as pool:
                assert list(pool.map(block, range(8))) == [float(1 << 20)] * 8
            assert _heap._inside == 1
    finally:
        _heap._LIBC = real
    assert _heap._inside == 0
    # set once on entering, put back once on leaving (the environment's values, else glibc's), then trimmed
    assert [c[0] for c in calls] == [-3, -1, -2, -3, -1, -2, "trim"]
    assert calls[3:6] == [(-3, _heap._started_with(-3)), (-1, _heap._started_with(-1)), (-2, _heap._started_with(-2))]
