"""The hub service: the registry, its store, the text server, the HTTP app, liveness.

:class:`Hub` owns the state shared by every front end; :func:`running` starts it all in
the current event loop and stops it cleanly::

    async with running(HubSettings(data_dir=Path("var/hub"))) as hub:
        print(hub.text_address, hub.http_url)
        await hub.wait_stopped()
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import secrets
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import prometheus_client as prom
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from smartget.errors import ConfigError
from smartget.hub import textproto
from smartget.hub.collector import Collector as StatusCollector
from smartget.hub.fleet import load_fleet_state
from smartget.hub.registry import Registry
from smartget.hub.relay.service import RelayService, RelaySettings
from smartget.hub.store import Store, Write, load_nodes, save_changes
from smartget.hub.textserver import TextProtocolServer
from smartget.hub.tracker import Tracker
from smartget.net import bind_tcp

__all__ = ["Hub", "HubSettings", "running"]

log = logging.getLogger(__name__)

TOKEN_FILE = "hub.token"
STORE_FILE = "hub.sqlite3"


@dataclass
class HubSettings:
    """Everything ``smartget hub`` takes; ``None`` for ``http`` runs no HTTP server."""

    data_dir: Path
    listen: tuple[str, int] = ("0.0.0.0", 20110)
    http: tuple[str, int] | None = ("0.0.0.0", 8200)
    node_ttl: float = 60.0
    zombie_grace: float = 300.0
    token: str | None = None
    line_timeout: float = textproto.LINE_TIMEOUT
    idle_timeout: float = textproto.IDLE_TIMEOUT
    relay: RelaySettings = field(default_factory=RelaySettings)  # co2 relay (hub/relay/)
    open_tracker: bool = False  # track any info-hash, not only the fleet's
    tracker_interval: int = 30  # seconds between announces that the tracker asks for


def load_or_create_token(data_dir: Path) -> str:
    """The API token kept in DATA_DIR/hub.token, created (mode 0600) on first start."""
    path = data_dir / TOKEN_FILE
    with contextlib.suppress(FileNotFoundError):
        token = path.read_text().strip()
        if token:
            return token
    token = secrets.token_urlsafe(24)
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(token + "\n")
    log.warning("no --token given: generated one in %s (send it as 'Authorization: Bearer')", path)
    return token


class _HubCollector(Collector):
    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def collect(self) -> Iterable[Metric]:
        stats = self.hub.registry.statistics()
        for key in ("nodes", "available", "idle", "zombies", "free_slots"):
            yield GaugeMetricFamily(f"smartget_hub_{key}", f"Registry: {key}", value=stats[key])
        commands = CounterMetricFamily(
            "smartget_hub_text_commands", "Text protocol commands", labels=["command"]
        )
        for kind, count in sorted((k.__name__, n) for k, n in self.hub.command_counts.items()):
            commands.add_metric([kind], count)
        yield commands


class Hub:
    """State shared by the hub's front ends. Touch it only from the event loop."""

    def __init__(self, settings: HubSettings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.registry = Registry(node_ttl=settings.node_ttl, zombie_grace=settings.zombie_grace)
        self.token = settings.token or load_or_create_token(settings.data_dir)
        self.text_connections: set[TextProtocolServer] = set()
        self.text_address: tuple[str, int] = settings.listen
        self.http_address: tuple[str, int] | None = settings.http
        self.metrics = prom.CollectorRegistry()
        self.metrics.register(_HubCollector(self))
        self.relay = RelayService(settings.relay, store, metrics=self.metrics)  # /RPC2
        self.tracker = Tracker(
            interval=settings.tracker_interval,
            open_tracker=settings.open_tracker,
            zone_of=self.registry.zone_of_addr,
            has_capacity=lambda ip: self.registry.free_capacity_of_addr(ip) > 0,
        )
        self.collector = StatusCollector()
        # Plain ints on the hot path; the collector turns them into a Prometheus counter.
        self.command_counts: collections.Counter[type] = collections.Counter()
        self._stopped = asyncio.Event()
        self._loop = asyncio.get_running_loop()

    def now(self) -> float:
        """The registry's clock: the event loop's monotonic time."""
        return self._loop.time()

    def commit(self) -> asyncio.Future[None] | None:
        """Send the registry's changes to the store; the future resolves once durable.

        The changes are collected when the store starts its next transaction (not now),
        so a burst of commands costs one write of the nodes they changed.
        """
        if not self.registry.has_changes:
            return None
        return self.store.submit_later(self._registry_write)

    def _registry_write(self) -> Write | None:
        if not self.registry.has_changes:
            return None
        return save_changes(self.registry.drain_changes())

    async def save(self) -> None:
        """Commit the registry's changes and wait until they are durable."""
        if (committed := self.commit()) is not None:
            await committed

    @property
    def http_url(self) -> str:
        if self.http_address is None:
            raise ConfigError("this hub runs no HTTP server")
        host, port = self.http_address
        host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        return f"http://{host}:{port}"

    def stop(self) -> None:
        """Ask the hub to stop (safe to call from a signal handler in the loop)."""
        self._stopped.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def expire_forever(self) -> None:
        """Liveness: zombies after node_ttl of silence, removal after the grace."""
        while True:
            due = self.registry.next_expiry()
            delay = 1.0 if due is None else min(1.0, max(0.0, due - self.now()))
            await asyncio.sleep(delay)
            zombies, removed = self.registry.expire(self.now())
            for node in zombies:
                log.warning(
                    "node %d (%s:%d) is silent: now a zombie", node.node_id, node.addr, node.port
                )
            for node in removed:
                log.warning("zombie node %d (%s:%d) removed", node.node_id, node.addr, node.port)
            self.tracker.expire(self.now())
            if zombies or removed:
                try:
                    await self.save()
                except Exception:
                    log.exception("could not save liveness changes")


@contextlib.asynccontextmanager
async def running(settings: HubSettings) -> AsyncIterator[Hub]:
    """Start the hub in this loop; on exit, stop accepting, finish, close the store."""
    loop = asyncio.get_running_loop()
    store = Store(settings.data_dir / STORE_FILE)
    try:
        hub = Hub(settings, store)
        nodes, next_id = store.read_now(load_nodes)
        hub.registry.restore(nodes, next_id, hub.now())
        satellites = hub.relay.restore_now()
        torrents, finished = store.read_now(load_fleet_state)
        for info_hash in torrents:
            hub.tracker.allow(info_hash)
        hub.collector.restore(finished)
        text_sock = bind_tcp(*settings.listen)
        http_sock = bind_tcp(*settings.http) if settings.http else None
    except BaseException:
        store.close_now()
        raise
    log.info("store %s: %d nodes, next id %d", store.path, len(nodes), next_id)
    log.info("relay: %d satellites restored", satellites)

    async with asyncio.TaskGroup() as tasks:
        writer = tasks.create_task(store.run(), name="store-writer")
        expiry = tasks.create_task(hub.expire_forever(), name="liveness")
        relay = tasks.create_task(hub.relay.run(), name="relay")
        text_server = await loop.create_server(
            lambda: TextProtocolServer(hub), sock=text_sock, backlog=1024
        )
        hub.text_address = text_sock.getsockname()[:2]
        log.info("text protocol on %s:%d", *hub.text_address)
        http_server = None
        if http_sock is not None:
            from smartget.hub.http import start_http

            http_server = await start_http(hub, http_sock)
            hub.http_address = http_sock.getsockname()[:2]
            log.info("HTTP API on %s (docs at /docs)", hub.http_url)
        try:
            yield hub
        finally:
            log.info("hub stopping")
            text_server.close()
            for conn in list(hub.text_connections):
                conn.close()
            if http_server is not None:
                await http_server.stop()
            expiry.cancel()
            await hub.relay.aclose()  # drains queued relays (bounded), then saves
            await relay
            await hub.save()
            await store.aclose()
            await writer
            log.info("hub stopped")
