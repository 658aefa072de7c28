"""The attach stage's person buckets: one file per task and bucket (files linear in the rows),
rows sorted by person, every ingested row there once; the aggregate stage's linked rows in
export form reconcile with them."""

from __future__ import annotations

import json
import os
import re

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from nirlink.engine.stages._attach import ROWS_PER_ATTACH_TASK, ROWS_PER_BUCKET_FILE, _task_groups, attach_task_rows
from nirlink.linkage._buckets import bucket_ids, key_hash


def test_task_size_grows_with_the_buckets():
    assert attach_task_rows(1) == ROWS_PER_ATTACH_TASK
    many = 10 * ROWS_PER_ATTACH_TASK // ROWS_PER_BUCKET_FILE
    assert attach_task_rows(many) == many * ROWS_PER_BUCKET_FILE
    # files = tasks x buckets stays linear in the rows: rows per bucket file never below the floor
    for buckets in (1, 13, 65, 500, 1024):
        rows = buckets * 2_000_000
        tasks = -(-rows // attach_task_rows(buckets))
        assert rows / (tasks * buckets) >= ROWS_PER_BUCKET_FILE / 2  # tasks: whole files, rounded up


def test_buckets_hold_every_row_once_sorted_by_person(job_run):
    _, out, _ = job_run
    manifest = json.loads((out / "attach" / "_manifest.json").read_text())
    ingest = json.loads((out / "ingest" / "_manifest.json").read_text())
    aggregate = json.loads((out / "aggregate" / "_manifest.json").read_text())
    for source in ("career", "resource"):
        counts = manifest["inputs"][source]
        accepted = ingest["inputs"][source]["totals"]["accepted"]
        assert counts["rows"] == counts["rows_with_person"] + counts["rows_without_person"] == accepted
        files = sorted((out / "attach" / source).rglob("*.parquet"))
        tasks = len(_task_groups(sorted(str(p) for p in (out / "ingest" / source).glob("*.parquet")),
                                 attach_task_rows(manifest["person_buckets"])))
        by_bucket: dict[str, int] = {}
        for f in files:
            by_bucket[f.parent.name] = by_bucket.get(f.parent.name, 0) + 1
            if f.parent.name == "b=nulls":
                continue
            pf = pq.ParquetFile(f)
            for g in range(pf.num_row_groups):
                person = pf.read_row_group(g, columns=["person"]).column("person").to_pylist()
                assert None not in person and person == sorted(person), f
            # the bucket is the person's (its hash), whoever computed it (the lookup, once)
            h, _ = key_hash(pa.table({"person": pa.array(sorted(set(person)), pa.string())}), ["person"])
            assert set(bucket_ids(h, manifest["person_buckets"]).tolist()) == {int(f.parent.name[2:])}, f
        assert max(by_bucket.values()) <= tasks
        assert sum(pq.read_metadata(f).num_rows for f in files) == accepted
        assert aggregate["linked_rows"][f"{source}_rows"]["rows"] == accepted


def test_a_rows_nir_and_status_are_its_ingested_identitys(job_run):
    """The attach stage takes a row's NIR and NIR status from the link stage's signatures (the
    ingested rows no longer hold them): every attached row has those of its own ingested
    identity (DuckDB joining each ingested part file to its identities file)."""
    import duckdb

    from nirlink.engine.stages._ingest import ingested_rows_sql

    _, out, _ = job_run
    for source in ("career", "resource"):
        ingested = duckdb.sql(f"select record_id, nir, nir_status from ({ingested_rows_sql(out / 'ingest', source)}) "
                              "order by record_id").fetchall()
        attached = duckdb.sql(f"select record_id, nir, nir_status from read_parquet('{out}/attach/{source}/*/*.parquet') "
                              "order by record_id").fetchall()
        assert attached == ingested and len(attached) > 1000
        for f in (out / "attach" / source).rglob("*.parquet"):  # required, as the ingested column was
            assert not pq.read_schema(f).field("nir_status").nullable, f
        assert {r[2] for r in attached} >= {"valid", "missing"} and any(r[1] is None for r in attached)


def test_a_row_whose_signature_the_link_stage_lacks_fails_the_stage(job_run, tmp_path):
    """A row takes its NIR status from the link stage by its signature: a link table without one
    of the ingested signatures (outputs of two runs) fails the stage, naming the file."""
    import shutil

    import pytest

    from nirlink.engine.stages._attach import run_attach
    from nirlink.kernels import StageError

    _, out, _ = job_run
    shutil.copytree(out / "link", tmp_path / "link")
    first = sorted((tmp_path / "link" / "links").glob("*.parquet"))[0]
    links = pq.read_table(first)
    pq.write_table(links.slice(1), first)  # one signature fewer
    shutil.copytree(out / "ingest", tmp_path / "ingest")
    with pytest.raises(StageError, match=r"attach: [1-9][0-9]* rows of .*ingest.*\.parquet have a signature missing") \
            as failed:
        run_attach(tmp_path / "ingest", tmp_path / "link", tmp_path / "attach", consume=True)
    named = re.search(r"rows of (\S+\.parquet)", str(failed.value)).group(1)
    assert os.path.exists(named)  # checked before the stage's last reader removes the file
    pq.write_table(links, first)  # the same table whole: the stage runs
    assert run_attach(out / "ingest", tmp_path / "link", tmp_path / "attach")["inputs"]["career"]["rows"] > 0


@given(sizes=st.lists(st.integers(0, 50), min_size=1, max_size=40), per_task=st.integers(1, 200))
@settings(max_examples=200, deadline=None)
def test_task_groups_are_even_and_in_order(sizes, per_task):
    """Files stay in order, each in one group; no more groups than the rows need, each about
    an even share (within one file of it)."""
    from unittest import mock

    from nirlink.engine.stages import _attach

    files = [f"f{i}" for i in range(len(sizes))]
    rows = dict(zip(files, sizes))
    with mock.patch.object(_attach.pq, "read_metadata", lambda f: mock.Mock(num_rows=rows[f])):
        groups = _task_groups(files, per_task)
    assert [f for g in groups for f in g] == files and all(groups)
    total = sum(sizes)
    n_groups = max(1, -(-total // per_task))
    assert len(groups) <= n_groups
    for g in groups:
        assert sum(rows[f] for f in g) <= total / n_groups + max(sizes)


def test_engine_files_keep_the_statistics_readers_prune_on(tmp_path):
    """Row files keep min/max of ids, dates, numbers and the person (row groups pruned by record
    id, latest month from statistics), not of other strings; no dictionary on row ids."""
    import datetime as dt

    import pyarrow as pa

    from nirlink.engine.io._datasets import write_parquet
    from nirlink.engine.stages._signals import latest_month

    t = pa.table({"record_id": pa.array([5, 9, 7], pa.int64()), "person": ["b", "a", "c"],
                  "last_name": ["x", "y", "z"], "period": [dt.date(2024, 1, 1), dt.date(2024, 3, 1), dt.date(2023, 12, 1)],
                  "amount": [1.5, 2.5, 3.5]})
    write_parquet(t, tmp_path / "rows" / "part-0.parquet")
    meta = pq.read_metadata(tmp_path / "rows" / "part-0.parquet").row_group(0)
    stats = {meta.column(i).path_in_schema: meta.column(i).statistics for i in range(meta.num_columns)}
    assert (stats["record_id"].min, stats["record_id"].max) == (5, 9)
    assert (stats["person"].min, stats["person"].max) == ("a", "c")
    assert stats["last_name"] is None or not stats["last_name"].has_min_max
    assert latest_month(tmp_path / "rows") == 2024 * 12 + 2
    encodings = {meta.column(i).path_in_schema: meta.column(i).encodings for i in range(meta.num_columns)}
    assert "RLE_DICTIONARY" not in encodings["record_id"] and "RLE_DICTIONARY" in encodings["person"]
    rows = pq.read_table(tmp_path / "rows", filters=[("record_id", "=", 7)])
    assert rows.column("last_name").to_pylist() == ["z"]


def test_a_retried_task_whose_files_were_consumed_says_so(tmp_path):
    """A task that consumes its files, run again after its worker died having read some, fails
    with the files named (not a FileNotFoundError deep in a read) and leaves the others alone."""
    import pytest

    from nirlink.engine.stages._attach import _attach_files
    from nirlink.kernels import StageError

    kept = tmp_path / "part-0.parquet"
    pq.write_table(pa.table({"signature": pa.array([1, 2], pa.uint64())}), kept)
    with pytest.raises(StageError, match=r"attach: 1 ingested career file\(s\) \(part-1.parquet\.\.\.\) were consumed"):
        _attach_files([str(kept), str(tmp_path / "part-1.parquet")], "career", str(tmp_path / "absent.arrow"),
                      str(tmp_path / "out"), 4, "part-00000", consume=True)
    assert kept.exists()


def test_lookup_ranks_and_buckets_are_the_persons(job_run, tmp_path):
    """The lookup's rank and bucket come from the register entry a signature's person is: a
    linked signature carries its person's hash bucket and a rank in person order, every other
    signature bucket -1; one row per signature of link/links, sorted by signature."""
    import numpy as np
    import pyarrow.ipc as ipc

    from nirlink.engine.stages._attach import _build_lookup

    _, out, _ = job_run
    links = pq.read_table(out / "link" / "links").to_pandas()
    path = tmp_path / "links.arrow"
    assert _build_lookup(str(out / "link"), str(path), 7, threads=2) == len(links)
    with pa.memory_map(str(path)) as f:
        reader = ipc.open_file(f)
        assert reader.num_record_batches == 1
        t = reader.read_all().to_pandas()
    assert t["signature"].is_monotonic_increasing and sorted(t["signature"]) == sorted(links["signature"])
    linked = t["link_status"].eq("linked").to_numpy()
    h, _ = key_hash(pa.table({"person": pa.array(t["person"][linked], pa.string())}), ["person"])
    assert (t["bucket"][linked].to_numpy() == bucket_ids(h, 7)).all() and (t["bucket"][~linked] == -1).all()
    persons = t[linked].sort_values("person_rank", kind="stable")["person"].tolist()
    assert persons == sorted(persons) and t[linked].groupby("person")["person_rank"].nunique().eq(1).all()
    assert len(set(t["person_rank"][linked])) == len(set(persons))
    # the person as the tasks move it: an index into the register's NIRs, null without a bucket
    person = t["person_index"].astype(object).where(t["person_index"].notna(), None)
    assert person[linked].tolist() == t["person"][linked].tolist() and person[~linked].isna().all()
    assert set(t["link_status"].astype(str)) <= {"linked", "ambiguous", "unlinked"}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(-1, 40), st.sampled_from(["linked", "ambiguous", None]),
                          st.integers(0, 3000)), min_size=1, max_size=300),
       st.integers(1, 5))
def test_dictionary_columns_write_the_rows_plain_columns_write(tmp_path_factory, rows, n_buckets):
    """The bucket writers given the person, the status and a wide id as dictionaries (as the
    attach tasks move them) write the files they write given the same rows as plain strings:
    the same schema and rows, bucket by bucket (the dictionary path is the faster one)."""
    import numpy as np

    from nirlink.engine.stages._attach import _BucketWriters, person_buckets

    out = tmp_path_factory.mktemp("buckets")
    nirs = pa.array([f"{1_000_000_000_000 + 7 * i}" for i in range(41)])  # sorted: index = rank - 1
    index = np.array([r[0] for r in rows])
    person = pa.array([nirs[i].as_py() if i >= 0 else None for i in index], pa.string())
    bucket = np.where(index >= 0, person_buckets(person, n_buckets), -1)
    rank = np.where(index >= 0, index + 1, 0)
    payer = pa.array([f"p{r[2]}" for r in rows])
    plain = pa.table({"record_id": pa.array(np.arange(len(rows)), pa.int64()), "person": person,
                      "link_status": pa.array([r[1] for r in rows], pa.string()), "payer_id": payer})
    dictionary = pa.table({
        "record_id": plain.column("record_id"),
        "person": pa.DictionaryArray.from_arrays(pa.array(np.maximum(index, 0).astype(np.int32), mask=index < 0), nirs),
        "link_status": pc.dictionary_encode(plain.column("link_status")),
        "payer_id": pa.DictionaryArray.from_arrays(pa.array(np.array([r[2] for r in rows], np.int32)),
                                                   pa.array([f"p{i}" for i in range(3001)]))})  # > SMALL_DICTIONARY
    for name, table in (("plain", plain), ("dictionary", dictionary)):
        with _BucketWriters(out / name, n_buckets, "part") as writers:
            writers.write(table, bucket, rank)
    files = sorted(p.relative_to(out / "plain") for p in (out / "plain").rglob("*.parquet"))
    assert files == sorted(p.relative_to(out / "dictionary") for p in (out / "dictionary").rglob("*.parquet"))
    for f in files:
        a, b = pq.read_table(out / "plain" / f), pq.read_table(out / "dictionary" / f)
        assert a.schema == b.schema and a.equals(b), f
    total = sum(pq.read_metadata(out / "plain" / f).num_rows for f in files)
    assert total == len(rows)
    # the increment's rewrite of a bucket file: its rows as the writers take them, the same values
    from nirlink.engine.stages._bucket_writers import writable

    kept = writable(dictionary)
    assert kept.cast(plain.schema).equals(plain)
    values = plain.column("person").to_pylist()
    if None not in values:  # one dictionary value per run of equal persons
        assert kept.column("person").combine_chunks().dictionary.to_pylist() == \
            [v for i, v in enumerate(values) if i == 0 or v != values[i - 1]]
    with _BucketWriters(out / "kept", n_buckets, "part") as writers:
        writers._append("00000", kept)
    assert pq.read_table(out / "kept" / "b=00000" / "part.parquet").equals(plain)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.sampled_from(["", "a", "b", "é", "1850199123456", "zz"]), min_size=1, max_size=12),
       rows=st.lists(st.one_of(st.none(), st.integers(0, 11)), max_size=80), offset=st.integers(0, 5))
def test_a_compacted_dictionary_holds_the_rows_values_once_in_first_appearance_order(values, rows, offset):
    """compact_dictionary against pandas: the same values row for row (nulls kept), a
    dictionary without a repeated value (the lookup's NIRs repeat: one per signature) in the
    order the values first appear (pandas.unique), and its slots left free for the next call."""
    import numpy as np
    import pandas as pd

    from nirlink.kernels._arrow import compact_dictionary

    codes = [None if r is None else r % len(values) for r in rows]
    whole = pa.DictionaryArray.from_arrays(pa.array([0] * offset + codes, pa.int32()), pa.array(values))
    array = whole.slice(offset)  # a slice, as the writers pass each bucket's rows
    slots = np.full(len(values), -1, np.int32)
    out = compact_dictionary(array, slots)
    expected = [None if c is None else values[c] for c in codes]
    assert out.to_pylist() == expected
    assert out.dictionary.to_pylist() == list(pd.unique(pd.Series([v for v in expected if v is not None], dtype=object)))
    assert (slots == -1).all()


def test_a_large_dictionary_with_repeated_values_is_written_dictionary_encoded(tmp_path):
    """A bucket's NIRs, taken from a dictionary of one NIR per signature (values repeat), reach
    the Parquet file dictionary-encoded, as the decoded strings would (a repeated value in a
    dictionary handed to the writer makes it fall back to plain encoding), with the same values."""
    import numpy as np

    from nirlink.engine.stages._attach import _BucketWriters

    nirs = pa.array([f"1{i % 700:012d}" for i in range(5000)])  # > SMALL_DICTIONARY, each value ~7 times
    rng = np.random.default_rng(0)
    pos = np.sort(rng.integers(0, 5000, 20_000)).astype(np.int32)
    rows = pa.table({"record_id": pa.array(np.arange(len(pos))),
                     "person": pa.DictionaryArray.from_arrays(pa.array(pos // 8), nirs),
                     "nir": pa.DictionaryArray.from_arrays(pa.array(pos), nirs)})
    with _BucketWriters(tmp_path, 1, "part") as writers:
        writers.write(rows, np.zeros(len(pos), np.int64), pos.astype(np.int64) // 8 + 1)
    path = tmp_path / "b=00000" / "part.parquet"
    column = pq.ParquetFile(path).metadata.row_group(0).column(2)
    assert column.path_in_schema == "nir" and "RLE_DICTIONARY" in column.encodings, column.encodings
    assert pq.read_table(path).column("nir").to_pylist() == rows.column("nir").cast(pa.string()).to_pylist()
