"""What the console page shows, as one JSON-ready snapshot of the hub (sans-IO).

:func:`snapshot` reads the registry, the tracker, the collector, the drain list, the
pushes started from the console and the chart history, and returns plain dicts and
lists: the page renders them (as text, never as markup). Every list is capped so that
a snapshot stays small however large the fleet is; each capped list says how many it
left out. ``now`` is the hub's clock (the one reports and heartbeats carry); ``wall``
is Unix time, for the page.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from smartget.hub.collector import Collector, Report
from smartget.hub.console.drain import DrainList
from smartget.hub.console.history import sample_of
from smartget.hub.registry import Node, Registry
from smartget.hub.tracker import Scrape, Tracker

__all__ = ["Limits", "node_state", "pushes_view", "snapshot"]

STALE = 30.0  # seconds without a report before an unfinished node is called silent


@dataclass(frozen=True)
class Limits:
    nodes: int = 2000
    pushes: int = 20
    rows: int = 200  # nodes shown per push
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


def _row(report: Report, now: float) -> dict[str, Any]:
    age = max(0.0, now - report.received_at)
    if report.done:
        outcome = "done"
    elif report.status == "failed":
        outcome = "failed"
    elif age > STALE:
        outcome = f"silent for {age:.0f} s"
    else:
        outcome = report.status or "reported"
    return {
        "nodeid": report.nodeid,
        "zone": report.nodezone,
        "role": "",
        "percent": 100.0 if report.done else round(report.percent, 1),
        "down": round(report.downrate),
        "up": round(report.uprate),
        "timeleft": None if report.done else round(report.timeleft),
        "outcome": outcome,
        "error": "",
        "done": report.done,
        "age": round(age, 1),
    }


def _group(reports: Iterable[Report]) -> dict[str, list[Report]]:
    groups: dict[str, list[Report]] = {}
    for report in reports:
        groups.setdefault(report.sha1, []).append(report)
    return groups


def pushes_view(
    reports: Iterable[Report],
    started: list[dict[str, Any]],
    now: float,
    limits: Limits,
) -> tuple[list[dict[str, Any]], int]:
    """Pushes started here (with the collector's rows joined) and any other torrent the
    collector has reports of, the most recently active first; and how many were left out.
    """
    groups = _group(reports)
    pushes: list[tuple[float, dict[str, Any]]] = []
    for push in started:
        rows_by_node = {r.nodeid: r for r in groups.pop(push.get("sha1") or "", [])}
        rows = []
        for outcome in push["outcomes"]:
            report = rows_by_node.pop(outcome["nodeid"], None)
            row = _row(report, now) if report is not None else _empty_row(outcome)
            row["role"] = outcome["role"]
            if outcome["error"]:
                row["outcome"], row["error"] = "failed", outcome["error"]
            elif outcome["done"]:
                row["outcome"], row["percent"], row["done"] = "done", 100.0, True
            rows.append(row)
        rows += [_row(r, now) for r in rows_by_node.values()]
        view = dict(push, nodes=rows[: limits.rows], more_nodes=max(0, len(rows) - limits.rows))
        del view["outcomes"], view["updated"]
        _count(view, rows)
        running = push["state"] in ("starting", "running")
        pushes.append((0.0 if running else push["updated"] - now, view))
    for sha1, group in groups.items():
        rows = [_row(r, now) for r in sorted(group, key=lambda r: r.nodeid)]
        newest = max(r.received_at for r in group)
        done = sum(1 for r in rows if r["done"])
        view = {
            "key": sha1,
            "source": "collector",
            "title": _name(group) or sha1,
            "sha1": sha1,
            "state": "done" if done == len(rows) else "running",
            "message": "",
            "nodes": rows[: limits.rows],
            "more_nodes": max(0, len(rows) - limits.rows),
        }
        _count(view, rows)
        pushes.append((newest - now, view))  # how recent, as started pushes are ranked
    pushes.sort(key=lambda item: item[0], reverse=True)
    kept = [view for _, view in pushes[: limits.pushes]]
    return kept, max(0, len(pushes) - limits.pushes)


def _empty_row(outcome: dict[str, Any]) -> dict[str, Any]:
    return {
        "nodeid": outcome["nodeid"],
        "zone": outcome["zone"],
        "role": outcome["role"],
        "percent": round(outcome["percent"], 1),
        "down": 0,
        "up": 0,
        "timeleft": None,
        "outcome": "waiting for a report",
        "error": "",
        "done": False,
        "age": None,
    }


def _count(view: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    view["total"] = len(rows)
    view["done"] = sum(1 for r in rows if r["done"])
    view["failed"] = sum(1 for r in rows if r["outcome"] == "failed")
    view["down"] = sum(r["down"] for r in rows if not r["done"])


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


def snapshot(
    *,
    registry: Registry,
    tracker: Tracker,
    collector: Collector,
    drains: DrainList,
    started: list[dict[str, Any]],
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
    pushes, more_pushes = pushes_view(reports, started, now, limits)
    drained = sum(1 for node_id in drains.ids() if node_id in every)
    swarms, more_swarms = _swarms(tracker, names, now, limits.swarms)
    live = sample_of(reports, tracker.statistics(), registry.statistics(), at=wall, now=now)
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
        "pushes": pushes,
        "more_pushes": more_pushes,
        "swarms": swarms,
        "more_swarms": more_swarms,
        "history": history,
        "hubs": hubs,
    }
