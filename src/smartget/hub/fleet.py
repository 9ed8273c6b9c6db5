"""The hub's fleet services over HTTP: the tracker, the status collector, torrents.

* ``GET /announce``, ``GET /scrape``: the BitTorrent tracker (hub/tracker.py), open to
  any client, answering bencoded replies (failures too, as BEP 3 says).
* ``POST /report_peerstatus``: the seed 003 report target (hub/collector.py).
* ``/api/trackers``: the announce URLs the fleet's torrents list (UDP first, then HTTP).
* ``/api/torrents``, ``/api/progress``: the JSON API (token) over both. A controller
  follows a push by long-polling ``/api/progress?after=SEQ&wait=S``: the answer comes as
  soon as a report newer than ``SEQ`` arrived (``X-Progress-Seq`` says the newest), or
  after ``S`` seconds; no polling interval is added to a push's times.

The three hot routes are served by :class:`FleetHandlers`, which the hub's fast lane
(hub/fastlane.py) calls without FastAPI in the way. State a reply acknowledges is saved
first: a torrent the tracker was told to track, and a finished download the collector
answered ``success`` to.

With several hubs on one Redis (``--state redis://``) the hub has ``shared_reports``
(:class:`~smartget.hub.state.api.SharedReports`): reports, progress and long-polls go
through it, so every hub sees the fleet's reports; a report's reply then waits for
Redis's answer (its awaitable gives the reply). With SQLite nothing changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Coroutine
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response, status
from pydantic import BaseModel, Field

from smartget.errors import CollectorError, RegistryError, TrackerError
from smartget.hub import tracker as tr
from smartget.hub.collector import Collector, Report, own_report
from smartget.hub.commands import HubCommands
from smartget.hub.state.api import SharedReports

__all__ = ["FleetHandlers", "FleetHost", "add_fleet_routes"]

MAX_REPORT = 64 * 1024
BENCODE = "text/plain"
Reply = tuple[int, bytes]  # status and body, decided once the shared state answered


class FleetHost(Protocol):
    """What the tracker and collector routes need from the hub."""

    commands: HubCommands
    tracker: tr.Tracker
    collector: Collector
    udp_tracker_address: tuple[str, int] | None

    def now(self) -> float: ...
    def save_tracked(self, info_hash: str, name: str = "") -> Awaitable[None]: ...
    def save_done(self, report: Report) -> Awaitable[None]: ...
    def forget_done(self, sha1: str) -> Awaitable[None]: ...


class _Arrivals:
    """Wakes the long-polls of ``/api/progress`` when a report arrives."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()  # later waiters wait for the next one

    async def wait(self, seconds: float) -> None:
        event = self._event
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await event.wait()


class TorrentIn(BaseModel):
    info_hash: str = Field(pattern=r"^[0-9a-fA-F]{40}$", description="v1 info-hash, hex")
    name: str = Field("", max_length=256)


class FleetHandlers:
    """The hot routes' work, for every front end that serves them: the fast lane
    (hub/fastlane.py, its raw HTTP and its ASGI path) and the FastAPI routes below.

    Each takes the request as bytes and the caller's IP, and returns the status, the
    body, and an awaitable to wait for *before* sending (a save the reply
    acknowledges), or None.
    """

    def __init__(self, hub: FleetHost) -> None:
        self.hub = hub
        self.commands = hub.commands
        self.tracker = hub.tracker
        self.arrivals = _Arrivals()
        # The fleet's collector on Redis, or None: this hub's own (hub.collector).
        self.shared: SharedReports | None = getattr(hub, "shared_reports", None)

    def announce(self, query: str, client: str) -> tuple[bytes, Awaitable[None] | None]:
        """BitTorrent announce (BEP 3), compact peers (BEP 23); fleet peers ranked first."""
        try:
            request = tr.parse_announce(query, client)
            announced = self.commands.announce(request, client, self.hub.now())
        except TrackerError as exc:
            return tr.encode_failure(str(exc)), None
        saved = (
            _shielded([self.hub.save_tracked(request.info_hash.hex())])
            if announced.newly_tracked
            else None
        )
        return tr.encode_announce(announced.reply, request), saved

    def scrape(self, query: str) -> bytes:
        try:
            files = self.tracker.scrape(tr.parse_scrape(query), self.hub.now())
        except TrackerError as exc:
            return tr.encode_failure(str(exc))
        return tr.encode_scrape(files)

    def report(self, body: bytes, client: str) -> tuple[int, bytes, Awaitable[Reply | None] | None]:
        """A node's status report (seed 003); ``success`` once it shows the download done.

        The awaitable, if any, is waited for before the reply is sent; if it gives a
        ``(status, body)`` that is the reply (the shared state decided it).
        """
        try:
            if len(body) > MAX_REPORT:
                raise CollectorError(f"report larger than {MAX_REPORT} bytes")
            try:
                data = json.loads(body)
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
                raise CollectorError(f"a report is JSON: {exc}") from None
            if self.shared is not None:
                checked = own_report(data, client, self.hub.now())
                return 200, b"", self._report_shared(self.shared, checked, client)
            reported = self.commands.report(data, client, self.hub.now())
            self.arrivals.notify()
        except CollectorError as exc:
            failed = json.dumps({"result": "failed", "traceback": str(exc)}).encode()
            return 400, failed, None
        report = reported.report
        waits = []
        if reported.newly_tracked:
            waits.append(self.hub.save_tracked(report.sha1, report.torrentfile))
        if reported.done:
            waits.append(self.hub.save_done(report))
            return 200, b'{"result":"success"}', _shielded(waits)
        return 200, b'{"result":"received"}', _shielded(waits)

    async def _report_shared(self, shared: SharedReports, report: Report, client: str) -> Reply:
        try:
            done = await shared.receive(report)  # durable once answered
        except CollectorError as exc:
            return 400, _failed(exc)
        except RegistryError as exc:  # StateUnavailable: Redis did not answer
            return 503, _failed(exc)
        if self.commands.track_reported(client, report):
            await asyncio.shield(self.hub.save_tracked(report.sha1, report.torrentfile))
        return 200, b'{"result":"success"}' if done else b'{"result":"received"}'


def _failed(exc: Exception) -> bytes:
    return json.dumps({"result": "failed", "traceback": str(exc)}).encode()


def _shielded(waits: list[Awaitable[None]]) -> Awaitable[None] | None:
    """One awaitable for ``waits``, shielded: the store's commit future is shared by
    every write of its group, so a reply abandoned (its client gone) must not cancel it."""
    if not waits:
        return None

    async def every() -> None:
        for wait in waits:
            await asyncio.shield(wait)

    return every()


def add_fleet_routes(
    app: FastAPI,
    hub: FleetHost,
    authorized: Callable[..., Coroutine[Any, Any, None]],
    handlers: FleetHandlers | None = None,
) -> FleetHandlers:
    """The fleet's routes on ``app``; returns the handlers the fast lane shares.

    The hub's fast lane answers ``/announce``, ``/scrape`` and ``/report_peerstatus``
    before FastAPI sees them; these routes document them and serve any other mount.
    """
    tracker, collector, commands = hub.tracker, hub.collector, hub.commands
    handlers = handlers or FleetHandlers(hub)
    arrivals = handlers.arrivals

    @app.get("/announce", tags=["tracker"], response_class=Response)
    async def announce(request: Request) -> Response:
        """BitTorrent announce (BEP 3), compact peers (BEP 23); fleet peers ranked first."""
        client = request.client.host if request.client else "0.0.0.0"
        body, saved = handlers.announce(request.url.query, client)
        if saved is not None:
            await saved
        return Response(body, media_type=BENCODE)

    @app.get("/scrape", tags=["tracker"], response_class=Response)
    async def scrape(request: Request) -> Response:
        return Response(handlers.scrape(request.url.query), media_type=BENCODE)

    @app.post("/report_peerstatus", tags=["collector"])
    async def report_peerstatus(request: Request) -> Response:
        """A node's status report (seed 003); ``success`` once it shows the download done."""
        client = request.client.host if request.client else ""
        code, body, saved = handlers.report(await request.body(), client)
        if saved is not None and (decided := await saved) is not None:
            code, body = decided
        return Response(body, status_code=code, media_type="application/json")

    api = APIRouter(prefix="/api", dependencies=[Depends(authorized)], tags=["fleet"])

    @api.post("/torrents", status_code=status.HTTP_201_CREATED)
    async def add_torrent(body: TorrentIn) -> dict[str, Any]:
        """Let the tracker serve this torrent (push does this before nodes download)."""
        info_hash = body.info_hash.lower()
        if commands.track(bytes.fromhex(info_hash)):
            await hub.save_tracked(info_hash, body.name)
        return {"info_hash": info_hash, "tracked": True}

    @api.get("/trackers")
    async def trackers(request: Request) -> list[str]:
        """The announce URLs for torrents the fleet makes: UDP (BEP 15) first, then HTTP.

        Both name the host the caller reached the hub at.
        """
        udp = hub.udp_tracker_address
        return tr.announce_urls(str(request.base_url), None if udp is None else udp[1])

    @api.get("/torrents")
    async def torrents() -> list[dict[str, Any]]:
        """Tracked torrents with their swarms' seeds and leechers."""
        allowed = tuple(sorted(tracker.allowed))
        files = tracker.scrape(tr.Scrape(allowed), hub.now()) if allowed else {}
        return [
            {
                "info_hash": h.hex(),
                "complete": c,
                "downloaded": d,
                "incomplete": i,
                "peers": tracker.swarm(h),
            }
            for h, (c, d, i) in files.items()
        ]

    @api.get("/progress")
    async def progress(
        response: Response,
        sha1: Annotated[str | None, Query(pattern=r"^[0-9a-fA-F]{40}$")] = None,
        nodeid: Annotated[str | None, Query(max_length=256)] = None,
        after: Annotated[int, Query(ge=-1, description="the X-Progress-Seq seen last")] = -1,
        wait: Annotated[float, Query(ge=0, le=30, description="seconds to wait for news")] = 0,
    ) -> list[dict[str, Any]]:
        """The latest report of each node (for one torrent, or all), ``done`` included.

        With ``wait``, answers once a report newer than ``after`` arrived (any torrent's:
        the caller asks again if it was not news to it), or after ``wait`` seconds.
        """
        digest = sha1.lower() if sha1 else None
        if (shared := handlers.shared) is not None:  # the fleet's, on Redis
            if wait:
                await shared.wait_news(after, wait)
            seq, reports = await shared.progress(digest, nodeid)
        else:
            if wait and collector.received <= after:
                await arrivals.wait(wait)
            seq, reports = collector.received, collector.progress(digest, nodeid)
        response.headers["X-Progress-Seq"] = str(seq)
        now = hub.now()
        return [r.as_dict() | {"age": round(now - r.received_at, 3)} for r in reports]

    @api.delete("/progress/{sha1}", status_code=status.HTTP_204_NO_CONTENT)
    async def forget(sha1: str) -> Response:
        if (shared := handlers.shared) is not None:
            if not await shared.forget(sha1.lower()):
                raise HTTPException(status.HTTP_404_NOT_FOUND, f"no reports for {sha1}")
            return Response(status_code=status.HTTP_204_NO_CONTENT)
        if not collector.forget(sha1.lower()):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no reports for {sha1}")
        await hub.forget_done(sha1.lower())
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    app.include_router(api)
    return handlers
