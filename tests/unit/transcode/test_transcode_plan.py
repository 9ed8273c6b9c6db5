"""The job plan: leases, deadlines, retries, checks. Pure logic: a fake clock, no I/O."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smartget.transcode.ffmpeg import Probe
from smartget.transcode.plan import (
    JobDone,
    JobFailed,
    LeaseExpired,
    Plan,
    Task,
    TaskAccepted,
    TaskFailed,
    TaskState,
    check_result,
)

SEG = Probe(duration=4.0, video_streams=1, audio_streams=0, frames=100)
AUDIO = Probe(duration=30.0, video_streams=0, audio_streams=1, frames=0)


def make_plan(segments: int = 3, audio: bool = True, **kw: object) -> Plan:
    tasks = [Task(i, "video", f"seg{i:05d}.mkv", SEG) for i in range(segments)]
    if audio:
        tasks.append(Task(segments, "audio", "audio.mka", AUDIO))
    kw.setdefault("lease_timeout", 100.0)
    kw.setdefault("worker_timeout", 10.0)
    return Plan(tasks, **kw)  # type: ignore[arg-type]


def test_audio_goes_first_then_segments_in_order() -> None:
    plan = make_plan()
    order = [plan.assign("w", 0.0) for _ in range(5)]
    assert [t.index if t else None for t in order] == [3, 0, 1, 2, None]
    assert all(t.state is TaskState.LEASED for t in plan.tasks)


def test_accepting_every_task_finishes_the_job() -> None:
    plan = make_plan(segments=2)
    events = []
    for _ in range(3):
        task = plan.assign("w", 0.0)
        assert task is not None
        events += plan.accept(task.index, "w", f"r{task.index}", task.source, 1.0)
    assert plan.done
    assert plan.finished
    assert isinstance(events[-1], JobDone)
    assert sum(isinstance(e, TaskAccepted) for e in events) == 3
    assert plan.assign("w", 2.0) is None


def test_lease_past_its_deadline_goes_out_again() -> None:
    plan = make_plan(segments=1, audio=False, lease_timeout=50.0, worker_timeout=1000.0)
    task = plan.assign("slow", 0.0)
    assert task is not None
    assert plan.get_timer() == 50.0
    assert plan.handle_timer(49.9) == []
    (event,) = plan.handle_timer(50.0)
    assert isinstance(event, LeaseExpired)
    assert event.worker == "slow"
    assert "not returned within 50 s" in event.reason
    again = plan.assign("fast", 51.0)
    assert again is task
    assert task.handouts == 2


def test_silent_worker_loses_its_leases_and_alive_keeps_them() -> None:
    plan = make_plan(segments=2, audio=False, worker_timeout=10.0)
    a = plan.assign("gone", 0.0)
    b = plan.assign("busy", 0.0)
    assert a is not None
    assert b is not None
    for now in (5.0, 12.0, 19.0):
        plan.seen("busy", now)  # "alive" packets
        events = plan.handle_timer(now)
        if now >= 10.0:
            assert [e.task for e in events if isinstance(e, LeaseExpired)] in ([a], [])
    assert a.state is TaskState.PENDING
    assert b.state is TaskState.LEASED
    assert plan.get_timer() == 29.0
    assert plan.active_workers(19.0) == 1


def test_late_result_from_an_expired_lease_is_accepted_and_the_duplicate_ignored() -> None:
    plan = make_plan(segments=1, audio=False, worker_timeout=5.0)
    task = plan.assign("w1", 0.0)
    assert task is not None
    plan.handle_timer(6.0)
    assert plan.assign("w2", 6.0) is task
    events = plan.accept(0, "w1", "late", SEG, 7.0)
    assert isinstance(events[0], TaskAccepted)
    assert task.result == "late"
    assert plan.accept(0, "w2", "dup", SEG, 8.0) == []
    assert plan.wants_result(0) is None
    assert task.result == "late"


def test_failed_task_goes_to_another_worker_first() -> None:
    plan = make_plan(segments=2, audio=False)
    task = plan.assign("bad", 0.0)
    assert task is not None
    (event,) = plan.fail(task.index, "bad", "ffmpeg exploded", 1.0)
    assert isinstance(event, TaskFailed)
    nxt = plan.assign("bad", 2.0)
    assert nxt is not None
    assert nxt.index == 1  # not task 0 again while another is pending
    assert plan.assign("good", 3.0) is task


def test_job_fails_after_max_failures_of_one_task() -> None:
    plan = make_plan(segments=1, audio=False, max_failures=3)
    events = []
    for i in range(3):
        assert plan.assign(f"w{i}", float(i)) is not None
        events = plan.fail(0, f"w{i}", "Unknown encoder 'x'", float(i))
    assert isinstance(events[-1], JobFailed)
    assert "segment 0 failed 3 times" in events[-1].reason
    assert "Unknown encoder 'x'" in events[-1].reason
    assert plan.finished
    assert not plan.done
    assert plan.assign("w9", 9.0) is None


def test_job_fails_when_one_worker_fails_everything() -> None:
    plan = make_plan(segments=20, audio=False, max_failures=3)
    failed = None
    for step in range(100):
        task = plan.assign("only", float(step))
        assert task is not None
        events = plan.fail(task.index, "only", "bad", float(step))
        failed = next((e for e in events if isinstance(e, JobFailed)), None)
        if failed:
            break
    assert failed is not None
    assert plan.total_failures == 12  # 4 * max_failures


def test_rejected_result_counts_as_a_failure() -> None:
    plan = make_plan(segments=1, audio=False)
    assert plan.assign("w", 0.0) is not None
    short = Probe(duration=4.0, video_streams=1, audio_streams=0, frames=99)
    events = plan.accept(0, "w", "r", short, 1.0)
    assert isinstance(events[0], TaskFailed)
    assert "expected 100 frames, got 99" in events[0].reason
    assert plan.tasks[0].state is TaskState.PENDING


@pytest.mark.parametrize(
    ("kind", "result", "problem"),
    [
        ("video", SEG, None),
        ("video", Probe(4.2, 1, 0, 100), None),
        ("video", Probe(5.0, 1, 0, 100), "expected 4.000 s"),
        ("video", Probe(4.0, 1, 1, 100), "no audio"),
        ("video", Probe(4.0, 0, 0, 0), "expected 1 video stream"),
        ("audio", AUDIO, None),
        ("audio", Probe(30.0, 1, 1, 10), "no video"),
        ("audio", Probe(29.0, 0, 1, 0), "expected 30.000 s"),
    ],
)
def test_check_result(kind: str, result: Probe, problem: str | None) -> None:
    task = Task(0, kind, "x", SEG if kind == "video" else AUDIO)
    found = check_result(task, result, same_frames=True)
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert problem in found


def test_frame_check_is_skipped_when_the_job_changes_frames() -> None:
    task = Task(0, "video", "x", SEG)
    assert check_result(task, Probe(4.0, 1, 0, 120), same_frames=False) is None


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["assign", "accept", "fail", "seen", "timer"]),
            st.sampled_from(["a", "b", "c"]),
            st.integers(min_value=-1, max_value=4),
            st.floats(min_value=0, max_value=5, allow_nan=False),
        ),
        max_size=60,
    )
)
def test_any_sequence_keeps_the_plan_consistent(ops: list[tuple[str, str, int, float]]) -> None:
    plan = make_plan(segments=3, audio=True, lease_timeout=20.0, worker_timeout=3.0)
    now = 0.0
    for op, worker, index, step in ops:
        now += step
        if op == "assign":
            plan.assign(worker, now)
        elif op == "accept":
            plan.accept(index, worker, "r", plan.tasks[max(index, 0) % 4].source, now)
        elif op == "fail":
            plan.fail(index, worker, "x", now)
        elif op == "seen":
            plan.seen(worker, now)
        else:
            plan.handle_timer(now)
        done = [t for t in plan.tasks if t.state is TaskState.DONE]
        assert plan.done_count == len(done)
        assert all(t.worker for t in plan.tasks if t.state is TaskState.LEASED)
        assert all(t.result for t in done)
        timer = plan.get_timer()
        leased = any(t.state is TaskState.LEASED for t in plan.tasks)
        assert (timer is not None) == leased
