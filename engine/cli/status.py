"""`nirlink status`, `nirlink jobs`, `nirlink cancel`, `nirlink logs`."""

from __future__ import annotations

import time

import typer

from . import app
from ._utilities import OutputFormat, emit, handle_errors


def _checked_state(directory):
    """The job's state; a running job whose heartbeat stopped is recorded as failed."""
    from nirlink.engine import _config
    from nirlink.engine.jobs._registry import job_paths, read_state
    from nirlink.engine.jobs._state import TERMINAL, DriverLost, apply

    state = read_state(directory)
    if state is None or state.status in TERMINAL:
        return state
    stale = float(_config.get("jobs.stale-after-seconds", 60))
    if state.heartbeat is not None and time.time() - state.heartbeat > stale:
        new, _ = apply(state, DriverLost(time.time(), f"no heartbeat for {int(time.time() - state.heartbeat)} s: "
                                                      "the job's driver stopped (scheduler or worker lost)"))
        from nirlink.engine.io._datasets import write_json

        write_json(job_paths(directory)["state"], new.to_json())
        return new
    return state


@app.command()
@handle_errors
def status(job: str = typer.Argument(..., help="Job id or job directory."),
           output: OutputFormat = typer.Option(OutputFormat.text, "--output", help="text or json.")) -> None:
    """State of a job: submitted, running stage k/n, succeeded, failed (with the error), cancelled.

    Example: nirlink status /jobs/careers-2026
    """
    from nirlink.engine.jobs._registry import find_job

    directory = find_job(job)
    state = _checked_state(directory)
    emit(state.to_json(), output, lambda s: typer.echo(f"{state.job_id}: {state.describe()}"))


@app.command()
@handle_errors
def jobs(output: OutputFormat = typer.Option(OutputFormat.text, "--output", help="text or json.")) -> None:
    """Jobs in the registry, newest last.

    Example: nirlink jobs --output json
    """
    from nirlink.engine.jobs._registry import list_jobs
    from nirlink.engine.jobs._state import JobState

    entries = list_jobs()
    for e in entries:
        if e["state"]:
            st = _checked_state(e["directory"])
            e["state"] = st.to_json() if st else None

    def render(items):
        for e in items:
            s = JobState.from_json(e["state"]).describe() if e["state"] else "unknown (directory missing)"
            typer.echo(f"{e['job_id']:<40} {s:<40} {e['directory']}")

    emit(entries, output, render)


@app.command()
@handle_errors
def cancel(job: str = typer.Argument(..., help="Job id or job directory.")) -> None:
    """Ask a running job to stop; it stops at its next task boundary and is marked cancelled.

    Example: nirlink cancel careers-2026-20260105-093000-1a2b
    """
    from nirlink.engine.jobs._registry import find_job, read_state, request_cancel
    from nirlink.engine.jobs._state import TERMINAL

    directory = find_job(job)
    state = read_state(directory)
    if state is not None and state.status in TERMINAL:
        typer.echo(f"{state.job_id} is already {state.status}")
        return
    request_cancel(directory)
    typer.echo(f"cancel requested for {state.job_id if state else job}")


@app.command()
@handle_errors
def logs(job: str = typer.Argument(..., help="Job id or job directory."),
         output: OutputFormat = typer.Option(OutputFormat.text, "--output", help="text or json.")) -> None:
    """The job's structured log (NIRs masked).

    Example: nirlink logs /jobs/careers-2026
    """
    from nirlink.engine.jobs._joblog import JobLog
    from nirlink.engine.jobs._registry import find_job, job_paths

    directory = find_job(job)
    records = JobLog(job_paths(directory)["log"], "").read()

    def render(items):
        for r in items:
            extra = {k: v for k, v in r.items() if k not in ("ts", "level", "job", "message", "traceback")}
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["ts"]))
            typer.echo(f"{when} {r['level']:<7} {r['message']}" + (f" {extra}" if extra else ""))

    emit(records, output, render)
