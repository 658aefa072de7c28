"""The job directory's size: the ingest stage's parts the link stage removes once read
(``consume_parts``; the register going while a job's link stage runs: tests/test_release.py),
and the Parquet encodings chosen for amounts and the link outputs' ids, checked in the files
a job writes."""

from __future__ import annotations

import json
from pathlib import Path

import dask.config
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given
from hypothesis import strategies as st

from nirlink.engine.io._datasets import write_parquet
from nirlink.engine.io._money import money_from_cents
from nirlink.engine.jobs._release import consume_parts, resume_from
from nirlink.linkage._buckets import sorted_id_options

STAGES = ("ingest", "link", "attach", "aggregate", "export")


def _encodings(path: Path) -> dict[str, set[str]]:
    meta = pq.read_metadata(path)
    out: dict[str, set[str]] = {}
    for g in range(meta.num_row_groups):
        rg = meta.row_group(g)
        for i in range(rg.num_columns):
            out.setdefault(rg.column(i).path_in_schema, set()).update(rg.column(i).encodings)
    return out


def _files(d: Path) -> list[Path]:
    files = sorted(d.rglob("*.parquet"))
    assert files, d
    return files


# --- encodings in a job's files ---------------------------------------------------------------

def test_amounts_are_delta_encoded_but_the_capped_ones(job_run):
    _, out, _ = job_run
    expected = {
        "export/career_rows": {"gross_salary": True},
        "export/resource_rows": {"amount": True},
        "export/career_person_year": {"gross_salary": True, "capped_salary": False, "revalued_capped_salary": False},
        "export/resource_person_month": {"amount_salary": True, "amount_pension": True},
        "export/resource_person_review": {"income_12m": True},
        "ingest/career": {"gross_salary": True},
        "attach/resource": {"amount": True},
    }
    for dataset, columns in expected.items():
        for f in _files(out / dataset):
            enc = _encodings(f)
            for column, delta in columns.items():
                assert ("DELTA_BINARY_PACKED" in enc[column]) is delta, (f, column, enc[column])
                assert "PLAIN_DICTIONARY" not in enc[column] and "RLE_DICTIONARY" not in enc[column], (f, column)
    # the exports read back as decimals, the same values as the aggregate stage computed
    t = pq.read_table(out / "export" / "career_person_year", columns=["gross_salary", "capped_salary"])
    assert pa.types.is_decimal(t.schema.field("gross_salary").type)
    assert pq.read_table(out / "aggregate" / "career_person_year", columns=["gross_salary"]).column(
        "gross_salary").combine_chunks().sort().equals(t.column("gross_salary").combine_chunks().sort())


def test_link_outputs_ids_are_sorted_delta_without_dictionary(job_run):
    _, out, _ = job_run
    for dataset, ids in (("links", "signature"), ("candidates", "signature"), ("signatures", "unique_id")):
        for f in _files(out / "link" / dataset):
            enc = _encodings(f)
            assert "DELTA_BINARY_PACKED" in enc[ids] and "RLE_DICTIONARY" not in enc[ids], (f, enc[ids])
            assert any("RLE_DICTIONARY" in e for c, e in enc.items() if c != ids)  # the others keep theirs
            values = pq.read_table(f, columns=[ids]).column(ids).to_numpy()
            assert (np.diff(values) >= 0).all(), f  # what makes the deltas small


@given(st.lists(st.one_of(st.none(), st.integers(-(10**17), 10**17)), max_size=300))
def test_delta_encoded_amounts_read_back_exactly(cents):
    import tempfile

    arr = np.array([c if c is not None else 0 for c in cents], np.int64)
    amounts = money_from_cents(arr)
    mask = pa.array([c is None for c in cents], pa.bool_())
    table = pa.table({"amount": pa.compute.if_else(mask, pa.scalar(None, amounts.type), amounts)})
    with tempfile.TemporaryDirectory() as d:
        write_parquet(table, Path(d) / "x.parquet")
        if any(c is not None for c in cents):  # an empty or all-null column has no data page
            assert "DELTA_BINARY_PACKED" in _encodings(Path(d) / "x.parquet")["amount"]
        assert pq.read_table(Path(d) / "x.parquet").equals(table)


def test_sorted_ids_survive_the_extremes_of_int64(tmp_path):
    ids = pa.array([-(2**63), -5, 0, 7, 2**63 - 1], pa.int64())  # deltas that overflow int64
    t = pa.table({"signature": ids, "person": pa.array(list("abcde"))})
    pq.write_table(t, tmp_path / "x.parquet", **sorted_id_options(t.schema, "signature"))
    assert pq.read_table(tmp_path / "x.parquet").equals(t)


# --- the ingest stage's parts the link stage removes once read ------------------------------------

def _ingested(job, inputs: dict[str, str]) -> None:
    for name in inputs:
        (job / "ingest" / name).mkdir(parents=True)
    (job / "ingest" / "_manifest.json").write_text(json.dumps({"inputs": {n: {"kind": k} for n, k in inputs.items()}}))


def test_the_link_stage_consumes_what_only_it_reads(tmp_path):
    _ingested(tmp_path, {"register": "register", "career": "career"})
    with dask.config.set({"nirlink.jobs.keep": "link"}):
        assert consume_parts(tmp_path, "ingest", "link", STAGES) == ("register",)
        marker = json.loads((tmp_path / "ingest" / "_released.json").read_text())
        assert marker["released"] == ["register"]
        # the signals stage reads the register too: the link stage is not its last reader
        assert consume_parts(tmp_path, "ingest", "link", (*STAGES[:4], "signals", "export")) == ()
        assert consume_parts(tmp_path, "ingest", "attach", STAGES) == ()
    with dask.config.set({"nirlink.jobs.keep": "ingest,link"}):
        assert consume_parts(tmp_path, "ingest", "link", STAGES) == ()


def test_no_part_is_marked_released_when_its_rows_are_elsewhere(tmp_path):
    # the register input named otherwise, a career input named "register", two register inputs:
    # the link stage removes nothing, and a released marker would only make re-runs ingest again
    for i, inputs in enumerate(({"people": "register", "career": "career"},
                                {"register": "career", "people": "register"},
                                {"register": "register", "more": "register"})):
        job = tmp_path / str(i)
        _ingested(job, inputs)
        with dask.config.set({"nirlink.jobs.keep": "link"}):
            assert consume_parts(job, "ingest", "link", STAGES) == ()
        assert not (job / "ingest" / "_released.json").exists()


def test_a_link_rerun_after_its_inputs_went_runs_ingest_again(tmp_path):
    (tmp_path / "ingest").mkdir()
    with dask.config.set({"nirlink.jobs.keep": "link"}):
        assert resume_from(tmp_path, STAGES, 1) == 1
        (tmp_path / "ingest" / "_released.json").write_text(json.dumps({"released": ["register"]}))
        assert resume_from(tmp_path, STAGES, 1) == 0  # the link stage reads the register
        assert resume_from(tmp_path, STAGES, 2) == 2  # the attach stage does not
