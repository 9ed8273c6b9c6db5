"""One transcoding job's state: tasks, leases with deadlines, retries, acceptance checks.

Theory of operation
-------------------
Pure logic: no I/O, no clock. Every call that depends on time takes ``now`` (seconds on
a monotonic clock); :meth:`Plan.get_timer` says when :meth:`Plan.handle_timer` is next
due, and the driver (app.py) sleeps until then.

A job is a list of :class:`Task`: one per video segment (cut on keyframes by the
server) and one for the audio. Each task moves through :class:`TaskState`::

    PENDING --assign--> LEASED --accept--> DONE
       ^                  |
       +--- expire -------+   lease past its deadline, or its worker silent too long
       +--- fail ---------+   worker reported an error, or its result failed the checks

Issue 8: "A segment handed out and not returned within a timeout, or whose worker
disappeared, goes out again; a returned segment is checked (duration, streams) before
it is accepted." A lease has two deadlines: ``lease_timeout`` after hand-out, and
``worker_timeout`` after the last packet from its worker (workers send ``alive`` every
few seconds while they work). A result for a task that is not yet done is checked and
accepted whoever returns it, even from a lease that already expired: the work is done.
Results for done tasks are ignored.

Failures (a worker's ffmpeg error, a result failing :func:`check_result`) count against
the task; a task is not handed again to a worker that failed it while another task is
pending for it. The job fails when one task has failed ``max_failures`` times, or the
whole job ``4 * max_failures`` times (a parameter every worker's ffmpeg rejects).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from smartget.transcode.ffmpeg import Probe

__all__ = [
    "DURATION_TOLERANCE",
    "JobDone",
    "JobFailed",
    "LeaseExpired",
    "Plan",
    "Task",
    "TaskAccepted",
    "TaskFailed",
    "TaskState",
    "check_result",
]

# A result may differ from its source by this much (plus 1 %): containers round, and
# audio encoders add priming. Frame counts, when the job keeps frames, must be equal.
DURATION_TOLERANCE = 0.25


class TaskState(enum.Enum):
    PENDING = "pending"  # waiting for a worker
    LEASED = "leased"  # handed out; goes back to PENDING when a deadline passes
    DONE = "done"  # a checked result is accepted


@dataclass
class Task:
    index: int
    kind: str  # "video" (one segment of the first video stream) or "audio" (all of it)
    name: str  # the source file's name in the job directory
    source: Probe
    state: TaskState = TaskState.PENDING
    worker: str | None = None
    lease_deadline: float = 0.0
    handouts: int = 0
    failures: int = 0
    failed_by: set[str] = field(default_factory=set)
    last_error: str = ""
    result: str | None = None  # the accepted result's file name
    result_probe: Probe | None = None


@dataclass(frozen=True)
class LeaseExpired:
    task: Task
    worker: str
    reason: str


@dataclass(frozen=True)
class TaskAccepted:
    task: Task
    worker: str


@dataclass(frozen=True)
class TaskFailed:
    task: Task
    worker: str
    reason: str


@dataclass(frozen=True)
class JobDone:
    pass


@dataclass(frozen=True)
class JobFailed:
    reason: str


Event = LeaseExpired | TaskAccepted | TaskFailed | JobDone | JobFailed


def check_result(task: Task, result: Probe, same_frames: bool) -> str | None:
    """Why ``result`` cannot stand for ``task`` (None: accept). Issue 8's checks."""
    src = task.source
    if task.kind == "video":
        if result.video_streams != 1 or result.audio_streams != 0:
            return (
                f"expected 1 video stream and no audio, got {result.video_streams} video "
                f"and {result.audio_streams} audio"
            )
        if same_frames and result.frames != src.frames:
            return f"expected {src.frames} frames, got {result.frames}"
    elif result.audio_streams != src.audio_streams or result.video_streams != 0:
        return (
            f"expected {src.audio_streams} audio streams and no video, got "
            f"{result.audio_streams} audio and {result.video_streams} video"
        )
    limit = DURATION_TOLERANCE + 0.01 * src.duration
    if abs(result.duration - src.duration) > limit:
        return f"expected {src.duration:.3f} s (±{limit:.2f}), got {result.duration:.3f} s"
    return None


class Plan:
    """The tasks of one job and who holds them."""

    def __init__(
        self,
        tasks: Iterable[Task],
        *,
        lease_timeout: float = 600.0,
        worker_timeout: float = 15.0,
        max_failures: int = 3,
        same_frames: bool = True,
    ) -> None:
        self.tasks = list(tasks)
        if not self.tasks:
            raise ValueError("a plan needs at least one task")
        self.lease_timeout = lease_timeout
        self.worker_timeout = worker_timeout
        self.max_failures = max_failures
        self.same_frames = same_frames
        self.failure: str | None = None
        self.total_failures = 0
        self.expired = 0
        self._last_seen: dict[str, float] = {}
        self._done = 0

    # -- queries ----------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self._done == len(self.tasks)

    @property
    def finished(self) -> bool:
        """Done or failed: nothing more to hand out."""
        return self.done or self.failure is not None

    @property
    def done_count(self) -> int:
        return self._done

    def active_workers(self, now: float) -> int:
        return sum(1 for t in self._last_seen.values() if now - t < self.worker_timeout)

    def leased_to(self, worker: str) -> list[Task]:
        return [t for t in self.tasks if t.state is TaskState.LEASED and t.worker == worker]

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` is next due (None: no lease out)."""
        deadlines = [self._deadline(t) for t in self.tasks if t.state is TaskState.LEASED]
        return min(deadlines) if deadlines else None

    def _deadline(self, task: Task) -> float:
        seen = self._last_seen.get(task.worker or "", 0.0)
        return min(task.lease_deadline, seen + self.worker_timeout)

    # -- commands ---------------------------------------------------------------------

    def seen(self, worker: str, now: float) -> None:
        """Any packet from ``worker``: it is alive, and so are its leases."""
        self._last_seen[worker] = max(now, self._last_seen.get(worker, now))

    def assign(self, worker: str, now: float) -> Task | None:
        """The next task for ``worker`` (leased to it), or None if none is pending."""
        self.seen(worker, now)
        if self.finished:
            return None
        pending = [t for t in self.tasks if t.state is TaskState.PENDING]
        if not pending:
            return None
        # Audio first: it is one long task and the join waits for it.
        fresh = [t for t in pending if worker not in t.failed_by] or pending
        task = min(fresh, key=lambda t: (t.kind != "audio", t.index))
        task.state = TaskState.LEASED
        task.worker = worker
        task.lease_deadline = now + self.lease_timeout
        task.handouts += 1
        return task

    def wants_result(self, index: int) -> Task | None:
        """The task a returned result is for, if it still needs one."""
        if self.finished or not 0 <= index < len(self.tasks):
            return None
        task = self.tasks[index]
        return None if task.state is TaskState.DONE else task

    def accept(self, index: int, worker: str, name: str, probe: Probe, now: float) -> list[Event]:
        """A returned result, probed: check it; accept it or count a failure."""
        self.seen(worker, now)
        task = self.wants_result(index)
        if task is None:
            return []
        problem = check_result(task, probe, self.same_frames)
        if problem is not None:
            return self.fail(index, worker, f"result rejected: {problem}", now)
        task.state = TaskState.DONE
        task.result = name
        task.result_probe = probe
        task.worker = worker
        self._done += 1
        events: list[Event] = [TaskAccepted(task, worker)]
        if self.done:
            events.append(JobDone())
        return events

    def fail(self, index: int, worker: str, reason: str, now: float) -> list[Event]:
        """``worker`` could not do task ``index`` (its ffmpeg failed, or a bad result)."""
        self.seen(worker, now)
        task = self.wants_result(index)
        if task is None:
            return []
        task.failures += 1
        task.failed_by.add(worker)
        task.last_error = reason
        self.total_failures += 1
        if task.state is TaskState.LEASED and task.worker == worker:
            task.state = TaskState.PENDING
            task.worker = None
        events: list[Event] = [TaskFailed(task, worker, reason)]
        if task.failures >= self.max_failures or self.total_failures >= 4 * self.max_failures:
            what = "task" if task.kind == "audio" else "segment"
            self.failure = (
                f"{what} {task.index} failed {task.failures} times "
                f"({self.total_failures} failures in the job); last, on {worker}: {reason}"
            )
            events.append(JobFailed(self.failure))
        return events

    def handle_timer(self, now: float) -> list[Event]:
        """Put back every lease past its deadline, or whose worker went silent."""
        events: list[Event] = []
        for task in self.tasks:
            if task.state is not TaskState.LEASED or now < self._deadline(task):
                continue
            worker = task.worker or "?"
            if now >= task.lease_deadline:
                reason = f"not returned within {self.lease_timeout:g} s"
            else:
                reason = f"worker silent for {self.worker_timeout:g} s"
            task.state = TaskState.PENDING
            task.worker = None
            self.expired += 1
            events.append(LeaseExpired(task, worker, reason))
        return events

    def statistics(self) -> dict[str, Any]:
        states = [t.state for t in self.tasks]
        return {
            "tasks": len(self.tasks),
            "done": self._done,
            "leased": states.count(TaskState.LEASED),
            "pending": states.count(TaskState.PENDING),
            "handouts": sum(t.handouts for t in self.tasks),
            "failures": self.total_failures,
            "expired": self.expired,
            "workers_seen": len(self._last_seen),
            "failure": self.failure,
        }
