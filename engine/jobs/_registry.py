"""Where jobs are found: a job directory's runs and their files, job ids, cancel requests,
and the registry of jobs (a directory of JSON files, setting ``nirlink.jobs.registry``).

An output directory holds one record per run under ``_job/``::

    _job/lock                 the run that holds the directory now (``_lock.py``)
    _job/current              the id of the latest run
    _job/runs/<job id>/       state.json, events.jsonl, job.log, report.html, performance.html
                              (and ``cancel`` while a cancel request waits for the driver)

A run's files are reached through ``job_paths(directory, job_id)``; nothing else spells
these paths. Directories written before runs had their own records (``_job/state.json``)
read as one run.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

from nirlink import version
from nirlink.engine import _config
from nirlink.engine.io._datasets import make_private_dir, read_json, write_json
from nirlink.kernels import JobError

from ._joblog import JobLog, private_opener
from ._spec import JobSpec
from ._state import Event, Heartbeat, JobState, Log, Persist, Progress, apply

__all__ = ["new_job_id", "job_paths", "latest_run", "read_state", "record_event", "persist", "set_current",
           "register_job", "unregister_job", "find_job", "find_run", "list_jobs", "version", "request_cancel", "reporting_run", "run_report"]

_RUN_FILES = {"state": "state.json", "events": "events.jsonl", "log": "job.log", "cancel": "cancel",
              "report": "report.html", "performance": "performance.html", "disk": "disk.json"}


def new_job_id(name: str) -> str:
    return f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"


def _legacy_id(root: Path) -> str | None:
    try:
        return read_json(root / "state.json").get("job_id")
    except (OSError, ValueError, AttributeError):
        return None


def latest_run(directory: str | Path) -> str | None:
    """The id of the directory's latest run (``None``: never run)."""
    root = Path(directory) / "_job"
    try:
        current = (root / "current").read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        current = ""
    if current:
        return current
    return _legacy_id(root) if (root / "state.json").exists() else None


def set_current(directory: str | Path, job_id: str | None) -> None:
    """Name ``job_id`` the directory's latest run (``None``: forget it)."""
    path = Path(directory) / "_job" / "current"
    if job_id is None:
        path.unlink(missing_ok=True)
        return
    make_private_dir(path.parent)
    tmp = path.with_name(f".current.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "w", encoding="utf-8", opener=private_opener) as f:
        f.write(job_id + "\n")
    os.replace(tmp, path)


def job_paths(directory: str | Path, job_id: str | None = None) -> dict[str, Path]:
    """The files of run ``job_id`` of the job in ``directory`` (the latest run by default):
    ``dir`` (the run's own directory), ``state``, ``events``, ``log``, ``cancel``, ``report``,
    ``performance``; and the directory's: ``root`` (``_job``), ``lock``, ``current``, ``runs``."""
    root = Path(directory) / "_job"
    if job_id is None:
        job_id = latest_run(directory)
        if job_id is None:
            raise JobError(f"{directory}: no run of a job here (no {root})")
    run = root / "runs" / job_id
    if not run.exists() and (root / "state.json").exists() and _legacy_id(root) == job_id:
        run = root  # a directory written before runs had their own records
    return {"root": root, "lock": root / "lock", "current": root / "current", "runs": root / "runs", "dir": run,
            **{k: run / v for k, v in _RUN_FILES.items()}}


def read_state(directory: str | Path, job_id: str | None = None) -> JobState | None:
    """The record of run ``job_id`` (the latest run by default); ``None`` when there is none.
    A record that cannot be read raises (OSError, ValueError): callers listing many runs
    show it as unreadable on its own line."""
    if job_id is None:
        job_id = latest_run(directory)
        if job_id is None:
            return None
    p = job_paths(directory, job_id)["state"]
    if not p.exists():
        return None
    return JobState.from_json(read_json(p))


def persist(paths: dict[str, Path], state: JobState | None, event: Event, log: JobLog) -> JobState:
    """Apply ``event`` to a run's ``state`` and carry out the instructions: the run's
    state.json, its events.jsonl (not for heartbeats and progress), its log."""
    import json

    new, instructions = apply(state, event)
    for ins in instructions:
        if isinstance(ins, Persist):
            write_json(paths["state"], ins.state.to_json())
            if not isinstance(ins.event, (Heartbeat, Progress)):
                with open(paths["events"], "a", encoding="utf-8", opener=private_opener) as f:
                    fields = {k: round(v, 3) if isinstance(v, float) else v for k, v in ins.event.__dict__.items()}
                    f.write(json.dumps({"event": type(ins.event).__name__, **fields}, default=str) + "\n")
        elif isinstance(ins, Log):
            log.write(ins.level, ins.message, **ins.fields)
    return new


def record_event(directory: str | Path, job_id: str, event: Event) -> JobState:
    """Apply ``event`` to run ``job_id`` as recorded on disk (for commands other than the
    run's driver: ``status`` declaring a driver lost, ``cancel`` of a queued job)."""
    state = read_state(directory, job_id)
    if state is None:
        raise JobError(f"job {job_id} has no record in {directory}")
    paths = job_paths(directory, job_id)
    return persist(paths, state, event, JobLog(paths["log"], job_id))


def reporting_run(directory: str | Path, job_id: str, finished_at: float | None = None) -> str | None:
    """The run whose report describes run ``job_id``'s outputs: itself, or - a run that started
    no stage writes no report - the latest earlier run that wrote one (``None``: none did)."""
    paths = job_paths(directory, job_id)
    if paths["report"].exists():
        return job_id
    until = (finished_at or time.time()) + 1
    earlier = [(p.stat().st_mtime, p.parent.name) for p in paths["runs"].glob("*/report.html")
               if p.stat().st_mtime <= until]
    return max(earlier)[1] if earlier else None


def run_report(directory: str | Path, job_id: str, finished_at: float | None = None) -> Path | None:
    """The report describing run ``job_id``'s outputs (``reporting_run``'s)."""
    run = reporting_run(directory, job_id, finished_at)
    return job_paths(directory, run)["report"] if run else None


def request_cancel(directory: str | Path, job_id: str | None = None) -> None:
    p = job_paths(directory, job_id)["cancel"]
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(str(time.time()))


def _registry() -> Path:
    path = _config.get("jobs.registry") or "~/.nirlink/jobs"
    return Path(os.path.expanduser(path))


def register_job(job_id: str, directory: str | Path, spec: JobSpec, scheduler: str | None) -> None:
    reg = make_private_dir(_registry())
    write_json(reg / f"{job_id}.json", {"job_id": job_id, "name": spec.name, "directory": str(Path(directory).resolve()),
                                        "job_file": spec.path, "scheduler": scheduler, "registered_at": time.time()})


def unregister_job(job_id: str) -> None:
    (_registry() / f"{job_id}.json").unlink(missing_ok=True)


def _entry(job_id: str) -> dict[str, Any] | None:
    entry = _registry() / f"{job_id}.json"
    return read_json(entry) if entry.exists() else None


def find_run(job: str) -> tuple[Path, str]:
    """A run's directory and id, from its id (registry) or a job directory (its latest run)."""
    if os.path.isdir(job) and (Path(job) / "_job").is_dir():
        job_id = latest_run(job)
        if job_id is not None:
            return Path(job).resolve(), job_id
    entry = _entry(job) if "/" not in job else None
    if entry is not None:
        return Path(entry["directory"]), job
    raise JobError(f"no job {job!r} (not a job directory, not in the registry {_registry()})")


def find_job(job: str) -> Path:
    """A job's directory from its id (registry) or its directory path."""
    return find_run(job)[0]


def list_jobs() -> list[dict[str, Any]]:
    """Every registered run, oldest first, with its record (``state``) or, when that cannot be
    read, ``problem`` saying why: one bad entry never hides the others."""
    reg = _registry()
    out = []
    for p in reg.glob("*.json") if reg.exists() else []:
        try:
            entry = read_json(p)
            job_id, directory = entry["job_id"], entry["directory"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            out.append({"job_id": p.stem, "directory": None, "registered_at": 0, "state": None,
                        "problem": f"registry entry unreadable: {type(exc).__name__}"})
            continue
        item = {**entry, "state": None, "problem": None}
        try:
            if not Path(directory).is_dir():
                item["problem"] = "directory missing"
            else:
                state = read_state(directory, job_id)
                if state is None:
                    item["problem"] = "no record of this run in its directory"
                else:
                    item["state"] = state.to_json()
        except (OSError, ValueError, TypeError) as exc:
            item["problem"] = state_problem(exc)
        out.append(item)
    return sorted(out, key=lambda e: (e.get("registered_at") or 0, e["job_id"]))


def state_problem(exc: Exception) -> str:
    """Why a run's state.json could not be read, in words (no class name), on one line."""
    import json

    if isinstance(exc, json.JSONDecodeError):
        why = f"not valid JSON ({exc.msg}, line {exc.lineno} column {exc.colno})"
    elif isinstance(exc, OSError):
        why = f"cannot read it ({exc.strerror or exc})"
    else:
        why = f"not a run's state ({exc})"
    return f"state unreadable: {why}".splitlines()[0]
