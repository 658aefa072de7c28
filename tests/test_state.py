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
