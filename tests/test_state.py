"""The job state machine, driven by plain events (no files, no cluster)."""

import pytest

from nirlink.engine import JobError
from nirlink.engine.jobs._state import (
    Cancelled,
    DriverLost,
    Failed,
    Heartbeat,
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

STAGES = ("ingest", "link", "aggregate")


def run(events, state=None):
    out = []
    for e in events:
        state, ins = apply(state, e)
        out.append(ins)
    return state, out


def test_a_job_goes_from_submitted_to_succeeded():
    state, instructions = run([
        Submitted(1.0, "j1", "demo", STAGES), Started(2.0), StageStarted(3.0, 0), Progress(3.5, "read", 2, 5),
        StageFinished(4.0, 0, 1.0), StageSkipped(4.5, 1), StageStarted(5.0, 2), StageFinished(6.0, 2, 1.0),
        Succeeded(7.0)])
    assert state.status == "succeeded" and state.finished_at == 7.0
    assert state.skipped == ("link",) and state.stage_seconds == {"ingest": 1.0, "aggregate": 1.0}
    assert all(any(isinstance(i, Persist) for i in ins) for ins in instructions)
    assert [i.message for ins in instructions for i in ins if isinstance(i, Log)][-1] == "job succeeded"


def test_describe_running_stage():
    state, _ = run([Submitted(1, "j", "n", STAGES), Started(2), StageStarted(3, 0), StageFinished(4, 0, 1),
                    StageStarted(5, 1), Progress(6, "score", 3, 9)])
    assert state.describe() == "running stage 2/3 (link, score 3/9)"


@pytest.mark.parametrize("events,fragment", [
    ([Started(1)], "before the job was submitted"),
    ([Submitted(1, "j", "n", STAGES), Submitted(2, "j", "n", STAGES)], "already submitted"),
    ([Submitted(1, "j", "n", STAGES), StageStarted(2, 0)], "needs a running job"),
    ([Submitted(1, "j", "n", STAGES), Started(2), StageStarted(3, 1), StageStarted(4, 0)], "out of order"),
    ([Submitted(1, "j", "n", STAGES), Started(2), StageStarted(3, 0), StageFinished(4, 1, 1)], "finished but"),
    ([Submitted(1, "j", "n", STAGES), Started(2), Succeeded(3), StageStarted(4, 0)], "is succeeded"),
])
def test_impossible_transitions_are_refused(events, fragment):
    with pytest.raises(JobError, match=fragment):
        run(events)


def test_failure_cancel_and_lost_driver():
    failed, _ = run([Submitted(1, "j", "n", STAGES), Started(2), StageStarted(3, 0), Failed(4, "stage ingest: boom")])
    assert failed.status == "failed" and failed.describe() == "failed: stage ingest: boom"
    cancelled, _ = run([Submitted(1, "j", "n", STAGES), Started(2), Cancelled(3)])
    assert cancelled.status == "cancelled"
    lost, _ = run([Submitted(1, "j", "n", STAGES), Started(2), DriverLost(9, "no heartbeat")])
    assert lost.status == "failed" and lost.error == "no heartbeat"


def test_a_restarted_driver_resumes_from_the_first_stage():
    from nirlink.engine.jobs._state import DriverRestarted

    state, _ = run([Submitted(1, "j", "n", STAGES), Started(2), StageStarted(3, 0), StageFinished(4, 0, 1),
                    StageStarted(5, 1), DriverRestarted(6), StageSkipped(7, 0), StageStarted(8, 1)])
    assert state.status == "running" and state.stage == "link" and state.skipped == ("ingest",)


def test_late_reports_of_a_finished_job_change_nothing():
    state, _ = run([Submitted(1, "j", "n", STAGES), Started(2), Succeeded(3)])
    again, ins = apply(state, Heartbeat(10))
    assert again == state and ins == []
    again, ins = apply(state, DriverLost(11, "late"))
    assert again.status == "succeeded" and ins == []


def test_state_round_trips_through_json():
    from nirlink.engine.jobs._state import JobState

    state, _ = run([Submitted(1, "j", "n", STAGES, "tcp://x:1"), Started(2), StageSkipped(3, 0)])
    assert JobState.from_json(state.to_json()) == state


def test_a_driver_that_cannot_start_fails_the_submitted_job():
    failed, instructions = run([Submitted(1, "j", "n", STAGES), Failed(2, "driver cannot connect")])
    assert failed.status == "failed" and failed.started_at is None
    assert failed.describe() == "failed: driver cannot connect"
    assert any(isinstance(i, Persist) for i in instructions[-1])


def test_a_queued_job_can_be_cancelled_before_its_driver_starts():
    from nirlink.engine.jobs._state import JobState

    queued, _ = run([Submitted(1, "j", "n", STAGES)])
    assert queued.status == "queued" and queued.describe() == "queued"
    cancelled, instructions = apply(queued, Cancelled(2, "cancelled by an operator before it started"))
    assert cancelled.status == "cancelled" and cancelled.finished_at == 2 and cancelled.started_at is None
    assert cancelled.describe() == "cancelled by an operator before it started"
    assert [i.message for i in instructions if isinstance(i, Log)] == ["job cancelled"]
    with pytest.raises(JobError, match="is cancelled; cannot apply Started"):
        apply(cancelled, Started(3))  # its driver, starting late, finds the run closed
    with pytest.raises(JobError, match="is queued; DriverLost needs a running job"):
        apply(queued, DriverLost(4, "no heartbeat"))  # a queued job has no driver to lose
    # a record written before runs had their own records, with a key this version does not know
    old = {**queued.to_json(), "status": "submitted", "from_the_future": 1}
    assert JobState.from_json(old) == queued


def test_an_interrupted_run_records_its_cause():
    from nirlink.engine.jobs._state import Interrupted

    state, _ = run([Submitted(1, "j", "n", STAGES), Started(2), StageStarted(3, 0), Interrupted(4, "interrupted by SIGTERM")])
    assert state.status == "interrupted" and state.cause == "interrupted by SIGTERM" and state.error is None
    assert state.describe() == "interrupted by SIGTERM" and state.stage == "ingest"
    again, ins = apply(state, Heartbeat(5))
    assert again == state and ins == []


def _holder(job_id="a", *, heartbeat=100.0, queued=False, pid=42, host="h1"):
    from nirlink.engine.jobs._state import LockHolder

    return LockHolder(job_id=job_id, token="t", pid=pid, host=host, since=50.0, heartbeat=heartbeat, queued=queued)


def test_lock_verdicts():
    from nirlink.engine.jobs._state import JobState, lock_verdict

    running = JobState("a", "n", STAGES, status="running", heartbeat=100.0)

    def verdict(holder, state, *, now=110.0, alive=None, job_id="b"):
        return lock_verdict(holder, state, job_id=job_id, now=now, stale_after=60, holder_alive=alive)

    assert verdict(None, None).take
    assert verdict(_holder("b"), running, job_id="b").take  # its own job: a restarted driver, or queued by submit
    busy = verdict(_holder(), running)
    assert not busy.take and "job a is running (process 42 on h1, last heartbeat 10 s ago)" in busy.reason
    assert not verdict(_holder(), running, alive=True).take
    # a live process does not save a holder whose run is over
    done = JobState("a", "n", STAGES, status="failed")
    assert verdict(_holder(), done, alive=True).take and verdict(_holder(), done).close_holder is None
    # dead or silent drivers lose the lock, and their run is closed as lost
    dead = verdict(_holder(), running, alive=False)
    assert dead.take and "process 42 on h1" in dead.reason and isinstance(dead.close_holder, DriverLost)
    stale = verdict(_holder(), running, now=100.0 + 61)
    assert stale.take and "no heartbeat for 61 s" in stale.close_holder.reason
    # a queued job has no driver yet: never stale, only cancelling it frees the directory
    queued = JobState("a", "n", STAGES, status="queued")
    waiting = verdict(_holder(queued=True, pid=1), queued, now=1e6, alive=False)
    assert not waiting.take and "queued" in waiting.reason and "nirlink cancel a" in waiting.reason
    assert verdict(_holder(queued=True), None, now=1e6).take  # a queued lock without a record: a withdrawn submit
