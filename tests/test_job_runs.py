"""Runs as operators see them: one record per run, the output directory's lock, submit that
fails cleanly, queued jobs, cancel, `logs`, and stopping a run with a real signal."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dask.config
import pytest
from typer.testing import CliRunner

from nirlink.engine.cli import app
from nirlink.engine.io._datasets import write_json
from nirlink.engine.jobs._lock import acquire_lock, read_lock
from nirlink.engine.jobs._registry import job_paths, read_state, request_cancel
from nirlink.engine.jobs._runner import Job
from nirlink.engine.jobs._spec import load_job
from nirlink.engine.jobs._state import JobState, LockHolder, Started

from conftest import data_with_own_career, write_job

runner = CliRunner()
NIRLINK = [sys.executable, "-m", "nirlink"]


def _temporaries(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob(".*") if ".tmp" in p.name or ".old-" in p.name)


def _registered(job_id: str) -> bool:
    return (Path(dask.config.get("nirlink.jobs.registry")) / f"{job_id}.json").exists()


def _wait(predicate, what: str, proc: subprocess.Popen, timeout: float = 240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        if proc.poll() is not None:
            raise AssertionError(f"the process ended (exit {proc.returncode}) before {what}: {proc.communicate()}")
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def tcp_scheduler():
    """A cluster in this process that another process can reach (the session's is in-process only)."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, protocol="tcp://", dashboard_address=None,
                      memory_limit="4GiB") as cluster:
        yield cluster.scheduler_address


def _state(out: Path) -> JobState | None:
    try:
        return read_state(out)
    except (OSError, ValueError):  # caught between two writes of the subprocess
        return None


# ------------------------------------------------------------------ submit, queued, cancel


def test_a_failed_submit_leaves_nothing_behind(synth_small, tmp_path, dask_client, monkeypatch):
    root, _ = synth_small
    out = tmp_path / "out"
    job_file = write_job(tmp_path / "job.toml", root, out, stages=["ingest"])
    registry = Path(dask.config.get("nirlink.jobs.registry"))
    before = set(registry.glob("*.json"))
    with dask.config.set({"nirlink.cluster.connect-timeout": 2}):
        result = runner.invoke(app, ["submit", job_file, "--scheduler", "tcp://127.0.0.1:1"])
    assert result.exit_code == 1 and "cannot reach the Dask scheduler at tcp://127.0.0.1:1" in result.stderr
    assert set(registry.glob("*.json")) == before and not out.exists()
    # the scheduler answers, then refuses the task: the records made for it are withdrawn
    import distributed

    def refuse(*args, **kwargs):
        raise RuntimeError("the scheduler went away")

    monkeypatch.setattr(distributed.Client, "submit", refuse)
    result = runner.invoke(app, ["submit", job_file, "--scheduler", dask_client.scheduler.address])
    assert result.exit_code == 1 and "the scheduler went away" in result.stderr
    assert set(registry.glob("*.json")) == before
    assert read_lock(out) is None and read_state(out) is None and not list((out / "_job").glob("runs/*"))


def test_a_queued_job_waits_refuses_other_runs_and_can_be_cancelled(synth_small, tmp_path):
    root, _ = synth_small
    out = tmp_path / "out"
    job_file = write_job(tmp_path / "job.toml", root, out, stages=["ingest"])
    job_id = Job(load_job(job_file), scheduler="tcp://127.0.0.1:1").submit()  # no driver: it stays queued
    with dask.config.set({"nirlink.jobs.stale-after-seconds": 1}):
        time.sleep(1.5)
        st = runner.invoke(app, ["status", job_id, "--output", "json"])
        assert st.exit_code == 0 and json.loads(st.stdout)["status"] == "queued"  # waiting is not lost
        jobs = runner.invoke(app, ["jobs"])
        assert jobs.exit_code == 0 and f"{job_id}" in jobs.stdout and "queued for" in jobs.stdout
        busy = runner.invoke(app, ["run", job_file])
    assert busy.exit_code == 1 and f"job {job_id} is queued" in busy.stderr and f"nirlink cancel {job_id}" in busy.stderr
    assert [p.name for p in (out / "_job" / "runs").iterdir()] == [job_id]  # the refused run left no record
    c = runner.invoke(app, ["cancel", job_id, "--output", "json"])
    assert c.exit_code == 0, c.output
    assert json.loads(c.stdout) | {"message": ""} == {"job_id": job_id, "status": "cancelled", "action": "cancelled",
                                                        "message": ""}
    assert read_lock(out) is None
    # its driver, starting late, does nothing
    late = Job(load_job(job_file), job_id=job_id).run()
    assert late.status == "cancelled" and late.started_at is None and not (out / "ingest").exists()
    # the driver itself looks for a cancel request before it starts
    second = Job(load_job(job_file), scheduler="tcp://127.0.0.1:1")
    second.submit()
    request_cancel(out, second.job_id)
    ended = Job(load_job(job_file), job_id=second.job_id).run()
    assert ended.status == "cancelled" and ended.cause == "cancelled by an operator before it started"
    assert not (out / "ingest").exists() and read_lock(out) is None
    assert read_state(out, job_id).status == "cancelled"  # the first run's record is its own


def test_jobs_and_status_survive_broken_records(synth_small, tmp_path):
    root, _ = synth_small
    good = Job(load_job(write_job(tmp_path / "a.toml", root, tmp_path / "a", stages=["ingest"]))).submit()
    bad = Job(load_job(write_job(tmp_path / "b.toml", root, tmp_path / "b", stages=["ingest"]))).submit()
    job_paths(tmp_path / "b", bad)["state"].write_text("{not json")
    gone = Job(load_job(write_job(tmp_path / "c.toml", root, tmp_path / "c", stages=["ingest"]))).submit()
    import shutil

    shutil.rmtree(tmp_path / "c")
    (Path(dask.config.get("nirlink.jobs.registry")) / "zz-garbage.json").write_text("[1, 2")
    jobs = runner.invoke(app, ["jobs"])
    assert jobs.exit_code == 0, jobs.output
    lines = jobs.stdout.splitlines()
    assert lines[0].split() == ["JOB", "ID", "STATUS", "STARTED", "DURATION", "DIRECTORY"]
    line = {j: next(x for x in lines if x.startswith(j)) for j in (good, bad, gone, "zz-garbage")}
    assert "queued" in line[good] and "state unreadable" in line[bad] and "directory missing" in line[gone]
    assert "registry entry unreadable" in line["zz-garbage"]
    as_json = runner.invoke(app, ["jobs", "--output", "json"])
    assert as_json.exit_code == 0
    by_id = {e["job_id"]: e for e in json.loads(as_json.stdout)}
    assert by_id[bad]["state"] is None and by_id[bad]["problem"].startswith("state unreadable: not valid JSON (")
    assert "Error" not in by_id[bad]["problem"]  # in words, no class name (was "JSONDecodeError: ...")
    st = runner.invoke(app, ["status", str(tmp_path / "b")])
    assert "state unreadable: not valid JSON" in st.output and "Error" not in st.output, st.output
    assert by_id[good]["state"]["status"] == "queued"
    st = runner.invoke(app, ["status", bad, "--output", "json"])
    assert st.exit_code == 0 and json.loads(st.stdout)["status"] == "unreadable"
    (Path(dask.config.get("nirlink.jobs.registry")) / "zz-garbage.json").unlink()


# ------------------------------------------------------------------ runs, logs


def test_each_run_keeps_its_own_record_log_and_report(synth_small, tmp_path, dask_client):
    root, _ = synth_small
    out = tmp_path / "out"
    job_file = write_job(tmp_path / "job.toml", root, out, stages=["ingest"])
    (out / ".link.tmp-0badc0de" / "career").mkdir(parents=True)  # left by a run killed long ago
    (out / ".link.tmp-0badc0de" / "career" / "part-0.parquet").write_bytes(b"rows")
    with dask.config.set({"nirlink.testing.fail-before-stage": "ingest"}):
        failed = runner.invoke(app, ["run", job_file, "--scheduler", dask_client.scheduler.address])
    assert failed.exit_code == 1
    first = read_state(out)
    assert first.status == "failed" and _temporaries(out) == []
    second = Job(load_job(job_file), client=dask_client).run()
    assert second.status == "succeeded" and second.job_id != first.job_id
    # the failed run stays failed; `status OLD_ID` shows that run, the directory its latest
    old = json.loads(runner.invoke(app, ["status", first.job_id, "--output", "json"]).stdout)
    assert old["status"] == "failed" and "failure injected" in old["error"] and old["job_id"] == first.job_id
    latest = json.loads(runner.invoke(app, ["status", str(out), "--output", "json"]).stdout)
    assert latest["job_id"] == second.job_id and latest["status"] == "succeeded"
    assert latest["stage_seconds"].keys() == {"ingest"} and old["stage_seconds"] == {}
    assert old["report"] != latest["report"] and Path(old["report"]).exists() and Path(latest["report"]).exists()
    # `logs ID`: that run only, readable lines
    logs_first = runner.invoke(app, ["logs", first.job_id]).stdout
    logs_second = runner.invoke(app, ["logs", second.job_id]).stdout
    assert "job failed" in logs_first and "job succeeded" not in logs_first
    assert "job succeeded" in logs_second and "job failed" not in logs_second
    assert "stage ingest finished  stage=ingest seconds=" in logs_second and "{'" not in logs_second
    assert "removed 1 temporary item(s) left by earlier runs  removed=.link.tmp-0badc0de" in logs_first
    tail = runner.invoke(app, ["logs", second.job_id, "--tail", "2"]).stdout.splitlines()
    assert len(tail) == 2 and tail[-1].endswith("job succeeded")
    jobs = runner.invoke(app, ["jobs"]).stdout.splitlines()
    row = next(x for x in jobs if x.startswith(second.job_id))
    assert time.strftime("%Y-%m-%d", time.localtime(second.started_at)) in row and " s " in row


def test_logs_follow_prints_new_lines_until_the_run_ends(synth_small, tmp_path):
    from nirlink.engine.jobs._joblog import JobLog

    root, _ = synth_small
    out = tmp_path / "out"
    job = Job(load_job(write_job(tmp_path / "job.toml", root, out, stages=["ingest"])))
    job_id = job.submit()
    proc = subprocess.Popen([*NIRLINK, "logs", job_id, "--follow"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    time.sleep(3)
    JobLog(job_paths(out, job_id)["log"], job_id).write("info", "a line written while following", rows=3)
    runner.invoke(app, ["cancel", job_id])
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    lines = stdout.splitlines()
    assert "job submitted" in lines[0] and "stages=ingest" in lines[0]
    assert any(x.endswith("a line written while following  rows=3") for x in lines)
    assert "job cancelled  cause=\"cancelled by an operator before it started\"" in lines[-1]


# ------------------------------------------------------------------ the directory's lock


def test_a_dead_drivers_lock_is_taken_over(synth_small, tmp_path):
    root, _ = synth_small
    out = tmp_path / "out"
    job_file = write_job(tmp_path / "job.toml", root, out, stages=["ingest"])
    dead = subprocess.Popen(["true"])
    dead.wait()
    for holder_id, pid, host, heartbeat, why in (
            ("old-1", dead.pid, socket.gethostname(), time.time(), "is gone"),  # this host: its process is gone
            ("old-2", 1, "elsewhere", time.time() - 3600, "no heartbeat for")):  # another host: silent for an hour
        old = Job(load_job(job_file), job_id=holder_id)
        old.submit()
        old.emit(Started(time.time()))
        write_json(job_paths(out)["lock"], LockHolder(job_id=holder_id, token="x", pid=pid, host=host, since=0,
                                                      heartbeat=heartbeat).to_json())
        new = Job(load_job(job_file))
        assert new.run().status == "succeeded"
        lost = read_state(out, holder_id)
        assert lost.status == "failed" and why in lost.error, lost.error
        assert read_lock(out) is None


_RACE = """
import sys, time
from pathlib import Path
from nirlink.engine.jobs import _lock
out, me = Path(sys.argv[1]), sys.argv[2]
write = _lock._write
def slow_write(*args):  # a wide window between deciding and writing: every racer decides inside it
    time.sleep(0.5)
    write(*args)
_lock._write = slow_write
while not (out / "go").exists():
    time.sleep(0.001)
try:
    _lock.acquire_lock(out, me)
    print("took", flush=True)
except Exception as exc:
    print("refused", exc, flush=True)
time.sleep(6)  # alive while the others try: a holder whose process is gone may be replaced
"""


def test_processes_racing_for_a_stale_lock_one_takes_it(tmp_path):
    out = tmp_path / "out"
    acquire_lock(out, "dead-job")
    stale = LockHolder(job_id="dead-job", token="x", pid=1, host="elsewhere", since=0, heartbeat=0)
    write_json(out / "_job" / "lock", stale.to_json())
    procs = [subprocess.Popen([sys.executable, "-c", _RACE, str(out), f"racer-{i}"], stdout=subprocess.PIPE, text=True)
             for i in range(6)]
    time.sleep(3)  # every racer imported and polling
    (out / "go").touch()
    results = {f"racer-{i}": p.communicate(timeout=60)[0].strip() for i, p in enumerate(procs)}
    winners = [k for k, v in results.items() if v == "took"]
    assert len(winners) == 1, results
    assert read_lock(out).job_id == winners[0]
    assert all(f"job {winners[0]} is running" in v for k, v in results.items() if k not in winners), results


# ------------------------------------------------------------------ stopping a run


def test_two_runs_at_once_then_sigterm(synth_small, tmp_path, tcp_scheduler):
    """A real `nirlink run` process: a second run and a submit into its directory are refused
    naming it; SIGTERM stops it at a task boundary, recorded as such, nothing left behind."""
    root, _ = synth_small
    out = tmp_path / "out"
    job_file = write_job(tmp_path / "job.toml", root, out, stages=["ingest", "link"])
    proc = subprocess.Popen([*NIRLINK, "run", job_file, "--scheduler", tcp_scheduler],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        st = _wait(lambda: (s := _state(out)) and s.stage == "link" and s.step and s, "the link stage", proc)
        second = runner.invoke(app, ["run", job_file, "--scheduler", tcp_scheduler])
        assert second.exit_code == 1 and f"is in use: job {st.job_id} is running (process {proc.pid}" in second.stderr
        sub = runner.invoke(app, ["submit", job_file, "--scheduler", tcp_scheduler])
        assert sub.exit_code == 1 and f"job {st.job_id} is running" in sub.stderr
        assert list(out.glob(".link.tmp-*"))  # the stage is writing
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143, stderr
    final = read_state(out, st.job_id)
    assert final.status == "interrupted" and final.cause == "interrupted by SIGTERM" and final.stage == "link"
    assert "SIGTERM received: stopping at the next task boundary" in stderr and "Traceback" not in stderr
    assert f"job {st.job_id}: interrupted (interrupted by SIGTERM)" in stdout
    time.sleep(1)  # its cancelled tasks have ended: nothing comes back
    assert _temporaries(out) == [] and not (out / "link").exists() and read_lock(out) is None
    status = runner.invoke(app, ["status", st.job_id])
    assert status.stdout.startswith(f"{st.job_id}: interrupted by SIGTERM")


@pytest.mark.slow
def test_ctrl_c_stops_a_run_and_its_local_cluster_cleanly(synth_small, tmp_path):
    """Ctrl-C in a terminal: SIGINT to the whole process group (the run and its local
    cluster's workers). Exit 130, the run interrupted, no temporary directory, no leak report."""
    root, _ = synth_small
    out = tmp_path / "out"
    job_file = Path(write_job(tmp_path / "job.toml", root, out, stages=["ingest", "link"]))
    job_file.write_text(job_file.read_text().replace("[cluster]", "[cluster]\nworkers = 1"))
    proc = subprocess.Popen([*NIRLINK, "run", str(job_file)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _wait(lambda: (s := _state(out)) and s.stage == "link" and s.step, "the link stage", proc, timeout=400)
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, stderr
    final = read_state(out)
    assert final.status == "interrupted" and final.cause == "interrupted by SIGINT", final
    assert "leaked semaphore" not in stderr and "Traceback" not in stderr, stderr
    assert _temporaries(out) == [] and read_lock(out) is None


def test_a_failing_stage_removes_its_temporary_directory(synth_small, tmp_path, dask_client):
    """One corrupt input file among several: the ingest stage fails while other tasks still
    write into its temporary directory; once the run has ended, nothing of it is left."""
    import pyarrow.parquet as pq

    root, _ = synth_small
    data = data_with_own_career(root, tmp_path)
    files = sorted((root / "career").glob("*.parquet"))
    for f in files:
        (data / "career" / f.name).symlink_to(f)
    bad = data / "career" / "part-zzz.parquet"
    t = pq.read_table(files[0])
    pq.write_table(t, bad, compression="snappy", row_group_size=len(t))
    raw = bytearray(bad.read_bytes())
    for i in range(len(raw) // 3, len(raw) // 3 + 4000):
        raw[i] ^= 0x5A
    bad.write_bytes(bytes(raw))
    out = tmp_path / "out"
    job_file = write_job(tmp_path / "job.toml", data, out, stages=["ingest"])
    with pytest.raises(Exception, match="stage ingest"):
        Job(load_job(job_file), client=dask_client).run()
    assert read_state(out).status == "failed" and "part-zzz.parquet" in read_state(out).error
    time.sleep(1)
    assert _temporaries(out) == [] and not (out / "ingest").exists() and read_lock(out) is None
