"""The hub's composition root: the one place that builds its parts and wires them.

::

    text protocol (textserver) ─┐
    JSON API (http)  ───────────┼─> HubCommands (commands.py, sans-IO) ─> Registry, Tracker,
    tracker/collector (fleet) ──┘                                         Collector
    relay /RPC2 (relay/http) ─────> RelayService (relay/) ─┐
    dashboard ──────────────────> read-only views           ├─> Store (SQLite, one writer)
    liveness sweep (here) ──────> Registry.expire ──────────┘

Each front end declares the small interface it needs (a ``Protocol`` or a context
dataclass); :class:`Hub`, built here, provides all of them. Nothing imports this module
but the CLI, the demo and tests. :func:`running` starts it all in the current loop::

    async with running(HubSettings(data_dir=Path("var/hub"))) as hub:
        print(hub.text_address, hub.http_url)
        await hub.wait_stopped()

Supervision (smartget.lifecycle): the store writer, the liveness sweep and the relay
are essential; if one crashes, the hub stops with its error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import click
import prometheus_client as prom
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from smartget.auth import write_private
from smartget.config import HOSTPORT, REQUIRED, setting
from smartget.errors import ConfigError
from smartget.hub import textproto
from smartget.hub.collector import Collector as StatusCollector
from smartget.hub.collector import Report
from smartget.hub.commands import HubCommands
from smartget.hub.registry import DEFAULT_NODE_TTL, DEFAULT_ZOMBIE_GRACE, Registry
from smartget.hub.relay.service import RelayService, RelaySettings
from smartget.hub.store import (
    Store,
    Write,
    forget_done,
    load_fleet_state,
    load_nodes,
    save_changes,
    save_done,
    save_torrent,
)
from smartget.hub.textserver import TextProtocolServer, TextServerContext
from smartget.hub.tracker import DEFAULT_INTERVAL, Tracker
from smartget.lifecycle import Supervisor
from smartget.net import bind_tcp

__all__ = ["Hub", "HubSettings", "running"]

log = logging.getLogger(__name__)

TOKEN_FILE = "hub.token"
STORE_FILE = "hub.sqlite3"


@dataclass(frozen=True)
class HubSettings:
    """Everything ``smartget hub`` takes; each ``setting`` field is one of its flags.

    ``http=None`` runs no HTTP server.
    """

    data_dir: Path = setting(
        REQUIRED,
        "Where the SQLite store and the generated API token live.",
        click_type=click.Path(file_okay=False, path_type=Path),
    )
    listen: tuple[str, int] = setting(
        ("0.0.0.0", 20110),
        "Address of the backtick text protocol (seed 000).",
        click_type=HOSTPORT,
    )
    http: tuple[str, int] | None = setting(
        ("0.0.0.0", 8200),
        "Address of the HTTP API, metrics and docs.",
        click_type=HOSTPORT,
    )
    node_ttl: float = setting(
        DEFAULT_NODE_TTL, "Seconds without setstatus before a node becomes a zombie.", min=0.1
    )
    zombie_grace: float = setting(
        DEFAULT_ZOMBIE_GRACE, "Further seconds before a zombie is removed.", min=0
    )
    token: str | None = setting(
        None,
        "Bearer token of the JSON API [env SMARTGET_HUB_TOKEN; default: "
        "generated in DATA_DIR/hub.token].",
        envvar="SMARTGET_HUB_TOKEN",
        show_default=False,
    )
    open_tracker: bool = setting(
        False,
        "Track any info-hash at /announce, not only torrents the fleet made or fetches.",
    )
    tracker_interval: int = setting(
        DEFAULT_INTERVAL,
        "Seconds between announces the tracker asks clients for.",
        min=5,
        max=3600,
    )
    line_timeout: float = textproto.LINE_TIMEOUT
    idle_timeout: float = textproto.IDLE_TIMEOUT
    relay: RelaySettings = field(default_factory=RelaySettings)  # co2 relay (hub/relay/)


def load_or_create_token(data_dir: Path) -> str:
    """The API token kept in DATA_DIR/hub.token, created (mode 0600) on first start."""
    path = data_dir / TOKEN_FILE
    with contextlib.suppress(FileNotFoundError):
        token = path.read_text().strip()
        if token:
            return token
    token = secrets.token_urlsafe(24)
    write_private(path, token + "\n")
    log.warning("no --token given: generated one in %s (send it as 'Authorization: Bearer')", path)
    return token


class _HubMetrics(Collector):
    def __init__(self, registry: Registry, text: TextServerContext) -> None:
        self.registry = registry
        self.text = text

    def collect(self) -> Iterable[Metric]:
        stats = self.registry.statistics()
        for key in ("nodes", "available", "idle", "zombies", "free_slots"):
            yield GaugeMetricFamily(f"smartget_hub_{key}", f"Registry: {key}", value=stats[key])
        commands = CounterMetricFamily(
            "smartget_hub_text_commands", "Text protocol commands", labels=["command"]
        )
        counts = self.text.command_counts.items()
        for kind, count in sorted((k.__name__, n) for k, n in counts):
            commands.add_metric([kind], count)
        yield commands


class Hub:
    """The running hub: its parts, wired, and its addresses. Use it from the loop only.

    It provides what each front end declares it needs (``textserver.TextServerContext``,
    ``http.HubAPI``, ``fleet.FleetHost``, ``dashboard.DashboardView``,
    ``relay.http.RelayHost``).
    """

    def __init__(self, settings: HubSettings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.registry = Registry(node_ttl=settings.node_ttl, zombie_grace=settings.zombie_grace)
        self.token = settings.token or load_or_create_token(settings.data_dir)
        self.text_address: tuple[str, int] = settings.listen
        self.http_address: tuple[str, int] | None = settings.http
        self.tracker = Tracker(
            interval=settings.tracker_interval,
            open_tracker=settings.open_tracker,
            zone_of=self.registry.zone_of_addr,
            has_capacity=lambda ip: self.registry.free_capacity_of_addr(ip) > 0,
        )
        self.collector = StatusCollector()
        self.commands = HubCommands(self.registry, self.tracker, self.collector)
        self.text = TextServerContext(
            commands=self.commands,
            commit=self.commit,
            line_timeout=settings.line_timeout,
            idle_timeout=settings.idle_timeout,
        )
        self.metrics = prom.CollectorRegistry()
        self.metrics.register(_HubMetrics(self.registry, self.text))
        self.relay = RelayService(settings.relay, store, metrics=self.metrics)  # /RPC2
        self._stopped = asyncio.Event()
        self._loop = asyncio.get_running_loop()

    @property
    def text_connections(self) -> set[TextProtocolServer]:
        return self.text.connections

    def now(self) -> float:
        """The hub's clock: the event loop's monotonic time."""
        return self._loop.time()

    # -- durability: what a reply acknowledges is saved first ---------------------------

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

    def save_tracked(self, info_hash: str, name: str = "") -> Awaitable[None]:
        """Make a newly tracked torrent durable (hex info-hash)."""
        return self.store.submit(save_torrent(info_hash, name))

    def save_done(self, report: Report) -> Awaitable[None]:
        """Make a finished download durable (the collector answered ``success``)."""
        return self.store.submit(save_done(report))

    def forget_done(self, sha1: str) -> Awaitable[None]:
        return self.store.submit(forget_done(sha1))

    # -- lifecycle ----------------------------------------------------------------------

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

    async with Supervisor("hub") as tasks:
        writer = tasks.start(store.run, name="store-writer", essential=True)
        expiry = tasks.start(hub.expire_forever, name="liveness", essential=True)
        relay = tasks.start(hub.relay.run, name="relay", essential=True)
        text_server = await loop.create_server(
            lambda: TextProtocolServer(hub.text), sock=text_sock, backlog=1024
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
