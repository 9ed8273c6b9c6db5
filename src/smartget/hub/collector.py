"""The status collector: the latest report of every node for every torrent (seed 003).

Nodes POST their torrents' status to ``/report_peerstatus`` (seed 003, "节点下载过程状态
上报url") every interval and on each state change. The collector keeps the latest
report per (node, torrent) and answers ``success`` once a report shows ``seeding`` or
``percent`` 100.0: the seed says a node stops reporting that torrent then, so such a
"done" is persisted before the answer leaves. Pure logic: time comes in as ``now``.

With one hub (``--state sqlite``) the :class:`Collector` here is the collector. With
several hubs on one Redis (``--state redis://``) the fleet's reports live in Redis
(``hub/state/reports.py`` runs the atomic steps, ``hub/state/functions.py`` holds
them), and each hub's :class:`Collector` is a read-only copy kept by following Redis
(:meth:`Collector.mirror`, :meth:`Collector.load`) for the console and push jobs. The
rules are the same on both: :func:`own_report` (who may report), the caps, and a
"done" that a late "downloading" does not undo.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from smartget.errors import CollectorError

__all__ = ["DONE_STATUSES", "Collector", "Report", "own_report", "parse_report", "reporter_ip"]

DONE_STATUSES = ("seeding", "download success")
STATUSES = ("Initial startup", "downloading", "download success", "seeding", "failed", "stopped")
MAX_TEXT = 512


@dataclass(slots=True)
class Report:
    """One status report, flattened: the seed's envelope plus its ``args``."""

    nodeid: str
    nodeip: str
    nodezone: str
    sha1: str
    status: str
    percent: float
    downrate: float = 0.0
    uprate: float = 0.0
    downtotal: int = 0
    uptotal: int = 0
    numpeers: int = 0
    numseeds: int = 0
    timeleft: float = 0.0
    torrentfile: str = ""
    taskid: str = ""
    received_at: float = 0.0

    @property
    def done(self) -> bool:
        """Seed 003: 'seeding' or percent 100.0 marks a finished download."""
        return self.status == "seeding" or self.percent >= 100.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"done": self.done}


def _text(data: dict[str, Any], key: str, *, required: bool = False) -> str:
    value = data.get(key, "")
    if value is None:
        value = ""
    if not isinstance(value, str | int | float):
        raise CollectorError(f"{key} must be a string, got {type(value).__name__}")
    text = str(value)
    if len(text) > MAX_TEXT:
        raise CollectorError(f"{key} is longer than {MAX_TEXT} characters")
    if required and not text:
        raise CollectorError(f"missing {key}")
    return text


def _number(data: dict[str, Any], key: str) -> float:
    value = data.get(key, 0)
    if value in (None, ""):
        return 0.0
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise CollectorError(f"{key} must be a number, got {str(value)[:24]!r}") from None
    if not math.isfinite(number) or number < 0:
        raise CollectorError(f"{key} must be a finite number >= 0, got {number}")
    return number


def parse_report(body: Any, now: float) -> Report:
    """A report from the JSON the seed shows; CollectorError says what is wrong."""
    if not isinstance(body, dict):
        raise CollectorError("a report is a JSON object with event, nodeid, status and args")
    args = body.get("args", {})
    if not isinstance(args, dict):
        raise CollectorError("args must be a JSON object")
    sha1 = _text(args, "sha1", required=True).lower()
    if len(sha1) != 40 or any(c not in "0123456789abcdef" for c in sha1):
        raise CollectorError(f"sha1 must be 40 hex digits, got {sha1[:48]!r}")
    percent = _number(args, "percent")
    if percent > 100.0:
        raise CollectorError(f"percent must be at most 100, got {percent}")
    return Report(
        nodeid=_text(body, "nodeid", required=True),
        nodeip=_text(body, "nodeip"),
        nodezone=_text(body, "nodezone"),
        sha1=sha1,
        status=_text(body, "status"),
        percent=percent,
        downrate=_number(args, "downrate"),
        uprate=_number(args, "uprate"),
        downtotal=int(_number(args, "downtotal")),
        uptotal=int(_number(args, "uptotal")),
        numpeers=int(_number(args, "numpeers")),
        numseeds=int(_number(args, "numseeds")),
        timeleft=_number(args, "timeleft"),
        torrentfile=_text(args, "torrentfile"),
        taskid=_text(body, "taskid"),
        received_at=now,
    )


def reporter_ip(nodeid: str) -> str:
    """The address a node id names: seed 003's NodeID is ``ZONE_IP``."""
    return nodeid.rpartition("_")[2]


def own_report(body: Any, caller_ip: str, now: float) -> Report:
    """:func:`parse_report`, taken only from the node it names: the node id's IP (and
    ``nodeip``, if given) must be the caller's (issue 12.2: nobody reports for another
    node, so a stranger cannot mark a copy done). CollectorError otherwise."""
    report = parse_report(body, now)
    if reporter_ip(report.nodeid) != caller_ip or report.nodeip not in ("", caller_ip):
        raise CollectorError(
            f"a report from {caller_ip} names node {report.nodeid[:80]!r}: a node "
            "reports for itself only"
        )
    return report


class Collector:
    """Latest report per (nodeid, sha1); bounded to ``max_entries`` in all and
    ``max_per_node`` torrents per node."""

    def __init__(self, max_entries: int = 1_000_000, max_per_node: int = 10_000) -> None:
        self.max_entries = max_entries
        self.max_per_node = max_per_node
        self._latest: dict[tuple[str, str], Report] = {}
        self._per_node: dict[str, int] = {}
        self.received = 0

    def receive(self, report: Report) -> bool:
        """Record a report; True if it shows the download finished (answer 'success')."""
        key = (report.nodeid, report.sha1)
        if key not in self._latest:
            if len(self._latest) >= self.max_entries:
                raise CollectorError(f"the collector holds {self.max_entries} entries already")
            if self._per_node.get(report.nodeid, 0) >= self.max_per_node:
                raise CollectorError(
                    f"node {report.nodeid[:80]} has reports on {self.max_per_node} torrents "
                    "already (forget old ones with DELETE /api/progress/SHA1)"
                )
            self._per_node[report.nodeid] = self._per_node.get(report.nodeid, 0) + 1
        previous = self._latest.get(key)
        if previous is not None and previous.done and not report.done:
            # A late "downloading" after "seeding" (reports cross on the wire) changes nothing.
            return False
        self._latest[key] = report
        self.received += 1
        return report.done

    def restore(self, reports: list[Report]) -> None:
        for report in reports:
            if (report.nodeid, report.sha1) not in self._latest:
                self._per_node[report.nodeid] = self._per_node.get(report.nodeid, 0) + 1
            self._latest[report.nodeid, report.sha1] = report

    def mirror(self, report: Report, seq: int) -> None:
        """A report the fleet's shared state took (by any hub), as it holds it now."""
        self.restore([report])
        self.received = max(self.received, seq)

    def load(self, reports: list[Report], received: int) -> None:
        """Hold exactly ``reports`` (a copy of the shared state, loaded anew)."""
        self._latest.clear()
        self._per_node.clear()
        self.restore(reports)
        self.received = received

    def progress(self, sha1: str | None = None, nodeid: str | None = None) -> list[Report]:
        return [
            r
            for (node, digest), r in sorted(self._latest.items())
            if (sha1 is None or digest == sha1) and (nodeid is None or node == nodeid)
        ]

    def forget(self, sha1: str) -> int:
        keys = [k for k in self._latest if k[1] == sha1]
        for key in keys:
            del self._latest[key]
            left = self._per_node[key[0]] - 1
            if left:
                self._per_node[key[0]] = left
            else:
                del self._per_node[key[0]]
        return len(keys)

    def statistics(self) -> dict[str, int]:
        done = sum(1 for r in self._latest.values() if r.done)
        return {"entries": len(self._latest), "done": done, "received": self.received}
