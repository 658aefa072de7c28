"""Running a job: its stages in order, resumable, its state persisted as it changes.

A job is a front over its stages (one module each in engine/stages/: _ingest, _link, _attach,
_aggregate, _signals, _export). Its directory (output.directory) holds each stage's published output
and ``_job/``: the directory's lock and one record per run (``_registry.py`` has the layout).

A run first takes the directory's lock (``_lock.py``): a second run or submit into the same
directory is refused naming the one that holds it; a dead run's lock is taken over and
that run recorded as failed. Holding it, the run removes the hidden temporary directories
earlier runs left (``.<stage>.tmp-*``: a killed process never cleans up), runs its stages,
removes what its own failed stage left, writes its report and lets the lock go.

Stopping: ``cancel`` (an operator's request, a file the driver looks for at every task
boundary and before it starts) ends a run ``cancelled``; ``interrupt`` (SIGTERM, Ctrl-C in
``nirlink run``) ends it ``interrupted`` with the cause, also at the next task boundary.

Resume: each published stage carries a fingerprint (nirlink version, the job-file parts
that stage reads, its inputs: file sizes and times for raw inputs, the previous stage's
manifest). A re-run skips every stage whose fingerprint still matches, from the first
one (earlier when a stage to run reads a released output: ``_release.py``); `restart` runs everything.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import threading
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nirlink.engine import _config
from nirlink.engine.io._datasets import apply_private_modes, read_json, sweep_temporaries, write_json
from nirlink.kernels import JobCancelled, StageError, describe_error

from ._fingerprint import first_stale, up_to_date_stage
from ._joblog import JobLog, mask_nirs
from ._release import DiskRecord, resume_from
from ._lock import acquire_lock, mutex, refresh_lock, release_lock
from ._registry import (job_paths, latest_run, new_job_id, persist, read_state, register_job, set_current, unregister_job,
                        version)
from ._spec import JobSpec
from ._state import (
    TERMINAL,
    Cancelled,
    DriverRestarted,
    Failed,
    Heartbeat,
    Interrupted,
    JobState,
    Progress,
    StageFinished,
    StageSkipped,
    StageStarted,
    Started,
    Submitted,
    Succeeded,
)

if TYPE_CHECKING:
    from nirlink.engine.stages._export import PseudonymKey

__all__ = ["Job"]


class Job:
    """One run of a job file on a Dask client (``client=None``: in this process, for tests).

    ``job_id``: the run to drive (a queued run made by ``submit``, or a run whose driver Dask
    restarted); a new run otherwise."""

    def __init__(self, spec: JobSpec, *, client=None, job_id: str | None = None, restart: bool = False,
                 progress: Callable[..., None] | None = None, scheduler: str | None = None,
                 key: PseudonymKey | None = None):
        self.spec = spec
        self._given_key = key  # the pseudonymisation key resolved by whoever submitted the job
        self.client = client
        self.dir = spec.directory
        self.job_id = job_id or new_job_id(spec.name)
        self.paths = job_paths(self.dir, self.job_id)
        self.restart = restart
        self.on_progress = progress
        self.scheduler = scheduler
        self.log = JobLog(self.paths["log"], self.job_id)
        self.state: JobState | None = read_state(self.dir, self.job_id)
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._holder = None
        self._interrupt: str | None = None  # the cause, once interrupted
        self._lost: str | None = None  # the run was closed by someone else (its lock taken over)

    # ------------------------------------------------------------------ state
    def emit(self, event) -> None:
        with self._lock:
            self.state = persist(self.paths, self.state, event, self.log)

    def submit(self) -> str:
        """Queue this run (``nirlink submit``): take the directory, record the run, register it.
        Raises DirectoryBusy, naming the run that holds the directory, and records nothing."""
        self._holder, _ = acquire_lock(self.dir, self.job_id, queued=True)
        self._previous = latest_run(self.dir)
        if self.state is None:
            self.emit(Submitted(time.time(), self.job_id, self.spec.name, self.spec.stages, self.scheduler))
        set_current(self.dir, self.job_id)
        register_job(self.job_id, self.dir, self.spec, self.scheduler)
        return self.job_id

    def withdraw(self) -> None:
        """Undo ``submit`` (the job never reached the scheduler): no record, no registry entry,
        the directory's lock and latest run as they were."""
        unregister_job(self.job_id)
        with mutex(self.dir):
            shutil.rmtree(self.paths["dir"], ignore_errors=True)
            if latest_run(self.dir) == self.job_id:
                set_current(self.dir, getattr(self, "_previous", None))
            release_lock(self.dir, self.job_id)
        with contextlib.suppress(OSError):  # the job directory, if this submit made it
            self.paths["runs"].rmdir()

    def cancel_requested(self) -> bool:
        return self.paths["cancel"].exists()

    def interrupt(self, cause: str) -> None:
        """Stop at the next task boundary and record the run ``interrupted`` with ``cause``
        (safe to call from a signal handler)."""
        self._interrupt = cause

    def _heartbeat(self) -> None:
        every = float(_config.get("jobs.heartbeat-seconds", 5))
        while not self._stop.wait(every):
            with contextlib.suppress(Exception), mutex(self.dir), self._lock:
                if self._stop.is_set() or self.state.status in TERMINAL:
                    return
                on_disk = read_state(self.dir, self.job_id)
                holder = refresh_lock(self.dir, self._holder) if self._holder else None
                if holder is None or on_disk is None or on_disk.status in TERMINAL:
                    # this driver looked dead (a long pause): another command closed its run
                    self._lost = (f"job {self.job_id} was closed by another command "
                                  f"({on_disk.describe() if on_disk else 'no record'}): this driver stops")
                    return
                self._holder = holder
                self.emit(Heartbeat(time.time()))

    def _check_stop(self) -> None:
        if self._interrupt:
            raise JobCancelled(f"job {self.job_id} {self._interrupt}")
        if self._lost:
            raise JobCancelled(self._lost)
        if self.cancel_requested():
            raise JobCancelled(f"job {self.job_id} cancelled by an operator")

    def _progress(self, stage: str) -> Callable[..., None]:
        last = [0.0]

        def report(step: str, done: int, total: int, rows: int | None = None) -> None:
            self._check_stop()
            now = time.time()
            if now - last[0] > 0.5 or done == total:
                last[0] = now
                self.emit(Progress(now, step, done, total))
            if self.on_progress:
                self.on_progress(stage, step, done, total, rows)

        return report

    # ------------------------------------------------------------------ run
    def _begin(self) -> bool:
        """Take the directory and start (or resume) the run; ``False`` when it must not run:
        cancelled while queued, or already finished."""
        with mutex(self.dir):
            self.state = read_state(self.dir, self.job_id)
            if self.state is not None and self.state.status in TERMINAL:
                return False
            if self.state is not None and self.state.status == "queued" and self.cancel_requested():
                self.emit(Cancelled(time.time(), "cancelled by an operator before it started"))
                release_lock(self.dir, self.job_id)
                return False
            self._holder, verdict = acquire_lock(self.dir, self.job_id)
            if self.state is None:
                self.emit(Submitted(time.time(), self.job_id, self.spec.name, self.spec.stages, self.scheduler))
                set_current(self.dir, self.job_id)
                register_job(self.job_id, self.dir, self.spec, self.scheduler)
            if verdict.close_holder is not None:
                self.log.write("warning", f"output directory {verdict.reason}")
            if self.state.status == "running":
                self.emit(DriverRestarted(time.time()))
            else:
                self.paths["cancel"].unlink(missing_ok=True)
                self.emit(Started(time.time()))
        return True

    def run(self) -> JobState:
        if not self._begin():
            return self.state
        beat = threading.Thread(target=self._heartbeat, daemon=True, name=f"nirlink-heartbeat-{self.job_id}")
        beat.start()
        self._ran: list[str] = []  # the stages this run started (none: a no-op re-run)
        self._cluster = self._cluster_size()
        try:
            removed = sweep_temporaries(self.dir)
            if removed:
                self.log.write("info", f"removed {len(removed)} temporary item(s) left by earlier runs",
                               removed=removed)
            with self._performance_report():
                self._run_stages()
            self.emit(Succeeded(time.time()))  # a stop asked after the last task boundary finds nothing to stop
        except BaseException as exc:  # noqa: BLE001 - every end is recorded, failures raised again
            self._record_end(exc)
            if not isinstance(exc, Exception):
                raise  # KeyboardInterrupt, SystemExit: recorded, and still the caller's to handle
            if not isinstance(exc, JobCancelled) and not self._interrupt and not self._lost:
                raise StageError(self.state.error) from exc  # what the operator sees: the stage, then the cause
        finally:
            self._stop.set()
            beat.join(timeout=30)
            self._finish()
        return self.state

    def _record_end(self, exc: BaseException) -> None:
        if self._lost:  # someone else closed this run; its record stays as they wrote it
            self.log.write("warning", self._lost)
        elif self._interrupt or isinstance(exc, KeyboardInterrupt):
            # whatever the signal broke on its way (a task, a connection), the cause is the signal
            self.emit(Interrupted(time.time(), self._interrupt or "interrupted by Ctrl-C (SIGINT)"))
        elif isinstance(exc, JobCancelled):
            self.emit(Cancelled(time.time(), "cancelled by an operator"))
        else:
            message = mask_nirs(describe_error(exc))
            stage = self.state.stage if self.state else None
            if stage and not message.startswith(f"stage {stage}"):
                message = f"stage {stage}: {message}"
            self.log.write("error", "traceback", traceback=mask_nirs(traceback.format_exc()))
            self.emit(Failed(time.time(), message))

    def _finish(self) -> None:
        """After the run, whatever its end: its stage's leftovers, its report, the lock."""
        if self._lost:
            return  # the directory is another run's now
        with contextlib.suppress(Exception):
            removed = sweep_temporaries(self.dir)
            if removed:
                self.log.write("info", f"removed {len(removed)} temporary item(s) of the stage that stopped",
                               removed=removed)
        try:
            self._write_report()
        except Exception as exc:  # noqa: BLE001 - the report is a nicety; the job's outcome stands
            self.log.write("warning", f"report not written: {type(exc).__name__}: {exc}")
        with contextlib.suppress(Exception):
            apply_private_modes(self.paths["dir"])  # reports and logs: the owner's only
        if self._holder is not None:
            with contextlib.suppress(Exception):
                release_lock(self.dir, self.job_id, self._holder.token)

    def _cluster_size(self) -> dict[str, int] | None:
        if self.client is None:
            return None
        with contextlib.suppress(Exception):
            workers = self.client.scheduler_info(n_workers=-1)["workers"].values()
            return {"workers": len(workers), "threads": sum(w.get("nthreads", 0) for w in workers),
                    "memory_bytes": sum(w.get("memory_limit") or 0 for w in workers)}
        return None

    def _write_report(self) -> None:
        """This run's report, written only when the run started a stage: a re-run that skips
        every stage leaves the report of the run that published the outputs as it is."""
        if not self._ran:
            return
        from nirlink.engine.report._page import write_report

        warnings = [r["message"] for r in self.log.read()
                    if r.get("job") == self.job_id and r.get("level") == "warning"]
        perf = self.paths["performance"]
        write_report(self.dir, self.paths["report"], state=self.state, cluster=self._cluster,
                     performance=perf if perf.exists() else None, warnings=warnings)

    @contextlib.contextmanager
    def _performance_report(self):
        if self.client is None:
            yield
            return
        from distributed import performance_report

        # BokehJS inline (readable offline); written aside, kept only if this run started a stage
        final = self.paths["performance"]
        tmp = final.with_name(f".{final.name}.tmp-{self.job_id}")
        report = performance_report(filename=str(tmp), mode="inline")
        report.__enter__()
        try:
            yield
        finally:
            try:
                report.__exit__(None, None, None)
                if self._ran:
                    os.replace(tmp, final)
            except Exception as exc:  # noqa: BLE001 - the report is a nicety; the job's outcome stands
                self.log.write("warning", f"Dask performance report not written: {type(exc).__name__}: {exc}")
            finally:
                tmp.unlink(missing_ok=True)

    def _run_stages(self) -> None:
        self._key()  # a missing or too short pseudonymisation key stops the job before its first stage
        stages = tuple(self.spec.stages)
        # a stage to run whose input was released (nirlink.jobs.keep) runs that input's stage again first
        start = resume_from(self.dir, stages, first_stale(self.spec, self.restart, self._key()))
        disk = DiskRecord(self.dir, [p for i in self.spec.inputs for p in i.paths], self.paths["disk"])
        previous, published = "", set()
        for index, stage in enumerate(stages):
            up_to_date, fp = up_to_date_stage(self.spec, stage, previous, self._key())
            out = self.dir / stage
            if index < start and up_to_date:
                self.emit(StageSkipped(time.time(), index))
            else:
                start = min(start, index)  # every later stage runs again
                failing = _config.get("testing.fail-before-stage")
                self._ran.append(stage)
                self.emit(StageStarted(time.time(), index))
                if failing == stage:
                    raise StageError(f"stage {stage}: failure injected by nirlink.testing.fail-before-stage")
                t0 = time.perf_counter()
                with disk.sampling(stage):
                    self._run_stage(stage)
                write_json(out / "_fingerprint.json", {"fingerprint": fp, "nirlink": version()})
                self.emit(StageFinished(time.time(), index, time.perf_counter() - t0))
            published.add(stage)
            gone = disk.stage_done(stage, stages, published)
            if gone:
                self.log.write("info", f"released {', '.join(gone)} (read by no later stage; nirlink.jobs.keep)")
            manifest = out / "_manifest.json"
            previous = hashlib.sha256(manifest.read_bytes()).hexdigest() if manifest.exists() else ""

    def _key(self) -> bytes | None:
        """The pseudonymisation key: the one handed over (a submitted job's driver), else read
        from output.key_file / output.key_env in this process."""
        if not self.spec.output.pseudonymise:
            return None
        if self._given_key is not None:
            return self._given_key.value
        from nirlink.engine.stages._export import load_key

        return load_key(key_env=self.spec.output.key_env, key_file=self.spec.output.key_file)

    def _run_stage(self, stage: str) -> dict[str, Any]:
        from ._stage_calls import run_stage

        return run_stage(self, stage)
