"""The jobs core: which job runs, and what each one needs done next. Sans-IO.

Theory of operation
-------------------
:class:`JobBook` holds every job (:mod:`.model`). It does nothing by itself: the driver
(:mod:`.runner`) calls :meth:`JobBook.poll` with ``now`` and the fleet, carries out the
commands it returns (each with a ``deadline`` by which it must be answered), and feeds
each answer back (:meth:`made`, :meth:`started`, :meth:`verified`, :meth:`pinged`,
:meth:`progress`, ... and their ``*_failed`` twins). :meth:`next_deadline` says when
to poll again at the latest.

The book is level-triggered: a command is derived from a record's state, and the state
moves to "in flight" (``MAKING``, ``STARTING``, ``VERIFYING``) when the command goes
out. :meth:`restore` moves what was in flight back, so a hub that was killed mid-job
sends those commands again (every node task it sends is idempotent: ``maketorrent`` of a
file that is there makes the same torrent, ``download`` of a running torrent answers
``already``). An answer that does not come by the command's deadline counts as a
failure.

A job: ``queued`` until a running slot is free (``max_running``, higher ``priority``
first, then submission order) and its nodes are each in fewer than ``node_max_jobs``
running jobs; then ``running``: each file's torrent is made, every node downloads it (a
copy), each complete copy is read back and its SHA-256 compared with the reference (the
manifest's, or the seed's copy's). A striped file (the default, with two nodes or more)
is fetched from the origin by every node at once, node i its stripe i of the pieces, so
the origin sends each byte once without a whole file passing through one seed first:

* pipelined, tried first: every node makes the torrent from the one the origin
  publishes of the file (``<url>.torrent``: ``maketorrent`` with ``origin_torrent``), the
  seed's answer first in the book, the others' sent with it and checked against it (the
  same sha1); each downloads it while fetching its stripe, each piece offered to the
  peers as it arrives (``stripe`` of ``stripes``);
* where the origin has no torrent of it, each node fetches its stripe first
  (``prefetch``: the node hashes what it fetched); the seed makes the torrent from the
  stripes' digests, and each node starts with its stripe had, trading the rest. If a
  stripe fails (or the nodes saw different files), the file falls back to the seed
  fetching it whole (``maketorrent``).

A failed copy is tried again
after ``retry_after`` seconds, up to the job's ``attempts``; its reason is kept. At the
job's deadline what is not done is given up ("deadline") and stopped on its node.
The job ends ``done`` (every copy verified), ``partial``, ``failed`` (none) or
``cancelled``.

Events (:class:`JobEvent`) say what happened, numbered per job; the book keeps the
last ``max_events`` of each job and at most ``max_jobs`` jobs (the oldest finished
ones go first).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from smartget.errors import JobError, JobNotFoundError, MagnetError
from smartget.hub.jobs.model import (
    SOURCES,
    CopyRecord,
    CopyState,
    FileRecord,
    FileState,
    Job,
    JobEvent,
    JobSpec,
    JobState,
    NodeInfo,
    NodeRecord,
)
from smartget.node.magnet import parse_info_hash  # pure; no libtorrent

__all__ = [
    "Command",
    "FetchStripes",
    "JobBook",
    "MakeTorrent",
    "PingNode",
    "StartDownload",
    "StopDownload",
    "VerifyCopy",
    "torrent_url_of",
]

MAKE_TIMEOUT = 3600.0  # a maketorrent fetches the whole file from the origin
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
VERIFY_TIMEOUT = 600.0
PING_TIMEOUT = 2.0
PING_EVERY = 2.0
PING_FAILURES = 3  # consecutive failed pings before a node counts as gone
RETRY_AFTER = 2.0
STALL = 300.0  # seconds without progress before a download is given up
MAX_VERIFYING = 4  # copies read back at once, in all


@dataclass(frozen=True)
class FetchStripes:
    """Ask every node of a job to fetch its stripe of ``url`` (node i: stripe i)."""

    job_id: str
    file: int
    url: str
    nodes: tuple[NodeInfo, ...]
    deadline: float


@dataclass(frozen=True)
class MakeTorrent:
    """Ask the seed to fetch ``url`` and make its torrent (seed 003 ``maketorrent``).

    Striped: ``pieces`` (every piece's SHA-1, hex) make the torrent without a fetch, and
    the seed downloads the rest of it, its stripe ``have`` had. Pipelined: the pieces are
    those of ``origin_torrent``, and the seed fetches stripe ``fetch`` (stripe, stripes)
    of the file while it downloads the rest."""

    job_id: str
    file: int
    node: NodeInfo
    url: str
    deadline: float
    pieces: str = ""
    piece_length: int = 0
    filesize: int = 0
    have: tuple[int, int] | None = None
    origin_torrent: str = ""
    fetch: tuple[int, int] | None = None


@dataclass(frozen=True)
class StartDownload:
    """Ask a node to ``download`` a torrent (answers at once)."""

    job_id: str
    file: int
    node: NodeInfo
    torrent_url: str
    sha1: str
    expire_at: float  # the job's deadline, for the node's own timer
    upload_limit: int
    deadline: float
    have: tuple[int, int] | None = None  # the pieces its stripe holds (striped)
    fetch: tuple[int, int] | None = None  # (stripe, stripes) to fetch from url (pipelined)
    url: str = ""  # the file at the origin (pipelined)
    # Pipelined, sent with the seed's MakeTorrent: the node makes the same torrent from the
    # origin's (maketorrent with origin_torrent) rather than wait for the seed's; its
    # sha1 is then checked against the seed's (JobBook.started, JobBook.made).
    origin_torrent: str = ""


@dataclass(frozen=True)
class StopDownload:
    """Ask a node to ``shutdown`` a torrent (cancel, deadline, given up)."""

    job_id: str
    node: NodeInfo
    sha1: str
    deadline: float


@dataclass(frozen=True)
class VerifyCopy:
    """Read a copy back from the node's file server and hash it; read its byte sources."""

    job_id: str
    file: int
    node: NodeInfo
    sha1: str
    torrent_url: str
    deadline: float


@dataclass(frozen=True)
class PingNode:
    node: NodeInfo
    deadline: float


Command = FetchStripes | MakeTorrent | StartDownload | StopDownload | VerifyCopy | PingNode


class JobBook:
    """Every job of the hub and what each needs next. No I/O, no clock: ``now`` comes in."""

    def __init__(
        self,
        *,
        max_running: int = 4,
        node_max_jobs: int = 4,
        max_jobs: int = 1000,
        max_events: int = 1000,
        retry_after: float = RETRY_AFTER,
        stall: float = STALL,
        new_id: Callable[[], str] | None = None,
    ) -> None:
        self.max_running = max_running
        self.node_max_jobs = node_max_jobs
        self.max_jobs = max_jobs
        self.max_events = max_events
        self.retry_after = retry_after
        self.stall = stall
        self._new_id = new_id
        self.jobs: dict[str, Job] = {}
        self.events: dict[str, list[JobEvent]] = {}
        self._order = 0
        self._new_events: list[JobEvent] = []
        self._dirty: set[str] = set()
        self._forgotten: list[str] = []
        self._pings: dict[str, NodeRecord] = {}  # nodeid -> the record a ping is out for
        # Copies started with their file's MakeTorrent (pipelined): (job, nodeid, file) ->
        # the sha1 the node answered ("" until it did), to be the seed's.
        self._early: dict[tuple[str, str, int], str] = {}
        self.outcomes: dict[str, int] = {}  # final job state -> jobs that ended so
        self.bytes_total: dict[str, int] = dict.fromkeys(SOURCES, 0)

    # -- submitting, cancelling, restoring --------------------------------------------

    def submit(self, spec: JobSpec, job_id: str, now: float) -> Job:
        if job_id in self.jobs:
            raise JobError(f"job {job_id} exists already")
        self._order += 1
        job = Job(
            id=job_id,
            order=self._order,
            spec=spec,
            created_at=now,
            files=[FileRecord(f.url, f.sha256) for f in spec.files],
        )
        self.jobs[job_id] = job
        self.events[job_id] = []
        self._event(job, now, "queued", f"queued: {len(spec.files)} file(s)")
        self._trim()
        return job

    def get(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise JobNotFoundError(f"no job has id {job_id!r}")
        return job

    def cancel(self, job_id: str, now: float) -> Job:
        """Cancel a job: what is not done is stopped on its node. A final job stays as it is."""
        job = self.get(job_id)
        if job.state.final:
            return job
        for node in job.nodes:
            for index, copy in enumerate(node.copies):
                if copy.state.final:
                    continue
                self._stop_copy(job, node, index)
                copy.state = CopyState.CANCELLED
                copy.reason = copy.reason or "cancelled"
        self._finish(job, now, JobState.CANCELLED, "cancelled by an operator")
        return job

    def restore(self, jobs: Iterable[Job], events: dict[str, list[JobEvent]]) -> None:
        """Jobs as saved; what was in flight when the hub stopped is to be sent again."""
        for job in sorted(jobs, key=lambda j: j.order):
            for f in job.files:
                if f.state in (FileState.MAKING, FileState.STRIPING):
                    f.state = FileState.PENDING  # stripes are fetched again, all of them
            for node in job.nodes:
                for copy in node.copies:
                    if copy.state in (CopyState.STARTING, CopyState.DOWNLOADING):
                        # Ask again: a running download answers "already", with its state.
                        copy.state = CopyState.PENDING
                        copy.attempts = max(0, copy.attempts - 1)
                    elif copy.state is CopyState.VERIFYING:
                        copy.state = CopyState.COMPLETE
            self.jobs[job.id] = job
            self.events[job.id] = list(events.get(job.id, []))[-self.max_events :]
            self._order = max(self._order, job.order)

    # -- what to do next ----------------------------------------------------------------

    def poll(self, now: float, fleet: Callable[[], list[NodeInfo]]) -> list[Command]:
        """Start what may start, give up what is past its deadline; the commands to send.

        ``fleet`` lists the live nodes; it is called only when a queued job may start.
        """
        commands: list[Command] = []
        self._start_queued(now, fleet)
        verifying = sum(
            c.state is CopyState.VERIFYING
            for job in self.jobs.values()
            for n in job.nodes
            for c in n.copies
        )
        for job in sorted(self.jobs.values(), key=lambda j: (-j.spec.priority, j.order)):
            while job.stops:
                nodeid, sha1 = job.stops.pop()
                record = job.node(nodeid)
                if record is not None:
                    commands.append(StopDownload(job.id, record.info, sha1, now + STOP_TIMEOUT))
                self._dirty.add(job.id)
            if job.state is not JobState.RUNNING:
                continue
            assert job.started_at is not None
            if now >= job.started_at + job.spec.deadline:
                self._deadline(job, now)
                commands.extend(self._drain_stops(job, now))
                continue
            commands.extend(self._file_commands(job, now))
            for node in job.nodes:
                for index, copy in enumerate(node.copies):
                    command = self._copy_command(job, node, index, copy, now, verifying)
                    if command is not None:
                        commands.append(command)
                        verifying += isinstance(command, VerifyCopy)
            self._maybe_finish(job, now)
        commands.extend(self._ping_commands(now))
        return commands

    def next_deadline(self) -> float | None:
        """When :meth:`poll` has something to do at the latest (None: only on news)."""
        times: list[float] = []
        for job in self.jobs.values():
            if job.stops:
                return 0.0
            if job.state is not JobState.RUNNING:
                continue
            assert job.started_at is not None
            times.append(job.started_at + job.spec.deadline)
            for f in job.files:
                if f.state is FileState.PENDING:
                    times.append(f.retry_at)
                elif f.state in (FileState.MAKING, FileState.STRIPING):
                    times.append(f.command_deadline)
            for node in job.nodes:
                if any(c.state in _WATCHED for c in node.copies):
                    times.append(node.ping_due)
                for copy in node.copies:
                    if copy.state is CopyState.PENDING:
                        times.append(copy.retry_at)
                    elif copy.state in (CopyState.STARTING, CopyState.VERIFYING):
                        times.append(copy.command_deadline)
                    elif copy.state is CopyState.DOWNLOADING:
                        times.append(copy.progress_at + self.stall)
        if any(j.state is JobState.QUEUED for j in self.jobs.values()):
            times.append(0.0)  # a queued job: poll when anything changes, and now and then
        return min(times, default=None)

    def running_sha1s(self) -> dict[str, list[tuple[str, str, int]]]:
        """sha1 -> (job id, nodeid, file) of every copy whose reports matter now."""
        found: dict[str, list[tuple[str, str, int]]] = {}
        for job in self.jobs.values():
            if job.state is not JobState.RUNNING:
                continue
            for node in job.nodes:
                for index, copy in enumerate(node.copies):
                    sha1 = job.files[index].sha1
                    if sha1 and copy.state in (CopyState.STARTING, CopyState.DOWNLOADING):
                        found.setdefault(sha1, []).append((job.id, node.nodeid, index))
        return found

    # -- answers --------------------------------------------------------------------------

    def made(
        self,
        job_id: str,
        file: int,
        now: float,
        *,
        sha1: str,
        filesize: int,
        torrent_url: str,
    ) -> None:
        job, f = self._file(job_id, file)
        if f is None or f.state is not FileState.MAKING:
            return
        f.state, f.sha1, f.filesize, f.torrent_url = FileState.MADE, sha1, filesize, torrent_url
        f.reason = ""
        seed = job.nodes[0]
        copy = seed.copies[file]
        if f.striped:  # the seed downloads the rest like every node
            f.pieces = ""
            copy.state, copy.attempts = CopyState.DOWNLOADING, 1
            copy.started_at = copy.progress_at = now
            text = f"torrent {sha1} made from {len(job.nodes)} stripes ({filesize:,} bytes)"
            if f.pipelined:
                text = (
                    f"torrent {sha1} made from the origin's ({filesize:,} bytes); "
                    f"{len(job.nodes)} nodes fetch a stripe each while they trade"
                )
            self._event(job, now, "made", text, seed, file)
            self._check_early(job, file, sha1, now)
            return
        copy.state, copy.percent, copy.attempts = CopyState.COMPLETE, 100.0, 1
        copy.done_at = now - (job.started_at or now)
        copy.bytes = {"origin": filesize, "peer_same_zone": 0, "peer_other_zone": 0}
        self._event(job, now, "made", f"torrent {sha1} made ({filesize:,} bytes)", seed, file)

    def prefetched(
        self,
        job_id: str,
        nodeid: str,
        file: int,
        now: float,
        *,
        first: int,
        end: int,
        pieces: str,
        stripe_bytes: int,
        filesize: int,
        piece_length: int,
        validators: str,
    ) -> None:
        """A node fetched its stripe, pieces [first, end) (``pieces``: their digests,
        hex), of a file the origin said is ``filesize`` bytes with ``validators`` (ETag,
        Last-Modified): every stripe must agree. The last stripe in makes the torrent."""
        job, f = self._file(job_id, file)
        node = job.node(nodeid)
        if f is None or f.state is not FileState.STRIPING or node is None:
            return
        copy = node.copies[file]
        copy.stripe, copy.stripe_pieces, copy.stripe_of = (first, end), pieces, validators
        copy.stripe_bytes = stripe_bytes
        self._dirty.add(job.id)
        if not f.piece_length:
            f.filesize, f.piece_length = filesize, piece_length
        elif (f.filesize, f.piece_length) != (filesize, piece_length):
            said = f"{filesize:,} bytes in pieces of {piece_length:,}"
            seen = f"{f.filesize:,} in pieces of {f.piece_length:,}"
            self._unstripe(job, file, f"{nodeid} saw {said}, another node {seen}", now)
            return
        copies = [n.copies[file] for n in job.nodes]
        if all(c.stripe is not None for c in copies):
            self._join_stripes(job, file, copies, now)

    def stripe_failed(self, job_id: str, nodeid: str, file: int, reason: str, now: float) -> None:
        """A node could not fetch its stripe: the seed fetches the whole file instead."""
        job, f = self._file(job_id, file)
        if f is not None and f.state is FileState.STRIPING:
            self._unstripe(job, file, f"{nodeid}: {reason}", now)

    def make_failed(self, job_id: str, file: int, reason: str, now: float) -> None:
        job, f = self._file(job_id, file)
        if f is None or f.state is not FileState.MAKING:
            return
        if f.pipelined:  # no usable torrent at the origin: stripes are fetched first
            f.pipelined, f.state, f.retry_at = False, FileState.PENDING, now
            self._unstart_early(job, file)
            text = (
                f"no torrent of it from the origin ({reason}); each node fetches its stripe first"
            )
            self._event(job, now, "unpipelined", text, job.nodes[0], file)
            return
        self._event(job, now, "make-failed", f"maketorrent failed: {reason}", job.nodes[0], file)
        if f.striped:
            self._unstripe(job, file, f"the torrent could not be made from them: {reason}", now)
            return
        if f.attempts < job.spec.attempts:
            f.state, f.reason, f.retry_at = FileState.PENDING, reason, now + self.retry_after
            return
        f.state, f.reason = FileState.FAILED, reason
        for node in job.nodes:
            copy = node.copies[file]
            if not copy.state.final:
                copy.state = CopyState.FAILED
                copy.reason = f"its torrent could not be made: {reason}"

    def set_origin_bytes(self, job_id: str, file: int, count: int) -> None:
        """The origin's count of bytes it sent for a file (also once its job ended)."""
        job = self.jobs.get(job_id)
        if job is not None and 0 <= file < len(job.files):
            job.files[file].origin_bytes = count
            self._dirty.add(job.id)

    def settles_file(self, job_id: str, nodeid: str, file: int) -> bool:
        """Whether every copy of a file but ``nodeid``'s is verified or given up (so its
        bytes have all moved), or the job is gone."""
        job = self.jobs.get(job_id)
        if job is None or job.state.final:
            return True
        return all(
            n.copies[file].state.final
            for n in job.nodes
            if n.nodeid != nodeid and file < len(n.copies)
        )

    def started(
        self, job_id: str, nodeid: str, file: int, status: str, now: float, *, sha1: str = ""
    ) -> None:
        """The node took the download; ``status`` is its answer's (seeding: had it already).
        ``sha1``: the torrent it made from the origin's (a copy started early)."""
        found = self._copy(job_id, nodeid, file, CopyState.STARTING)
        if found is None:
            return
        job, node, copy = found
        key = (job_id, nodeid, file)
        if key in self._early:
            try:  # a fleet node's answer: kept and shown only once it is an info-hash
                sha1 = parse_info_hash(sha1)
            except MagnetError as exc:
                self.start_failed(job_id, nodeid, file, f"its answer is no torrent: {exc}", now)
                return
            made = job.files[file].sha1
            if not made:
                self._early[key] = sha1  # checked when the seed's answer comes (made)
            else:
                del self._early[key]
                if sha1 != made:
                    self._not_the_seeds(job, node, copy, file, sha1, now)
                    return
        if status in ("seeding", "download success"):
            self._complete(job, node, file, copy, now)
            return
        copy.state, copy.progress_at = CopyState.DOWNLOADING, now
        self._event(job, now, "downloading", "download started", node, file)

    def start_failed(self, job_id: str, nodeid: str, file: int, reason: str, now: float) -> None:
        found = self._copy(job_id, nodeid, file, CopyState.STARTING)
        if found is None:
            return
        job, node, copy = found
        if self._early.pop((job_id, nodeid, file), None) is not None:
            # Started early, with the seed's MakeTorrent: no attempt spent; the node is
            # asked again the usual way once the file's torrent is made (if it is).
            copy.state, copy.attempts, copy.retry_at = CopyState.PENDING, copy.attempts - 1, now
            text = f"not started with the seed ({reason}); it starts once the torrent is made"
            self._event(job, now, "early-start-failed", text, node, file)
            return
        self._failed(job, node, copy, file, f"download refused: {reason}", now)

    def progress(
        self, job_id: str, nodeid: str, file: int, now: float, *, percent: float, status: str
    ) -> None:
        """A node's status report about a copy (the collector's, newer than the command)."""
        found = self._copy(job_id, nodeid, file, CopyState.STARTING, CopyState.DOWNLOADING)
        if found is None:
            return
        job, node, copy = found
        if now < copy.started_at:
            return  # a report from before this attempt's download command
        if copy.state is CopyState.STARTING:
            copy.state = CopyState.DOWNLOADING
        if percent > copy.percent:
            copy.percent, copy.progress_at = percent, now
        if status == "seeding" or percent >= 100.0:
            self._complete(job, node, file, copy, now)
        elif status in ("failed", "expired", "stopped"):
            self._failed(
                job, node, copy, file, f"the node reported {status} at {percent:.1f}%", now
            )

    def verified(
        self,
        job_id: str,
        nodeid: str,
        file: int,
        now: float,
        *,
        sha256: str,
        sources: dict[str, int] | None = None,
        note: str = "",
    ) -> None:
        """A copy's digest, and (for a peer) where its bytes came from and why."""
        found = self._copy(job_id, nodeid, file, CopyState.VERIFYING)
        if found is None:
            return
        job, node, copy = found
        f = job.files[file]
        if sources is not None and (node.role != "seed" or f.striped):
            copy.bytes = {s: int(sources.get(s, 0)) for s in SOURCES}
            copy.bytes["origin"] += copy.stripe_bytes  # fetched by prefetch, not libtorrent
        if not f.sha256 and node.role == "seed":
            f.sha256 = sha256  # the seed's copy is the reference
        if sha256 != f.sha256:
            copy.verified = False
            whose = "manifest" if job.spec.files[file].sha256 else "seed"
            reason = (
                f"its copy differs from the {whose}'s "
                f"(SHA-256 {sha256[:12]}..., expected {f.sha256[:12]}...)"
            )
            self._failed(job, node, copy, file, reason, now, stop=True)
            return
        copy.verified, copy.state = True, CopyState.DONE
        if note:
            copy.reason = note
        for source in SOURCES:
            self.bytes_total[source] += copy.bytes[source]
        self._event(job, now, "verified", f"verified (sha256 {sha256[:12]}...)", node, file)

    def verify_failed(self, job_id: str, nodeid: str, file: int, reason: str, now: float) -> None:
        found = self._copy(job_id, nodeid, file, CopyState.VERIFYING)
        if found is not None:
            self._failed(*found, file, f"its copy could not be read back: {reason}", now)

    def pinged(self, nodeid: str, ok: bool, now: float) -> None:
        node = self._pings.pop(nodeid, None)
        if node is None:
            return
        node.pinging = False
        node.ping_due = now + PING_EVERY
        node.ping_failures = 0 if ok else node.ping_failures + 1
        if node.ping_failures < PING_FAILURES:
            return
        node.ping_failures = 0
        for job in self.jobs.values():
            if job.state is not JobState.RUNNING or node not in job.nodes:
                continue
            for index, copy in enumerate(node.copies):
                if copy.state in _WATCHED:
                    reason = (
                        f"stopped answering at {copy.percent:.1f}% "
                        f"(ping failed {PING_FAILURES} times)"
                    )
                    self._failed(job, node, copy, index, reason, now)

    # -- what changed, for the driver ---------------------------------------------------

    def drain_events(self) -> list[JobEvent]:
        events, self._new_events = self._new_events, []
        return events

    def drain_dirty(self) -> tuple[list[Job], list[str]]:
        """Jobs changed since the last call (to save), and ids of jobs forgotten."""
        dirty = [self.jobs[i] for i in sorted(self._dirty) if i in self.jobs]
        forgotten, self._forgotten, self._dirty = self._forgotten, [], set()
        return dirty, forgotten

    def touch(self, job_id: str) -> None:
        """Save this job with the next write (progress moved; no event for that)."""
        if job_id in self.jobs:
            self._dirty.add(job_id)

    def events_after(self, job_id: str, after: int) -> list[JobEvent]:
        self.get(job_id)
        return [e for e in self.events.get(job_id, []) if e.seq > after]

    def listed(self, state: str | None = None) -> list[Job]:
        jobs = sorted(self.jobs.values(), key=lambda j: j.order, reverse=True)
        return [j for j in jobs if state is None or j.state.value == state]

    def statistics(self) -> dict[str, Any]:
        by_state = dict.fromkeys((s.value for s in JobState), 0)
        for job in self.jobs.values():
            by_state[job.state.value] += 1
        return {
            "jobs": by_state,
            "outcomes": dict(self.outcomes),
            "bytes": dict(self.bytes_total),
        }

    # -- inside ---------------------------------------------------------------------------

    def _event(
        self,
        job: Job,
        now: float,
        kind: str,
        text: str,
        node: NodeRecord | None = None,
        file: int | None = None,
    ) -> None:
        job.last_seq += 1
        event = JobEvent(job.id, job.last_seq, now, kind, text, node.nodeid if node else "", file)
        kept = self.events.setdefault(job.id, [])
        kept.append(event)
        del kept[: -self.max_events]
        self._new_events.append(event)
        self._dirty.add(job.id)

    def _trim(self) -> None:
        """Forget the oldest finished jobs beyond ``max_jobs``."""
        over = len(self.jobs) - self.max_jobs
        if over <= 0:
            return
        finished = sorted((j for j in self.jobs.values() if j.state.final), key=lambda j: j.order)
        for job in finished[:over]:
            del self.jobs[job.id]
            self.events.pop(job.id, None)
            self._dirty.discard(job.id)
            self._forgotten.append(job.id)

    def _busy(self) -> dict[int, int]:
        """node id -> running jobs in which it still has work."""
        busy: dict[int, int] = {}
        for job in self.jobs.values():
            if job.state is JobState.RUNNING:
                for node in job.nodes:
                    if not all(c.state.final for c in node.copies):
                        busy[node.info.node_id] = busy.get(node.info.node_id, 0) + 1
        return busy

    def _start_queued(self, now: float, fleet: Callable[[], list[NodeInfo]]) -> None:
        queued = sorted(
            (j for j in self.jobs.values() if j.state is JobState.QUEUED),
            key=lambda j: (-j.spec.priority, j.order),
        )
        if not queued:
            return
        running = sum(j.state is JobState.RUNNING for j in self.jobs.values())
        nodes: list[NodeInfo] | None = None
        for job in queued:
            if running >= self.max_running:
                return
            if nodes is None:
                nodes = fleet()
            chosen = self._choose(job, nodes)
            if chosen is None:
                return  # strict priority: nothing below it starts first
            if not chosen:
                self._finish(job, now, JobState.FAILED, self._no_nodes(job))
                continue
            job.state, job.started_at = JobState.RUNNING, now
            for f in job.files:  # one node has nothing to share a stripe with
                f.striped = f.pipelined = job.spec.striped and len(chosen) > 1
            count = len(job.files)
            job.nodes = [
                NodeRecord(n, "seed" if i == 0 else "peer", [CopyRecord() for _ in range(count)])
                for i, n in enumerate(chosen)
            ]
            running += 1
            names = ", ".join(n.nodeid for n in chosen)
            self._event(job, now, "started", f"started: seed {chosen[0].nodeid}; nodes {names}")

    @staticmethod
    def _no_nodes(job: Job) -> str:
        spec = job.spec
        where = f" in zone(s) {', '.join(spec.zones)}" if spec.zones else ""
        if spec.node_ids:
            where += f" among node ids {', '.join(map(str, spec.node_ids))}"
        if spec.seed:
            return f"no live node {spec.seed!r} to be the seed{where}"
        return f"no live node with a task API is registered with the hub{where}"

    def _choose(self, job: Job, fleet: list[NodeInfo]) -> list[NodeInfo] | None:
        """The job's nodes, seed first; [] if there are none; None to wait for busy ones."""
        spec = job.spec
        candidates = [
            n
            for n in fleet
            if n.api_url
            and n.status >= 0
            and (not spec.zones or n.zone in spec.zones)
            and (not spec.node_ids or n.node_id in spec.node_ids)
        ]
        candidates.sort(key=lambda n: (-n.status, n.node_id))  # the seed: most free capacity
        if spec.seed:
            seeds = [n for n in candidates if spec.seed in (n.nodeid, n.ip)]
            if not seeds:
                return []
            candidates = seeds[:1] + [n for n in candidates if n is not seeds[0]]
        if not candidates:
            return []
        busy = self._busy()
        free = [n for n in candidates if busy.get(n.node_id, 0) < self.node_max_jobs]
        want = len(candidates) if spec.nodes is None else min(spec.nodes, len(candidates))
        if spec.seed and free[:1] != candidates[:1]:
            return None
        if len(free) < want:
            return None
        return free[:want]

    def _file_commands(self, job: Job, now: float) -> list[Command]:
        commands: list[Command] = []
        seed = job.nodes[0]
        for index, f in enumerate(job.files):
            due = f.state is FileState.PENDING and now >= f.retry_at
            if due and f.striped and not f.pipelined and not f.pieces:
                f.state, f.command_deadline = FileState.STRIPING, now + MAKE_TIMEOUT
                f.filesize = f.piece_length = 0
                for node in job.nodes:
                    copy = node.copies[index]
                    copy.stripe, copy.stripe_pieces, copy.stripe_of = None, "", ""
                nodes = tuple(n.info for n in job.nodes)
                commands.append(FetchStripes(job.id, index, f.url, nodes, f.command_deadline))
                self._dirty.add(job.id)
            elif due:
                f.state, f.command_deadline = FileState.MAKING, now + MAKE_TIMEOUT
                if not f.pipelined:  # the origin's torrent is a try, not an attempt
                    f.attempts += 1
                striped = bool(f.pieces)  # made from the stripes' digests
                commands.append(
                    MakeTorrent(
                        job.id,
                        index,
                        seed.info,
                        f.url,
                        f.command_deadline,
                        pieces=f.pieces,
                        piece_length=f.piece_length,
                        filesize=f.filesize if striped else 0,
                        have=seed.copies[index].stripe if striped else None,
                        origin_torrent=torrent_url_of(f.url) if f.pipelined else "",
                        fetch=(0, len(job.nodes)) if f.pipelined else None,
                    )
                )
                if f.pipelined:
                    commands.extend(self._start_early(job, index, now))
                self._dirty.add(job.id)
            elif f.state is FileState.MAKING and now >= f.command_deadline:
                self.make_failed(job.id, index, "no answer in time", now)
            elif f.state is FileState.STRIPING and now >= f.command_deadline:
                self._unstripe(job, index, "the stripes were not fetched in time", now)
        return commands

    def _join_stripes(self, job: Job, file: int, copies: list[CopyRecord], now: float) -> None:
        """Every node's stripe is in: the file's pieces, in order, for its torrent."""
        f = job.files[file]
        if len({c.stripe_of for c in copies}) != 1:
            said = "; ".join(sorted({c.stripe_of for c in copies}))[:300]
            reason = f"the nodes saw different versions of the file at the origin ({said})"
            self._unstripe(job, file, reason, now)
            return
        ordered = sorted(copies, key=lambda c: c.stripe or (0, 0))
        count = -(-f.filesize // f.piece_length) if f.piece_length > 0 else -1
        reached = 0
        for c in ordered:
            assert c.stripe is not None
            if c.stripe[0] != reached or len(c.stripe_pieces) != 40 * (c.stripe[1] - c.stripe[0]):
                break
            reached = c.stripe[1]
        if reached != count or count < 0:
            self._unstripe(job, file, "the stripes do not cover the file, piece after piece", now)
            return
        f.pieces = "".join(c.stripe_pieces for c in ordered)
        for c in copies:
            c.stripe_pieces = ""
        f.state, f.retry_at = FileState.PENDING, now
        fetched = sum(c.stripe_bytes for c in copies)
        text = f"{len(copies)} stripes fetched from the origin ({fetched:,} bytes)"
        self._event(job, now, "striped", text, None, file)

    def _unstripe(self, job: Job, file: int, reason: str, now: float) -> None:
        """Striping failed: the seed fetches the whole file (the stripes' bytes stay counted)."""
        f = job.files[file]
        f.striped, f.pieces, f.piece_length = False, "", 0
        for node in job.nodes:
            copy = node.copies[file]
            copy.stripe, copy.stripe_pieces, copy.stripe_of = None, "", ""
        f.state, f.retry_at = FileState.PENDING, now
        text = f"striping failed ({reason}); the seed fetches the whole file"
        self._event(job, now, "unstriped", text, None, file)

    def _start_early(self, job: Job, index: int, now: float) -> list[Command]:
        """A pipelined file's MakeTorrent goes out: every other node makes the same torrent
        from the origin's at once (not after the seed's answer and its .torrent: the
        demo's data moved 0.06-0.12 s later that way)."""
        f = job.files[index]
        commands: list[Command] = []
        assert job.started_at is not None
        for rank, node in enumerate(job.nodes[1:], 1):
            copy = node.copies[index]
            if copy.state is not CopyState.PENDING or now < copy.retry_at:
                continue
            copy.state, copy.attempts = CopyState.STARTING, copy.attempts + 1
            copy.started_at = copy.progress_at = now
            copy.command_deadline = f.command_deadline
            self._early[job.id, node.nodeid, index] = ""
            commands.append(
                StartDownload(
                    job.id,
                    index,
                    node.info,
                    "",
                    "",
                    job.started_at + job.spec.deadline,
                    job.spec.upload_limit,
                    copy.command_deadline,
                    fetch=(rank, len(job.nodes)),
                    url=f.url,
                    origin_torrent=torrent_url_of(f.url),
                )
            )
        return commands

    def _check_early(self, job: Job, file: int, sha1: str, now: float) -> None:
        """The seed's torrent is made: the copies started early must have made the same."""
        for node in job.nodes:
            key = (job.id, node.nodeid, file)
            if not self._early.get(key):
                continue  # not started early, or no answer yet (checked in started)
            made = self._early.pop(key)
            copy = node.copies[file]
            if made != sha1 and copy.state in _WATCHED:
                self._not_the_seeds(job, node, copy, file, made, now)

    def _not_the_seeds(
        self, job: Job, node: NodeRecord, copy: CopyRecord, file: int, made: str, now: float
    ) -> None:
        """A copy started early made another torrent than the seed's: failed, stopped."""
        seeds = job.files[file].sha1
        reason = f"the torrent it made from the origin's is {made}, the seed's {seeds}"
        self._failed(job, node, copy, file, reason, now)
        if made:
            job.stops.append((node.nodeid, made))

    def _unstart_early(self, job: Job, file: int) -> None:
        """The origin has no usable torrent: the copies started early start again the
        striped way (stopped where a node made one anyway), no attempt spent."""
        for node in job.nodes:
            made = self._early.pop((job.id, node.nodeid, file), None)
            copy = node.copies[file]
            if made is None or copy.state not in _WATCHED:
                continue
            copy.state, copy.attempts, copy.percent = CopyState.PENDING, copy.attempts - 1, 0.0
            if made:
                job.stops.append((node.nodeid, made))

    def _copy_command(
        self, job: Job, node: NodeRecord, index: int, copy: CopyRecord, now: float, verifying: int
    ) -> Command | None:
        f = job.files[index]
        state = copy.state
        if state is CopyState.PENDING and f.state is FileState.MADE and now >= copy.retry_at:
            copy.state, copy.attempts = CopyState.STARTING, copy.attempts + 1
            copy.started_at = copy.progress_at = now
            copy.command_deadline = now + START_TIMEOUT
            self._dirty.add(job.id)
            assert job.started_at is not None
            return StartDownload(
                job.id,
                index,
                node.info,
                f.torrent_url,
                f.sha1,
                job.started_at + job.spec.deadline,
                job.spec.upload_limit,
                copy.command_deadline,
                have=copy.stripe if f.striped and not f.pipelined else None,
                fetch=(job.nodes.index(node), len(job.nodes)) if f.pipelined else None,
                url=f.url,
            )
        if state is CopyState.COMPLETE and verifying < MAX_VERIFYING:
            if node.role != "seed" and not f.sha256:
                return None  # waits for the seed's copy to be the reference
            copy.state, copy.command_deadline = CopyState.VERIFYING, now + VERIFY_TIMEOUT
            self._dirty.add(job.id)
            return VerifyCopy(
                job.id, index, node.info, f.sha1, f.torrent_url, copy.command_deadline
            )
        if state in (CopyState.STARTING, CopyState.VERIFYING) and now >= copy.command_deadline:
            self._failed(job, node, copy, index, f"no answer to {state.value} in time", now)
        elif state is CopyState.DOWNLOADING and now >= copy.progress_at + self.stall:
            reason = f"no progress for {self.stall:.0f} s at {copy.percent:.1f}%"
            self._failed(job, node, copy, index, reason, now, stop=True)
        return None

    def _ping_commands(self, now: float) -> list[Command]:
        commands: list[Command] = []
        for job in self.jobs.values():
            if job.state is not JobState.RUNNING:
                continue
            for node in job.nodes:
                if node.pinging or now < node.ping_due:
                    continue
                if not any(c.state in _WATCHED for c in node.copies):
                    continue
                if node.nodeid in self._pings:
                    continue  # a ping of the same node for another job is out
                node.pinging = True
                self._pings[node.nodeid] = node
                commands.append(PingNode(node.info, now + PING_TIMEOUT))
        return commands

    def _complete(
        self, job: Job, node: NodeRecord, file: int, copy: CopyRecord, now: float
    ) -> None:
        copy.state, copy.percent = CopyState.COMPLETE, 100.0
        assert job.started_at is not None
        copy.done_at = now - job.started_at
        self._event(job, now, "complete", f"complete after {copy.done_at:.2f} s", node, file)

    def _failed(
        self,
        job: Job,
        node: NodeRecord,
        copy: CopyRecord,
        file: int,
        reason: str,
        now: float,
        *,
        stop: bool = False,
    ) -> None:
        copy.history.append(reason)
        copy.reason = reason
        if stop:
            self._stop_copy(job, node, file)
        if copy.attempts < job.spec.attempts:
            copy.state, copy.retry_at, copy.percent = CopyState.PENDING, now + self.retry_after, 0
            copy.done_at, copy.verified = None, None
            text = f"attempt {copy.attempts} failed: {reason}; trying again"
            self._event(job, now, "retry", text, node, file)
            return
        copy.state = CopyState.FAILED
        if copy.attempts > 1:
            copy.reason = f"failed {copy.attempts} times: " + "; ".join(copy.history)
        self._event(job, now, "failed", f"given up: {copy.reason}", node, file)

    def _stop_copy(self, job: Job, node: NodeRecord, file: int) -> None:
        f = job.files[file]
        if f.sha1 and (node.role != "seed" or f.striped) and node.copies[file].attempts:
            job.stops.append((node.nodeid, f.sha1))

    def _drain_stops(self, job: Job, now: float) -> list[Command]:
        commands: list[Command] = []
        while job.stops:
            nodeid, sha1 = job.stops.pop()
            record = job.node(nodeid)
            if record is not None:
                commands.append(StopDownload(job.id, record.info, sha1, now + STOP_TIMEOUT))
        return commands

    def _deadline(self, job: Job, now: float) -> None:
        assert job.started_at is not None
        for f in job.files:
            if f.state in (FileState.PENDING, FileState.MAKING, FileState.STRIPING):
                f.state, f.reason = FileState.FAILED, "deadline"
        for node in job.nodes:
            for index, copy in enumerate(node.copies):
                if copy.state.final:
                    continue
                if copy.state in (CopyState.COMPLETE, CopyState.VERIFYING):
                    reason = "deadline: complete but not verified in time"
                else:
                    reason = f"deadline: at {copy.percent:.1f}% after {now - job.started_at:.0f} s"
                    self._stop_copy(job, node, index)
                copy.state, copy.reason = CopyState.FAILED, reason
                copy.history.append(reason)
        self._maybe_finish(job, now)

    def _maybe_finish(self, job: Job, now: float) -> None:
        copies = [c for n in job.nodes for c in n.copies]
        if job.state is not JobState.RUNNING or not all(c.state.final for c in copies):
            return
        done = sum(c.state is CopyState.DONE for c in copies)
        if done == len(copies):
            self._finish(job, now, JobState.DONE, "")
            return
        failed = [n for n in job.nodes if n.state != JobState.DONE.value]
        why = "; ".join(f"{n.nodeid}: {n.reason}" for n in failed[:5])
        state = JobState.PARTIAL if done else JobState.FAILED
        self._finish(job, now, state, f"{len(failed)} of {len(job.nodes)} node(s) failed: {why}")

    def _finish(self, job: Job, now: float, state: JobState, reason: str) -> None:
        job.state, job.reason, job.ended_at = state, reason, now
        self.outcomes[state.value] = self.outcomes.get(state.value, 0) + 1
        for key in [k for k in self._early if k[0] == job.id]:
            del self._early[key]
        text = state.value + (f": {reason}" if reason else "")
        self._event(job, now, "ended", text)
        self._trim()

    def _file(self, job_id: str, file: int) -> tuple[Job, FileRecord | None]:
        job = self.jobs.get(job_id)
        if job is None or job.state is not JobState.RUNNING or not 0 <= file < len(job.files):
            return job or _NO_JOB, None
        return job, job.files[file]

    def _copy(
        self, job_id: str, nodeid: str, file: int, *states: CopyState
    ) -> tuple[Job, NodeRecord, CopyRecord] | None:
        job = self.jobs.get(job_id)
        if job is None or job.state is not JobState.RUNNING:
            return None
        node = job.node(nodeid)
        if node is None or not 0 <= file < len(node.copies):
            return None
        copy = node.copies[file]
        if copy.state not in states:
            return None
        self._dirty.add(job.id)
        return job, node, copy


_WATCHED = (CopyState.STARTING, CopyState.DOWNLOADING)


def torrent_url_of(url: str) -> str:
    """Where an origin publishes the torrent of the file at ``url``: ``<path>.torrent``."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=parts.path + ".torrent", fragment=""))


_NO_JOB = Job("", 0, JobSpec(files=()), 0.0)
