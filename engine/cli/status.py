"""`nirlink status`, `nirlink jobs`, `nirlink cancel`, `nirlink logs`.

A job id names one run; a job directory stands for its latest run. One unreadable record
never makes these commands fail: it shows as such on its own line.
"""

from __future__ import annotations

import json
import time

import typer

from . import app
from ._utilities import OutputFormat, emit, handle_errors


def _checked_state(directory, job_id):
    """``(state, problem)``: the run's record - a running run whose heartbeat stopped is
    recorded as failed - or why there is none to show."""
    from dataclasses import replace

    from nirlink.engine import _config
    from nirlink.engine.jobs._lock import mutex
    from nirlink.engine.jobs._registry import read_state, record_event
    from nirlink.engine.jobs._state import DriverLost

    try:
        state = read_state(directory, job_id)
    except (OSError, ValueError, TypeError) as exc:
        from nirlink.engine.jobs._registry import state_problem

        return None, state_problem(exc)
    if state is None:
        return None, "no record of this run in its directory"
    stale = float(_config.get("jobs.stale-after-seconds", 60))
    # a queued job has no driver yet, hence no heartbeat: it waits, it is not lost
    if state.status != "running" or state.heartbeat is None or time.time() - state.heartbeat <= stale:
        return state, None
    reason = (f"no heartbeat for {int(time.time() - state.heartbeat)} s: the job's driver stopped "
              "(its process, worker or scheduler died)")
    try:
        with mutex(directory):  # the driver may have written since: decide on what is on disk
            state = read_state(directory, job_id)
            if state.status == "running" and time.time() - state.heartbeat > stale:
                state = record_event(directory, job_id, DriverLost(time.time(), reason))
    except OSError:  # a directory this user may read but not write: show it, record nothing
        state = replace(state, status="failed", error=reason)
    return state, None


def _clock(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _run_duration(state) -> float | None:
    if state.started_at is None:
        return None
    return (state.finished_at or time.time()) - state.started_at


def _describe(state) -> str:
    if state.status == "queued":
        return f"queued for {_duration(time.time() - state.submitted_at)} (its driver has not started)"
    return state.describe()


def _run_json(directory, job_id, state, problem) -> dict:
    from nirlink.engine.jobs._registry import job_paths, run_report

    missing = "missing" if problem and not problem.startswith("state unreadable") else "unreadable"
    out = state.to_json() if state else {"job_id": job_id, "status": missing}
    report = run_report(directory, job_id, state.finished_at) if state else None
    out.update(directory=str(directory), report=str(report) if report else None,
               log=str(job_paths(directory, job_id)["log"]), problem=problem,
               duration_seconds=round(_run_duration(state), 3) if state and state.started_at else None)
    return out


@app.command()
@handle_errors
def status(job: str = typer.Argument(..., help="Job id, or a job directory (its latest run)."),
           output: OutputFormat = typer.Option(OutputFormat.text, "--output", help="text or json.")) -> None:
    """State of one run: queued, running stage k/n, succeeded, failed (with the error), cancelled, interrupted.

    Example: nirlink status careers-2026-20260105-101500-1a2b
    """
    from nirlink.engine.jobs._registry import find_run

    directory, job_id = find_run(job)
    state, problem = _checked_state(directory, job_id)

    def render(d):
        if state is None:
            typer.echo(f"{job_id}: {problem}")
            return
        typer.echo(f"{job_id}: {_describe(state)}")
        typer.echo(f"  submitted {_clock(state.submitted_at)}, started {_clock(state.started_at)}, "
                   f"finished {_clock(state.finished_at)}, duration {_duration(_run_duration(state))}")
        ran = ", ".join(f"{k} {state.stage_seconds[k]:.1f} s" for k in state.stages if k in state.stage_seconds)
        typer.echo(f"  stages run: {ran or 'none'}; skipped: {', '.join(state.skipped) or 'none'}")
        typer.echo(f"  directory: {d['directory']}")
        typer.echo(f"  report:    {d['report'] or '(none written)'}")

    emit(_run_json(directory, job_id, state, problem), output, render)


@app.command()
@handle_errors
def jobs(output: OutputFormat = typer.Option(OutputFormat.text, "--output", help="text or json.")) -> None:
    """Every registered run, oldest first: status, start time, duration, directory.

    Example: nirlink jobs --output json
    """
    from nirlink.engine.jobs._registry import list_jobs
    from nirlink.engine.jobs._state import JobState

    entries = list_jobs()
    for e in entries:
        if e["state"] is not None:
            try:
                st, problem = _checked_state(e["directory"], e["job_id"])
            except Exception as exc:  # noqa: BLE001 - one job's trouble stays on its line
                st, problem = None, f"{type(exc).__name__}: {exc}"
            e["state"], e["problem"] = (st.to_json() if st else None), problem

    def render(items):
        rows = []
        for e in items:
            st = JobState.from_json(e["state"]) if e["state"] else None
            text = _describe(st) if st else f"? {e['problem']}"
            rows.append((e["job_id"], text if len(text) <= 60 else text[:59] + "…",
                         _clock(st.started_at) if st else "-", _duration(_run_duration(st)) if st else "-",
                         e.get("directory") or "-"))
        header = ("JOB ID", "STATUS", "STARTED", "DURATION", "DIRECTORY")
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
        for r in [header, *rows]:
            typer.echo("  ".join(v.ljust(w) for v, w in zip(r, widths)) + "  " + r[4])

    emit(entries, output, render)


@app.command()
@handle_errors
def cancel(job: str = typer.Argument(..., help="Job id, or a job directory (its latest run)."),
           output: OutputFormat = typer.Option(OutputFormat.text, "--output", help="text or json.")) -> None:
    """Cancel a run. A queued run is cancelled at once (its driver, when it starts, does
    nothing); a running one stops at its next task boundary and is marked cancelled.

    Example: nirlink cancel careers-2026-20260105-101500-1a2b
    """
    from nirlink.engine.jobs._lock import mutex, release_lock
    from nirlink.engine.jobs._registry import find_run, read_state, record_event, request_cancel
    from nirlink.engine.jobs._state import TERMINAL, Cancelled
    from nirlink.kernels import JobError

    directory, job_id = find_run(job)
    with mutex(directory):  # against the driver starting at this very moment
        state = read_state(directory, job_id)
        if state is None:
            raise JobError(f"job {job_id} has no record in {directory}")
        if state.status in TERMINAL:
            action, message = "none", f"{job_id} is already {state.status}"
        elif state.status == "queued":
            state = record_event(directory, job_id, Cancelled(time.time(), "cancelled by an operator before it started"))
            release_lock(directory, job_id)
            action, message = "cancelled", f"{job_id} cancelled (it had not started)"
        else:
            request_cancel(directory, job_id)
            action, message = "requested", f"cancel requested for {job_id}: it stops at its next task boundary"
    emit({"job_id": job_id, "status": state.status, "action": action, "message": message}, output,
         lambda d: typer.echo(d["message"]))


def _value(v) -> str:
    if isinstance(v, str):
        return v if v and not any(c.isspace() or c in "\"'=" for c in v) else json.dumps(v, ensure_ascii=False)
    if isinstance(v, (list, tuple)):
        return ",".join(_value(x) for x in v)
    if isinstance(v, dict):
        return json.dumps(v, ensure_ascii=False, separators=(",", ":"))
    return str(v)


def _log_line(r: dict) -> str:
    extra = {k: v for k, v in r.items() if k not in ("ts", "level", "job", "message", "traceback")}
    when = _clock(r["ts"]) if isinstance(r.get("ts"), (int, float)) else "-"
    line = f"{when} {str(r.get('level', '?')):<7} {r.get('message', '')}"
    if extra:
        line += "  " + " ".join(f"{k}={_value(v)}" for k, v in extra.items())
    if r.get("traceback"):
        line += "\n" + "\n".join("    " + t for t in str(r["traceback"]).rstrip().splitlines())
    return line


@app.command()
@handle_errors
def logs(job: str = typer.Argument(..., help="Job id, or a job directory (its latest run)."),
         follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines until the run ends."),
         tail: int = typer.Option(None, "--tail", min=0, help="Only the last N lines."),
         output: OutputFormat = typer.Option(OutputFormat.text, "--output",
                                             help="text or json (with --follow: one JSON object per line).")) -> None:
    """One run's log (NIRs masked): when, level, message, then its fields as key=value.

    Example: nirlink logs careers-2026-20260105-101500-1a2b --follow --tail 20
    """
    import sys

    from nirlink.engine.jobs._joblog import JobLog
    from nirlink.engine.jobs._registry import find_run, job_paths, read_state
    from nirlink.engine.jobs._state import TERMINAL

    directory, job_id = find_run(job)
    log = JobLog(job_paths(directory, job_id)["log"], job_id)
    records, offset = log.read_from(0)
    if tail is not None:
        records = records[len(records) - tail:] if tail else []
    if not follow:
        emit(records, output, lambda items: [typer.echo(_log_line(r)) for r in items])
        return

    def show(items):
        for r in items:
            typer.echo(json.dumps(r, ensure_ascii=False, default=str) if output == OutputFormat.json else _log_line(r))
        sys.stdout.flush()

    show(records)
    try:
        while True:
            try:
                finished = (st := read_state(directory, job_id)) is None or st.status in TERMINAL
            except (OSError, ValueError, TypeError):
                finished = False
            more, offset = log.read_from(offset)
            show(more)
            if finished and not more:
                return
            time.sleep(0.5)
    except KeyboardInterrupt:  # the way to stop following
        return
