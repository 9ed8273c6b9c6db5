"""The console's running part: its secret, the chart sampler and the live stream.

:class:`Console` is built by the hub's composition root (hub/app.py) from the hub's
parts. :meth:`Console.run` (an auxiliary task of the hub) samples the fleet for the
charts every few seconds and, while pages are watching, builds one snapshot a second
and hands the same bytes to every subscriber of ``/console/events``
(:class:`Broker`: at most ``max_subscribers``, each holding at most the newest
snapshot, so a slow page skips snapshots instead of growing a queue).
:meth:`Console.close` ends every stream when the hub stops, so that pages see the
end at once and start reconnecting.

The hubs panel lists the hubs whose heartbeat is current in the fleet's state
(``FleetState.hubs``: this hub alone on SQLite, every hub on the Redis with
``--state redis://``). Snapshots are built synchronously, so the list is fetched ahead:
:meth:`Console.refresh_hubs` (at most ``HUBS_TIMEOUT`` seconds) runs each tick while
pages watch, and before a first snapshot when the list it has is older than a tick.

Drains: with one hub (SQLite) the drained set is this hub's command core's
(:class:`DrainingCommands`), saved to DATA_DIR/console-drained.json. On Redis it is the
fleet's (:meth:`Console.share_drains`: the ``P drained`` hash, held by the functions of
every hub): the actions go through the state, and :attr:`Console.drains` is a copy of
the fleet's set, read with the hubs list (:meth:`Console.refresh_drains`: only when its
version changed, at most ``HUBS_TIMEOUT`` seconds) and changed at once by this hub's
own actions. The file is not read or written then.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from smartget import __version__
from smartget.auth import write_private
from smartget.errors import RegistryError, SmartGetError
from smartget.hub.collector import Collector
from smartget.hub.commands import Caller, FromOperator
from smartget.hub.console.drain import DrainingCommands, DrainList
from smartget.hub.console.history import History, sample_of
from smartget.hub.console.session import LoginThrottle, SessionKeys
from smartget.hub.console.views import hubs_view, snapshot
from smartget.hub.jobs.runner import JobRunner
from smartget.hub.registry import Node, Registry
from smartget.hub.tracker import Tracker

__all__ = ["Broker", "Console", "SharedDrains", "TooManyWatchers"]

log = logging.getLogger(__name__)

SECRET_FILE = "console.key"
DRAINED_FILE = "console-drained.json"
TICK = 1.0  # seconds between snapshots while someone watches
MAX_SUBSCRIBERS = 64
HUBS_TIMEOUT = 1.0  # seconds a refresh of the hubs list may take
HUBS_CURRENT = 5.0  # seconds the last list counts as current (a hub heartbeat's TTL)


class SharedDrains(Protocol):
    """The fleet's drains, held by the shared state (Redis: ``RedisState``)."""

    async def drain(self, node_id: int) -> Node: ...
    async def undrain(self, node_id: int) -> Node: ...
    async def drained(self, seen: str = "") -> tuple[str, list[int] | None]:
        """The set's version and ids (None: still ``seen``)."""
        ...

    async def deregister(self, caller: Caller, node_id: int) -> Node: ...


class TooManyWatchers(Exception):
    """Every place in the live stream is taken."""


class Broker:
    """Live-stream subscribers, each with a one-slot queue of the newest event."""

    def __init__(self, max_subscribers: int = MAX_SUBSCRIBERS) -> None:
        self.max_subscribers = max_subscribers
        self._queues: set[asyncio.Queue[bytes | None]] = set()
        self.published = 0

    def __len__(self) -> int:
        return len(self._queues)

    def subscribe(self) -> asyncio.Queue[bytes | None]:
        if len(self._queues) >= self.max_subscribers:
            raise TooManyWatchers(f"{self.max_subscribers} pages are watching already")
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=1)
        self._queues.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[bytes | None]) -> None:
        self._queues.discard(queue)

    def publish(self, event: bytes | None) -> None:
        """Hand ``event`` to every subscriber, replacing one it has not taken yet."""
        self.published += 1
        for queue in self._queues:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(event)


def load_or_create_secret(data_dir: Path) -> bytes:
    """The console's HMAC secret, DATA_DIR/console.key (0600), made on first start."""
    path = data_dir / SECRET_FILE
    with contextlib.suppress(FileNotFoundError, ValueError):
        secret = bytes.fromhex(path.read_text().strip())
        if len(secret) >= 16:
            return secret
    secret = secrets.token_bytes(32)
    write_private(path, secret.hex() + "\n")
    return secret


def event(kind: str, data: Any) -> bytes:
    """One Server-Sent Event (JSON has no line breaks, so one ``data`` line)."""
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class Console:
    """The console's state and background work (one per hub)."""

    def __init__(
        self,
        *,
        registry: Registry,
        tracker: Tracker,
        collector: Collector,
        commands: DrainingCommands,
        jobs: JobRunner,
        token: str,
        data_dir: Path,
        clock: Callable[[], float],
        save: Callable[[], Awaitable[None]],
        describe: Callable[[], dict[str, Any]],
        fleet_hubs: Callable[[], Awaitable[list[dict[str, Any]]]],
    ) -> None:
        self.registry = registry
        self.tracker = tracker
        self.collector = collector
        self.commands = commands
        self.jobs = jobs  # push jobs are started and cancelled through it (its JobBook)
        self.drains = commands.drains
        self.data_dir = data_dir
        self.clock = clock
        self.save_registry = save
        self.describe = describe  # this hub as its heartbeat tells the others
        self.fleet_hubs = fleet_hubs  # the fleet state's hubs that are up (FleetState.hubs)
        self._hubs: list[dict[str, Any]] | None = None  # its last answer
        self._hubs_at: float | None = None  # when (the hub's clock)
        self._hubs_failing = False
        self.shared: SharedDrains | None = None  # the fleet's drains (Redis), or None
        self._drains_seen = ""  # the version of the fleet's set self.drains holds
        self._drains_failing = False
        self.sessions = SessionKeys(load_or_create_secret(data_dir), token)
        self.throttle = LoginThrottle()
        self.history = History()
        self.broker = Broker()
        self.started = time.time()
        self._closed = False
        self._load_drains()

    def use_token(self, token: str) -> None:
        """The hub's API token changed (the fleet's, on Redis): sign sessions with it."""
        self.sessions = SessionKeys(load_or_create_secret(self.data_dir), token)

    # -- drains: this hub's list saved beside the store, or the fleet's -------------------

    def share_drains(self, shared: SharedDrains) -> None:
        """Drains are the fleet's from now (Redis): :attr:`drains` becomes a copy of its
        set, filled by :meth:`refresh_drains`."""
        self.shared = shared
        self.drains = DrainList()
        self._drains_seen = ""

    async def drain(self, node_id: int) -> Node:
        """Take a node out of rotation (every hub's, on Redis)."""
        if self.shared is not None:
            node = await self.shared.drain(node_id)
            with contextlib.suppress(RegistryError):  # a full copy: the refresh fixes it
                self.drains.add(node_id, 0)  # the copy, at once (the next refresh confirms)
            return node
        node = self.commands.drain(node_id, self.clock())
        await self.save_registry()
        await self.save_drains()
        return node

    async def undrain(self, node_id: int) -> Node:
        """Back in rotation with the status its last heartbeat asked for."""
        if self.shared is not None:
            node = await self.shared.undrain(node_id)
            self.drains.remove(node_id)
            return node
        node = self.commands.undrain(node_id, self.clock())
        await self.save_registry()
        await self.save_drains()
        return node

    async def deregister(self, node_id: int) -> Node:
        """Remove a node (the page offers it for zombies); its drain is forgotten."""
        if self.shared is not None:
            node = await self.shared.deregister(FromOperator(), node_id)
            self.drains.remove(node_id)
            return node
        node = self.commands.deregister(FromOperator(), node_id)
        await self.save_registry()
        await self.save_drains()
        return node

    async def refresh_drains(self) -> None:
        """Read the fleet's drained set if it changed (bounded); keep the copy if the
        state does not answer. Nothing to do with one hub: its list is here."""
        if self.shared is None:
            return
        try:
            async with asyncio.timeout(HUBS_TIMEOUT):
                version, ids = await self.shared.drained(self._drains_seen)
            if ids is not None:
                self.drains.replace(dict.fromkeys(ids, 0))
        except (SmartGetError, OSError, TimeoutError) as exc:
            if not self._drains_failing:
                log.warning("console: the fleet state did not list the drained nodes: %s", exc)
            self._drains_failing = True
            return
        self._drains_failing = False
        self._drains_seen = version

    def _load_drains(self) -> None:
        path = self.data_dir / DRAINED_FILE
        with contextlib.suppress(FileNotFoundError):
            try:
                # Read before the registry is restored: ids of nodes gone since are
                # ignored (ids are never reused) and forgotten at the next save.
                self.drains.load(path.read_bytes())
            except RegistryError as exc:
                log.error("%s: %s; no node is drained", path, exc)

    async def save_drains(self) -> None:
        """Write the drain list (atomically: a temporary file, then rename)."""
        path = self.data_dir / DRAINED_FILE
        self.drains.prune(set(self.registry.get_nodes()))
        data = self.drains.dump()

        def write() -> None:
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)

        await asyncio.to_thread(write)

    # -- snapshots ------------------------------------------------------------------------

    async def refresh_hubs(self) -> None:
        """Ask the fleet state which hubs are up (bounded); keep the last answer if it
        does not answer, which the panel then shows as not current."""
        try:
            async with asyncio.timeout(HUBS_TIMEOUT):
                found = await self.fleet_hubs()
        except (SmartGetError, OSError, TimeoutError) as exc:
            if not self._hubs_failing:
                log.warning("console: the fleet state did not list the hubs: %s", exc)
            self._hubs_failing = True
            return
        self._hubs_failing = False
        self._hubs = found
        self._hubs_at = self.clock()

    async def refresh(self) -> None:
        """What the snapshots read from the fleet state: the hubs, the drained set."""
        await asyncio.gather(self.refresh_hubs(), self.refresh_drains())

    async def refresh_if_old(self) -> None:
        if self._hubs_at is None or self.clock() - self._hubs_at >= TICK:
            await self.refresh()

    def hubs(self) -> list[dict[str, Any]]:
        """The hubs of the fleet: this one, then the others the state last listed."""
        current = self._hubs_at is not None and self.clock() - self._hubs_at < HUBS_CURRENT
        this = {"version": __version__, "started": round(self.started, 3), **self.describe()}
        return hubs_view(this, self._hubs, current=current, wall=time.time())

    def snapshot(self) -> dict[str, Any]:
        wall = time.time()
        return snapshot(
            registry=self.registry,
            tracker=self.tracker,
            collector=self.collector,
            drains=self.drains,
            jobs=self.jobs.book,
            history=self.history.columns(wall),
            hubs=self.hubs(),
            now=self.clock(),
            wall=wall,
        )

    def snapshot_event(self) -> bytes:
        return event("snapshot", self.snapshot())

    def sample(self) -> None:
        wall = time.time()
        if self.history.due(wall):
            self.history.add(
                sample_of(
                    self.collector.progress(),
                    self.tracker.statistics(),
                    self.registry.statistics(),
                    at=wall,
                    now=self.clock(),
                    job_bytes=self.jobs.book.bytes_total,
                )
            )

    async def run(self) -> None:
        """Sample for the charts; while pages watch, publish a snapshot every second."""
        while not self._closed:
            self.sample()
            if len(self.broker):
                await self.refresh()
                self.broker.publish(self.snapshot_event())
            await asyncio.sleep(TICK)

    async def close(self) -> None:
        """End every live stream (pages reconnect by themselves); jobs are the runner's."""
        self._closed = True
        self.broker.publish(None)
