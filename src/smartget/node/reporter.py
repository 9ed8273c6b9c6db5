"""Status reports to the collector over HTTP: the driver of :mod:`smartget.node.report`.

:class:`Reporter` sleeps until the schedule's next deadline or a state change, POSTs
each due report with httpx (each POST has a deadline), and tells the schedule how it
went. The done flag and the retry count are kept in the node's state, so reporting
picks up where it was after a restart. What is reported and when (the seed's backoff,
when to stop) is decided in :mod:`smartget.node.report`, without I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

import httpx

from smartget.failover import Endpoints
from smartget.node.report import (
    MAX_BACKOFF,
    ReportSchedule,
    is_final,
    is_success_reply,
    status_report,
)
from smartget.node.status import TorrentStatus
from smartget.node.tasks import NodeIdentity

__all__ = [
    "MAX_BACKOFF",
    "ReportSchedule",
    "Reporter",
    "is_final",
    "is_success_reply",
    "status_report",
]

log = logging.getLogger(__name__)

POST_TIMEOUT = 10.0


class Reporter:
    """POSTs due reports. ``lookup(sha1)`` gives (status, torrentfile, taskid) or None."""

    def __init__(
        self,
        urls: str | Sequence[str],
        schedule: ReportSchedule,
        node: NodeIdentity,
        lookup: Callable[[str], tuple[TorrentStatus, str, str] | None],
        persist: Callable[[str, bool, int], None],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # Several collectors (the hubs of one fleet): the next when one stops answering.
        self.urls = Endpoints([urls] if isinstance(urls, str) else list(urls), "report URL")
        self.schedule = schedule
        self.node = node
        self.lookup = lookup
        self.persist = persist
        self.clock = clock
        self._wake = asyncio.Event()
        # The hub takes a report only from the address of the node it names (issue
        # 12.2): send from the node's own address, as the hub client does.
        local = None if node.ip in ("", "0.0.0.0", "::") else node.ip
        self.client = httpx.AsyncClient(
            timeout=POST_TIMEOUT,
            trust_env=False,
            transport=httpx.AsyncHTTPTransport(local_address=local),
        )

    @property
    def url(self) -> str:
        """The collector in use."""
        return self.urls.current

    async def _post(self, body: dict[str, object]) -> httpx.Response:
        """POST to the collector in use, then to the next ones while they do not answer
        (a report is idempotent: the latest one of a torrent wins)."""
        tries = self.urls.attempts()
        for attempt, url in enumerate(tries, 1):
            try:
                reply = await self.client.post(url, json=body)
            except httpx.TransportError as exc:
                moved = self.urls.failed(url)
                if attempt == len(tries):
                    raise
                if moved:
                    log.warning("collector %s unreachable (%s); now %s", url, exc, self.url)
                continue
            self.urls.answered(url)
            if reply.status_code >= 400:
                raise httpx.HTTPStatusError(
                    f"HTTP {reply.status_code}", request=reply.request, response=reply
                )
            return reply
        raise AssertionError("unreachable: the last attempt returns or raises")

    def track(self, sha1: str, *, done: bool = False, retries: int = 0) -> None:
        self.schedule.track(sha1, self.clock(), done=done, retries=retries)
        self._wake.set()

    def untrack(self, sha1: str) -> None:
        self.schedule.untrack(sha1)

    def changed(self, sha1: str, status: str) -> None:
        self.schedule.changed(sha1, status, self.clock())
        self._wake.set()

    async def aclose(self) -> None:
        await self.client.aclose()

    async def run(self) -> None:
        """Report forever (cancel to stop)."""
        while True:
            now = self.clock()
            for sha1 in self.schedule.due(now):
                await self._send(sha1)
            deadline = self.schedule.next_deadline()
            delay = 3600.0 if deadline is None else max(0.0, deadline - self.clock())
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    async def _send(self, sha1: str) -> None:
        found = self.lookup(sha1)
        if found is None:
            self.schedule.untrack(sha1)
            return
        st, torrentfile, taskid = found
        entry = self.schedule.entries[sha1]
        entry.last_status = st.status
        body = status_report(self.node, st, torrentfile=torrentfile, taskid=taskid)
        final = is_final(st)
        try:
            reply = await self._post(body)
        except httpx.HTTPError as exc:
            if self.schedule.entries.get(sha1) is not entry:
                return  # untracked (or tracked anew) meanwhile: this report is moot
            self.schedule.failed(sha1, self.clock())
            log.info(
                "report of %s to %s failed (%s); next in %.0f s",
                sha1,
                self.url,
                exc or type(exc).__name__,
                self.schedule.backoff(entry.retries),
            )
        else:
            if self.schedule.entries.get(sha1) is not entry:
                return  # e.g. an expired torrent downloaded again by a new task
            self.schedule.delivered(
                sha1, self.clock(), final=final, acknowledged=is_success_reply(reply.content)
            )
        if sha1 in self.schedule.entries:
            self.persist(sha1, entry.done, entry.retries)
