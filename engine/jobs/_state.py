"""Job state as a small state machine: events in, a new state and instructions out. No I/O here.

A job state is the record of one run: queued (submitted, its driver not started yet) ->
running (stage k of n) -> succeeded | failed | cancelled | interrupted. Every run has its
own record; a later run in the same directory never rewrites an earlier one. The runner
turns instructions into file writes (the run's state.json, events.jsonl, job log); tests
drive the machine with plain events.

The output directory's lock is decided here too (``lock_verdict``): who holds it, whether
that holder is alive, and what taking it over means for the holder's run - pure, so the
rules are tested without files or processes (the file side is ``_lock.py``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from nirlink.kernels import JobError

__all__ = ["JobState", "Event", "Submitted", "Started", "StageStarted", "StageSkipped", "StageFinished", "Progress",
           "Heartbeat", "DriverRestarted", "Succeeded", "Failed", "Cancelled", "Interrupted", "DriverLost", "Persist",
           "Log", "apply", "TERMINAL", "LockHolder", "LockVerdict", "lock_verdict"]

TERMINAL = ("succeeded", "failed", "cancelled", "interrupted")


@dataclass(frozen=True)
class JobState:
    job_id: str
    name: str
    stages: tuple[str, ...]
    status: str = "queued"
    stage_index: int = -1
    stage: str | None = None
    submitted_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    heartbeat: float | None = None
    error: str | None = None  # why a failed run failed
    cause: str | None = None  # who or what ended a cancelled or interrupted run
    step: str | None = None
    step_done: int = 0
    step_total: int = 0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    skipped: tuple[str, ...] = ()
    scheduler: str | None = None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["stages"] = list(self.stages)
        d["skipped"] = list(self.skipped)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> JobState:
        known = set(cls.__dataclass_fields__)
        d = {k: v for k, v in d.items() if k in known}  # a record written by another version
        d["stages"] = tuple(d.get("stages", ()))
        d["skipped"] = tuple(d.get("skipped", ()))
        if d.get("status") == "submitted":  # the name of "queued" before runs had their own records
            d["status"] = "queued"
        return cls(**d)

    def describe(self) -> str:
        if self.status == "running":
            k = self.stage_index + 1
            step = f", {self.step} {self.step_done}/{self.step_total}" if self.step else ""
            return f"running stage {k}/{len(self.stages)} ({self.stage}{step})"
        if self.status == "failed":
            return f"failed: {self.error}"
        if self.status in ("cancelled", "interrupted") and self.cause:
            return self.cause
        return self.status


@dataclass(frozen=True)
class Event:
    at: float


@dataclass(frozen=True)
class Submitted(Event):
    job_id: str
    name: str
    stages: tuple[str, ...]
    scheduler: str | None = None


@dataclass(frozen=True)
class Started(Event):
    pass


@dataclass(frozen=True)
class StageStarted(Event):
    index: int


@dataclass(frozen=True)
class StageSkipped(Event):
    index: int
    reason: str = "published output up to date"


@dataclass(frozen=True)
class StageFinished(Event):
    index: int
    seconds: float


@dataclass(frozen=True)
class Progress(Event):
    step: str
    done: int
    total: int


@dataclass(frozen=True)
class Heartbeat(Event):
    pass


@dataclass(frozen=True)
class DriverRestarted(Event):
    """The job's driver started again while the job was running (Dask re-ran it after its
    worker died): the job resumes from its last published stage."""


@dataclass(frozen=True)
class Succeeded(Event):
    pass


@dataclass(frozen=True)
class Failed(Event):
    error: str


@dataclass(frozen=True)
class Cancelled(Event):
    cause: str = "cancelled by an operator"


@dataclass(frozen=True)
class Interrupted(Event):
    """The driver was told to stop (SIGTERM, Ctrl-C): it stopped at a task boundary."""

    cause: str


@dataclass(frozen=True)
class DriverLost(Event):
    reason: str


@dataclass(frozen=True)
class Persist:
    """Write the state (state.json) and append the event (events.jsonl)."""

    state: JobState
    event: Event


@dataclass(frozen=True)
class Log:
    level: str
    message: str
    fields: dict[str, Any] = field(default_factory=dict)


def apply(state: JobState | None, event: Event) -> tuple[JobState, list]:
    """The next state and what to do about it. Raises JobError on an impossible transition."""
    if isinstance(event, Submitted):
        if state is not None:
            raise JobError(f"job {state.job_id} was already submitted")
        new = JobState(job_id=event.job_id, name=event.name, stages=tuple(event.stages), submitted_at=event.at,
                       heartbeat=event.at, scheduler=event.scheduler)
        return new, [Persist(new, event), Log("info", "job submitted", {"stages": list(event.stages)})]
    if state is None:
        raise JobError(f"{type(event).__name__} before the job was submitted")
    if state.status in TERMINAL:
        if isinstance(event, (Heartbeat, Progress, DriverLost)):
            return state, []  # late reports of a finished job change nothing
        raise JobError(f"job {state.job_id} is {state.status}; cannot apply {type(event).__name__}")
    if isinstance(event, Heartbeat):
        new = replace(state, heartbeat=event.at)
        return new, [Persist(new, event)]
    if isinstance(event, Started):
        if state.status != "queued":
            raise JobError(f"job {state.job_id} already started")
        new = replace(state, status="running", started_at=event.at, heartbeat=event.at)
        return new, [Persist(new, event), Log("info", "job started")]
    if isinstance(event, (Cancelled, Interrupted)):  # a queued job can be cancelled before its driver starts
        status = "cancelled" if isinstance(event, Cancelled) else "interrupted"
        new = replace(state, status=status, finished_at=event.at, cause=event.cause, step=None, heartbeat=event.at)
        return new, [Persist(new, event), Log("warning", f"job {status}", {"cause": event.cause})]
    if state.status != "running" and not isinstance(event, Failed):  # a driver may fail before it starts
        raise JobError(f"job {state.job_id} is {state.status}; {type(event).__name__} needs a running job")
    if isinstance(event, DriverRestarted):
        new = replace(state, stage_index=-1, stage=None, step=None, heartbeat=event.at, skipped=())
        return new, [Persist(new, event), Log("warning", "driver restarted (its worker was lost): resuming from the "
                                                         "last published stage")]
    if isinstance(event, (StageStarted, StageSkipped)):
        if not 0 <= event.index < len(state.stages) or event.index <= state.stage_index:
            raise JobError(f"stage index {event.index} out of order (current {state.stage_index})")
        name = state.stages[event.index]
        if isinstance(event, StageSkipped):
            new = replace(state, stage_index=event.index, stage=name, skipped=(*state.skipped, name), step=None,
                          heartbeat=event.at)
            return new, [Persist(new, event), Log("info", f"stage {name} skipped: {event.reason}", {"stage": name})]
        new = replace(state, stage_index=event.index, stage=name, step=None, step_done=0, step_total=0,
                      heartbeat=event.at)
        return new, [Persist(new, event), Log("info", f"stage {name} started", {"stage": name})]
    if isinstance(event, Progress):
        new = replace(state, step=event.step, step_done=event.done, step_total=event.total, heartbeat=event.at)
        return new, [Persist(new, event)]
    if isinstance(event, StageFinished):
        if event.index != state.stage_index:
            raise JobError(f"stage {event.index} finished but stage {state.stage_index} is running")
        seconds = {**state.stage_seconds, state.stages[event.index]: round(event.seconds, 3)}
        new = replace(state, stage_seconds=seconds, step=None, heartbeat=event.at)
        return new, [Persist(new, event), Log("info", f"stage {state.stage} finished",
                                              {"stage": state.stage, "seconds": round(event.seconds, 3)})]
    if isinstance(event, Succeeded):
        new = replace(state, status="succeeded", finished_at=event.at, step=None, heartbeat=event.at)
        return new, [Persist(new, event), Log("info", "job succeeded")]
    if isinstance(event, Failed):
        new = replace(state, status="failed", finished_at=event.at, error=event.error, heartbeat=event.at)
        return new, [Persist(new, event), Log("error", "job failed", {"error": event.error})]
    if isinstance(event, DriverLost):
        new = replace(state, status="failed", finished_at=event.at, error=event.reason)
        return new, [Persist(new, event), Log("error", "job lost", {"error": event.reason})]
    raise JobError(f"unknown event {event!r}")


# ------------------------------------------------------------------ the output directory's lock


@dataclass(frozen=True)
class LockHolder:
    """Who holds an output directory: a job's run and its driver (process, host, heartbeat).

    ``queued``: held for a submitted job whose driver has not started; nothing beats for it
    until then, so it never goes stale (cancelling the job frees it). ``token`` tells one
    acquisition from another (a restarted driver takes over its own job's lock)."""

    job_id: str
    token: str
    pid: int
    host: str
    since: float
    heartbeat: float
    queued: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> LockHolder:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class LockVerdict:
    """``take`` the lock or not, why, and the event that closes the holder's run when the
    lock is taken from a run whose driver is gone (``None``: nothing to record)."""

    take: bool
    reason: str
    close_holder: DriverLost | None = None


def lock_verdict(holder: LockHolder | None, holder_state: JobState | None, *, job_id: str, now: float,
                 stale_after: float, holder_alive: bool | None) -> LockVerdict:
    """May ``job_id`` take the directory's lock from ``holder`` (whose run is ``holder_state``)?

    ``holder_alive``: whether the holder's process still exists, when that can be known (it
    runs on this host); ``None`` otherwise, and then only its heartbeat tells."""
    if holder is None:
        return LockVerdict(True, "free")
    if holder.job_id == job_id:
        return LockVerdict(True, "held for this job (queued, or its driver restarted)")
    if holder_state is not None and holder_state.status in TERMINAL:
        return LockVerdict(True, f"job {holder.job_id} is {holder_state.status}")
    if holder.queued:
        if holder_state is None:
            return LockVerdict(True, f"job {holder.job_id} has no record")
        return LockVerdict(False, f"job {holder.job_id} is queued (submitted {_ago(now - holder.since)} ago); "
                                  f"wait for it or cancel it: nirlink cancel {holder.job_id}")
    silent = now - holder.heartbeat
    if holder_alive is False:
        why = f"its driver (process {holder.pid} on {holder.host}) is gone"
    elif silent > stale_after:
        why = f"no heartbeat for {_ago(silent)}: its driver stopped (process {holder.pid} on {holder.host})"
    else:
        return LockVerdict(False, f"job {holder.job_id} is running (process {holder.pid} on {holder.host}, "
                                  f"last heartbeat {_ago(silent)} ago)")
    lost = DriverLost(now, why) if holder_state is not None and holder_state.status == "running" else None
    return LockVerdict(True, f"taken over from job {holder.job_id}: {why}", lost)


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"
