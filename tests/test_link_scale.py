"""The scale effect, reproduced cheaply: the same career and resource rows linked against their
register, then against that register padded with 20 times as many other persons.

A bigger register lowers the trained prior (the probability that two random records match
falls as 1/N), so a rule that thresholds the match probability links less as the register
grows, whatever the evidence: at the fund's 110 million persons recall would keep falling.
Decisions must not depend on the register's size: the padded run keeps the recall and the
precision of the plain one. At this size the former rule (a probability threshold of 0.9)
happened to pass too (the prior fell 21-fold, but the NIR levels' u, counted among random
pairs, fell with it); tests/test_link.py::test_decisions_do_not_depend_on_the_register_size
is the cheap test the former rule fails, on the same candidates under a 30k and a 3M prior.
"""

from __future__ import annotations

import json

import duckdb
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from nirlink.engine.jobs._runner import Job
from nirlink.engine.jobs._spec import load_job
from nirlink.engine.stages._link import ingested_files
from nirlink.engine.synth._generate import synth
from nirlink.engine.synth._params import SynthParams
from nirlink.linkage import load_model
from nirlink.linkage._evaluate import evaluate

from conftest import write_job

PADDING = 20


@pytest.fixture(scope="module")
def padded_run(tmp_path_factory, job_run, dask_client):
    root, out, _ = job_run
    base = tmp_path_factory.mktemp("padded")
    register = pq.read_table(sorted((root / "register").glob("*.parquet")))
    n = register.num_rows
    pad_dir = base / "pad"
    synth(pad_dir, persons=PADDING * n, partitions=4, client=dask_client,
          params=SynthParams(seed=777, career_rows_per_person=0, resource_rows_per_person=0))
    pad = pq.read_table(sorted((pad_dir / "register").glob("*.parquet")))
    # other persons only: no NIR of the real register
    pad = pad.filter(pc.invert(pc.is_in(pad.column("nir"), value_set=register.column("nir"))))
    (base / "register-padding").mkdir()
    pq.write_table(pad, base / "register-padding" / "part-00000.parquet")
    job_file = write_job(base / "job.toml", root, base / "out", stages=["ingest", "link"])
    with open(job_file, "a", encoding="utf-8") as f:  # one more register input (TOML appends to the array)
        f.write(f'\n[[inputs]]\nname = "register_padding"\nkind = "register"\n'
                f'paths = ["{(base / "register-padding").as_posix()}"]\n')
    state = Job(load_job(job_file), client=dask_client).run()
    assert state.status == "succeeded", state.error
    return root, out, base / "out", pad.num_rows


def _accuracy(job_out, root):
    files = ingested_files(job_out / "ingest")
    model = load_model(job_out / "link" / "model.json")
    return evaluate(job_out / "link", files["career"] + files["resource"], root / "truth", model=model)


def test_recall_does_not_fall_as_the_register_grows(padded_run):
    root, plain_out, padded_out, padding = padded_run
    plain, padded = _accuracy(plain_out, root), _accuracy(padded_out, root)
    prior = [json.loads((o / "link" / "_manifest.json").read_text())["training"]["identity"]
             ["probability_two_random_records_match"] for o in (plain_out, padded_out)]
    register = [duckdb.sql(f"select count(*) from read_parquet('{o}/link/register/*.parquet')").fetchall()[0][0]
                for o in (plain_out, padded_out)]
    assert register[1] >= register[0] + padding * 0.99
    # the padding reproduces the scale effect on the model: its prior falls with the register
    assert prior[1] < prior[0] / 8, prior
    # ... and the decisions do not follow it
    s0, s1 = plain["signatures"], padded["signatures"]
    assert s1["recall"] >= s0["recall"] - 0.001, (s0, s1)
    assert s1["precision"] >= 0.999 and s0["precision"] >= 0.999, (s0, s1)
    for status, by in padded["signatures_by_nir_status"].items():
        before = plain["signatures_by_nir_status"][status]
        assert by["recall"] >= before["recall"] - 0.01, (status, before, by)
