"""What the node reports to the collector and when (seed 003, "report_peer_status_url").

Theory of operation
-------------------
:class:`ReportSchedule` is the sans-IO core: it knows, per torrent, when the next report
is due, and takes ``now`` in. A torrent's report is due when it is first tracked, every
``interval`` seconds after a delivered report, at once on each state change, and after
a failed POST only after ``min(900, interval * retries**2)`` seconds (the seed's
backoff). A reply meaning success (JSON ``result`` ``success``, or the body
``success``) to a report showing ``seeding`` or percent ``100.0`` ends reporting for
that torrent (issue 4; the seed: "the receiver returns success, the node stops"); so
does one to a report showing ``expired`` (a download stopped at its task's deadline,
see :mod:`smartget.node.tasks`) or ``evicted`` (removed to keep the cache under
``--cache-max``, see :mod:`smartget.node.cache`): nothing will change after it.

:func:`status_report` is the body, :func:`is_final` whether nothing will change after
it, :func:`is_success_reply` whether the collector's reply says so. The HTTP driver is
:class:`smartget.node.reporter.Reporter`.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Any

from smartget.node.status import SEEDING, TorrentStatus
from smartget.node.tasks import EVICTED, EXPIRED, NodeIdentity, response

__all__ = [
    "MAX_BACKOFF",
    "ReportSchedule",
    "is_final",
    "is_success_reply",
    "status_report",
]

MAX_BACKOFF = 900.0
MAX_REPLY = 64 << 10


@dataclass
class _Entry:
    next_due: float
    retries: int = 0
    done: bool = False
    last_status: str = ""


class ReportSchedule:
    """When each torrent's next report is due. No I/O, no clock."""

    def __init__(self, interval: float) -> None:
        if interval <= 0:
            raise ValueError("report interval must be positive")
        self.interval = interval
        self.entries: dict[str, _Entry] = {}
        self.sent_ok = 0
        self.sent_failed = 0

    def track(self, sha1: str, now: float, *, done: bool = False, retries: int = 0) -> None:
        if sha1 not in self.entries:
            self.entries[sha1] = _Entry(next_due=now, retries=retries, done=done)

    def untrack(self, sha1: str) -> None:
        self.entries.pop(sha1, None)

    def changed(self, sha1: str, status: str, now: float) -> None:
        """A state change: report at once (unless done, or backing off after a failure)."""
        entry = self.entries.get(sha1)
        if entry is None or entry.done or status == entry.last_status:
            return
        entry.last_status = status
        if entry.retries == 0:
            entry.next_due = min(entry.next_due, now)

    def due(self, now: float) -> list[str]:
        return [s for s, e in self.entries.items() if not e.done and e.next_due <= now]

    def next_deadline(self) -> float | None:
        pending = [e.next_due for e in self.entries.values() if not e.done]
        return min(pending) if pending else None

    def backoff(self, retries: int) -> float:
        return min(MAX_BACKOFF, self.interval * retries**2)

    def delivered(self, sha1: str, now: float, *, final: bool, acknowledged: bool) -> None:
        """A POST got an HTTP reply; ``final`` if the report showed seeding / 100.0."""
        entry = self.entries.get(sha1)
        if entry is None:
            return
        self.sent_ok += 1
        entry.retries = 0
        entry.done = final and acknowledged
        entry.next_due = now + self.interval

    def failed(self, sha1: str, now: float) -> None:
        entry = self.entries.get(sha1)
        if entry is None:
            return
        self.sent_failed += 1
        entry.retries += 1
        entry.next_due = now + self.backoff(entry.retries)

    def statistics(self) -> dict[str, int]:
        return {
            "tracked": len(self.entries),
            "done": sum(e.done for e in self.entries.values()),
            "sent_ok": self.sent_ok,
            "sent_failed": self.sent_failed,
        }


def status_report(
    node: NodeIdentity, st: TorrentStatus, *, torrentfile: str, taskid: str = ""
) -> dict[str, Any]:
    """Seed 003's status_response body."""
    return response(
        node,
        "status",
        taskid=taskid,
        result="",
        status=st.status,
        args={
            "downrate": st.downrate,
            "downtotal": st.downtotal,
            "numpeers": st.numpeers,
            "numseeds": st.numseeds,
            "percent": f"{st.percent:.1f}",
            "sha1": st.sha1,
            "timeleft": st.timeleft,
            "torrentfile": torrentfile,
            "uprate": st.uprate,
            "uptotal": st.uptotal,
        },
    )


def is_final(st: TorrentStatus) -> bool:
    """Whether nothing will change after this report: seeding, 100.0, expired, evicted."""
    return st.status in (SEEDING, EXPIRED, EVICTED) or st.percent >= 100.0


def is_success_reply(body: bytes) -> bool:
    """JSON ``{"result": "success"}`` (or the seed's ``sucess``), or the bare body ``success``."""
    text = body[:MAX_REPLY].strip()
    if text.strip(b'"') in (b"success", b"sucess"):
        return True
    with contextlib.suppress(ValueError, RecursionError):
        data = json.loads(text)
        return isinstance(data, dict) and data.get("result") in ("success", "sucess")
    return False
