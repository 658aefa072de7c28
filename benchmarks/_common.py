"""Timing, peak memory and result files shared by the benchmarks.

Every benchmark reports medians over repeats and ratios against baselines measured in the
same run (machines are noisy; absolute figures travel badly, ratios less so).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

RESULTS = Path(__file__).parent / "results"


class PeakRSS:
    """Samples the summed RSS of this process and all its children (Dask workers) every 50 ms."""

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        proc = psutil.Process()
        total = 0
        for p in [proc, *proc.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            time.sleep(self.interval)

    def __enter__(self):
        self.peak = self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._sample())


def measure(fn: Callable[[], Any], repeats: int) -> dict[str, Any]:
    """Run ``fn`` ``repeats`` times; median and all wall times, peak RSS of the process tree."""
    times, peaks, result = [], [], None
    for _ in range(repeats):
        with PeakRSS() as rss:
            t0 = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - t0)
        peaks.append(rss.peak)
    return {"median_s": statistics.median(times), "times_s": times, "peak_rss_bytes": max(peaks), "result": result}


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "memory_bytes": psutil.virtual_memory().total,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def write_results(name: str, payload: dict[str, Any], table: str, *, scratch: Path | None = None) -> tuple[Path, Path]:
    """Write results/<name>.json and results/<name>.md, print the table and both paths, and
    remove ``scratch`` (the benchmark's generated data) when given; returns both paths."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": machine(), **payload}
    jpath = RESULTS / f"{name}.json"
    mpath = RESULTS / f"{name}.md"
    jpath.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    mpath.write_text(table + "\n")
    print(table)
    print(f"\n{jpath}\n{mpath}")
    if scratch is not None:
        shutil.rmtree(scratch, ignore_errors=True)
    return jpath, mpath


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:,.2f}" if abs(v) < 1000 else f"{v:,.0f}"
        if isinstance(v, int):
            return f"{v:,}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


@contextmanager
def local_client(n_workers: int = 2, threads_per_worker: int = 1, memory_limit: str | None = None):
    from nirlink.cluster import open_client

    with open_client(None, n_workers=n_workers, threads_per_worker=threads_per_worker, memory_limit=memory_limit,
                     dashboard=False) as client:
        yield client


def alternate_checkouts(script: str, child_args: list[str], baseline_python: str, repeats: int,
                        run_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Stage runs of this checkout and a baseline checkout's, in turn: ``repeats`` times, each
    side's interpreter runs ``script child_args --one run_dir/link-<side>`` in a process of its
    own, which prints a JSON list of runs as its last line. Each run gets the 1-minute load
    average before and after its process."""
    import subprocess
    import sys

    runs: dict[str, list[dict[str, Any]]] = {"this": [], "baseline": []}
    for _ in range(repeats):
        for side, python in (("this", sys.executable), ("baseline", baseline_python)):
            load = os.getloadavg()[0]
            proc = subprocess.run([python, script, *child_args, "--one", str(run_dir / f"link-{side}")],
                                  check=True, capture_output=True, text=True, cwd=run_dir)
            for r in json.loads(proc.stdout.strip().splitlines()[-1]):
                runs[side].append({**r, "load_average": load, "load_after": os.getloadavg()[0]})
    return runs


def stage_phase_rows(runs: dict[str, list[dict[str, Any]]]) -> tuple[dict[str, float], list[list[Any]]]:
    """Medians of the stage's seconds per side, and the table rows: the stage, then each timed
    phase (``timings_s``), this, baseline and this / baseline."""
    med = {side: statistics.median(r["stage_s"] for r in rs) for side, rs in runs.items()}
    phases = sorted({k for rs in runs.values() for r in rs for k in r["timings_s"]})
    rows = [["stage (wall)", med["this"], med["baseline"], round(med["this"] / med["baseline"], 3)]]
    for k in phases:
        a = statistics.median(r["timings_s"].get(k, 0.0) for r in runs["this"])
        b = statistics.median(r["timings_s"].get(k, 0.0) for r in runs["baseline"])
        rows.append([k, round(a, 3), round(b, 3), round(a / b, 3) if b else None])
    return med, rows
