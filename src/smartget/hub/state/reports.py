"""The status collector on Redis: one fleet's reports, shared by every hub.

::

    POST /report_peerstatus ─> own_report (collector.py: who may report) ─> receive:
                               sg_report through the engine's lane (one atomic step)
    GET /api/progress ───────> progress: GET P rq, then the reports (pipelined reads)
      ?after=SEQ&wait=S ─────> wait_news: until this hub has seen a seq > SEQ
    follow (one per hub) ────> XREAD BLOCK P rlog: wakes the long-polls, and keeps the
                               hub's Collector a read-only copy (console, push jobs)
    keep (lease holder) ─────> sg_report_expire: torrents silent for REPORT_TTL

Sequence numbers: ``P rq`` is an INCR counter, bumped by ``sg_report`` in the same
atomic step that stores the report, and the step appends ``(seq, report)`` to the
capped stream ``P rlog``. A counter, not the stream's ids, is the ``X-Progress-Seq``:
it is the plain integer a controller already sends back as ``after`` (``smartget push``
parses it as one), it is never reused or reset by trimming the stream, and reading it
is one GET. The stream is what carries the news to the other hubs: one blocking XREAD
per hub (not per long-poll: a thousand waiting controllers cost Redis nothing), and it
keeps the order Redis took the reports in, so each hub's copy ends as Redis holds it.
A hub that falls behind the trimmed stream reloads its copy.

``/api/progress`` reads Redis itself, the counter first and then the reports: what it
returns is at least as new as the seq it names, so a long-poll may wake for news it
has already seen (it asks again), never sleep through a report it has not.

Bounds (a stranger cannot grow Redis): a report is taken only from the address of the
node it names (``own_report``) and only if that address has a registered node (checked
in ``sg_report`` against the registry's ``P ip:<ip>``, atomically); at most
:data:`REPORTERS_PER_IP` node ids per address, the collector's ``max_per_node``
torrents per node id, :data:`REPORTERS_PER_TORRENT` node ids per torrent and its
``max_entries`` reports in all (a report is at most about 4 KB: ``MAX_TEXT`` per
field); a torrent without a report for :data:`REPORT_TTL` is forgotten; the change
log is capped at about :data:`LOG_LENGTH` entries.

Durability: ``sg_report`` answers after Redis wrote it (``appendfsync always``, as for
the registry), and ``success`` leaves only after that answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError

from smartget.errors import CollectorError
from smartget.hub.collector import Collector, Report, reporter_ip
from smartget.hub.state.api import StateUnavailable
from smartget.hub.state.keys import report_entry, report_from_entry
from smartget.hub.state.redisengine import (
    TIMEOUT,
    Client,
    RedisState,
    stream_id_before,
)

__all__ = ["REPORT_TTL", "RedisReports"]

log = logging.getLogger(__name__)

REPORTERS_PER_IP = 64  # node ids one address reports as (a node's zone may change)
REPORTERS_PER_TORRENT = 100_000  # node ids reporting on one torrent
REPORT_TTL = 7 * 86400.0  # seconds without a report before a torrent's are forgotten
LOG_LENGTH = 10_000  # change log entries kept (about); a hub further behind reloads
EXPIRE_EVERY = 10.0  # seconds between expiry calls of the lease holder
EXPIRE_LIMIT = 100  # torrents per expiry call
READ_BATCH = 1000  # hashes per pipeline when reading every report
FOLLOW_BATCH = 1000  # change log entries per read


class RedisReports:
    """:class:`~smartget.hub.state.api.SharedReports` on the fleet's Redis."""

    def __init__(
        self, engine: RedisState, collector: Collector, clock: Callable[[], float]
    ) -> None:
        self.engine = engine
        self.keys = engine.keys
        self.collector = collector  # this hub's read-only copy
        self.clock = clock
        self.latest = 0  # the newest seq this hub has seen (its follower, or a read)
        self._news = asyncio.Event()
        self._log_last = "0-0"
        self.followed = 0
        self.waiting = 0  # long-polls waiting for news now

    def local_time(self, wall: float) -> float:
        """Wall-clock seconds (Redis's time) on this hub's clock."""
        return wall - time.time() + self.clock()

    # -- the routes ----------------------------------------------------------------

    async def receive(self, report: Report) -> bool:
        """Take a report checked by ``own_report``; True if it shows the download done
        (durable once this returns). CollectorError if refused."""
        keys, ip = self.keys, reporter_ip(report.nodeid)
        reply = await self.engine.fcall(
            "sg_report", 1, keys.report_seq, keys.prefix, report.nodeid, ip, report.sha1,
            "1" if report.done else "0", report_entry(report), REPORTERS_PER_IP,
            self.collector.max_per_node, REPORTERS_PER_TORRENT, self.collector.max_entries,
            LOG_LENGTH,
        )  # fmt: skip
        code = reply[0]
        if code == "ok":
            self._saw(int(reply[1]))
            return report.done
        if code == "stale":  # a late "downloading" after "seeding" changes nothing
            return False
        if code == "stranger":
            raise CollectorError(
                f"{ip} has no registered node: a node registers with the hub before it reports"
            )
        what, count = reply[1], reply[2]
        raise CollectorError(
            {
                "all": f"the collector holds {count} entries already",
                "node": f"node {report.nodeid[:80]} has reports on {count} torrents already "
                "(forget old ones with DELETE /api/progress/SHA1)",
                "torrent": f"torrent {report.sha1} has reports from {count} nodes already",
                "address": f"{ip} has reported as {count} node ids already",
            }.get(what, f"too many reports ({what})")
        )

    async def progress(
        self, sha1: str | None = None, nodeid: str | None = None
    ) -> tuple[int, list[Report]]:
        """The fleet's latest reports, and the seq they are at least as new as."""
        keys, client, read = self.keys, self.engine.client, self.engine.read
        pipe = client.pipeline(transaction=False)
        pipe.get(keys.report_seq)  # first: the reports read after it are as new or newer
        if sha1 is not None:
            pipe.hgetall(keys.reports(sha1))
            seq, found = await read(pipe.execute())
            entries = [(n, sha1, v) for n, v in found.items() if nodeid in (None, n)]
        elif nodeid is not None:
            pipe.smembers(keys.reports_of_node(nodeid))
            seq, digests = await read(pipe.execute())
            digests = sorted(digests)
            values = await self._pipelined(lambda p, d: p.hget(keys.reports(d), nodeid), digests)
            entries = [(nodeid, d, v) for d, v in zip(digests, values, strict=True) if v]
        else:
            pipe.zrange(keys.report_times, 0, -1)
            seq, digests = await read(pipe.execute())
            hashes = await self._pipelined(lambda p, d: p.hgetall(keys.reports(d)), digests)
            entries = [
                (n, d, v)
                for d, found in zip(digests, hashes, strict=True)
                for n, v in found.items()
            ]
        entries.sort(key=lambda e: (e[0], e[1]))
        seq = int(seq or 0)
        self._saw(seq)
        return seq, [report_from_entry(v, self.local_time) for _, _, v in entries]

    async def _pipelined(self, add: Callable[[Any, str], Any], items: list[str]) -> list[Any]:
        out: list[Any] = []
        for at in range(0, len(items), READ_BATCH):
            pipe = self.engine.client.pipeline(transaction=False)
            for item in items[at : at + READ_BATCH]:
                add(pipe, item)
            out += await self.engine.read(pipe.execute())
        return out

    async def wait_news(self, after: int, seconds: float) -> None:
        """Return once this hub has seen a report newer than ``after``, or after
        ``seconds``. The follower brings the other hubs' reports."""
        deadline = self.clock() + seconds
        if self.latest <= after:  # the follower may be a moment behind: ask once
            current = await self.engine.read(self.engine.client.get(self.keys.report_seq))
            self._saw(int(current or 0))
        self.waiting += 1
        try:
            while self.latest <= after:
                left = deadline - self.clock()
                if left <= 0:
                    return
                news = self._news
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(left):
                        await news.wait()
        finally:
            self.waiting -= 1

    async def forget(self, sha1: str) -> int:
        keys = self.keys
        forgotten = await self.engine.fcall(
            "sg_report_forget", 1, keys.report_seq, keys.prefix, sha1, LOG_LENGTH
        )
        self.collector.forget(sha1)
        return int(forgotten)

    def _saw(self, seq: int) -> None:
        if seq > self.latest:
            self.latest = seq
            self._news.set()
            self._news = asyncio.Event()  # later waiters wait for the next one

    # -- this hub's copy, the follower and the expiry -----------------------------------

    async def load_mirror(self) -> int:
        """Fill the hub's Collector with every report (at start, or after falling behind)."""
        last = await self.engine.read(self.engine.client.xrevrange(self.keys.report_log, count=1))
        self._log_last = last[0][0] if last else "0-0"
        seq, reports = await self.progress()
        self.collector.load(reports, seq)
        return len(reports)

    async def follow(self) -> None:
        """Apply the change log as it grows: wake long-polls, keep the copy. Until cancelled."""
        await self.engine.follow_stream(
            self.follow_once, "collector: cannot follow the fleet's reports"
        )

    async def follow_once(self, reader: Client) -> None:
        got: Any
        info: Any
        log_key = self.keys.report_log
        async with asyncio.timeout(TIMEOUT + 1):
            got = await reader.xread(
                {log_key: self._log_last}, count=FOLLOW_BATCH, block=int(TIMEOUT * 1000 / 2)
            )
            info = await reader.xinfo_stream(log_key) if got else None
        if not got:
            return
        entries = got[0][1]
        trimmed = info.get("max-deleted-entry-id", "0-0") if info else "0-0"
        if stream_id_before(self._log_last, trimmed):
            log.warning("collector: this hub fell behind the fleet's reports; reloading them")
            await self.load_mirror()
            return
        self._log_last = entries[-1][0]
        collector, seq = self.collector, self.latest
        for _, fields in entries:
            if fields.get("k") == "r":
                seq = max(seq, int(fields["q"]))
                collector.mirror(report_from_entry(fields["v"], self.local_time), seq)
            elif fields.get("k") == "f":
                collector.forget(fields["s"])
        self.followed += len(entries)
        self._saw(seq)

    async def keep(self) -> None:
        """Forget torrents silent for REPORT_TTL, while this hub holds the sweep lease."""
        while True:
            await asyncio.sleep(EXPIRE_EVERY)
            if not self.engine.lease.holds(self.clock()):
                continue
            try:
                await self.expire()
            except (RedisError, OSError, TimeoutError, StateUnavailable) as exc:
                log.warning("collector: cannot expire old reports: %s", exc)

    async def expire(self, ttl: float = REPORT_TTL) -> int:
        """One bounded expiry step; how many reports it forgot."""
        keys = self.keys
        torrents, dropped = await self.engine.fcall(
            "sg_report_expire", 1, keys.report_seq, keys.prefix, int(ttl * 1000), EXPIRE_LIMIT,
            LOG_LENGTH,
        )  # fmt: skip
        if torrents:
            log.info("collector: forgot %d reports on %d silent torrents", dropped, torrents)
        return int(dropped)
