"""Where jobs are found: a job directory's paths and state, job ids, cancel requests, and the
registry of submitted jobs (a directory of JSON files, setting ``nirlink.jobs.registry``)."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

from nirlink.engine import _config
from nirlink.engine.io._datasets import make_private_dir, read_json, write_json

from ._spec import JobSpec
from ._state import JobState

__all__ = ["new_job_id", "job_paths", "read_state", "register_job", "find_job", "list_jobs", "version",
           "request_cancel"]


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as v

    try:
        return v("nirlink")
    except PackageNotFoundError:  # running from a source tree
        return "0+unknown"


def new_job_id(name: str) -> str:
    return f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"


def job_paths(directory: str | Path) -> dict[str, Path]:
    d = Path(directory) / "_job"
    return {"dir": d, "state": d / "state.json", "events": d / "events.jsonl", "log": d / "job.log",
            "cancel": d / "cancel", "report": d / "report.html", "performance": d / "performance.html"}


def read_state(directory: str | Path) -> JobState | None:
    p = job_paths(directory)["state"]
    if not p.exists():
        return None
    return JobState.from_json(read_json(p))


def request_cancel(directory: str | Path) -> None:
    p = job_paths(directory)["cancel"]
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(str(time.time()))


def _registry() -> Path:
    path = _config.get("jobs.registry") or "~/.nirlink/jobs"
    return Path(os.path.expanduser(path))


def register_job(job_id: str, directory: str | Path, spec: JobSpec, scheduler: str | None) -> None:
    reg = make_private_dir(_registry())
    write_json(reg / f"{job_id}.json", {"job_id": job_id, "name": spec.name, "directory": str(Path(directory).resolve()),
                                        "job_file": spec.path, "scheduler": scheduler, "registered_at": time.time()})


def find_job(job: str) -> Path:
    """A job's directory from its id (registry) or its directory path."""
    if os.path.isdir(job) and job_paths(job)["state"].exists():
        return Path(job)
    entry = _registry() / f"{job}.json"
    if entry.exists():
        return Path(read_json(entry)["directory"])
    from nirlink.kernels import JobError

    raise JobError(f"no job {job!r} (not a job directory, not in the registry {_registry()})")


def list_jobs() -> list[dict[str, Any]]:
    reg = _registry()
    out = []
    for p in sorted(reg.glob("*.json")) if reg.exists() else []:
        entry = read_json(p)
        state = read_state(entry["directory"]) if Path(entry["directory"]).exists() else None
        out.append({**entry, "state": state.to_json() if state else None})
    return out


