"""The jobs' asyncio driver: carries out the core's commands, saves, wakes waiters.

One task (:meth:`JobRunner.run`, auxiliary under the hub's Supervisor) loops: feed the
collector's new reports to the book, :meth:`JobBook.poll`, start each command as a task
of its own (bounded by the command's deadline), save what changed in one store write,
then sleep until the book's next deadline, a command's answer, or a tick while copies
download (the collector is read in memory, so the tick costs nothing that matters).

The node tasks are :class:`smartget.push.FleetClient`'s, the same code ``smartget push``
used when it ran pushes itself. Answers go back to the book; a job's changes and its
new events are durable before :meth:`submit` and :meth:`cancel` return (and so before
the HTTP reply leaves).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from smartget.config import setting
from smartget.errors import JobError, JobNotFoundError, SmartGetError
from smartget.hub.collector import Collector
from smartget.hub.commands import HubCommands
from smartget.hub.jobs.core import (
    Command,
    FetchStripes,
    JobBook,
    MakeTorrent,
    PingNode,
    StartDownload,
    StopDownload,
    VerifyCopy,
)
from smartget.hub.jobs.model import SOURCES, Job, JobEvent, JobSpec, NodeInfo
from smartget.hub.jobs.shared import SharedJobs
from smartget.hub.registry import Registry
from smartget.hub.state.api import FleetState
from smartget.hub.store import Store, load_jobs, save_jobs
from smartget.hub.tracker import announce_urls

__all__ = ["JobRunner", "JobSettings", "JobsHost", "classify_sources"]

log = logging.getLogger(__name__)

TICK = 0.1  # seconds between reads of the collector while copies download
IDLE = 5.0  # the longest sleep with nothing due
MAX_WAIT = 60.0  # the longest long-poll of events
SHARED_POLL = 0.25  # on Redis: seconds between looks at the lease, the requests, events
CANCEL_WAIT = 5.0  # on Redis: seconds a cancel through another hub waits for the leader
MAX_ORIGIN_COUNTS = 10_000  # origin counts kept from striping to making (oldest go first)


class _LostLead(Exception):
    """The fleet's lease went to another hub: stop running the jobs here."""


@dataclass(frozen=True)
class JobSettings:
    """The hub's push jobs (``--max-running-jobs`` and friends)."""

    max_running_jobs: int = setting(4, "Push jobs running at once (higher priority first).", min=1)
    node_max_jobs: int = setting(4, "Running push jobs one node takes part in at once.", min=1)
    max_jobs: int = setting(1000, "Push jobs kept; past it the oldest finished go.", min=1)
    max_job_events: int = setting(1000, "Events kept per push job.", min=10)
    job_retry_after: float = setting(2.0, "Seconds before a failed copy is tried again.", min=0)
    job_stall: float = setting(
        300.0, "Seconds without progress before a node's download counts as failed.", min=1
    )
    node_token: str | None = setting(
        None,
        "The nodes' API token, for the tasks of push jobs [env SMARTGET_NODE_TOKEN; "
        "default: the hub's token].",
        envvar="SMARTGET_NODE_TOKEN",
        show_default=False,
    )
    public_url: str = setting(
        "",
        "The hub's HTTP URL as nodes reach it: the tracker of the torrents jobs make "
        "[default: the --http address].",
    )


class JobsHost(Protocol):
    """What the runner needs from the hub (hub/app.py's Hub provides it)."""

    registry: Registry
    collector: Collector
    commands: HubCommands
    store: Store
    token: str
    state: FleetState
    hub_id: str

    def now(self) -> float: ...
    def save_tracked(self, info_hash: str, name: str = "") -> Awaitable[None]: ...
    @property
    def http_url(self) -> str: ...
    @property
    def udp_tracker_address(self) -> tuple[str, int] | None: ...


def classify_sources(
    own_zone: str, sources: dict[str, Any], zone_of: Any, filesize: int
) -> dict[str, int]:
    """A node's ``sources`` (web seed bytes, bytes per peer IP) by origin and zone."""
    out = dict.fromkeys(SOURCES, 0)
    out["origin"] = int(sources.get("web", 0))
    for ip, count in dict(sources.get("peers", {})).items():
        key = "peer_same_zone" if zone_of(ip) == own_zone else "peer_other_zone"
        out[key] += int(count)
    peers = out["peer_same_zone"] + out["peer_other_zone"]
    room = max(0, filesize - out["origin"])
    if filesize and peers > room:  # counters of reconnected peers overlap: scale them down
        for key in ("peer_same_zone", "peer_other_zone"):
            out[key] = out[key] * room // peers
    return out


class JobRunner:
    """Runs the hub's push jobs. Use from the hub's loop only."""

    def __init__(self, settings: JobSettings, host: JobsHost) -> None:
        self.settings = settings
        self.host = host
        self.book = self._new_book()
        self._wake = asyncio.Event()
        self._news = asyncio.Event()
        self._fed: dict[tuple[str, str, int], float] = {}
        # (job, file) -> the origin's count of bytes sent when its stripes were asked for
        self._origin_before: dict[tuple[str, int], int | None] = {}
        self._pending_events: list[JobEvent] = []
        self._client: Any = None
        self.commands_sent = 0
        # Several hubs on Redis (hub/jobs/shared.py): None on SQLite, where this hub leads.
        self.shared: SharedJobs | None = None
        self._may_lead: Callable[[], bool] = lambda: True
        self.leading = True  # this hub's book is the jobs' truth (False: read Redis)
        self.takeovers = 0

    def share(self, shared: SharedJobs, may_lead: Callable[[], bool]) -> None:
        """Keep the jobs in Redis; run them only while ``may_lead()`` (the fleet's lease)."""
        self.shared = shared
        self._may_lead = may_lead
        self.leading = False

    def _new_book(self) -> JobBook:
        s = self.settings
        return JobBook(
            max_running=s.max_running_jobs,
            node_max_jobs=s.node_max_jobs,
            max_jobs=s.max_jobs,
            max_events=s.max_job_events,
            retry_after=s.job_retry_after,
            stall=s.job_stall,
        )

    # -- start-up -----------------------------------------------------------------------

    def restore_now(self) -> int:
        """Load the saved jobs (start-up only: blocks). On Redis a leader loads them."""
        if self.shared is not None:
            return 0
        read = functools.partial(load_jobs, max_events=self.settings.max_job_events)
        docs, events = self.host.store.read_now(read)
        jobs = [Job.from_dict(d) for d in docs]
        self.book.restore(
            jobs, {k: [JobEvent.from_dict(k, e) for e in v] for k, v in events.items()}
        )
        return sum(not j.state.final for j in jobs)

    # -- the API's side -----------------------------------------------------------------

    async def submit(self, spec: JobSpec) -> Job:
        job_id, now = uuid.uuid4().hex[:16], time.time()
        if self.leading or self.shared is None:
            job = self.book.submit(spec, job_id, now)
            await self._save()
            self._wake.set()
            return job
        # Another hub runs the jobs: its record now (so every hub shows it at once),
        # the request for the leader next; the leader's own record replaces this one.
        job = JobBook().submit(spec, job_id, now)
        await self.shared.save([job.to_dict()], [], [])
        try:
            request = {"op": "submit", "id": job_id, "spec": spec.to_dict(), "at": now}
            await self.shared.request(request)
        except BaseException:
            with contextlib.suppress(Exception):
                await self.shared.save([], [], [job_id])
            raise
        return job

    async def cancel(self, job_id: str) -> Job:
        if self.leading or self.shared is None:
            job = self.book.cancel(job_id, time.time())
            await self._save()
            self._wake.set()
            return job
        await self.job(job_id)
        await self.shared.request({"op": "cancel", "id": job_id})
        deadline = time.monotonic() + CANCEL_WAIT
        while True:  # the leader's answer, within a few of its ticks
            job = await self.job(job_id)
            if job.state.final or time.monotonic() > deadline:
                return job
            await asyncio.sleep(SHARED_POLL)

    def _here(self, job_id: str | None = None) -> bool:
        """Is this hub's book the truth about ``job_id`` (or all jobs)? Not on Redis when
        another hub runs the jobs, nor for a job handed over but not yet taken."""
        if self.shared is None:
            return True
        return self.leading and (job_id is None or job_id in self.book.jobs)

    async def job(self, job_id: str) -> Job:
        """One job, from this hub's book or (another hub leads) from Redis."""
        if self.shared is None or self._here(job_id):
            return self.book.get(job_id)
        doc = await self.shared.job(job_id)
        if doc is None:
            raise JobNotFoundError(f"no job has id {job_id!r}")
        return Job.from_dict(doc)

    async def jobs(self, state: str | None = None) -> list[Job]:
        """The jobs, newest first."""
        if self.shared is None or self._here():
            return self.book.listed(state)
        jobs = sorted(
            (Job.from_dict(d) for d in await self.shared.docs()),
            key=lambda j: j.created_at,
            reverse=True,
        )
        return [j for j in jobs if state is None or j.state.value == state]

    async def wait_events(self, job_id: str, after: int, wait: float) -> list[JobEvent]:
        """Events of a job newer than ``after``; waits up to ``wait`` s for the first one."""
        deadline = asyncio.get_running_loop().time() + min(wait, MAX_WAIT)
        while True:
            shared = self.shared
            here = shared is None or self._here(job_id)
            if shared is None or here:
                events = self.book.events_after(job_id, after)
            else:
                await self.job(job_id)
                found = await shared.events(job_id)
                events = [JobEvent.from_dict(job_id, e) for e in found if e["seq"] > after]
            left = deadline - asyncio.get_running_loop().time()
            if events or left <= 0:
                return events
            news = self._news
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left if here else min(left, SHARED_POLL)):
                    await news.wait()

    # -- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        from smartget.push import FleetClient

        token = self.host.token
        client = FleetClient("", token, self.settings.node_token or token, 60)
        self._client = client
        try:
            while True:
                if self.shared is not None:
                    await self._take_the_lead()
                try:
                    await self._lead()
                except* _LostLead:
                    log.warning(
                        "jobs: this hub no longer holds the fleet's lease; another runs them"
                    )
                    self.leading = False
                    self.book = self._new_book()
                    self._fed.clear()
        finally:
            await client.aclose()

    async def _lead(self) -> None:
        """Run the jobs until cancelled (or, on Redis, until the lease is lost)."""
        async with asyncio.TaskGroup() as tasks:
            while True:
                if not self._may_lead():
                    raise _LostLead
                now = time.time()
                await self._take_requests()
                self._feed_reports()
                for command in self.book.poll(now, self._fleet):
                    self.commands_sent += 1
                    tasks.create_task(self._carry_out(command))
                await self._save()
                await self._sleep(now)

    async def _take_the_lead(self) -> None:
        """Wait for the fleet's lease, then load every job from Redis, as after a restart."""
        assert self.shared is not None
        while True:  # the keeper renews or takes the lease each second: look as often
            if self._may_lead():
                break
            await asyncio.sleep(SHARED_POLL)
        docs, events = await self.shared.load()
        jobs = [Job.from_dict(d) for d in docs]
        self.book = self._new_book()
        self.book.restore(
            jobs, {k: [JobEvent.from_dict(k, e) for e in v] for k, v in events.items()}
        )
        self.leading = True
        self.takeovers += 1
        unfinished = sum(not j.state.final for j in jobs)
        log.info("jobs: this hub runs the fleet's jobs now (%d unfinished taken over)", unfinished)

    async def _take_requests(self) -> None:
        """Submits and cancels other hubs took (Redis only)."""
        if self.shared is None:
            return
        for request in await self.shared.take_requests():
            try:
                if request.get("op") == "submit":
                    spec = JobSpec.from_dict(request["spec"])
                    self.book.submit(spec, str(request["id"]), float(request["at"]))
                elif request.get("op") == "cancel":
                    self.book.cancel(str(request["id"]), time.time())
            except JobNotFoundError:
                pass  # cancelled a job that is gone
            except (JobError, KeyError, TypeError, ValueError) as exc:
                # e.g. a submit already restored from its record by a new leader
                log.info("jobs: request %s not carried out: %s", request.get("op"), exc)

    async def _sleep(self, now: float) -> None:
        due = self.book.next_deadline()
        delay = IDLE if due is None else max(0.0, due - now)
        if self.book.running_sha1s():
            delay = min(delay, TICK)
        delay = min(max(delay, 0.01), IDLE if self.shared is None else SHARED_POLL)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._wake.wait()
        self._wake.clear()

    def _fleet(self) -> list[NodeInfo]:
        registry = self.host.registry
        nodes = (registry.get_node_by_id(i) for i in registry.get_nodes())
        return [
            NodeInfo(n.node_id, n.addr, n.zone, n.status, n.api_url, n.files_url)
            for n in nodes
            if n is not None
        ]

    def _feed_reports(self) -> None:
        """The collector's reports about running copies, newer than the last fed."""
        watched = self.book.running_sha1s()
        if not watched:
            self._fed.clear()
            return
        to_wall = time.time() - self.host.now()
        for sha1, copies in watched.items():
            latest = {r.nodeid: r for r in self.host.collector.progress(sha1=sha1)}
            for job_id, nodeid, file in copies:
                report = latest.get(nodeid)
                if report is None or self._fed.get((job_id, nodeid, file)) == report.received_at:
                    continue
                self._fed[job_id, nodeid, file] = report.received_at
                self.book.progress(
                    job_id,
                    nodeid,
                    file,
                    report.received_at + to_wall,
                    percent=report.percent,
                    status=report.status,
                )
                self.book.touch(job_id)

    async def _save(self) -> None:
        jobs, forgotten = self.book.drain_dirty()
        events = self.book.drain_events()
        if not jobs and not forgotten and not events:
            return
        write = save_jobs(
            [j.to_dict() for j in jobs],
            [(e.job_id, e.seq, e.to_dict()) for e in events],
            forgotten,
            self.settings.max_job_events,
        )
        for event in events:
            log.info(
                "job %s: %s%s", event.job_id, event.nodeid + " " if event.nodeid else "", event.text
            )
        if self.shared is not None:
            await self.shared.save(
                [j.to_dict() for j in jobs],
                [(e.job_id, e.seq, e.to_dict()) for e in events],
                forgotten,
            )
        else:
            await self.host.store.submit(write)
        if events:
            self._news.set()
            self._news = asyncio.Event()

    # -- commands ------------------------------------------------------------------------

    async def _carry_out(self, command: Command) -> None:
        try:
            async with asyncio.timeout(max(0.1, command.deadline - time.time())):
                await self._run_command(command)
        except TimeoutError:
            self._failed(command, "no answer in time")
        except (SmartGetError, OSError, ValueError, KeyError) as exc:
            self._failed(command, str(exc))
        except Exception as exc:
            log.exception("job command %s", type(command).__name__)
            self._failed(command, repr(exc))
        self._wake.set()

    async def _run_command(self, command: Command) -> None:
        client = self._client
        now = time.time
        match command:
            case PingNode(node=node):
                self.book.pinged(node.nodeid, await client.ping(node), now())
            case FetchStripes():
                await self._fetch_stripes(client, command)
            case MakeTorrent():
                await self._make(client, command)
            case StartDownload(origin_torrent=str(o)) if o:
                await self._start_made(client, command)
            case StartDownload(job_id=job_id, file=file, node=node):
                args: dict[str, Any] = {
                    "torrentfileurl": command.torrent_url,
                    "sha1": command.sha1,
                }
                if command.upload_limit:
                    args["upload_limit"] = command.upload_limit
                if command.have is not None:
                    args["have"] = list(command.have)
                if command.fetch is not None:  # pipelined: its stripe from the origin
                    args["stripe"], args["stripes"] = command.fetch
                    args["fetch_from"] = command.url
                if pin := self.book.get(job_id).spec.pin:  # kept pin s after the job, at least
                    args["pin"] = pin + max(0.0, command.expire_at - now())
                answer = await client.task_answer(node, "download", args, seconds=30)
                self.book.started(job_id, node.nodeid, file, str(answer.get("status")), now())
            case StopDownload(node=node, sha1=sha1):
                with contextlib.suppress(SmartGetError):
                    await client.task(node, "shutdown", {"sha1": sha1}, seconds=30)
            case VerifyCopy(job_id=job_id, file=file, node=node):
                await self._verify(client, command)

    def _udp_port(self) -> int | None:
        """The hub's UDP tracker port: the fleet's torrents list it first (issue 18)."""
        udp = self.host.udp_tracker_address
        return None if udp is None else udp[1]

    async def _fetch_stripes(self, client: Any, command: FetchStripes) -> None:
        """Every node fetches its stripe at once; each answer goes to the book as it comes."""
        from smartget.push import origin_stats

        job_id, file, url = command.job_id, command.file, command.url
        self._keep_origin_count(job_id, file, await origin_stats(client, url))
        count = len(command.nodes)

        async def one(index: int, node: NodeInfo) -> None:
            args = {"fileurl": url, "stripe": index, "stripes": count}
            try:
                left = max(0.1, command.deadline - time.time())
                async with asyncio.timeout(left):
                    got = await client.task(node, "prefetch", args, seconds=left)
                first, end = int(got["first_piece"]), int(got["end_piece"])
                pieces = str(got["pieces"]).lower()
                validators = f"ETag {got.get('etag', '')!r}, "
                validators += f"Last-Modified {got.get('last_modified', '')!r}"
                self.book.prefetched(
                    job_id,
                    node.nodeid,
                    file,
                    time.time(),
                    first=first,
                    end=end,
                    pieces=pieces,
                    stripe_bytes=int(got["bytes"]),
                    filesize=int(got["filesize"]),
                    piece_length=int(got["piece_length"]),
                    validators=validators,
                )
            except TimeoutError:
                self.book.stripe_failed(job_id, node.nodeid, file, "no answer in time", time.time())
            except (SmartGetError, OSError, ValueError, KeyError, TypeError) as exc:
                self.book.stripe_failed(job_id, node.nodeid, file, str(exc), time.time())
            self._wake.set()

        await asyncio.gather(*(one(i, node) for i, node in enumerate(command.nodes)))

    async def _make(self, client: Any, command: MakeTorrent) -> None:
        from smartget.push import origin_stats

        job_id, file, node, url = command.job_id, command.file, command.node, command.url
        before = self._origin_before.pop((job_id, file), None)
        if not command.pieces:
            before = await origin_stats(client, url)
        args = await self._make_args(
            job_id, url, origin_torrent=command.origin_torrent, fetch=command.fetch
        )
        if command.pieces:  # striped: made from the stripes' digests, no fetch
            args["pieces"] = command.pieces
            args["piece_length"] = command.piece_length
            args["filesize"] = command.filesize
            if command.have is not None:
                args["have"] = list(command.have)
        made = await client.task(
            node, "maketorrent", args, seconds=max(1.0, command.deadline - time.time())
        )
        sha1 = str(made["sha1"]).lower()
        if self.host.commands.track(bytes.fromhex(sha1)):
            await self.host.save_tracked(sha1, url[-200:])
        self.book.made(
            job_id,
            file,
            time.time(),
            sha1=sha1,
            filesize=int(made["filesize"]),
            torrent_url=str(made["torrentfileurl"]),
        )
        if command.origin_torrent:  # the data moves from now on: counted once it settled
            self._keep_origin_count(job_id, file, before)
            return
        after = await origin_stats(client, url)
        if before is not None and after is not None:
            self.book.set_origin_bytes(job_id, file, after - before)

    async def _make_args(
        self,
        job_id: str,
        url: str,
        *,
        origin_torrent: str = "",
        fetch: tuple[int, int] | None = None,
    ) -> dict[str, Any]:
        """A maketorrent's arguments, alike for every node of a job (so the torrents that
        nodes make from the origin's are the same, trackers included) but the stripe.
        Pipelined (``origin_torrent``): the origin's torrent, stripe ``fetch`` meanwhile."""
        public = (self.settings.public_url or self.host.http_url).rstrip("/")
        args: dict[str, Any] = {
            "fileurl": url,
            "trackers": announce_urls(public, self._udp_port()) + await self._other_hubs(),
        }
        if origin_torrent:
            args["origin_torrent"] = origin_torrent
        if fetch is not None:
            args["stripe"], args["stripes"] = fetch
        spec = self.book.get(job_id).spec
        if spec.pin:  # the job's deadline bounds its end: pin s after it at least
            args["pin"] = spec.pin + spec.deadline
        if spec.upload_limit:  # the seed too sends at most the job's cap
            args["upload_limit"] = spec.upload_limit
        return args

    async def _start_made(self, client: Any, command: StartDownload) -> None:
        """A copy started with its file's MakeTorrent (pipelined): the node makes the
        torrent from the origin's, as the seed does, and fetches its stripe meanwhile."""
        args = await self._make_args(
            command.job_id, command.url, origin_torrent=command.origin_torrent, fetch=command.fetch
        )
        made = await client.task(
            command.node,
            "maketorrent",
            args,
            seconds=max(1.0, command.deadline - time.time()),
        )
        sha1 = str(made["sha1"]).lower()
        self.book.started(
            command.job_id, command.node.nodeid, command.file, "", time.time(), sha1=sha1
        )

    def _keep_origin_count(self, job_id: str, file: int, count: int | None) -> None:
        while len(self._origin_before) >= MAX_ORIGIN_COUNTS:  # jobs that never settled
            self._origin_before.pop(next(iter(self._origin_before)))
        self._origin_before[job_id, file] = count

    async def _count_origin(self, job_id: str, nodeid: str, file: int) -> None:
        """A pipelined file's last copy is checked: what the origin sent since it began
        (before the check's answer ends the job)."""
        from smartget.push import origin_stats

        key = (job_id, file)
        job = self.book.jobs.get(job_id)
        if job is None or key not in self._origin_before:
            return
        if not self.book.settles_file(job_id, nodeid, file):
            return
        url = job.files[file].url
        before = self._origin_before.pop(key)
        after = await origin_stats(self._client, url)
        if before is not None and after is not None:
            self.book.set_origin_bytes(job_id, file, after - before)

    async def _other_hubs(self) -> list[str]:
        """The trackers of the fleet's other hubs (Redis): a node announces to the next
        one when this hub is gone."""
        if self.shared is None:
            return []
        try:
            async with asyncio.timeout(2):
                hubs = await self.host.state.hubs()
        except (SmartGetError, OSError, TimeoutError):
            return []
        urls = [
            str(h.get("http") or "").rstrip("/") for h in hubs if h.get("id") != self.host.hub_id
        ]
        return [f"{url}/announce" for url in urls if url]

    async def _verify(self, client: Any, command: VerifyCopy) -> None:
        from smartget.push import copy_url

        node = command.node
        digest = await client.sha256_of(copy_url(node.files_url, command.torrent_url))
        sources, note = None, ""
        with contextlib.suppress(SmartGetError):
            status = await client.node_status(node)
            entry = next((t for t in status["torrents"] if t["sha1"] == command.sha1), None)
            if entry is not None and isinstance(entry.get("sources"), dict):
                job = self.book.jobs.get(command.job_id)
                size = job.files[command.file].filesize if job else 0
                sources = classify_sources(
                    node.zone, entry["sources"], self.host.registry.zone_of_addr, size
                )
                note = str(entry["sources"].get("fallback", ""))
        await self._count_origin(command.job_id, node.nodeid, command.file)
        self.book.verified(
            command.job_id,
            node.nodeid,
            command.file,
            time.time(),
            sha256=digest,
            sources=sources,
            note=note,
        )

    def _failed(self, command: Command, reason: str) -> None:
        now = time.time()
        match command:
            case PingNode(node=node):
                self.book.pinged(node.nodeid, False, now)
            case MakeTorrent(job_id=job_id, file=file):
                self.book.make_failed(job_id, file, reason, now)
            case FetchStripes(job_id=job_id, file=file):  # each node's answer went in already
                for node in command.nodes:
                    self.book.stripe_failed(job_id, node.nodeid, file, reason, now)
            case StartDownload(job_id=job_id, file=file, node=node):
                self.book.start_failed(job_id, node.nodeid, file, reason, now)
            case VerifyCopy(job_id=job_id, file=file, node=node):
                self.book.verify_failed(job_id, node.nodeid, file, reason, now)
            case StopDownload(node=node, sha1=sha1):
                log.warning("could not stop %s on %s: %s", sha1, node.nodeid, reason)

    # -- observability ---------------------------------------------------------------------

    def statistics(self) -> dict[str, Any]:
        return {**self.book.statistics(), "commands_sent": self.commands_sent}


class JobMetrics:
    """``smartget_job_bytes_total{source}``, job outcomes and jobs by state, for /metrics."""

    def __init__(self, runner: JobRunner) -> None:
        self.runner = runner

    def collect(self) -> Iterable[Metric]:
        stats = self.runner.book.statistics()
        sources = CounterMetricFamily(
            "smartget_job_bytes",
            "Bytes of verified copies of push jobs, by where they came from",
            labels=["source"],
        )
        for source in SOURCES:
            sources.add_metric([source], stats["bytes"][source])
        yield sources
        outcomes = CounterMetricFamily(
            "smartget_job_outcomes", "Push jobs ended, by final state", labels=["state"]
        )
        for state, count in sorted(stats["outcomes"].items()):
            outcomes.add_metric([state], count)
        yield outcomes
        jobs = GaugeMetricFamily("smartget_jobs", "Push jobs kept, by state", labels=["state"])
        for state, count in stats["jobs"].items():
            jobs.add_metric([state], count)
        yield jobs
