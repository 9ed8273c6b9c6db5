"""The hub's dashboard: one self-refreshing HTML page of the fleet, for people.

``GET /`` (and ``/dashboard``) shows the registry, the tracked torrents with their
swarms, and the collector's latest reports. It needs the hub's token like the API; a
browser sends it as HTTP Basic (any user name, the token as password) after a prompt.
Server-rendered, no script: every value is escaped.
"""

from __future__ import annotations

from collections.abc import Iterable
from html import escape
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response

from smartget.auth import presented_secret, secret_matches
from smartget.hub.collector import Collector
from smartget.hub.registry import Registry
from smartget.hub.tracker import Tracker

__all__ = ["DashboardView", "add_dashboard"]


class DashboardView(Protocol):
    """What the dashboard reads from the hub (never changes it)."""

    registry: Registry
    tracker: Tracker
    collector: Collector
    token: str

    def now(self) -> float: ...


MAX_ROWS = 500
STYLE = """
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.5em}
table{border-collapse:collapse}td,th{padding:.2em .7em;border-bottom:1px solid #ddd;
text-align:left}th{background:#f4f4f4}.num{text-align:right}.muted{color:#888}
.bar{display:inline-block;height:.7em;background:#4a8;vertical-align:middle}
"""


def _table(headers: Iterable[str], rows: Iterable[Iterable[Any]], numeric: set[int]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            css = ' class="num"' if i in numeric else ""
            cells.append(f"<td{css}>{cell if isinstance(cell, _Html) else escape(str(cell))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    if not body:
        return '<p class="muted">none</p>'
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


class _Html(str):
    """Markup built here from escaped parts; inserted as is."""


def _bar(percent: float) -> _Html:
    width = max(0.0, min(100.0, percent))
    return _Html(f'<span class="bar" style="width:{width:.0f}px"></span> {width:.1f}%')


def _mib(rate: float) -> str:
    return f"{rate / (1 << 20):.1f} MiB/s"


def render(hub: DashboardView) -> str:
    registry, tracker, collector = hub.registry, hub.tracker, hub.collector
    stats = registry.statistics()
    nodes = sorted(registry.get_nodes().values(), key=lambda n: n.node_id)[:MAX_ROWS]
    node_rows = [
        (
            n.node_id,
            f"{n.addr}:{n.port}",
            n.zone or "-",
            "zombie" if n.status < 0 else n.status,
            n.bt_port or "-",
            n.api_url or "-",
        )
        for n in nodes
    ]
    now = hub.now()
    torrent_rows = []
    for info_hash in sorted(tracker.allowed)[:MAX_ROWS]:
        swarm = tracker.swarm(info_hash)
        seeds = sum(1 for p in swarm if p["seed"])
        torrent_rows.append((info_hash.hex(), seeds, len(swarm) - seeds))
    report_rows = [
        (
            r.nodeid,
            r.sha1[:12],
            r.status,
            _bar(r.percent),
            _mib(r.downrate),
            _mib(r.uprate),
            r.numpeers,
            "yes" if r.done else "",
            f"{now - r.received_at:.0f} s",
        )
        for r in collector.progress()[:MAX_ROWS]
    ]
    summary = (
        f"{stats['nodes']} nodes: {stats['available']} available "
        f"({stats['free_slots']} free slots), {stats['idle']} idle, "
        f"{stats['zombies']} zombies"
    )
    return f"""<!doctype html><html><head><meta charset="utf-8">
<meta http-equiv="refresh" content="2"><title>SmartGet hub</title><style>{STYLE}</style></head>
<body><h1>SmartGet hub</h1><p>{escape(summary)}. <a href="/docs">API docs</a></p>
<h2>Nodes</h2>{
        _table(("id", "address", "zone", "status", "bt port", "task API"), node_rows, {0, 3})
    }
<h2>Torrents</h2>{_table(("info-hash", "seeds", "leechers"), torrent_rows, {1, 2})}
<h2>Progress</h2>{
        _table(
            ("node", "sha1", "status", "percent", "down", "up", "peers", "done", "age"),
            report_rows,
            {4, 5, 6},
        )
    }
</body></html>"""


def add_dashboard(app: FastAPI, hub: DashboardView) -> None:
    @app.get("/", include_in_schema=False)
    @app.get("/dashboard", include_in_schema=False)
    async def dashboard(request: Request) -> Response:
        given = presented_secret(request.headers.get("authorization", ""))
        if not secret_matches(given, hub.token):
            return Response(
                "the dashboard needs the hub's token: any user name, the token as password\n",
                status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="smartget hub"'},
            )
        return HTMLResponse(render(hub))
