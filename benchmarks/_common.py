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
