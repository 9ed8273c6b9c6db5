"""What the console page shows, as one JSON-ready snapshot of the hub (sans-IO).

:func:`snapshot` reads the registry, the tracker, the collector, the drain list, the
push jobs' book (hub/jobs/) and the chart history, and returns plain dicts and lists:
the page renders them (as text, never as markup). Every list is capped so that a
snapshot stays small however large the fleet is; each capped list says how many it
left out. ``now`` is the hub's clock (the one reports and heartbeats carry); ``wall``
is Unix time, for the page and for the jobs (whose times are Unix seconds).

A job's nodes come from the book (state, progress, reason, bytes by source per copy);
their rates and time left from the collector's fresh reports of the copies downloading.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from smartget.hub.collector import Collector, Report
from smartget.hub.console.drain import DrainList
from smartget.hub.console.history import FRESH, sample_of
from smartget.hub.jobs.core import JobBook
from smartget.hub.jobs.model import SOURCES, CopyState, FileState, Job, JobState, NodeRecord
from smartget.hub.registry import Node, Registry
from smartget.hub.tracker import Scrape, Tracker

__all__ = [
    "Limits",
    "completion_curve",
    "hubs_view",
    "job_view",
    "jobs_view",
    "lower_bound",
    "node_state",
    "snapshot",
]

MAX_REASON = 500  # characters of a reason shown (the API has the whole of it)
_WATCHED = (CopyState.STARTING, CopyState.DOWNLOADING)


@dataclass(frozen=True)
class Limits:
    nodes: int = 2000
    jobs: int = 20
    detailed: int = 6  # jobs sent with their nodes and chart (the others as one line)
    rows: int = 200  # nodes shown per job
    files: int = 20  # files listed per job
    points: int = 200  # points of a job's completion chart
    swarms: int = 200


def node_state(node: Node, drains: DrainList) -> str:
    """zombie (silent past the TTL), drained (by an operator), available, or busy (0)."""
    if node.is_zombie:
        return "zombie"
    if node.node_id in drains:
        return "drained"
    return "available" if node.status > 0 else "busy"


def _node(node: Node, drains: DrainList, now: float) -> dict[str, Any]:
    return {
        "id": node.node_id,
        "name": node.name,
        "addr": f"{node.addr}:{node.port}",
        "zone": node.zone,
        "status": node.status,
        "state": node_state(node, drains),
        "seen": round(max(0.0, now - node.last_seen), 1),
        "api": bool(node.api_url),
    }


def _group(reports: Iterable[Report]) -> dict[str, list[Report]]:
    groups: dict[str, list[Report]] = {}
    for report in reports:
        groups.setdefault(report.sha1, []).append(report)
    return groups


# -- push jobs (hub/jobs/): what the JobBook knows, joined with the collector's reports --


_RANK = {JobState.RUNNING: 0, JobState.QUEUED: 1}
_DOING = {
    CopyState.STARTING: "starting",
    CopyState.DOWNLOADING: "downloading",
    CopyState.VERIFYING: "checking SHA-256",
    CopyState.COMPLETE: "complete, waiting for its check",
}


def _name_of(url: str) -> str:
    return url.rsplit("/", 1)[-1] or url


def _fresh(report: Report | None, now: float) -> Report | None:
    if report is None or report.done or now - report.received_at > FRESH:
        return None
    return report


def _job_row(
    job: Job, node: NodeRecord, latest: dict[tuple[str, str], Report], now: float
) -> dict[str, Any]:
    """One node of a job: its progress over every file, rates, time left, outcome, bytes."""
    down = up = 0.0
    lefts: list[float] = []
    weights = [f.filesize for f in job.files]
    if not all(weights):
        weights = [1] * len(job.files)
    done_weight = 0.0
    for index, copy in enumerate(node.copies):
        percent = copy.percent
        if copy.state in (CopyState.COMPLETE, CopyState.VERIFYING, CopyState.DONE):
            percent = 100.0
        elif copy.state in _WATCHED:
            report = _fresh(latest.get((node.nodeid, job.files[index].sha1)), now)
            if report is not None:
                percent = max(percent, report.percent)
                down += report.downrate
                up += report.uprate
                if report.timeleft > 0:
                    lefts.append(report.timeleft)
                elif report.downrate > 0 and job.files[index].filesize:
                    rest = job.files[index].filesize * (100.0 - percent) / 100.0
                    lefts.append(rest / report.downrate)
        done_weight += weights[index] * min(100.0, percent) / 100.0
    state = node.state
    doing = [c.state for c in node.copies if c.state in _DOING]
    if state == JobState.RUNNING.value:
        if doing:
            outcome = _DOING[min(doing, key=list(_DOING).index)]
        elif any(c.history for c in node.copies if c.state is CopyState.PENDING):
            outcome = "trying again"
        else:
            outcome = "waiting for the torrent"
        if len(node.copies) > 1:
            complete = sum(c.state is CopyState.DONE for c in node.copies)
            outcome += f" ({complete}/{len(node.copies)} files verified)"
    elif state == JobState.QUEUED.value:
        outcome = "waiting for the torrent"
    else:
        outcome = state
    return {
        "nodeid": node.nodeid,
        "zone": node.info.zone,
        "role": node.role,
        "state": state,
        "percent": round(100.0 * done_weight / sum(weights), 1) if weights else 0.0,
        "down": round(down),
        "up": round(up),
        "timeleft": round(max(lefts)) if lefts and state == "running" else None,
        "outcome": outcome,
        "reason": node.reason[:MAX_REASON],
        "done": state == JobState.DONE.value,
        "bytes": node.bytes(),
    }


def completion_curve(job: Job, points: int) -> list[list[float]]:
    """[seconds from the job's start, nodes complete by then], one point per node that has
    every file complete on it (at most ``points``, evenly picked: the curve's shape)."""
    times = sorted(
        max(c.done_at for c in n.copies if c.done_at is not None)
        for n in job.nodes
        if n.copies and all(c.done_at is not None for c in n.copies)
    )
    if len(times) > points >= 2:
        step = (len(times) - 1) / (points - 1)
        picked = sorted({round(i * step) for i in range(points)})
    else:
        picked = list(range(len(times)))
    return [[round(times[i], 2), i + 1] for i in picked]


def lower_bound(job: Job) -> dict[str, Any] | None:
    """The soonest every node of the job could have every file, or None if not known.

    What the job knows: the job's ``upload_limit`` (bytes/s a node uploads of its files),
    when the seed had each file (its torrent made: the seed's fetch from the origin, as it
    happened) and each file's size. Every byte a peer gets has left the seed at least
    once, and the seed sends at most ``u`` bytes/s in all; so no peer has file i before
    ``made_i + F_i / u``, and the last of the seed's bytes leaves no sooner than
    ``first made + sum(F) / u``. Perfect relaying lets every peer finish then, so the
    bound is one step: the seed at its last file, every node at that time. Peers that
    fetch from the origin's web seed do not go through the seed: they can beat it.

    Striped files (each of the M nodes fetched its stripe from the origin; their torrent
    made at ``made_i``): a node still needs (M-1)/M of each file from the others, who
    upload ``M * u`` bytes/s in all, so nothing ends before ``made_i + (M-1) F_i / (M u)``
    and all before ``first made + (M-1) sum(F) / (M u)``.
    """
    cap = job.spec.upload_limit
    if cap <= 0 or not job.nodes or not job.files:
        return None
    if any(f.state is not FileState.MADE for f in job.files):
        return None
    striped = all(f.striped for f in job.files)
    if any(f.striped for f in job.files) and not striped:
        return None  # a mix: neither bound holds for all its files
    seed = job.nodes[0].copies
    if striped:  # made when the seed's download of it began
        started = job.started_at or 0.0
        made = [c.started_at - started if c.started_at else None for c in seed]
    else:
        made = [seed[i].done_at for i in range(len(job.files))]
    if any(m is None for m in made):
        return None
    times = [m for m in made if m is not None]
    sizes = [f.filesize for f in job.files]
    if len(job.nodes) == 1:  # the seed alone: done when it has every file
        return {
            "seed": round(max(times), 2),
            "all": round(max(times), 2),
            "nodes": 1,
            "striped": striped,
        }
    m = len(job.nodes)
    per_byte = (m - 1) / (m * cap) if striped else 1 / cap  # seconds per byte once made
    last = max(t + size * per_byte for t, size in zip(times, sizes, strict=True))
    last = max(last, min(times) + sum(sizes) * per_byte)
    return {
        "seed": round(max(times), 2),
        "all": round(last, 2),
        "nodes": len(job.nodes),
        "striped": striped,
    }


def job_view(
    job: Job,
    latest: dict[tuple[str, str], Report],
    *,
    now: float,
    wall: float,
    limits: Limits,
    detailed: bool,
) -> dict[str, Any]:
    """One job as the page shows it (``detailed``: with its nodes and its chart)."""
    spec = job.spec
    started = job.started_at
    if started is None:
        elapsed = 0.0
    else:
        elapsed = (job.ended_at if job.ended_at is not None else wall) - started
    files = job.files or []
    title = _name_of(spec.files[0].url) if spec.files else job.id
    if len(spec.files) > 1:
        title += f" and {len(spec.files) - 1} more file{'s' if len(spec.files) > 2 else ''}"
    rows = [_job_row(job, n, latest, now) for n in job.nodes]
    view: dict[str, Any] = {
        "id": job.id,
        "state": job.state.value,
        "reason": job.reason[:MAX_REASON],
        "title": title,
        "priority": spec.priority,
        "zones": list(spec.zones),
        "upload_limit": spec.upload_limit,
        "created": round(job.created_at, 3),
        "started": None if started is None else round(started, 3),
        "elapsed": round(max(0.0, elapsed), 1),
        "deadline_in": (
            round(started + spec.deadline - wall)
            if job.state is JobState.RUNNING and started
            else None
        ),
        "files": [
            {
                "url": f.url,
                "name": _name_of(f.url),
                "state": f.state.value,
                "filesize": f.filesize,
                "reason": f.reason[:MAX_REASON],
            }
            for f in files[: limits.files]
        ],
        "more_files": max(0, len(files) - limits.files),
        "size": sum(f.filesize for f in files),
        "total": len(rows),
        "done": sum(r["done"] for r in rows),
        "failed": sum(r["state"] in ("failed", "partial", "cancelled") for r in rows),
        "down": sum(r["down"] for r in rows),
        "timeleft": max((r["timeleft"] for r in rows if r["timeleft"] is not None), default=None),
        "percent": round(sum(r["percent"] for r in rows) / len(rows), 1) if rows else 0.0,
        "bytes": {s: sum(r["bytes"][s] for r in rows) for s in SOURCES},
        "detailed": detailed,
        "cancellable": not job.state.final,
    }
    if detailed:
        view["nodes"] = rows[: limits.rows]
        view["more_nodes"] = max(0, len(rows) - limits.rows)
        view["curve"] = completion_curve(job, limits.points)
        view["bound"] = lower_bound(job)
    return view


def jobs_view(
    book: JobBook, reports: Iterable[Report], *, now: float, wall: float, limits: Limits
) -> tuple[list[dict[str, Any]], int]:
    """The jobs to show, running first, then queued, then the latest to end; how many more.

    The first ``limits.detailed`` come with their nodes and chart; the others as one line
    each (``smartget jobs show ID`` has the rest), so a snapshot stays small.
    """
    jobs = sorted(
        book.jobs.values(),
        key=lambda j: (_RANK.get(j.state, 2), -(j.ended_at or 0.0), -j.order),
    )
    shown = jobs[: limits.jobs]
    latest = {(r.nodeid, r.sha1): r for r in reports}
    views = [
        job_view(j, latest, now=now, wall=wall, limits=limits, detailed=i < limits.detailed)
        for i, j in enumerate(shown)
    ]
    return views, len(jobs) - len(shown)


def _name(group: list[Report]) -> str:
    for report in group:
        if report.torrentfile:
            return report.torrentfile.rsplit("/", 1)[-1].removesuffix(".torrent")
    return ""


def _swarms(
    tracker: Tracker, names: dict[str, str], now: float, limit: int
) -> tuple[list[dict[str, Any]], int]:
    allowed = sorted(tracker.allowed)
    if not allowed:
        return [], 0
    files = tracker.scrape(Scrape(tuple(allowed[:limit])), now)
    busiest = sorted(files.items(), key=lambda item: (-(item[1][0] + item[1][2]), item[0]))
    swarms = [
        {
            "sha1": h.hex(),
            "name": names.get(h.hex(), ""),
            "seeds": complete,
            "leechers": incomplete,
            "completed": downloaded,
        }
        for h, (complete, downloaded, incomplete) in busiest
    ]
    return swarms, max(0, len(allowed) - limit)


def _hub(info: dict[str, Any], *, this: bool, up: bool | None, wall: float) -> dict[str, Any]:
    seen = info.get("seen")
    return {
        "id": str(info.get("id", "")),
        "url": str(info.get("http") or info.get("text") or ""),
        "http": str(info.get("http", "")),
        "text": str(info.get("text", "")),
        "state": str(info.get("state", "")),
        "version": str(info.get("version", "")),
        "started": round(float(info.get("started") or 0.0), 3),
        "seen": None if this or seen is None else round(max(0.0, wall - float(seen)), 1),
        "up": True if this else up,
        "this": this,
    }


def hubs_view(
    this: dict[str, Any], listed: list[dict[str, Any]] | None, *, current: bool, wall: float
) -> list[dict[str, Any]]:
    """The hubs panel: this hub first (up: it serves the page), then the other hubs the
    fleet state lists as up (their heartbeats' JSON), by start time.

    ``listed`` is the state's last answer (None before the first); ``current`` says it is
    recent. When it is not (the state stopped answering), the other hubs are shown with
    ``up`` None: not known.
    """
    mine = str(this.get("id", ""))
    own = next((h for h in listed or () if str(h.get("id", "")) == mine), None)
    first = _hub({**(own or {}), **this}, this=True, up=True, wall=wall)
    others = [
        _hub(h, this=False, up=True if current else None, wall=wall)
        for h in listed or ()
        if isinstance(h, dict) and str(h.get("id", "")) != mine
    ]
    others.sort(key=lambda h: (h["started"], h["id"]))
    return [first, *others]


def snapshot(
    *,
    registry: Registry,
    tracker: Tracker,
    collector: Collector,
    drains: DrainList,
    jobs: JobBook,
    history: dict[str, list[float]],
    hubs: list[dict[str, Any]],
    now: float,
    wall: float,
    limits: Limits | None = None,
) -> dict[str, Any]:
    """Everything the page shows, at ``now``; ``live`` is the fleet's sample of now."""
    limits = limits or Limits()
    every = registry.get_nodes()
    nodes = sorted(every.values(), key=lambda n: (n.zone, n.node_id))
    reports = collector.progress()
    names = {sha1: _name(group) for sha1, group in _group(reports).items()}
    shown, more_jobs = jobs_view(jobs, reports, now=now, wall=wall, limits=limits)
    drained = sum(1 for node_id in drains.ids() if node_id in every)
    swarms, more_swarms = _swarms(tracker, names, now, limits.swarms)
    live = sample_of(
        reports,
        tracker.statistics(),
        registry.statistics(),
        at=wall,
        now=now,
        job_bytes=jobs.bytes_total,
    )
    return {
        "at": round(wall, 3),
        "live": {"up": round(live.up), "down": round(live.down), "swarms": live.swarms},
        "fleet": {
            "stats": registry.statistics() | {"drained": drained},
            "zones": sorted({n.zone for n in nodes}),
            "nodes": [_node(n, drains, now) for n in nodes[: limits.nodes]],
            "more": max(0, len(nodes) - limits.nodes),
            "ttl": registry.node_ttl,
        },
        "jobs": shown,
        "more_jobs": more_jobs,
        "job_stats": {
            "running": sum(j.state is JobState.RUNNING for j in jobs.jobs.values()),
            "queued": sum(j.state is JobState.QUEUED for j in jobs.jobs.values()),
            "bytes": dict(jobs.bytes_total),
        },
        "swarms": swarms,
        "more_swarms": more_swarms,
        "history": history,
        "hubs": hubs,
    }
