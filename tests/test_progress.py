"""The progress display of `nirlink run`: ETA and rows/s per step, a live table on a terminal,
timestamped lines as things happen when stderr is a pipe (one per step start and end, and a
status line whenever the interval passes in silence)."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import threading

import pytest

from nirlink.engine.cli._progress import LineProgress, Step, progress_display
from nirlink.engine.jobs._registry import request_cancel

from conftest import write_job

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d"


class Clock:
    def __init__(self, t: float = 1_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_step_eta_and_rate():
    s = Step("ingest", "read", total=8, started=100.0)
    assert s.eta(110.0) is None and s.rate(110.0) is None  # nothing done, rows not counted
    s.done, s.rows = 2, 50_000
    assert s.eta(110.0) == pytest.approx(30.0)  # 10 s for 2 of 8 tasks: 30 s for the 6 left
    assert s.rate(110.0) == pytest.approx(5_000.0)
    assert "2/8 tasks, 10.0 s, ETA 30.0 s, 50,000 rows, 5,000 rows/s" in s.describe(110.0)
    s.done, s.finished = 8, 120.0
    assert s.eta(500.0) == 0.0
    assert s.describe(500.0) == "ingest/read done: 8/8 tasks in 20.0 s, 50,000 rows, 2,500 rows/s"


def test_lines_per_step_and_in_silence():
    clock, lines = Clock(), []
    p = LineProgress(lines.append, interval=30.0, clock=clock)
    p("link", "train-identity", 0, 1)
    assert re.fullmatch(rf"{STAMP} link/train-identity started: 1 task", lines[-1])
    clock.t += 29.0
    p.tick()
    assert len(lines) == 1  # less than the interval since the last line: quiet
    clock.t += 2.0
    p.tick()
    assert re.fullmatch(rf"{STAMP} link/train-identity running: 0/1 task, 31.0 s", lines[-1])
    clock.t += 4.0
    p("link", "train-identity", 1, 1)
    assert lines[-1].endswith("link/train-identity done: 1/1 task in 35.0 s")
    p("link", "train-identity", 1, 1)  # the same report again: no second line
    assert len(lines) == 3
    clock.t += 31.0
    p.tick()  # nothing running: still a sign of life
    assert lines[-1].endswith("working (last step link/train-identity, done 31.0 s ago)")
    p("export", "export", 0, 20, rows=0)
    clock.t += 10.0
    p("export", "export", 5, 20, rows=100_000)
    clock.t += 30.0
    p.tick()
    assert lines[-1].endswith("export/export running: 5/20 tasks, 40.0 s, ETA 2 min 00 s, 100,000 rows, 2,500 rows/s")


def test_live_table_on_a_terminal():
    from rich.console import Console

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=150)
    with progress_display(console) as progress:
        progress("ingest", "read", 0, 4, rows=0)
        progress("ingest", "read", 4, 4, rows=400_000)
        progress("link", "train-identity", 0, 1)
    out = buf.getvalue()
    assert "rows/s" in out and "read" in out and "train-identity" in out and "ETA" in out
    assert not re.search(STAMP, out)  # the terminal gets the table, not log lines


@pytest.fixture
def tcp_cluster():
    """A cluster a `nirlink run` subprocess can reach (tcp on loopback), its worker in this
    process: the subprocess starts no worker process of its own."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=1, threads_per_worker=2, processes=False, protocol="tcp://",
                           host="127.0.0.1", dashboard_address=None, memory_limit="4GiB")
    client = Client(cluster)
    yield cluster.scheduler_address
    client.close()
    cluster.close()


def test_run_with_stderr_a_pipe_prints_lines_as_it_goes(synth_small, tmp_path, tcp_cluster):
    """The lines reach the pipe while the job runs: the test cancels the job when it reads
    that the aggregate stage started, and the job ends cancelled - had the lines come at the
    end, the job would have succeeded first."""
    root, _ = synth_small
    out = tmp_path / "out"
    job_file = write_job(tmp_path / "job.toml", root, out, stages=["ingest", "aggregate"])
    env = {**os.environ, "DASK_NIRLINK__PROGRESS__INTERVAL_SECONDS": "0.5"}
    proc = subprocess.Popen([sys.executable, "-m", "nirlink", "run", job_file, "--scheduler", tcp_cluster],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    stdout = []
    reader = threading.Thread(target=lambda: stdout.append(proc.stdout.read()), daemon=True)
    reader.start()
    lines = []
    for line in proc.stderr:
        lines.append(line.rstrip("\n"))
        if re.match(rf"{STAMP} aggregate/\S+ started", line):
            request_cancel(out)
    proc.wait(timeout=600)
    reader.join(timeout=60)
    text = "\n".join(lines)
    ours = [x for x in lines if re.match(rf"{STAMP} (ingest|aggregate)/|{STAMP} working", x)]
    assert re.search(rf"^{STAMP} ingest/read started: \d+ tasks$", text, re.M), text
    assert re.search(rf"^{STAMP} ingest/read done: \d+/\d+ tasks in [\d.]+ s, [\d,]+ rows, [\d,]+ rows/s$",
                     text, re.M), text
    assert re.search(rf"^{STAMP} aggregate/\S+ started", text, re.M), text
    # in silence, a line at least every interval (0.5 s here): a running step's state, or a sign of life
    assert any(re.match(rf"{STAMP} (\S+ running: |working)", x) for x in ours), text
    assert "job t-" in stdout[0] and "cancelled" in stdout[0], (stdout, text)
