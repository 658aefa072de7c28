"""The progress display of `nirlink run`: what each step of each stage has done, how fast, how
long it still needs.

A stage reports its steps as ``(stage, step, done, total, rows)``: ``done`` of ``total`` tasks
finished, ``rows`` the rows those tasks processed when the step counts rows (ingest, the
signatures, attach, aggregate, export), else None. From that, per step: the ETA (elapsed time
over the share of tasks done; tasks of a step are partitions of similar size) and rows/s.

On a terminal: a live table (rich), one line per step, with a spinner that turns while the
step runs - a step of a single long task (model training, 20-30 s) has nothing to count, the
spinner and the elapsed time show it is alive -, tasks done, rows/s, elapsed, ETA.

Elsewhere (stderr to a pipe, a file, a batch system's log), a live table prints nothing until
it stops. There: plain timestamped lines as things happen, one when a step starts and one when
it ends, and the state of every running step whenever ``nirlink.progress.interval-seconds``
(30) pass without a line, so a long step never leaves the log silent.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

__all__ = ["Step", "LineProgress", "progress_display"]


def _duration(s: float) -> str:
    if s < 100:
        return f"{s:.1f} s"
    m, sec = divmod(round(s), 60)
    return f"{m} min {sec:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"


@dataclass
class Step:
    stage: str
    name: str
    total: int
    started: float
    done: int = 0
    rows: int | None = None
    finished: float | None = None

    def elapsed(self, now: float) -> float:
        return (self.finished or now) - self.started

    def eta(self, now: float) -> float | None:
        """Seconds still needed, from the share of tasks done (None before the first is done)."""
        if self.finished is not None:
            return 0.0
        if not self.done or not self.total:
            return None
        return self.elapsed(now) * (self.total - self.done) / self.done

    def rate(self, now: float) -> float | None:
        """Rows per second so far (None when the step does not count rows)."""
        t = self.elapsed(now)
        return self.rows / t if self.rows is not None and t > 0 else None

    def describe(self, now: float) -> str:
        tasks = f"{self.done:,}/{self.total:,} task" + ("s" if self.total != 1 else "")
        rows = f", {self.rows:,} rows" if self.rows is not None else ""
        rate = self.rate(now)
        speed = f", {rate:,.0f} rows/s" if rate is not None else ""
        if self.finished is not None:
            return f"{self.stage}/{self.name} done: {tasks} in {_duration(self.elapsed(now))}{rows}{speed}"
        eta = self.eta(now)
        left = f", ETA {_duration(eta)}" if eta is not None else ""
        return f"{self.stage}/{self.name} running: {tasks}, {_duration(self.elapsed(now))}{left}{rows}{speed}"


class LineProgress:
    """Timestamped lines: a step's start and end, and every running step's state when
    ``interval`` seconds pass without a line (``tick``; a thread calls it once a second)."""

    def __init__(self, write: Callable[[str], None], *, interval: float = 30.0,
                 clock: Callable[[], float] = time.time):
        self.write = write
        self.interval = interval
        self.clock = clock
        self.steps: dict[tuple[str, str], Step] = {}
        self.last_line = clock()
        self._lock = threading.Lock()

    def _line(self, text: str, now: float) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now))
        self.write(f"{stamp} {text}")
        self.last_line = now

    def __call__(self, stage: str, step: str, done: int, total: int, rows: int | None = None) -> None:
        now = self.clock()
        with self._lock:
            key = (stage, step)
            s = self.steps.get(key)
            if s is None or (s.finished is not None and done < s.total):  # new, or the same step again
                s = self.steps[key] = Step(stage, step, total, now)
                self._line(f"{stage}/{step} started: {total:,} task" + ("s" if total != 1 else ""), now)
            s.done, s.total, s.rows = done, total, rows
            if done >= total and s.finished is None:
                s.finished = now
                self._line(s.describe(now), now)

    def tick(self) -> None:
        now = self.clock()
        with self._lock:
            if now - self.last_line < self.interval:
                return
            running = [s for s in self.steps.values() if s.finished is None]
            if running:
                for s in running:
                    self._line(s.describe(now), now)
            else:
                last = max(self.steps.values(), key=lambda s: s.finished or 0, default=None)
                after = f" (last step {last.stage}/{last.name}, done {_duration(now - last.finished)} ago)" \
                    if last is not None and last.finished is not None else ""
                self._line(f"working{after}", now)

    @contextlib.contextmanager
    def running(self) -> Iterator[LineProgress]:
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(min(1.0, self.interval / 2)):
                self.tick()

        thread = threading.Thread(target=loop, name="nirlink-progress", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join()


def _live(console) -> contextlib.AbstractContextManager:
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, SpinnerColumn, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)
    from rich.text import Text

    class RowsPerSecond(ProgressColumn):
        def render(self, task) -> Text:
            rows = task.fields.get("rows")
            t = task.finished_time if task.finished else task.elapsed
            return Text(f"{rows / t:>10,.0f} rows/s" if rows and t else " " * 17, style="progress.data.speed")

    return Progress(TextColumn("{task.fields[stage]:<10}"), TextColumn("{task.description:<24}"),
                    SpinnerColumn(finished_text="[green]✓"), BarColumn(), MofNCompleteColumn(), RowsPerSecond(),
                    TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console)


@contextlib.contextmanager
def progress_display(console, *, interval: float | None = None) -> Iterator[Callable[..., None]]:
    """A ``(stage, step, done, total, rows=None)`` callback drawing progress on ``console``
    (stderr): a live table on a terminal, timestamped lines elsewhere."""
    if not console.is_terminal:
        if interval is None:
            from nirlink.engine import _config

            interval = float(_config.get("progress.interval-seconds", 30))
        lines = LineProgress(lambda text: console.print(text, markup=False, highlight=False, soft_wrap=True),
                             interval=interval)
        with lines.running():
            yield lines
        return
    with _live(console) as bar:
        tasks: dict[tuple[str, str], list] = {}  # (stage, step) -> [rich task id, finished]

        def progress(stage: str, step: str, done: int, total: int, rows: int | None = None) -> None:
            key = (stage, step)
            entry = tasks.get(key)
            # a step of one task has nothing to count until it ends: its bar pulses (total None)
            # beside the spinner, instead of sitting at 0/1
            if entry is None or (entry[1] and done < total):  # new, or the same step again
                entry = tasks[key] = [bar.add_task(step, total=None if total == 1 and not done else total,
                                                   stage=stage, rows=None), False]
            entry[1] = done >= total
            bar.update(entry[0], completed=done, total=total if total != 1 or done else None, rows=rows)

        yield progress
