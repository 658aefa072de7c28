"""Running a job: its stages in order, resumable, its state persisted as it changes.

A job is a front over its stages (one module each in engine/stages/: _ingest, _link, _attach,
_aggregate, _signals, _export). Its directory (output.directory) holds each stage's
published output and ``_job/``: state.json, events.jsonl, job.log, report.html.

Resume: each published stage carries a fingerprint (nirlink version, the job-file parts
that stage reads, its inputs: file sizes and times for raw inputs, the previous stage's
manifest). A re-run skips every stage whose fingerprint still matches, from the first
one; `restart` runs everything.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nirlink.engine import _config
from nirlink.engine.io._datasets import apply_private_modes, make_private_dir, read_json, write_json
from nirlink.engine.io._readers import expand_paths
from nirlink.kernels import JobCancelled, StageError, describe_error

from ._joblog import JobLog, mask_nirs, private_opener
from ._registry import job_paths, new_job_id, read_state, register_job, version
from ._spec import JobSpec
from ._state import (
    Cancelled,
    DriverRestarted,
    Failed,
    Heartbeat,
    JobState,
    Log,
    Persist,
    Progress,
    StageFinished,
    StageSkipped,
    StageStarted,
    Started,
    Submitted,
    Succeeded,
    apply,
)

if TYPE_CHECKING:
    from nirlink.engine.stages._export import PseudonymKey

__all__ = ["Job"]


def _fingerprint(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _files_fingerprint(paths) -> list:
    files, _ = expand_paths(list(paths))
    out = []
    for f in files:
        st = f.stat()
        out.append([str(f.resolve()), st.st_size, st.st_mtime_ns])
    return out


class Job:
    """One run of a job file on a Dask client (``client=None``: in this process, for tests)."""

    def __init__(self, spec: JobSpec, *, client=None, job_id: str | None = None, restart: bool = False,
                 progress: Callable[..., None] | None = None, scheduler: str | None = None,
                 key: PseudonymKey | None = None):
        self.spec = spec
        self._given_key = key  # the pseudonymisation key resolved by whoever submitted the job
        self.client = client
        self.dir = spec.directory
        self.paths = job_paths(self.dir)
        make_private_dir(self.paths["dir"])  # the job directory holds identities: private
        existing = read_state(self.dir)
        if existing and job_id is None and existing.status not in ("submitted", "succeeded", "failed", "cancelled"):
            from ._state import DriverLost

            # a foreground run over a directory whose previous driver vanished: close that job first
            existing, _ = apply(existing, DriverLost(time.time(), "superseded by a new run of the job"))
            write_json(self.paths["state"], existing.to_json())
        self.job_id = job_id or (existing.job_id if existing and existing.status == "submitted" else new_job_id(spec.name))
        self.restart = restart
        self.on_progress = progress
        self.scheduler = scheduler
        self.log = JobLog(self.paths["log"], self.job_id)
        self.state: JobState | None = existing if existing and existing.job_id == self.job_id else None
        self._lock = threading.Lock()
        self._stop = threading.Event()

    # ------------------------------------------------------------------ state
    def emit(self, event) -> None:
        with self._lock:
            self.state, instructions = apply(self.state, event)
            for ins in instructions:
                if isinstance(ins, Persist):
                    write_json(self.paths["state"], ins.state.to_json())
                    if not isinstance(ins.event, (Heartbeat, Progress)):
                        with open(self.paths["events"], "a", encoding="utf-8", opener=private_opener) as f:
                            fields = {k: round(v, 3) if isinstance(v, float) else v
                                      for k, v in ins.event.__dict__.items()}
                            f.write(json.dumps({"event": type(ins.event).__name__, **fields}, default=str) + "\n")
                elif isinstance(ins, Log):
                    self.log.write(ins.level, ins.message, **ins.fields)

    def submit(self) -> str:
        if self.state is None:
            self.emit(Submitted(time.time(), self.job_id, self.spec.name, self.spec.stages, self.scheduler))
        register_job(self.job_id, self.dir, self.spec, self.scheduler)
        return self.job_id

    def _heartbeat(self) -> None:
        every = float(_config.get("jobs.heartbeat-seconds", 5))
        while not self._stop.wait(every):
            with contextlib.suppress(Exception):
                self.emit(Heartbeat(time.time()))

    def _progress(self, stage: str) -> Callable[..., None]:
        last = [0.0]

        def report(step: str, done: int, total: int, rows: int | None = None) -> None:
            if self.paths["cancel"].exists():
                raise JobCancelled(f"job {self.job_id} cancelled by an operator")
            now = time.time()
            if now - last[0] > 0.5 or done == total:
                last[0] = now
                self.emit(Progress(now, step, done, total))
            if self.on_progress:
                self.on_progress(stage, step, done, total, rows)

        return report

    # ------------------------------------------------------------------ run
    def run(self) -> JobState:
        self.submit()
        if self.state.status == "running":
            self.emit(DriverRestarted(time.time()))
        else:
            if self.paths["cancel"].exists():
                self.paths["cancel"].unlink()
            self.emit(Started(time.time()))
        beat = threading.Thread(target=self._heartbeat, daemon=True)
        beat.start()
        self._ran: list[str] = []  # the stages this run started (none: a no-op re-run)
        self._cluster = self._cluster_size()
        try:
            with self._performance_report():
                self._run_stages()
            self.emit(Succeeded(time.time()))
        except JobCancelled:
            self.emit(Cancelled(time.time()))
        except BaseException as exc:  # noqa: BLE001 - every failure is recorded, then raised again
            message = mask_nirs(describe_error(exc))
            stage = self.state.stage if self.state else None
            if stage and not message.startswith(f"stage {stage}"):
                message = f"stage {stage}: {message}"
            self.log.write("error", "traceback", traceback=mask_nirs(traceback.format_exc()))
            self.emit(Failed(time.time(), message))
            if isinstance(exc, Exception):
                raise StageError(message) from exc  # what the operator sees: the stage, then the cause
            raise
        finally:
            self._stop.set()
            try:
                self._write_report()
            except Exception as exc:  # noqa: BLE001 - the report is a nicety; the job's outcome stands
                self.log.write("warning", f"report not written: {type(exc).__name__}: {exc}")
            with contextlib.suppress(Exception):
                apply_private_modes(self.paths["dir"])  # reports and logs: the owner's only
        return self.state

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
        previous = ""
        fresh = self.restart
        for index, stage in enumerate(self.spec.stages):
            fp = self._stage_fingerprint(stage, previous)
            out = self.dir / stage
            done = read_json(out / "_fingerprint.json") if (out / "_fingerprint.json").exists() else None
            if not fresh and done and done.get("fingerprint") == fp and (out / "_manifest.json").exists():
                self.emit(StageSkipped(time.time(), index))
            else:
                fresh = True  # every later stage runs again
                failing = _config.get("testing.fail-before-stage")
                self._ran.append(stage)
                self.emit(StageStarted(time.time(), index))
                if failing == stage:
                    raise StageError(f"stage {stage}: failure injected by nirlink.testing.fail-before-stage")
                t0 = time.perf_counter()
                self._run_stage(stage)
                write_json(out / "_fingerprint.json", {"fingerprint": fp, "nirlink": version()})
                self.emit(StageFinished(time.time(), index, time.perf_counter() - t0))
            manifest = out / "_manifest.json"
            previous = hashlib.sha256(manifest.read_bytes()).hexdigest() if manifest.exists() else ""

    def _stage_fingerprint(self, stage: str, previous: str) -> str:
        s = self.spec
        parts: dict[str, Any] = {"stage": stage, "nirlink": version(), "previous": previous}
        if stage == "ingest":
            parts["inputs"] = [[i.name, i.kind, i.format, list(i.columns), i.csv.__dict__, _files_fingerprint(i.paths)]
                               for i in s.inputs]
        elif stage == "link":
            parts["linkage"] = s.linkage.__dict__
            parts["models"] = [_files_fingerprint([p]) for p in (s.linkage.model, s.linkage.register_model) if p]
            if s.linkage.decisions:  # by content: an agent edits the file in place
                parts["decisions"] = hashlib.sha256(Path(s.linkage.decisions).read_bytes()).hexdigest()
        elif stage == "aggregate":
            parts["first_review_month"] = s.first_review_month
        elif stage == "signals":
            parts["signals"] = s.signals.as_json() if s.signals is not None else None
        elif stage == "export":
            parts["signals"] = "signals" in s.stages
            parts["pseudonymise"] = s.output.pseudonymise
            key = self._key()
            parts["key"] = hashlib.sha256(b"nirlink-key-check" + key).hexdigest() if key else None
        return _fingerprint(parts)

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
        d, s, c = self.dir, self.spec, self.client
        progress = self._progress(stage)
        if stage == "ingest":
            from nirlink.engine.stages._ingest import run_ingest

            def ingest_progress(done, total, rows=None):
                progress("read", done, total, rows)

            return run_ingest(list(s.inputs), d / "ingest", client=c,
                              chunk_rows=int(_config.get("ingest.chunk-rows", 1_000_000)), progress=ingest_progress)
        if stage == "link":
            from nirlink.engine.stages._link import run_link
            from nirlink.linkage import LinkConfig, identity_model, load_model, save_model

            model_path = s.linkage.model
            if s.linkage.threshold is not None or s.linkage.margin is not None or s.linkage.none_weight is not None:
                model = load_model(model_path) if model_path else identity_model()
                if s.linkage.threshold is not None:
                    model.decision["threshold"] = s.linkage.threshold
                if s.linkage.margin is not None:
                    model.decision["margin"] = s.linkage.margin
                if s.linkage.none_weight is not None:
                    model.decision["none_weight"] = s.linkage.none_weight
                model_path = str(self.paths["dir"] / "model-requested.json")
                save_model(model, model_path)
            cfg = LinkConfig(
                signature_buckets=int(_config.get("linkage.signature-buckets", 8)),
                rows_per_scoring_task=int(_config.get("linkage.rows-per-scoring-task", 200_000)),
                duckdb_threads=int(_config.get("linkage.duckdb-threads", 1)),
                duckdb_memory_limit=_config.get("linkage.duckdb-memory-limit", "2GB"),
                prediction_floor=float(_config.get("linkage.prediction-floor", 0.01)),
                evidence_floor=float(_config.get("linkage.evidence-floor", 0.0)),
            )
            return run_link(d / "ingest", d / "link", client=c, model_path=model_path,
                            register_model_path=s.linkage.register_model, decisions_path=s.linkage.decisions,
                            config=cfg, progress=progress)
        if stage == "attach":
            from nirlink.engine.stages._attach import run_attach

            return run_attach(d / "ingest", d / "link", d / "attach", client=c, progress=progress)
        if stage == "aggregate":
            from nirlink.engine.stages._aggregate import run_aggregate

            scratch = d / ".aggregate-input"  # without attach: person buckets, removed once published
            if (d / "attach" / "_manifest.json").exists() and "attach" in s.stages:
                career = d / "attach" / "career" if (d / "attach" / "career").exists() else None
                resource = d / "attach" / "resource" if (d / "attach" / "resource").exists() else None
                partitioned = True
            else:
                from nirlink.engine.stages._attach import declared_persons

                shutil.rmtree(scratch, ignore_errors=True)
                career, resource = declared_persons(d / "ingest", scratch, client=c, progress=progress)
                partitioned = True  # person buckets on disk, as the attach stage writes them
            manifest = run_aggregate(career=career, resource=resource, out_dir=d / "aggregate", client=c,
                                     partitioned_by_person=partitioned, first_review_month=s.first_review_month,
                                     progress=lambda done, total, rows=None: progress("aggregate", done, total, rows))
            shutil.rmtree(scratch, ignore_errors=True)
            return manifest
        if stage == "signals":
            from nirlink.engine.stages._signals import run_signals

            return run_signals(d, d / "signals", client=c, settings=s.signals, progress=progress)
        if stage == "export":
            from nirlink.engine.stages._export import run_export

            return run_export(d, d / "export", client=c, key=self._key(), progress=progress,
                              signals="signals" in s.stages)
        raise StageError(f"unknown stage {stage!r}")
