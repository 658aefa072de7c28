"""Shared fixtures: an in-process Dask cluster and synthetic datasets generated once per session."""

from __future__ import annotations

import os
import shutil

import pytest
from hypothesis import HealthCheck, settings

# Kernels compile on first call (Numba), so the first example of a test is slow: no deadline.
# Profiles (HYPOTHESIS_PROFILE): "nirlink" explores new random examples on every run (the
# default, for development); "ci" replays a fixed, seed-derived search so that CI verdicts are
# reproducible; "thorough" searches 20x longer, to hunt for edge cases before a release.
_BASE = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("nirlink", **_BASE)
settings.register_profile("ci", derandomize=True, database=None, **_BASE)
settings.register_profile("thorough", max_examples=2000, **_BASE)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "nirlink"))


@pytest.fixture(scope="session", autouse=True)
def job_registry(tmp_path_factory):
    """Jobs registered by tests go to a temporary registry, never to ~/.nirlink."""
    import os

    import dask.config

    path = str(tmp_path_factory.mktemp("registry"))
    os.environ["DASK_NIRLINK__JOBS__REGISTRY"] = path
    # tests read intermediate outputs as oracles: kept (tests/test_release.py runs the default)
    os.environ["DASK_NIRLINK__JOBS__KEEP"] = "all"
    with dask.config.set({"nirlink.jobs.registry": path, "nirlink.jobs.keep": "all"}):
        yield path


@pytest.fixture(scope="session")
def dask_client():
    """An in-process LocalCluster (2 workers x 1 thread, no dashboard) for integration tests."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None,
                           memory_limit="4GiB")
    client = Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="session")
def synth_small(tmp_path_factory, dask_client):
    """3,000 persons in 3 blocks (about 400k rows)."""
    from nirlink.engine.synth._generate import synth
    from nirlink.engine.synth._params import SynthParams

    out = tmp_path_factory.mktemp("synth_small")
    summary = synth(out, persons=3000, partitions=3, client=dask_client, params=SynthParams(seed=11))
    return out, summary


@pytest.fixture(scope="session")
def synth_100k(tmp_path_factory, dask_client):
    """100,000 persons in 4 blocks (about 13M rows): the size the NIR validity test asks for."""
    from nirlink.engine.synth._generate import synth
    from nirlink.engine.synth._params import SynthParams

    out = tmp_path_factory.mktemp("synth_100k")
    summary = synth(out, persons=100_000, partitions=4, client=dask_client, params=SynthParams(seed=2024))
    return out, summary


def write_job(path, data_dir, out_dir, *, stages=None, extra: str = "") -> str:
    """A job file over a synthetic dataset (register, career, resource)."""
    from nirlink.engine.synth._jobfile import write_job_file

    return str(write_job_file(data_dir, path, output=out_dir, name="t", stages=stages, extra=extra))



def data_with_own_career(root, dest):
    """``dest/data``: the register and resource rows of the synthetic dataset ``root`` (linked,
    not copied) and an empty ``career/`` for the test to fill with its own files."""
    data = dest / "data"
    data.mkdir()
    for name in ("register", "resource"):
        (data / name).symlink_to(root / name, target_is_directory=True)
    (data / "career").mkdir()
    return data

@pytest.fixture(scope="session")
def job_run(tmp_path_factory, synth_small, dask_client):
    """The full main job on the small synthetic dataset, run once per session."""
    from nirlink.engine.jobs._runner import Job
    from nirlink.engine.jobs._spec import load_job

    root, _ = synth_small
    base = tmp_path_factory.mktemp("job")
    job_file = write_job(base / "job.toml", root, base / "out")
    state = Job(load_job(job_file), client=dask_client).run()
    assert state.status == "succeeded", state.error
    return root, base / "out", job_file


@pytest.fixture(scope="session")
def signals_job(job_run, tmp_path_factory, dask_client):
    """The session's finished job, copied, then run again with the signals stage and the export
    (pseudonymised): its own run record holds a report with the signals section."""
    from nirlink.engine.jobs._runner import Job
    from nirlink.engine.jobs._spec import load_job

    root, out, _ = job_run
    base = tmp_path_factory.mktemp("signals_job")
    shutil.copytree(out, base / "out")
    (base / "key").write_text("k" * 32)
    job_file = write_job(base / "job.toml", root, base / "out",
                         stages=["ingest", "link", "attach", "aggregate", "signals", "export"],
                         extra=f'pseudonymise = true\nkey_file = "{base / "key"}"\n')
    state = Job(load_job(job_file), client=dask_client).run()
    assert state.status == "succeeded", state.error
    return root, base / "out", state
