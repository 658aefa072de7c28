"""`nirlink run` (foreground, with progress) and `nirlink submit` (detached, returns a job id)."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path

import typer

from . import app
from ._progress import progress_display
from ._utilities import OutputFormat, emit, handle_errors, scheduler_address, stderr_console


def _summary(job_dir: Path, job_id: str) -> dict:
    from nirlink.engine.io._datasets import read_json
    from nirlink.engine.jobs._registry import read_state, run_report

    state = read_state(job_dir, job_id)
    report = run_report(job_dir, job_id, state.finished_at)
    out = {"job_id": state.job_id, "status": state.status, "error": state.error, "cause": state.cause,
           "directory": str(job_dir), "report": str(report) if report else None,
           "stage_seconds": state.stage_seconds, "skipped": list(state.skipped)}
    for stage in ("ingest", "link", "aggregate", "export"):
        m = job_dir / stage / "_manifest.json"
        if m.exists() and (stage in state.stage_seconds or stage in state.skipped):  # this run's outputs only
            data = read_json(m)
            if stage == "ingest":
                out["ingest"] = {k: v["totals"] for k, v in data["inputs"].items()}
            elif stage == "link":
                out["link"] = {k: v for k, v in data["decisions"].items() if k != "by_nir_status"}
            elif stage == "aggregate":
                out["aggregate"] = {k: v["rows"] for k, v in data["tables"].items()}
            else:
                out["export"] = {"directory": str(job_dir / "export"), "pseudonymised": data["pseudonymised"],
                                 "tables": {k: v["rows"] for k, v in data["tables"].items()}}
    from nirlink.engine.jobs._registry import job_paths

    disk = job_paths(job_dir, job_id)["disk"]
    if disk.exists():  # sizes of the job directory: input, peak, final (a run that ran a stage)
        out["disk"] = {k: v for k, v in read_json(disk).items() if k not in ("stages", "released")}
    return out


def _render(s: dict) -> None:
    why = s.get("error") or s.get("cause")
    typer.echo(f"job {s['job_id']}: {s['status']}" + (f" ({why})" if why else ""))
    for stage in ("ingest", "link", "attach", "aggregate", "export"):
        if stage in s["stage_seconds"]:
            typer.echo(f"  {stage:<10} {s['stage_seconds'][stage]:>9.1f} s")
    for stage in s["skipped"]:
        typer.echo(f"  {stage:<10} skipped (published output up to date)")
    for name, t in s.get("ingest", {}).items():
        typer.echo(f"  ingest {name}: {t['rows_read']:,} rows read, {t['accepted']:,} accepted, {t['rejected']:,} rejected")
    if "link" in s:
        d = s["link"]
        typer.echo(f"  link: {d.get('signatures_linked', 0):,} signatures linked ({d.get('linked_by_nir', 0):,} by NIR, "
                   f"{d.get('linked_by_model', 0):,} by model), {d.get('signatures_ambiguous', 0):,} ambiguous, "
                   f"{d.get('signatures_unlinked', 0):,} unlinked")
    for name, rows in s.get("aggregate", {}).items():
        typer.echo(f"  {name}: {rows:,} rows")
    if "disk" in s:
        d = s["disk"]
        typer.echo(f"  disk: peak {d['peak_bytes'] / 1e6:,.0f} MB ({d['peak_over_input']:.2f}x the input, "
                   f"during {d['peak_stage']}), final {d['final_bytes'] / 1e6:,.0f} MB ({d['final_over_input']:.2f}x)")
    typer.echo(f"outputs: {s['directory']}")
    if "export" in s:
        typer.echo(f"export:  {s['export']['directory']}")
    typer.echo(f"report:  {s['report'] or '(none written)'}")


# Exit codes of a run stopped by a signal: the shell's convention, 128 + the signal's number.
EXIT_SIGNAL = {"SIGINT": 130, "SIGTERM": 143}


class _Stop:
    """SIGTERM and SIGINT (Ctrl-C) during ``nirlink run``: the first asks the run to stop at its
    next task boundary (it is recorded ``interrupted`` with the signal's name, its temporary
    directories removed, the cluster closed in order); a second one, or no task boundary within
    ``nirlink.jobs.stop-seconds``, stops it at once (KeyboardInterrupt, still recorded). Without
    this, SIGTERM killed the process where it stood: the run stayed "running", its temporary
    directory and the local cluster's semaphores were left behind.

    Ctrl-C in a terminal signals the whole process group, the local cluster's worker processes
    too: one that dies of it takes its running task along and the run waits for a task boundary
    that never comes. So SIGINT is ignored while the local cluster starts (its worker processes
    inherit that, ``arm`` then installs the handler here): only this process decides."""

    def __init__(self):
        self.signal: str | None = None
        self.job = None
        self._timer = None

    def attach(self, job) -> None:
        self.job = job

    def __call__(self, signum, _frame) -> None:
        if self.signal:
            raise KeyboardInterrupt(self.signal)
        self.signal = signal.Signals(signum).name
        if self.job is None:  # still connecting: no run to stop yet, nothing recorded
            raise SystemExit(EXIT_SIGNAL.get(self.signal, 130))
        self.job.interrupt(f"interrupted by {self.signal}")
        from nirlink.engine import _config

        grace = float(_config.get("jobs.stop-seconds", 60))
        os.write(2, f"\n{self.signal} received: stopping at the next task boundary (within {grace:.0f} s; "
                    "again to stop at once)\n".encode())
        import _thread

        self._timer = threading.Timer(grace, _thread.interrupt_main, args=(signal.SIGINT,))
        self._timer.daemon = True
        self._timer.start()

    def arm(self) -> None:
        if self._main:
            signal.signal(signal.SIGINT, self)

    def done(self) -> None:
        """The run has ended: nothing left to stop at once."""
        if self._timer is not None:
            self._timer.cancel()

    @contextlib.contextmanager
    def installed(self, *, local_cluster: bool):
        self._main = threading.current_thread() is threading.main_thread()  # signals reach the main thread only
        if not self._main:
            yield self
            return
        previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
        signal.signal(signal.SIGTERM, self)
        signal.signal(signal.SIGINT, signal.SIG_IGN if local_cluster else self)
        try:
            yield self
        finally:
            if self._timer is not None:
                self._timer.cancel()
            for s, h in previous.items():
                signal.signal(s, h)


@app.command()
@handle_errors
def run(
    file: Path = typer.Argument(..., help="Job file (TOML)."),
    restart: bool = typer.Option(False, "--restart", help="Run every stage again, even those already published."),
    scheduler: str = typer.Option(None, "--scheduler", callback=scheduler_address, help="Dask scheduler address (overrides the job file)."),
    output: OutputFormat = typer.Option(OutputFormat.text, "--output", help="text or json."),
) -> None:
    """Run FILE in the foreground, with a progress display per stage (see README, "Progress").

    SIGTERM or Ctrl-C stops the run at its next task boundary (exit code 143 or 130); a
    second one stops it at once.

    Example: nirlink run job.toml --scheduler tcp://scheduler:8786
    """
    from nirlink.cluster import open_client
    from nirlink.engine.jobs._lock import DirectoryBusy, check_lock
    from nirlink.engine.jobs._registry import new_job_id
    from nirlink.engine.jobs._runner import Job
    from nirlink.engine.jobs._spec import load_job

    spec = load_job(file)
    job_id = new_job_id(spec.name)
    verdict = check_lock(spec.directory, job_id)  # before starting a cluster; the run takes the lock itself
    if not verdict.take:
        raise DirectoryBusy(f"{spec.directory} is in use: {verdict.reason}")
    console = stderr_console()
    address = scheduler or spec.cluster.address
    show = output == OutputFormat.text
    with _Stop().installed(local_cluster=not address) as stop, open_client(
            address, n_workers=spec.cluster.workers, threads_per_worker=spec.cluster.threads_per_worker,
            memory_limit=spec.cluster.memory_limit) as client:
        stop.arm()
        if show:
            console.print(f"Dask dashboard: {client.dashboard_link}", markup=False, highlight=False, soft_wrap=True)
        display = progress_display(console) if show else contextlib.nullcontext(None)
        with display as progress:
            job = Job(spec, client=client, job_id=job_id, restart=restart, progress=progress, scheduler=address)
            stop.attach(job)
            try:
                job.run()
            except KeyboardInterrupt:
                pass  # a second signal: the run recorded it; the cluster closes below
            finally:
                stop.done()
    summary = _summary(spec.directory, job_id)
    emit(summary, output, _render)
    if summary["status"] == "interrupted":
        raise typer.Exit(EXIT_SIGNAL.get(stop.signal, 130))
    if summary["status"] != "succeeded":  # cancelled by an operator, or failed without an error here
        raise typer.Exit(1)  # (its driver lost to another run taking the directory over): not done


def _driver(spec, job_id: str, restart: bool, scheduler: str | None, pseudonym_key=None) -> str:
    """Runs on a Dask worker: the job's own driver. It leaves the worker's thread pool (so it
    does not hold a task slot while it waits) and talks to the scheduler through a client of
    its own, which lives as long as the job - not as long as the client that submitted it.

    ``spec`` is the job as checked where it was submitted (the worker need not read the job
    file); ``pseudonym_key`` the pseudonymisation key resolved there (a PseudonymKey, hidden in
    logs and never written), so the workers need not hold it. The client's TLS identity comes
    from the worker (cluster.driver_security). A driver that fails before its job can record it
    (it cannot reach the scheduler, ...) records the failure in the job's state itself.
    """
    import dask.config
    from distributed import Client, get_worker, secede

    from nirlink.cluster import driver_security
    from nirlink.engine.jobs._runner import Job
    from nirlink.kernels import ClusterError, describe_error

    worker = get_worker()
    secede()
    client = None
    try:
        try:
            client = Client(worker.scheduler.address, security=driver_security(worker.security), set_as_default=False,
                            timeout=float(dask.config.get("nirlink.cluster.connect-timeout", 30)))
        except Exception as exc:  # noqa: BLE001 - whatever it is, the job's state must say it
            raise ClusterError(f"the job's driver (on worker {worker.address}) cannot connect to the scheduler "
                               f"{worker.scheduler.address}: {describe_error(exc)}") from exc
        job = Job(spec, client=client, job_id=job_id, restart=restart, scheduler=scheduler, key=pseudonym_key)
        return job.run().status
    except BaseException as exc:
        _record_driver_failure(spec, job_id, scheduler, exc)
        raise
    finally:
        if client is not None:
            client.close()


def _record_driver_failure(spec, job_id: str, scheduler: str | None, exc: BaseException) -> None:
    """Mark the job failed when its driver failed before the job could record it itself
    (Job.run records its own failures; then the state is final and this changes nothing)."""
    import contextlib

    from nirlink.engine.jobs._joblog import mask_nirs
    from nirlink.engine.jobs._lock import release_lock
    from nirlink.engine.jobs._registry import read_state
    from nirlink.engine.jobs._runner import Job
    from nirlink.engine.jobs._state import TERMINAL, Failed
    from nirlink.kernels import describe_error

    with contextlib.suppress(Exception):  # the state cannot be written: the worker's log is all there is
        state = read_state(spec.directory, job_id)
        if state is None or state.status in TERMINAL:
            return
        message = describe_error(exc)
        Job(spec, job_id=job_id, scheduler=scheduler).emit(Failed(time.time(), mask_nirs(message)))
        release_lock(spec.directory, job_id)


def _pseudonym_key(spec, address: str):
    """The pseudonymisation key, read here (output.key_env in this shell, or output.key_file)
    to travel to the driver in the submitted task's arguments: in memory only, encrypted on
    the way with tls://; a warning when it would cross a network in clear."""
    if not spec.output.pseudonymise:
        return None
    from distributed.comm import get_address_host, parse_address

    from nirlink.engine.stages._export import PseudonymKey, load_key

    key = PseudonymKey(load_key(key_env=spec.output.key_env, key_file=spec.output.key_file))
    scheme = parse_address(address)[0]
    if scheme != "tls" and get_address_host(address) not in ("127.0.0.1", "localhost", "::1"):
        typer.echo(f"warning: the pseudonymisation key goes to the cluster unencrypted over {scheme}://; use a tls:// "
                   "cluster on a network you do not trust (cluster/recipes/README.md)", err=True)
    return key


@app.command()
@handle_errors
def submit(
    file: Path = typer.Argument(..., help="Job file (TOML)."),
    scheduler: str = typer.Option(None, "--scheduler", callback=scheduler_address, help="Dask scheduler address (overrides the job file)."),
    restart: bool = typer.Option(False, "--restart", help="Run every stage again."),
    output: OutputFormat = typer.Option(OutputFormat.text, "--output", help="text or json."),
) -> None:
    """Submit FILE to a running cluster and return its job id at once; the job goes on without this terminal.

    Example: nirlink submit job.toml --scheduler tls://scheduler:8786
    """
    from distributed import fire_and_forget

    from nirlink.cluster import open_client
    from nirlink.engine.jobs._lock import DirectoryBusy, check_lock
    from nirlink.engine.jobs._registry import new_job_id
    from nirlink.engine.jobs._runner import Job
    from nirlink.engine.jobs._spec import load_job

    spec = load_job(file)  # checks the pseudonymisation key too: missing or short, nothing is submitted
    address = scheduler or spec.cluster.address
    if not address:
        raise typer.BadParameter("submit needs a scheduler: --scheduler ADDR or cluster.address in the job file")
    pseudonym_key = _pseudonym_key(spec, address)
    job_id = new_job_id(spec.name)
    verdict = check_lock(spec.directory, job_id)
    if not verdict.take:
        raise DirectoryBusy(f"{spec.directory} is in use: {verdict.reason}")
    with open_client(address) as client:  # an unreachable scheduler fails here: nothing recorded yet
        job = Job(spec, job_id=job_id, scheduler=address)
        job.submit()  # the directory's lock (queued), the run's record, the registry entry
        try:
            future = client.submit(_driver, spec, job_id, restart, address, pseudonym_key,
                                   key=f"nirlink-job-{job_id}", pure=False)
            fire_and_forget(future)
            time.sleep(0.2)  # let the scheduler receive the task before this client goes away
        except BaseException:
            job.withdraw()  # the job never reached the scheduler: leave nothing behind
            raise
    emit({"job_id": job_id, "directory": str(spec.directory), "scheduler": address}, output,
         lambda d: typer.echo(d["job_id"]))
