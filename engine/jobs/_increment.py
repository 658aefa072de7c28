"""A job that continues a previous job (job file ``[increment]``): the monthly increment.

An increment's inputs are the register as it stands this month (the full snapshot) and the
career and resource rows that arrived this month only. Its stages reuse what the previous
job published: the link stage keeps the previous decisions of signatures whose candidates did
not change and scores only the others (``linkage/_increment.py``), with the previous model
unless ``retrain = "always"``; the attach and aggregate stages recompute only the person
buckets that hold a new or changed row and take the others from the previous job as they are
(hard links, copies where the file system has none). The previous job must have finished
(``succeeded``) with this nirlink version and kept the outputs the increment reads
(``NEEDED`` and the link stage's candidate pairs: ``nirlink.jobs.keep`` must name
``increment`` when the previous job runs).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["IncrementOptions", "parse_increment", "previous_problems", "NEEDED", "RETRAIN"]

RETRAIN = ("never", "always")
NEEDED = ("link", "attach", "aggregate")  # the previous job's outputs an increment reads
_KEYS = {"previous", "month", "retrain", "drift_tolerance"}


@dataclass(frozen=True)
class IncrementOptions:
    previous: str  # the previous job's output directory
    month: str  # the month this increment brings (YYYY-MM): person_changes.month
    retrain: str = "never"
    drift_tolerance: float = 2.0  # bits: a level moving more than this (and its sampling error) advises retraining

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def directory(self) -> Path:
        return Path(self.previous)


def _month_problem(text: str) -> str | None:
    try:
        y, m = (int(x) for x in text.split("-"))
    except (ValueError, AttributeError):
        return f"expected YYYY-MM, got {text!r}"
    if len(text) != 7 or not (1990 <= y <= 2100 and 1 <= m <= 12):
        return f"expected YYYY-MM (years 1990-2100), got {text!r}"
    return None


def parse_increment(c, raw: Any, base: Path, *, check_files: bool, output: str) -> IncrementOptions | None:
    """The ``[increment]`` table (``c``: the job file's checker, collecting errors)."""
    if raw is None:
        return None
    raw = c.keys(raw, _KEYS, "increment")
    previous = c.typed(raw, "previous", str, "increment", required=True, default="")
    month = c.typed(raw, "month", str, "increment", required=True, default="")
    retrain = c.typed(raw, "retrain", str, "increment", default="never")
    tolerance = c.typed(raw, "drift_tolerance", float, "increment", default=2.0)
    if month and _month_problem(month):
        c.err("increment.month", _month_problem(month))
    if retrain not in RETRAIN:
        c.err("increment.retrain", f"must be one of {', '.join(RETRAIN)}, got {retrain!r}")
        retrain = "never"
    if tolerance is not None and tolerance <= 0:
        c.err("increment.drift_tolerance", f"must be > 0 (bits), got {tolerance!r}")
    if previous and not os.path.isabs(previous):
        previous = str(base / previous)
    if previous and output and os.path.realpath(previous) == os.path.realpath(output):
        c.err("increment.previous", f"{previous} is this job's own output directory: name the previous job's")
    elif previous and check_files:
        for msg in previous_problems(previous):
            c.err("increment.previous", msg)
        if month and not _month_problem(month):
            for msg in month_problems(previous, month):
                c.err("increment.month", msg)
    return IncrementOptions(previous, month, retrain, tolerance if tolerance else 2.0)


def month_problems(previous: str | os.PathLike, month: str) -> list[str]:
    """Why ``month`` cannot continue the chain ending with the job ``previous`` (empty: it can):
    an increment of the chain already brought it or a later month (the months its attach
    buckets' files are named after, ``m<month>-...``). Checked with the job, before any stage
    runs (the attach stage refuses it too, after ingest and link)."""
    import re

    months = {m.group(1) for f in Path(previous).glob("attach/*/b=*/m*-*.parquet")
              if (m := re.match(r"m(\d{4}-\d{2})-", f.name))}
    latest = max(months, default=None)
    if latest is not None and month <= latest:
        return [f"{month} is not after {latest}, the latest month the previous job's chain of increments brought "
                f"(months {', '.join(sorted(months))}): give a later month, or continue an earlier job"]
    return []


def previous_problems(previous: str | os.PathLike) -> list[str]:
    """Why the job directory ``previous`` cannot be continued (empty: it can): missing, not
    finished, from another nirlink version, or without an output the increment reads."""
    from nirlink.engine.io._datasets import read_json

    from ._registry import read_state, version
    from ._release import released

    d = Path(previous)
    if not d.is_dir():
        return [f"previous job directory {d} not found"]
    state = read_state(d)
    if state is None:
        return [f"{d} holds no job run (no _job/ record): not a job's output directory"]
    if state.status != "succeeded":
        return [f"the previous job's latest run {state.job_id} is {state.status}, not succeeded: finish it first "
                f"(nirlink run on its job file)"]
    problems = []
    for stage in NEEDED:
        fp = d / stage / "_fingerprint.json"
        if not (d / stage / "_manifest.json").exists() or not fp.exists():
            problems.append(f"the previous job has no published {stage} stage ({d / stage})")
            continue
        theirs = read_json(fp).get("nirlink")
        if theirs != version():
            problems.append(f"the previous job's {stage} stage was written by nirlink {theirs}, this is nirlink "
                            f"{version()}: run the previous job again with this version (nirlink run --restart)")
            break
        if released(d, stage):
            problems.append(f"the previous job released its {stage} output ({d / stage}/_released.json): an "
                            f"increment reads it; run the previous job with nirlink.jobs.keep naming increment "
                            "and --restart (DASK_NIRLINK__JOBS__KEEP=increment nirlink run --restart: a run "
                            "without it skips the stages already published and brings nothing back)")
    if not problems and not (d / "link" / "predictions").is_dir():
        problems.append(f"the previous job's link stage removed its candidate pairs ({d / 'link'}/predictions/): an "
                        "increment reads them; run the previous job with nirlink.jobs.keep naming increment "
                        "and --restart (DASK_NIRLINK__JOBS__KEEP=increment nirlink run --restart: a run without "
                        "it skips the stages already published and brings nothing back)")
    return problems
