"""Job state as a small state machine: events in, a new state and instructions out. No I/O here.

States: submitted -> running (stage k of n) -> succeeded | failed | cancelled. The runner
turns instructions into file writes (state.json, events.jsonl, the job log); tests drive the
machine with plain events.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from nirlink.kernels import JobError

__all__ = ["JobState", "Event", "Submitted", "Started", "StageStarted", "StageSkipped", "StageFinished", "Progress",
           "Heartbeat", "DriverRestarted", "Succeeded", "Failed", "Cancelled", "DriverLost", "Persist", "Log", "apply", "TERMINAL"]

TERMINAL = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class JobState:
    job_id: str
    name: str
    stages: tuple[str, ...]
    status: str = "submitted"
    stage_index: int = -1
    stage: str | None = None
    submitted_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    heartbeat: float | None = None
    error: str | None = None
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
        d = dict(d)
        d["stages"] = tuple(d.get("stages", ()))
        d["skipped"] = tuple(d.get("skipped", ()))
        return cls(**d)

    def describe(self) -> str:
        if self.status == "running":
            k = self.stage_index + 1
            step = f", {self.step} {self.step_done}/{self.step_total}" if self.step else ""
            return f"running stage {k}/{len(self.stages)} ({self.stage}{step})"
        if self.status == "failed":
            return f"failed: {self.error}"
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
    pass


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
        if state.status != "submitted":
            raise JobError(f"job {state.job_id} already started")
        new = replace(state, status="running", started_at=event.at, heartbeat=event.at)
        return new, [Persist(new, event), Log("info", "job started")]
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
    if isinstance(event, Cancelled):
        new = replace(state, status="cancelled", finished_at=event.at, heartbeat=event.at)
        return new, [Persist(new, event), Log("warning", "job cancelled")]
    if isinstance(event, DriverLost):
        new = replace(state, status="failed", finished_at=event.at, error=event.reason)
        return new, [Persist(new, event), Log("error", "job lost", {"error": event.reason})]
    raise JobError(f"unknown event {event!r}")
