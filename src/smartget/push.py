"""``smartget push FILEURL``: put one file from its origin onto the fleet.

1. Ask the hub for the fleet (``GET /api/nodes``), keep the nodes in the given zones,
   pick the seed: the node with the most free capacity.
2. Ask the seed to ``maketorrent`` FILEURL (seed 003): it fetches the file once from the
   origin, makes a v1 torrent whose tracker is the hub and whose web seed is the origin,
   and seeds it. Tell the hub's tracker about the torrent.
3. Ask every other chosen node to ``download`` the torrent; they fetch from each other.
4. Follow progress in the hub's collector (``GET /api/progress``), ping nodes that go
   quiet, and give up on a node that stops answering or on the whole push at --timeout.
5. Check each copy: fetch it from the node's file server and compare its SHA-256 with
   the seed's copy (the origin is not asked again).

:func:`render` is the closing table, shared with the job client.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import click
import httpx

from smartget.errors import HubUnreachableError, PushError, SmartGetError
from smartget.failover import Endpoints, may_retry

__all__ = [
    "FleetClient",
    "FleetNode",
    "NodeOutcome",
    "PushError",
    "PushResult",
    "copy_url",
    "origin_stats",
    "push",
    "render",
    "run_with_progress",
]

log = logging.getLogger(__name__)

PING_FAILURES = 3  # consecutive failed pings before a node counts as gone
POLL = 0.25  # seconds between progress polls, with a hub that cannot long-poll
LONG_POLL = 1.0  # seconds a progress request may wait for news


@dataclass(frozen=True)
class FleetNode:
    node_id: int
    ip: str
    zone: str
    status: int
    api_url: str
    files_url: str

    @property
    def nodeid(self) -> str:
        """Seed 003's NodeID: ZONE_IP (what the node puts in its reports)."""
        return f"{self.zone}_{self.ip}"


@dataclass
class NodeOutcome:
    node: FleetNode
    role: str  # "seed" or "peer"
    percent: float = 0.0
    done_at: float | None = None  # seconds since the push started
    error: str | None = None
    peak_up: float = 0.0  # bytes/s, highest reported
    peak_down: float = 0.0
    verified: bool | None = None
    _ping_failures: int = 0

    @property
    def finished(self) -> bool:
        return self.done_at is not None or self.error is not None


@dataclass
class PushResult:
    fileurl: str
    sha1: str = ""
    filesize: int = 0
    outcomes: list[NodeOutcome] = field(default_factory=list)
    makespan: float = 0.0  # push start to the last node done
    origin_bytes: int | None = None
    striped: bool = False  # every node fetched its stripe from the origin (jobs)

    @property
    def ok(self) -> bool:
        return bool(self.outcomes) and all(
            o.done_at is not None and o.error is None and o.verified is not False
            for o in self.outcomes
        )

    @property
    def failed(self) -> list[NodeOutcome]:
        return [o for o in self.outcomes if o.error is not None or o.verified is False]

    def lower_bound(
        self, caps: dict[str, tuple[float, float]] | None = None, *, through_seed: bool = False
    ) -> float | None:
        """The time no schedule of this push can beat.

        Through one seed (which fetched the whole file first; ``through_seed``, or a push
        that was not striped): max(F/u_s, F/d_min, N*F/(u_s + sum u_i)) over the N peers.
        Striped, every one of the M nodes receives F, and what the origin does not send
        (O, at least F in all) the nodes upload: max(F/d_min, (M*F - O)/sum u).

        A node's rate is its cap where ``caps`` (nodeid -> (upload, download) bytes/s,
        ``inf`` for none) sets one; an upload without a cap counts at the highest rate it
        reported, a download without one drops out. None when uploads are unknown.
        """
        seed = [o for o in self.outcomes if o.role == "seed"]
        peers = [o for o in self.outcomes if o.role == "peer"]
        if not seed or not peers or not self.filesize:
            return None
        inf = float("inf")

        def rate(o: NodeOutcome, up: bool) -> float:
            cap = (caps or {}).get(o.node.nodeid, (inf, inf))[0 if up else 1]
            if cap != inf or not up:
                # An uncapped download is no bound: what it reached says how well the
                # swarm fed it, which is what the bound must not assume.
                return cap
            return o.peak_up

        u_s = rate(seed[0], up=True)
        total_up = u_s + sum(rate(o, up=True) for o in peers)
        size = self.filesize
        if self.striped and not through_seed:
            d_min = min(rate(o, up=False) for o in self.outcomes)
            origin = max(size, self.origin_bytes or 0)
            if total_up <= 0:
                return None
            return max(size / d_min, (len(self.outcomes) * size - origin) / total_up)
        d_min = min(rate(o, up=False) for o in peers)
        if u_s <= 0:
            return None
        return max(size / u_s, size / d_min, len(peers) * size / total_up)


class NodeAddress(Protocol):
    """What a task needs of a node (a :class:`FleetNode`, or the jobs' ``NodeInfo``)."""

    @property
    def nodeid(self) -> str: ...

    @property
    def api_url(self) -> str: ...


class FleetClient:
    """The hub's JSON API and the nodes' task APIs, with the errors users need.

    Used by :func:`push`, by the hub's job runner (hub/jobs/runner.py) and by the job
    client (:func:`follow_job`).
    """

    def __init__(
        self, hub_url: str | Sequence[str], token: str, node_token: str, timeout: float
    ) -> None:
        urls = [hub_url] if isinstance(hub_url, str) else list(hub_url)
        self.hubs = Endpoints([u.rstrip("/") for u in urls])
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=5))
        self.hub_auth = {"Authorization": f"Bearer {token}"}
        self.node_auth = {"Authorization": f"Bearer {node_token}"}

    @property
    def hub_url(self) -> str:
        """The hub in use (the next one once it stops answering)."""
        return self.hubs.current

    async def aclose(self) -> None:
        await self.http.aclose()

    async def hub(self, method: str, path: str, **kwargs: Any) -> Any:
        return (await self.hub_reply(method, path, **kwargs)).json()

    async def hub_reply(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One call to the hub in use, or to the next ones while it may be sent again."""
        errors: list[str] = []
        for base in self.hubs.attempts():
            try:
                reply = await self.http.request(
                    method, base + path, headers=self.hub_auth, **kwargs
                )
            except httpx.HTTPError as exc:
                errors.append(f"{base}: {exc!r}")
                if self.hubs.failed(base):
                    log.warning("hub %s stopped answering (%r); now %s", base, exc, self.hub_url)
                never_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                if may_retry(method, connected=not never_sent):
                    continue
                errors.append(f"{method} not sent to another hub: it may have been carried out")
                break
            self.hubs.answered(base)
            if reply.status_code == 401:
                raise PushError(
                    "the hub refused the token (401); give the hub's token with --token"
                )
            if reply.status_code >= 400:
                raise PushError(
                    f"hub {method} {path} answered {reply.status_code}: {reply.text[:200]}"
                )
            return reply
        raise HubUnreachableError(f"cannot reach the hub: {'; '.join(errors)}")

    async def task(
        self, node: NodeAddress, event: str, args: dict[str, Any], seconds: float
    ) -> dict[str, Any]:
        """POST a seed 003 task; return the response's args or raise with its traceback."""
        answer = await self.task_answer(node, event, args, seconds)
        return dict(answer.get("args") or {})

    async def task_answer(
        self, node: NodeAddress, event: str, args: dict[str, Any], seconds: float
    ) -> dict[str, Any]:
        """POST a seed 003 task; the whole response (``status``, ``args``) or raise."""
        body = {
            "taskid": uuid.uuid4().hex,
            "event": event,
            "expire": "",
            "max_retries": "",
            "args": args,
        }
        url = f"{node.api_url.rstrip('/')}/{event}"
        try:
            reply = await self.http.post(url, json=body, headers=self.node_auth, timeout=seconds)
        except httpx.HTTPError as exc:
            raise PushError(f"{event} on {node.nodeid}: cannot reach {url}: {exc!r}") from exc
        if reply.status_code != 200:
            raise PushError(
                f"{event} on {node.nodeid}: HTTP {reply.status_code} {reply.text[:200]}"
            )
        answer = reply.json()
        if answer.get("result") != "success":
            raise PushError(f"{event} on {node.nodeid} failed: {answer.get('traceback', '')[:500]}")
        return dict(answer)

    async def ping(self, node: NodeAddress) -> bool:
        try:
            reply = await self.http.get(
                f"{node.api_url.rstrip('/')}/ping", headers=self.node_auth, timeout=2
            )
        except httpx.HTTPError:
            return False
        return reply.status_code == 200

    async def node_status(self, node: NodeAddress, seconds: float = 10) -> dict[str, Any]:
        """The node's ``GET /status`` (its torrents, with where their bytes came from)."""
        url = f"{node.api_url.rstrip('/')}/status"
        try:
            reply = await self.http.get(url, headers=self.node_auth, timeout=seconds)
            reply.raise_for_status()
            return dict(reply.json())
        except (httpx.HTTPError, ValueError) as exc:
            raise PushError(f"status of {node.nodeid}: {exc!r}") from exc

    async def sha256_of(self, url: str) -> str:
        digest = hashlib.sha256()
        async with self.http.stream("GET", url, timeout=60) as reply:
            reply.raise_for_status()
            async for chunk in reply.aiter_bytes(1 << 20):
                digest.update(chunk)
        return digest.hexdigest()


_Client = FleetClient  # the name it had


def copy_url(files_url: str, torrent_url: str) -> str:
    """Where a node's file server serves the data of ``torrent_url`` (its path, no .torrent)."""
    return files_url.rstrip("/") + urlsplit(torrent_url).path.removesuffix(".torrent")


async def fleet(client: FleetClient, zones: tuple[str, ...]) -> list[FleetNode]:
    nodes = await client.hub("GET", "/api/nodes", params={"limit": 100_000})
    found = [
        FleetNode(n["id"], n["ip"], n["zone"], n["status"], n["api_url"], n["files_url"])
        for n in nodes
        if n["api_url"] and n["status"] >= 0 and (not zones or n["zone"] in zones)
    ]
    # Most free capacity first; the seed is the first.
    return sorted(found, key=lambda n: (-n.status, n.node_id))


async def origin_stats(client: FleetClient, fileurl: str) -> int | None:
    """Bytes sent by a smartget origin (None for any other web server)."""
    parts = urlsplit(fileurl)
    with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, TypeError):
        reply = await client.http.get(
            f"{parts.scheme}://{parts.netloc}/__origin__/stats", timeout=5
        )
        if reply.status_code == 200:
            return int(reply.json()["bytes_sent"])
    return None


async def push(
    fileurl: str,
    *,
    hub_url: str | Sequence[str],
    token: str,
    node_token: str | None = None,
    zones: tuple[str, ...] = (),
    nodes: int | None = None,
    give_up_after: float = 600.0,
    verify: bool = True,
    on_update: Callable[[PushResult], None] | None = None,
    seed_node: str | None = None,
) -> PushResult:
    """Push ``fileurl`` to the fleet; the result says, per node, when it finished or why not.

    ``seed_node`` (a nodeid or an IP) is the seed instead of the most free capacity.
    """
    client = FleetClient(hub_url, token, node_token or token, give_up_after)
    result = PushResult(fileurl)
    started = time.monotonic()
    deadline = started + give_up_after
    try:
        candidates = await fleet(client, zones)
        if seed_node is not None:
            chosen = [n for n in candidates if seed_node in (n.nodeid, n.ip)]
            if not chosen:
                raise PushError(f"no live node {seed_node!r} to be the seed")
            candidates = chosen[:1] + [n for n in candidates if n is not chosen[0]]
        if nodes is not None:
            candidates = candidates[:nodes]
        if len(candidates) < 1:
            where = f" in zone(s) {', '.join(zones)}" if zones else ""
            raise PushError(f"no live node with a task API is registered with the hub{where}")
        seed, *peers = candidates
        before = await origin_stats(client, fileurl)
        log.info("seed %s makes the torrent of %s", seed.nodeid, fileurl)
        try:  # the hub's UDP tracker first, then HTTP (issue 18)
            trackers = list(await client.hub("GET", "/api/trackers"))
        except PushError:  # a hub from before /api/trackers
            trackers = [f"{client.hub_url}/announce"]
        # The other hubs of the fleet too: nodes announce to the next when one is gone.
        trackers += [f"{url}/announce" for url in client.hubs.all if url != client.hub_url]
        made = await client.task(
            seed,
            "maketorrent",
            {"fileurl": fileurl, "trackers": trackers},
            seconds=max(1.0, deadline - time.monotonic()),
        )
        result.sha1 = str(made["sha1"]).lower()
        result.filesize = int(made["filesize"])
        torrent_url = str(made["torrentfileurl"])
        await client.hub(
            "POST", "/api/torrents", json={"info_hash": result.sha1, "name": fileurl[-200:]}
        )
        seed_outcome = NodeOutcome(seed, "seed", percent=100.0, done_at=time.monotonic() - started)
        result.outcomes = [seed_outcome] + [NodeOutcome(p, "peer") for p in peers]

        async def start(outcome: NodeOutcome) -> None:
            try:
                await client.task(
                    outcome.node, "download", {"torrentfileurl": torrent_url}, seconds=30
                )
            except PushError as exc:
                outcome.error = str(exc)

        await asyncio.gather(*(start(o) for o in result.outcomes[1:]))
        await _follow(client, result, started, deadline, on_update)
        result.makespan = max((o.done_at or 0.0) for o in result.outcomes)
        after = await origin_stats(client, fileurl)
        if before is not None and after is not None:
            result.origin_bytes = after - before
        if verify:
            await _verify(client, result, torrent_url)
        if on_update:
            on_update(result)
        return result
    finally:
        await client.aclose()


async def _follow(
    client: FleetClient,
    result: PushResult,
    started: float,
    deadline: float,
    on_update: Callable[[PushResult], None] | None,
) -> None:
    by_nodeid = {o.node.nodeid: o for o in result.outcomes}
    last_ping = 0.0
    seq = -1
    while not all(o.finished for o in result.outcomes):
        now = time.monotonic()
        if now > deadline:
            for o in result.outcomes:
                if not o.finished:
                    o.error = f"timed out at {o.percent:.1f}% after {now - started:.0f} s"
            break
        # Long-poll: the hub answers when a report arrives (or after LONG_POLL s), so
        # a node's time is when its last report came, not the next tick of a poll.
        reply = await client.hub_reply(
            "GET",
            "/api/progress",
            params={"sha1": result.sha1, "after": seq, "wait": LONG_POLL if seq >= 0 else 0},
        )
        reports = reply.json()
        latest = reply.headers.get("X-Progress-Seq", "")
        long_polled = latest.isdigit()
        seq = int(latest) if long_polled else -1
        for report in reports:
            outcome = by_nodeid.get(report["nodeid"])
            if outcome is None:
                continue
            outcome.peak_up = max(outcome.peak_up, float(report["uprate"]))
            outcome.peak_down = max(outcome.peak_down, float(report["downrate"]))
            if outcome.finished:
                continue
            outcome.percent = float(report["percent"])
            if report["done"]:
                outcome.done_at = time.monotonic() - started
                outcome.percent = 100.0
            elif report["status"] == "failed":
                outcome.error = f"the node reported failure at {outcome.percent:.1f}%"
        if now - last_ping > 2.0:  # is anyone we wait for gone?
            last_ping = now
            waiting = [o for o in result.outcomes if not o.finished]
            alive = await asyncio.gather(*(client.ping(o.node) for o in waiting))
            for outcome, up in zip(waiting, alive, strict=True):
                outcome._ping_failures = 0 if up else outcome._ping_failures + 1
                if outcome._ping_failures >= PING_FAILURES:
                    outcome.error = (
                        f"stopped answering at {outcome.percent:.1f}% "
                        f"({outcome.node.api_url}/ping failed {PING_FAILURES} times)"
                    )
        if on_update:
            on_update(result)
        if not long_polled:  # a hub without long-polls
            await asyncio.sleep(POLL)


async def _verify(client: FleetClient, result: PushResult, torrent_url: str) -> None:
    """Each finished copy must have the seed's SHA-256 (fetched from the nodes)."""
    done = [o for o in result.outcomes if o.done_at is not None and o.error is None]
    limit = asyncio.Semaphore(4)

    async def digest(outcome: NodeOutcome) -> str | None:
        async with limit:
            try:
                return await client.sha256_of(copy_url(outcome.node.files_url, torrent_url))
            except httpx.HTTPError as exc:
                outcome.error = f"its copy could not be read back: {exc!r}"
                return None

    digests = await asyncio.gather(*(digest(o) for o in done))
    reference = digests[0] if done and done[0].role == "seed" else None
    if reference is None:
        return  # the seed's copy is unreadable (its error says why): nothing to compare
    for outcome, value in zip(done, digests, strict=True):
        if value is None:
            continue
        outcome.verified = value == reference
        if not outcome.verified:
            outcome.error = "its copy differs from the seed's (SHA-256 mismatch)"


# -- the command ---------------------------------------------------------------------------


def render(result: PushResult, caps: dict[str, tuple[float, float]] | None = None) -> Any:
    """The closing table (a rich renderable)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"push {result.fileurl}", title_justify="left")
    for column in ("node", "zone", "role", "time (s)", "result"):
        table.add_column(column, justify="right" if column == "time (s)" else "left")
    for o in result.outcomes:
        state = "ok" if o.error is None and o.done_at is not None else f"FAILED: {o.error}"
        if o.verified:
            state += " (sha256 checked)"
        time_text = f"{o.done_at:.2f}" if o.done_at is not None else "-"
        table.add_row(o.node.nodeid, o.node.zone, o.role, time_text, state)
    lines = [
        f"total time {result.makespan:.2f} s for {result.filesize:,} bytes "
        f"to {len(result.outcomes)} nodes (sha1 {result.sha1})"
    ]
    if result.origin_bytes is not None and result.filesize:
        lines.append(
            f"origin served {result.origin_bytes:,} bytes = "
            f"{result.origin_bytes / result.filesize:.2f} x the file"
        )
    else:
        lines.append("origin bytes: unknown (not a smartget origin)")
    bound = result.lower_bound(caps)
    seeded = result.lower_bound(caps, through_seed=True) if result.striped else None
    if seeded:  # what the same push through one seed could not beat, for comparison
        lines.append(
            f"striped: every node fetched its stripe from the origin; through one seed "
            f"the bound would be {seeded:.2f} s"
        )
    if bound and result.makespan and result.ok:
        lines.append(
            f"lower bound {bound:.2f} s; efficiency (bound / time) {bound / result.makespan:.2f}"
        )
    elif bound:  # a push that failed somewhere has no makespan to compare
        lines.append(f"lower bound {bound:.2f} s; no efficiency: not every copy completed")
    return Group(table, *(Text(line) for line in lines))


def progress_bars(console: Any) -> Any:
    """The progress display of pushes and jobs: one bar per node, its state, the time."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TextColumn("{task.fields[state]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def run_with_progress(fileurl: str, **kwargs: Any) -> PushResult:
    """Run :func:`push` with a rich progress bar per node, then print the table."""
    from rich.console import Console

    console = Console(stderr=True)
    caps = kwargs.pop("caps", None)
    bars: dict[str, Any] = {}
    with progress_bars(console) as progress:

        def update(result: PushResult) -> None:
            for o in result.outcomes:
                bar = bars.get(o.node.nodeid)
                if bar is None:
                    bar = bars[o.node.nodeid] = progress.add_task(
                        f"{o.node.nodeid} ({o.role})", total=100, state=""
                    )
                state = "failed" if o.error else ("done" if o.done_at is not None else "")
                progress.update(bar, completed=o.percent, state=state)

        try:
            result = asyncio.run(push(fileurl, on_update=update, **kwargs))
        except SmartGetError as exc:
            raise click.ClickException(str(exc)) from exc
    Console().print(render(result, caps))
    return result
