"""Pushes started from the console: the hub runs :func:`smartget.push.push` itself.

Until the hub has jobs of its own (the jobs issue), a push started from the page is the
same push ``smartget push`` makes, run by the hub in its own loop against its own HTTP
API: the seed node fetches from the origin and makes the torrent, the others download
it, progress comes from the collector, every copy is checked by SHA-256. What it knows
is kept here, in memory (a restart of the hub forgets it; the collector's reports
remain): at most ``max_running`` at once and the last ``keep`` in all.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from smartget.errors import PushError, SmartGetError
from smartget.push import PushResult, push

__all__ = ["PushRunner"]

log = logging.getLogger(__name__)

MAX_RUNNING = 4
KEEP = 50
GIVE_UP_AFTER = 1800.0  # seconds before a push gives up on nodes not done


class PushRunner:
    def __init__(
        self,
        token: str,
        clock: Callable[[], float],
        *,
        max_running: int = MAX_RUNNING,
        keep: int = KEEP,
        give_up_after: float = GIVE_UP_AFTER,
    ) -> None:
        self.token = token
        self.clock = clock
        self.max_running = max_running
        self.keep = keep
        self.give_up_after = give_up_after
        self._ids = itertools.count(1)
        self._records: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self.changed = 0  # grows with every change, so the console knows to redraw

    @property
    def running(self) -> int:
        return len(self._tasks)

    def views(self) -> list[dict[str, Any]]:
        return [dict(r, outcomes=[dict(o) for o in r["outcomes"]]) for r in self._records.values()]

    def start(
        self, urls: list[str], zones: tuple[str, ...], count: int | None, hub_url: str
    ) -> list[str]:
        """Start one push per URL; their keys. PushError if too many would run."""
        if self.running + len(urls) > self.max_running:
            raise PushError(
                f"{self.running} pushes are running; at most {self.max_running} run at once"
            )
        keys = []
        for url in urls:
            key = f"console-{next(self._ids)}"
            self._records[key] = {
                "key": key,
                "source": "console",
                "title": url,
                "sha1": "",
                "state": "starting",
                "message": "asking the seed node to make the torrent",
                "started": time.time(),
                "updated": self.clock(),
                "zones": list(zones),
                "count": count,
                "filesize": 0,
                "makespan": None,
                "origin_bytes": None,
                "outcomes": [],
            }
            while len(self._records) > self.keep:
                oldest = next(iter(self._records))
                if self._records[oldest]["state"] in ("starting", "running"):
                    break
                del self._records[oldest]
            task = asyncio.create_task(self._run(key, url, zones, count, hub_url), name=key)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            keys.append(key)
        self.changed += 1
        return keys

    def _update(self, key: str, result: PushResult) -> None:
        record = self._records.get(key)
        if record is None:
            return
        record["sha1"] = result.sha1
        record["filesize"] = result.filesize
        if record["state"] == "starting" and result.outcomes:
            record["state"], record["message"] = "running", ""
        record["outcomes"] = [
            {
                "nodeid": o.node.nodeid,
                "zone": o.node.zone,
                "role": o.role,
                "percent": o.percent,
                "done": o.done_at is not None and o.error is None,
                "error": o.error or "",
            }
            for o in result.outcomes
        ]
        record["updated"] = self.clock()
        self.changed += 1

    async def _run(
        self, key: str, url: str, zones: tuple[str, ...], count: int | None, hub_url: str
    ) -> None:
        record = self._records[key]
        try:
            result = await push(
                url,
                hub_url=hub_url,
                token=self.token,
                zones=zones,
                nodes=count,
                give_up_after=self.give_up_after,
                on_update=lambda r: self._update(key, r),
            )
        except SmartGetError as exc:
            record["state"], record["message"] = "failed", str(exc)
        except Exception as exc:  # a bug must not pass silently: say it on the page too
            log.exception("console push %s of %s failed", key, url)
            record["state"], record["message"] = "failed", f"internal error: {exc!r}"
        else:
            self._update(key, result)
            record["makespan"] = round(result.makespan, 2)
            record["origin_bytes"] = result.origin_bytes
            if result.ok:
                record["state"] = "done"
                record["message"] = (
                    f"{len(result.outcomes)} nodes in {result.makespan:.1f} s, "
                    "every copy checked (SHA-256)"
                )
            else:
                failed = ", ".join(o.node.nodeid for o in result.failed)
                record["state"], record["message"] = "failed", f"failed on {failed}"
        record["updated"] = self.clock()
        self.changed += 1

    async def aclose(self) -> None:
        """Stop following every push (the nodes keep what they were asked to do)."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
