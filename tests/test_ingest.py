"""The ingest stage on synthetic data, over an in-process Dask cluster."""

from __future__ import annotations

from collections import Counter

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from nirlink.engine.io._readers import InputSpec
from nirlink.engine.stages._ingest import ingested_rows_sql, run_ingest


@pytest.fixture(scope="module")
def ingested(tmp_path_factory, synth_small, dask_client):
    root, _ = synth_small
    out = tmp_path_factory.mktemp("ingest") / "ingest"
    specs = [InputSpec("register", "register", (str(root / "register"),)),
             InputSpec("career", "career", (str(root / "career"),)),
             InputSpec("resource", "resource", (str(root / "resource"),))]
    manifest = run_ingest(specs, out, client=dask_client, chunk_rows=50_000)
    return root, out, manifest


def test_counts_reconcile_and_nothing_is_lost(ingested):
    root, out, manifest = ingested
    for name in ("register", "career", "resource"):
        totals = manifest["inputs"][name]["totals"]
        source_rows = pq.read_metadata(next((root / name).glob("*.parquet"))).num_rows  # at least one file
        assert source_rows > 0
        n_in = sum(pq.read_metadata(f).num_rows for f in (root / name).glob("*.parquet"))
        assert totals["rows_read"] == n_in
        assert totals["accepted"] + totals["rejected"] == n_in
        assert manifest["inputs"][name]["accepted"]["rows"] == totals["accepted"]
        for path, f in manifest["inputs"][name]["files"].items():
            assert f["rows_read"] == f["accepted"] + f["rejected"]
    assert (out / "_manifest.json").exists()


def test_each_ingested_row_names_its_source_file_as_text(ingested):
    """A declared row's source file (held as a one-value dictionary while the chunk is
    processed) reads back as text, the input file the row came from, from every part file."""
    root, out, manifest = ingested
    for name in ("career", "resource"):
        sources = set(manifest["inputs"][name]["files"])
        for part in sorted((out / name).glob("*.parquet")):
            column = pq.read_table(part, columns=["source_file"]).column("source_file")
            assert column.type == pa.string() and column.null_count == 0
            assert len(set(column.to_pylist())) == 1 and column[0].as_py() in sources, part


def test_nir_statuses_reflect_the_generator_noise(ingested):
    root, out, _ = ingested
    con = duckdb.connect()
    rows = con.execute(f"""
        select t.nir_noise, a.nir_status, a.nir_key_computed, count(*) n
        from ({ingested_rows_sql(out, 'career')}) a
        join read_parquet('{root}/truth/*.parquet') t on t.source = 'career' and t.record_id = a.record_id
        group by all""").fetchall()
    by = {}
    for noise, status, computed, n in rows:
        by.setdefault(noise, {}).setdefault((status, computed), 0)
        by[noise][(status, computed)] += n
    assert set(by["wrong-key"]) == {("bad_key", False)}
    assert set(by["missing-nir"]) == {("missing", False)}
    assert {s for s, _ in by["transposed-digits"]} <= {"bad_key", "bad_format"}
    assert {(s, c) for s, c in by["nir-without-key"]} <= {("valid", True), ("valid_temporary", True)}
    assert {s for s, _ in by["other-person-nir"]} <= {"valid", "valid_temporary"}
    assert {s for s, _ in by["none"]} <= {"valid", "valid_temporary"}
    # the share of bad keys among identity versions matches the generator's rates
    (share,) = con.execute(f"""
        with v as (select distinct t.identity_version, a.nir_status from ({ingested_rows_sql(out, 'career')}) a
                   join read_parquet('{root}/truth/*.parquet') t on t.source = 'career' and t.record_id = a.record_id)
        select avg((nir_status = 'bad_key')::int) from v""").fetchone()
    from nirlink.engine.synth._params import NoiseRates

    noise = NoiseRates()
    assert share == pytest.approx(noise.wrong_key + noise.transposed_digits, rel=0.35)


def test_derived_nir_fields_agree_with_the_register(ingested):
    root, out, _ = ingested
    con = duckdb.connect()
    (mismatch,) = con.execute(f"""
        select count(*) from ({ingested_rows_sql(out, 'career')}) a
        join read_parquet('{out}/register/*.parquet') r on r.nir = a.nir
        where a.nir_status = 'valid' and (a.nir_sex <> r.nir_sex or a.nir_birth_month <> r.nir_birth_month
              or a.nir_department <> r.nir_department)""").fetchone()
    assert mismatch == 0
    (bad_year,) = con.execute(f"""
        select count(*) from read_parquet('{out}/register/*.parquet')
        where nir_birth_year <> birth_year and birth_year > 0""").fetchone()
    assert bad_year == 0


def test_csv_and_parquet_give_the_same_rows(ingested, tmp_path):
    root, out, _ = ingested
    table = pq.read_table(root / "career")
    table = table.slice(0, 20000)
    csv_path = tmp_path / "career.csv"
    pacsv.write_csv(table, csv_path, write_options=pacsv.WriteOptions(delimiter=";"))
    pq_path = tmp_path / "career.parquet"
    pq.write_table(table, pq_path)
    # two runs: in one, the second input's rows would all be duplicate record ids of the first's
    m = run_ingest([InputSpec("c", "career", (str(csv_path),))], tmp_path / "out")
    run_ingest([InputSpec("p", "career", (str(pq_path),))], tmp_path / "out2")
    a = pq.read_table(tmp_path / "out" / "c").drop_columns(["source_file"]).sort_by("record_id")
    b = pq.read_table(tmp_path / "out2" / "p").drop_columns(["source_file"]).sort_by("record_id")
    assert m["inputs"]["c"]["totals"]["accepted"] == 20000
    assert a.equals(b)
    assert pc.all(pc.equal(a.column("row_number"), pa.array(range(1, 20001)))).as_py()


@given(st.lists(st.booleans(), max_size=700), st.integers(0, 3))
@example([False] * 10, 0)
@example([True] * 10, 0)
@example([i % 2 == 0 for i in range(600)], 0)  # 300 rejects: more runs than slices are kept for
def test_accepted_rows_are_the_filtered_rows(rejected, extra_true):
    """The accepted rows (slices between rare rejects, one filter for many) are the rows a filter keeps, in order."""
    import numpy as np

    from nirlink.engine.stages._ingest_rows import _without

    rejected = np.array(rejected + [True] * extra_true, bool)
    n = len(rejected)
    table = pa.table({"i": pa.array(np.arange(n)), "s": pa.array([f"v{i}" if i % 3 else None for i in range(n)])})
    keep = pa.array(~rejected)
    got = _without(table, rejected, keep)
    assert got.schema == table.schema
    assert got.to_pydict() == table.filter(keep).to_pydict()


def test_identities_count_every_accepted_declared_row_once(ingested):
    """The identities files (what the link stage reads instead of the rows) hold each signature
    of a part once, and their row counts add up to the accepted rows of each input."""
    _, out, manifest = ingested
    con = duckdb.connect()
    for name in ("career", "resource"):
        total, distinct, n = con.execute(f"""
            select sum(rows), count(distinct (filename, signature)), count(*)
            from read_parquet('{out}/identities/{name}/*.parquet', filename = true)""").fetchone()
        assert total == manifest["inputs"][name]["totals"]["accepted"] == manifest["inputs"][name]["accepted"]["rows"]
        assert distinct == n
        assert manifest["inputs"][name]["identities"]["rows"] == n
    assert not (out / "identities" / "register").exists()


def test_rows_without_their_identities_say_so(ingested, tmp_path):
    import shutil

    from nirlink.engine.stages._link import identity_files
    from nirlink.kernels import InputError

    _, out, _ = ingested
    copy = tmp_path / "ingest"
    shutil.copytree(out, copy)
    files = identity_files(copy)
    assert files["career"] and files["resource"] and all("/identities/" in f for f in files["career"])
    sorted((copy / "identities" / "career").glob("*.parquet"))[0].unlink()
    with pytest.raises(InputError, match=r"identities of the ingested rows of input 'career'.*--restart"):
        identity_files(copy)


def test_the_rows_and_identities_query_names_what_it_cannot_join(ingested, tmp_path):
    from nirlink.kernels import InputError

    _, out, manifest = ingested
    n = duckdb.connect().execute(f"select count(*) from ({ingested_rows_sql(out, 'resource')})").fetchone()[0]
    assert n == manifest["inputs"]["resource"]["totals"]["accepted"]
    with pytest.raises(InputError, match="'register' is not an ingested career or resource input.*career, resource"):
        ingested_rows_sql(out, "register")
    with pytest.raises(InputError, match="'nowhere' is not"):
        ingested_rows_sql(out, "nowhere")


_NIRS = ["185037512345620", "1 85 03 75 123 456 20", "185037512345699", "2850375", "", None, "1850375123456",
         "18503751234562O", "2A", "7850375123456"]
_NAMES = ["DUPONT", "Dupont", " dupont ", "Lefèvre", "O'Neil", "Jean-Pierre Marie", "A\x07B", "", None, "LEFEVRE"]
_BIRTHS = ["1985-03-12", "12/03/1985", "1985-02-30", "", None, "00/00/1985", "1985-13-01", "abc"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_NIRS), st.sampled_from(_NAMES), st.sampled_from(_NAMES),
                          st.sampled_from(_BIRTHS)), min_size=1, max_size=120), st.booleans(),
       st.integers(0, 3))
def test_identity_once_per_group_is_the_identity_of_every_row(rows, typed_birth, offset):
    """Oracle: the identity checked row by row (as the register's rows are). Checked once per
    group of equal declared NIR, names and birth date and given back to each row, it gives
    every row the same NIR columns, identity, signature and errors (first failing column and
    reason, and every (column, reason) pair in the same order); typed birth dates too, and
    columns that are slices of larger arrays (``offset`` rows before them, as a chunk of a
    record batch is: the kernels read the values from the buffers' offset)."""
    import datetime

    from nirlink.engine.io._schemas import ACCEPTED_SCHEMAS, COLUMNS
    from nirlink.engine.stages._ingest_checks import _as, _clean_declared, _Errors
    from nirlink.engine.stages._ingest_identity import GROUP, declared_identity, identity_columns
    from nirlink.linkage._prepare import signature_ids

    def column(values, type_=pa.string()):  # ``offset`` other values before them, sliced off
        pad = [values[-1]] * offset if type_ != pa.string() else ["Ü" * (i + 7) for i in range(offset)]
        return pa.array(pad + values, type_).slice(offset)

    nir_in = column([r[0] for r in rows])
    last, first = column([r[1] for r in rows]), column([r[2] for r in rows])
    birth = column([r[3] for r in rows])
    if typed_birth:  # a Parquet date column: the valid ones as dates, the others null
        birth = column([datetime.date(1985, 3, 12) if r[3] == "1985-03-12" else None for r in rows], pa.date32())
    names = [c.name for c in COLUMNS["career"]]
    by_row, grouped = _Errors(len(rows), names), _Errors(len(rows), names)
    nir, identity = identity_columns(nir_in, birth, last, first, by_row, "first_name", 2026)
    out, groups, inverse = declared_identity(nir_in, birth, last, first, grouped, 2026, Counter())
    assert len(groups) <= len(set(rows))
    assert np.array_equal(by_row.first_col, grouped.first_col) and np.array_equal(by_row.first_reason, grouped.first_reason)
    assert [(c, m.tolist(), r) for c, m, r in by_row.all] == [(c, m.tolist(), r) for c, m, r in grouped.all]
    assert out[GROUP].to_numpy().tolist() == inverse.tolist()
    schema = ACCEPTED_SCHEMAS["career"]
    each = groups.take(pa.array(inverse))
    assert set(out) == {"signature", GROUP}  # a row's NIR columns are its group's (ingest/identities/)
    for name in ("nir", "nir_status", "nir_key_computed", "nir_sex", "nir_birth_year", "nir_birth_month", "nir_department"):
        assert each.column(name).combine_chunks().equals(_as(nir[name], schema.field(name).type)), name
    for name, values in identity.items():
        assert each.column(name).combine_chunks().equals(_as(values, schema.field(name).type)), name
    assert each.column("last_name").to_pylist() == last.to_pylist()
    assert each.column("birth_date").to_pylist() == birth.cast(pa.string()).to_pylist()
    row_table = pa.table({"declared_nir": _clean_declared(nir_in),
                          **{k: _as(v, schema.field(k).type) for k, v in identity.items()}})
    assert out["signature"].to_numpy().tolist() == signature_ids(row_table).tolist()


_LONG = "X" * 201  # longer than a name may be


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_NIRS), st.sampled_from(_NAMES + [_LONG]), st.sampled_from(_NAMES),
                          st.sampled_from(_BIRTHS)), min_size=1, max_size=60), st.integers(1, 25))
def test_identity_read_as_dictionaries_is_the_identity_read_plain(tmp_path_factory, rows, row_group):
    """A Parquet input's identity columns are read as dictionaries (one per row group, unified)
    and checked once per value; oracle: the same chunk with those columns decoded (plain
    strings, checked row by row). Same accepted rows, identities, rejects (first and every
    reason, raw fields) and counts, whatever the row groups."""
    import dataclasses

    from nirlink.engine.io._readers import plan_input, read_chunks
    from nirlink.engine.stages._ingest_identity import split_accepted
    from nirlink.engine.stages._ingest_rows import process_chunk

    d = tmp_path_factory.mktemp("dict")
    n = len(rows)
    table = pa.table({"record_id": pa.array(range(1, n + 1), pa.int64()),
                      "declared_nir": [r[0] for r in rows], "last_name": [r[1] for r in rows],
                      "first_name": [r[2] for r in rows], "birth_date": [r[3] for r in rows],
                      "payer_id": ["P1"] * n, "period": ["2024-01"] * n, "kind": ["salary"] * n,
                      "amount": ["10.5"] * n})
    pq.write_table(table, d / "in.parquet", row_group_size=row_group)
    task, = plan_input(InputSpec("r", "resource", (str(d / "in.parquet"),)), 0, chunk_rows=10_000)
    chunk, = read_chunks(task, chunk_rows=10_000)
    assert [f.name for f in chunk.table.schema if pa.types.is_dictionary(f.type)] == \
        [c for c in ("declared_nir", "last_name", "first_name", "birth_date") if pa.types.is_string(table[c].type)]
    plain = dataclasses.replace(chunk, table=chunk.table.cast(table.schema))
    results = []
    for c in (plain, chunk):
        res = process_chunk(c, task, today_year=2026)
        written = split_accepted(res.accepted, "resource", res.groups) if res.accepted.num_rows else (None, None)
        results.append((res, written))
    (plain, (p_rows, p_ids)), (dic, (d_rows, d_ids)) = results
    assert dic.stats == plain.stats
    assert dic.rejects.equals(plain.rejects)
    if p_rows is None:
        assert d_rows is None
        return
    assert d_rows.equals(p_rows) and d_ids.equals(p_ids)
