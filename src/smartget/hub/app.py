"""The hub's composition root: the one place that builds its parts and wires them.

::

    text protocol (textserver) ─┐
    JSON API (http)  ───────────┼─> HubCommands (commands.py, sans-IO) ─> Registry, Tracker,
    tracker/collector (fleet, ──┤                                         Collector
      fastlane: hot HTTP routes)│
    UDP tracker (udpserver) ────┘
    swarm keeper (here) ────────> Tracker.expire, drain_changes ──> Store
    relay /RPC2 (relay/http) ─────> RelayService (relay/) ─┐
    console (console/) ─────────> views, DrainingCommands   ├─> Store (SQLite, one writer)
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
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import click
import prometheus_client as prom
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from smartget import __version__
from smartget.auth import write_private
from smartget.config import HOSTPORT, REQUIRED, setting
from smartget.errors import ConfigError
from smartget.httpserver import HttpLimits
from smartget.hub import textproto
from smartget.hub.collector import Collector as StatusCollector
from smartget.hub.collector import Report
from smartget.hub.commands import CommandRules, HubCommands
from smartget.hub.console import Console, DrainingCommands
from smartget.hub.jobs.runner import JobMetrics, JobRunner, JobSettings
from smartget.hub.registry import DEFAULT_NODE_TTL, DEFAULT_ZOMBIE_GRACE, Registry
from smartget.hub.relay.service import RelayService, RelaySettings
from smartget.hub.state import (
    FleetState,
    SharedReports,
    SqliteState,
    StateURL,
    hub_identity,
    parse_state,
)
from smartget.hub.store import (
    Store,
    Write,
    forget_done,
    load_fleet_state,
    load_nodes,
    load_swarms,
    save_changes,
    save_done,
    save_swarms,
    save_torrent,
)
from smartget.hub.textserver import TextProtocolServer, TextServerContext
from smartget.hub.tracker import DEFAULT_INTERVAL, SavedPeer, Tracker, default_peer_lifetime
from smartget.hub.udpserver import UdpTrackerServer
from smartget.hub.udptracker import UdpTracker
from smartget.lifecycle import Supervisor
from smartget.net import bind_tcp

if TYPE_CHECKING:
    from smartget.hub.state.redisengine import RedisState
    from smartget.hub.state.reports import RedisReports
    from smartget.hub.state.swarms import SharedSwarms

__all__ = ["Hub", "HubSettings", "running"]

log = logging.getLogger(__name__)

TOKEN_FILE = "hub.token"
RELAY_STOP_WITHIN = 15.0  # seconds the relay may take to drain and stop (then cancelled)
STORE_FILE = "hub.sqlite3"
SWARM_KEEPING = 5.0  # seconds between expiring silent peers and saving swarm changes
SWARM_WRITE_ROWS = 5000  # peers per write: a burst of joins is saved in parts, no long pause


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
        "Bearer token of the JSON API, by environment only: SMARTGET_HUB_TOKEN (a command "
        "line is readable by every user) [default: --token-file, else generated in "
        "DATA_DIR/hub.token].",
        envvar="SMARTGET_HUB_TOKEN",
        show_default=False,
    )
    token_file: Path | None = setting(
        None,
        "A file holding the JSON API's token (made 0600 if others could read it).",
        click_type=click.Path(dir_okay=False, exists=True, path_type=Path),
        show_default=False,
    )
    open_tracker: bool = setting(
        False,
        "Track any info-hash at /announce, not only torrents the fleet made or fetches.",
    )
    tracker_interval: int = setting(
        DEFAULT_INTERVAL,
        "Seconds between announces the tracker asks clients for (libtorrent, the "
        "nodes' engine, announces no more often than every 300 s whatever is asked).",
        min=5,
        max=3600,
    )
    tracker_peer_lifetime: float = setting(
        0,
        "Seconds a peer stays listed without announcing [0: 2 x max(interval, 300) + 60, "
        "two real libtorrent announce rounds and a minute].",
        min=0,
    )
    tracker_max_peers_per_swarm: int = setting(
        50_000, "Peers one swarm lists at most; past it new peers are refused.", min=1
    )
    tracker_max_peers_per_ip: int = setting(
        16, "Peers one source address lists at most in one swarm.", min=1
    )
    tracker_trust_ip_net: tuple[str, ...] = setting(
        (),
        "A network (CIDR) whose addresses may announce another address with ip= "
        "(a proxy; repeat; default: ip= is honoured only when it is the sender's own).",
        multiple=True,
    )
    udp_tracker: tuple[str, int] = setting(
        ("0.0.0.0", 6969),
        "Address of the UDP tracker (BEP 15); the fleet's torrents list it first.",
        click_type=HOSTPORT,
    )
    no_udp_tracker: bool = setting(False, "Run no UDP tracker.")
    dht: tuple[str, int] | None = setting(
        None,
        "Address of the fleet's DHT node (BEP 5, UDP), the nodes' default bootstrap "
        "[default: the address and port of --listen].",
        click_type=HOSTPORT,
        show_default=False,
    )
    no_dht: bool = setting(False, "Run no DHT node.")
    max_nodes_per_ip: int = setting(
        16, "Nodes one address may register over the text protocol.", min=1
    )
    allow_net: tuple[str, ...] = setting(
        (),
        "A network (CIDR) whose addresses may `requestnodes without a registered node "
        "(repeat; default: registered nodes only).",
        multiple=True,
    )
    max_tracked_per_ip: int = setting(
        256,
        "Torrents one fleet node's address may make the tracker track by announcing or "
        "reporting them (operators add more with POST /api/torrents).",
        min=0,
    )
    text_max_connections: int = setting(
        4096, "Text protocol connections open at once; past it new ones are refused.", min=1
    )
    text_max_per_ip: int = setting(
        64, "Text protocol connections open at once from one address.", min=1
    )
    http_limits: HttpLimits = field(default_factory=HttpLimits)  # --http-*
    line_timeout: float = textproto.LINE_TIMEOUT
    idle_timeout: float = textproto.IDLE_TIMEOUT
    state: str = setting(
        "sqlite",
        "Where the fleet's nodes live: sqlite (DATA_DIR/hub.sqlite3, one hub) or "
        "redis://HOST:PORT/DB (rediss:// for TLS), shared by several hubs.",
    )
    redis_password_file: Path | None = setting(
        None,
        "A file holding the Redis password [or env SMARTGET_REDIS_PASSWORD; never on "
        "the command line].",
        click_type=click.Path(dir_okay=False, path_type=Path),
        show_default=False,
    )
    redis_ca_file: Path | None = setting(
        None,
        "CA certificates to verify a rediss:// server with [default: the system's].",
        click_type=click.Path(dir_okay=False, path_type=Path),
        show_default=False,
    )
    relay: RelaySettings = field(default_factory=RelaySettings)  # co2 relay (hub/relay/)
    jobs: JobSettings = field(default_factory=JobSettings)  # push jobs (hub/jobs/)


def read_token_file(path: Path) -> str:
    """The token in ``path`` (``--token-file``); ConfigError if it is empty."""
    _make_private(path)
    token = path.read_text().strip()
    if not token:
        raise ConfigError(f"--token-file {path} is empty")
    return token


def _make_private(path: Path) -> None:
    if path.stat().st_mode & 0o077:  # issue 12.13: a secret others could read
        log.warning("%s was readable by others: made it 0600", path)
        os.chmod(path, 0o600)


def load_or_create_token(data_dir: Path) -> str:
    """The API token kept in DATA_DIR/hub.token, created (mode 0600) on first start."""
    path = data_dir / TOKEN_FILE
    with contextlib.suppress(FileNotFoundError):
        token = path.read_text().strip()
        if token:
            _make_private(path)
            return token
    token = secrets.token_urlsafe(24)
    write_private(path, token + "\n")
    log.warning("no --token given: generated one in %s (send it as 'Authorization: Bearer')", path)
    return token


class _HubMetrics(Collector):
    def __init__(self, stats: Callable[[], dict[str, int]], text: TextServerContext) -> None:
        self.stats = stats  # the registry's, or the fleet's last figures from Redis
        self.text = text

    def collect(self) -> Iterable[Metric]:
        stats = self.stats()
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
    ``http.HubAPI``, ``fleet.FleetHost``, ``console.ConsoleHost``,
    ``relay.http.RelayHost``).
    """

    def __init__(self, settings: HubSettings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.registry = Registry(node_ttl=settings.node_ttl, zombie_grace=settings.zombie_grace)
        self.token = (
            settings.token
            or (read_token_file(settings.token_file) if settings.token_file else None)
            or load_or_create_token(settings.data_dir)
        )
        self.text_address: tuple[str, int] = settings.listen
        self.http_address: tuple[str, int] | None = settings.http
        self.http_limits = settings.http_limits  # the HTTP port's caps (hub/fastlane.py)
        self.tracker = Tracker(
            interval=settings.tracker_interval,
            peer_lifetime=settings.tracker_peer_lifetime or None,
            open_tracker=settings.open_tracker,
            max_peers_per_swarm=settings.tracker_max_peers_per_swarm,
            max_peers_per_ip=settings.tracker_max_peers_per_ip,
            trust_ip_nets=settings.tracker_trust_ip_net,
            zone_of=self.registry.zone_of_addr,
            has_capacity=lambda ip: self.registry.free_capacity_of_addr(ip) > 0,
            is_fleet=lambda ip: bool(self.registry.get_node_ids_by_addr(ip)),
        )
        self.udp_tracker_address: tuple[str, int] | None = None
        self.udp_tracker: UdpTrackerServer | None = None
        self.dht_address: tuple[str, int] | None = None  # set once the DHT listens
        self.collector = StatusCollector()
        rules = CommandRules.parse(
            settings.max_nodes_per_ip, settings.allow_net, settings.max_tracked_per_ip
        )
        # HubCommands, with nodes an operator drained held at status 0 (the console).
        commands = DrainingCommands(self.registry, self.tracker, self.collector, rules)
        self.commands: HubCommands = commands
        self.jobs = JobRunner(settings.jobs, self)  # push jobs (hub/jobs/), /api/jobs
        self.console = Console(
            registry=self.registry,
            tracker=self.tracker,
            collector=self.collector,
            commands=commands,
            jobs=self.jobs,
            token=self.token,
            data_dir=settings.data_dir,
            clock=self.now,
            save=self.save,
            describe=self.describe,
            fleet_hubs=lambda: self.state.hubs(),
        )
        self.text = TextServerContext(
            commands=self.commands,
            commit=self.commit,
            line_timeout=settings.line_timeout,
            idle_timeout=settings.idle_timeout,
            max_connections=settings.text_max_connections,
            max_per_ip=settings.text_max_per_ip,
        )
        self.metrics = prom.CollectorRegistry()
        self.metrics.register(_HubMetrics(self.fleet_statistics, self.text))
        self.relay = RelayService(settings.relay, store, metrics=self.metrics)  # /RPC2
        self.metrics.register(JobMetrics(self.jobs))
        self._stopped = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        # The fleet's state (hub/state/): this hub's registry and store, or, once
        # running() connects it, the Redis that several hubs share.
        self.hub_id = hub_identity()
        self.started = time.time()
        self.state: FleetState = SqliteState(commands, self.save, self.now, self.describe)
        self.redis: RedisState | None = None
        # The status collector the hubs on Redis share (hub.collector is then this
        # hub's read-only copy of it); None with SQLite: hub.collector is the collector.
        self.shared_reports: SharedReports | None = None
        self.redis_reports: RedisReports | None = None
        # The tracker's swarms shared with the fleet's other hubs (Redis), or None.
        self.shared_swarms: SharedSwarms | None = None

    def describe(self) -> dict[str, object]:
        """This hub as /api/stats and the other hubs see it."""
        http = self.http_url if self.http_address else ""
        host, port = self.text_address
        return {
            "id": self.hub_id,
            "state": self.state.engine,
            "text": f"{host}:{port}",
            "http": http,
            "started": self.started,
            "version": __version__,
            "runs_jobs": self.jobs.leading,  # on Redis, one hub of the fleet at a time
        }

    def fleet_statistics(self) -> dict[str, int]:
        """The registry's figures now (SQLite), or as of the last second (Redis)."""
        if self.redis is not None:
            return self.redis.cached_stats
        return self.registry.statistics()

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
        """Make a newly tracked torrent durable (hex info-hash); on Redis, the fleet's."""
        saved = self.store.submit(save_torrent(info_hash, name))
        if self.shared_swarms is None:
            return saved
        shared = self.shared_swarms.save_tracked(info_hash, name)

        async def both() -> None:
            await asyncio.gather(saved, shared)

        return asyncio.ensure_future(both())

    def save_done(self, report: Report) -> Awaitable[None]:
        """Make a finished download durable (the collector answered ``success``)."""
        return self.store.submit(save_done(report))

    def forget_done(self, sha1: str) -> Awaitable[None]:
        return self.store.submit(forget_done(sha1))

    def _swarm_write(self) -> Write | None:
        if not self.tracker.has_changes:
            return None
        now = self.now()
        to_wall = time.time() - now
        changes = self.tracker.drain_changes(now, SWARM_WRITE_ROWS)
        return save_swarms(changes, to_wall, now + to_wall - self.tracker.peer_ttl)

    async def save_swarms(self) -> None:
        """Save the swarms' changes (peers joined or changed, counts) and wait for it."""
        while self.tracker.has_changes:
            await self.store.submit_later(self._swarm_write)

    def restore_swarms(self, peers: list[SavedPeer], downloaded: dict[bytes, int]) -> int:
        """Saved peers back in their swarms, with their age (saved in wall-clock time)."""
        to_mono = self.now() - time.time()
        aged = [
            SavedPeer(p.info_hash, p.ip, p.port, p.peer_id, p.left, p.last_seen + to_mono)
            for p in peers
        ]
        restored = self.tracker.restore(aged, downloaded, self.now())
        self.tracker.drain_changes(self.now())  # what was just loaded needs no write
        return restored

    async def keep_swarms(self) -> None:
        """Forget silent peers and save what changed, every few seconds, in one write."""
        while True:
            await asyncio.sleep(SWARM_KEEPING)
            self.tracker.expire(self.now())
            try:
                await self.save_swarms()
            except Exception:
                log.exception("could not save the tracker's swarms")

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
            if zombies or removed:
                try:
                    await self.save()
                except Exception:
                    log.exception("could not save liveness changes")


async def _use_redis(hub: Hub, url: StateURL) -> None:
    """Put the hub's nodes on Redis: connect, load the functions, fill the mirror."""
    from smartget.hub.state.redisengine import RedisState, redis_password

    settings = hub.settings
    engine = RedisState(
        url,
        password=redis_password(settings.redis_password_file, dict(os.environ)),
        ca_file=settings.redis_ca_file,
        rules=hub.commands.rules,
        node_ttl=settings.node_ttl,
        zombie_grace=settings.zombie_grace,
        hub_id=hub.hub_id,
        describe=hub.describe,
    )
    await engine.start()
    hub.redis = engine
    hub.state = engine
    hub.text.remote = engine.submit_text
    hub.console.share_drains(engine)  # drains are the fleet's (functions.py), not the file's
    loaded = await engine.load_mirror(hub.registry, hub.now(), hub.now)
    await engine.statistics()
    log.info("fleet state on Redis: %d nodes", loaded)
    from smartget.hub.state.reports import RedisReports

    reports = RedisReports(engine, hub.collector, hub.now)
    log.info("collector on Redis: %d reports", await reports.load_mirror())
    hub.shared_reports = hub.redis_reports = reports
    if not (settings.token or settings.token_file):  # generated: the fleet's, not each hub's
        token = await engine.shared_token(hub.token)
        if token != hub.token:
            hub.token = token
            write_private(settings.data_dir / TOKEN_FILE, token + "\n")
            hub.console.use_token(token)
            log.warning(
                "the fleet's API token (on Redis) is now in %s", settings.data_dir / TOKEN_FILE
            )
    from smartget.hub.jobs.shared import SharedJobs

    # The jobs run on the hub holding the fleet's lease (the sweeper); the others read them.
    shared_jobs = SharedJobs(engine.client, engine.keys.prefix, settings.jobs.max_job_events)
    hub.jobs.share(shared_jobs, lambda: engine.lease.holds(hub.now()))
    from smartget.hub.state.relay import RedisRelay

    # The relay's satellites and outbox, the fleet's; the lease holder delivers.
    await hub.relay.share(RedisRelay(engine), lambda: engine.lease.holds(hub.now()))


async def _share_swarms(hub: Hub, engine: RedisState, local_tracked: list[bytes]) -> None:
    """The tracker's swarms and tracked torrents, the fleet's (hub/state/swarms.py)."""
    from smartget.hub.state.swarms import SharedSwarms

    swarms = SharedSwarms(engine, hub.tracker, hub.now)
    tracked, peers = await swarms.start(local_tracked)
    log.info("tracker on Redis: %d tracked torrents, %d peers of the fleet", tracked, peers)
    hub.shared_swarms = swarms


def _start_redis_tasks(hub: Hub, engine: RedisState, tasks: Supervisor) -> asyncio.Task[None]:
    """The lane to Redis (essential), the keeper and the mirror (restarted if they fail)."""
    tasks.start(lambda: engine.follow(hub.registry, hub.now), name="fleet-mirror", essential=False)
    tasks.start(lambda: engine.keep(hub.now), name="fleet-keeper", essential=False)
    if (reports := hub.redis_reports) is not None:
        tasks.start(reports.follow, name="reports-follower", essential=False)
        tasks.start(reports.keep, name="reports-expiry", essential=False)
    if (swarms := hub.shared_swarms) is not None:
        tasks.start(swarms.flush_forever, name="swarms-flush", essential=False)
        tasks.start(swarms.follow, name="swarms-follower", essential=False)
        tasks.start(swarms.snapshot_forever, name="swarms-snapshot", essential=False)
    tasks.start(engine.run_touches, name="fleet-liveness", essential=False)
    return tasks.start(engine.run_lane, name="fleet-lane", essential=True)


async def _stop_relay(hub: Hub, relay: asyncio.Task[None]) -> None:
    """Drain queued relays (bounded), save, and see the relay's task end; one that has
    not ended ``RELAY_STOP_WITHIN`` s later is cancelled (a hub asked to stop stops)."""
    try:
        async with asyncio.timeout(RELAY_STOP_WITHIN):
            await hub.relay.aclose()
    except TimeoutError:
        log.error("relay: not stopped within %g s; cancelling it", RELAY_STOP_WITHIN)
    if not relay.done():
        _, pending = await asyncio.wait([relay], timeout=RELAY_STOP_WITHIN)
        if pending:
            log.error("relay: still running; cancelled")
            relay.cancel()
            await asyncio.wait([relay], timeout=RELAY_STOP_WITHIN)


async def run_dht(hub: Hub, address: tuple[str, int]) -> None:
    """The fleet's DHT node (issue 14), until cancelled: nodes bootstrap from it, and it
    keeps their announces, so they find each other when every hub's tracker is away.

    Bound to a private or loopback address it keeps those ranges (a fleet there).
    """
    from smartget.dht.driver import DHT  # only when it runs

    host, port = address
    async with DHT("0.0.0.0" if host in ("", "::") else host, port) as node:
        hub.dht_address = (node.bind_ip, node.bind_port)
        log.info("DHT (BEP 5) on %s:%d", *hub.dht_address)
        try:
            await asyncio.Future()  # it serves from its socket's reader until cancelled
        finally:
            hub.dht_address = None


def _bind_udp(host: str, port: int) -> socket.socket | None:
    """The UDP tracker's socket, or None (logged) if the address is taken: the HTTP
    tracker serves every torrent too, and /api/trackers then lists only it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        log.error(
            "UDP tracker: cannot listen on %s:%d (%s); running without it "
            "(--udp-tracker HOST:PORT picks another address)",
            host,
            port,
            exc.strerror,
        )
        return None
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    return sock


@contextlib.asynccontextmanager
async def running(settings: HubSettings) -> AsyncIterator[Hub]:
    """Start the hub in this loop; on exit, stop accepting, finish, close the store."""
    loop = asyncio.get_running_loop()
    state_url = parse_state(settings.state)
    store = Store(settings.data_dir / STORE_FILE)
    hub: Hub | None = None
    try:
        hub = Hub(settings, store)
        nodes, next_id = store.read_now(load_nodes)
        if state_url.is_redis:  # the nodes of the SQLite file are not the fleet's then
            await _use_redis(hub, state_url)
        else:
            hub.registry.restore(nodes, next_id, hub.now())
        satellites = hub.relay.restore_now()
        torrents, finished = store.read_now(load_fleet_state)
        for info_hash in torrents:
            hub.tracker.allow(info_hash)
        if hub.redis_reports is None:  # on Redis, the fleet's reports were loaded from it
            hub.collector.restore(finished)
        peers, downloaded = store.read_now(load_swarms)
        restored = hub.restore_swarms(peers, downloaded)
        if hub.redis is not None:  # after the store's: the fleet's are newer
            await _share_swarms(hub, hub.redis, torrents)
        jobs_restored = hub.jobs.restore_now()
        text_sock = bind_tcp(*settings.listen)
        http_sock = bind_tcp(*settings.http) if settings.http else None
        udp_sock = None if settings.no_udp_tracker else _bind_udp(*settings.udp_tracker)
    except BaseException:
        if hub is not None and hub.redis is not None:
            await hub.redis.aclose()
        store.close_now()
        raise
    if hub.redis is None:
        log.info("store %s: %d nodes, next id %d", store.path, len(nodes), next_id)
    log.info(
        "tracker: %d peers restored; interval %d s, peer lifetime %d s",
        restored,
        hub.tracker.interval,
        hub.tracker.peer_ttl,
    )
    if hub.tracker.peer_ttl < default_peer_lifetime(hub.tracker.interval):
        log.warning(
            "tracker: a peer lifetime of %g s is shorter than libtorrent's real announce "
            "rounds (300 s at least): swarms of the fleet's nodes will look empty",
            hub.tracker.peer_ttl,
        )
    log.info("relay: %d satellites restored", satellites)
    log.info("jobs: %d unfinished push jobs restored", jobs_restored)
    # The bound ports, before any task runs: the first heartbeat on Redis carries them.
    hub.text_address = text_sock.getsockname()[:2]
    if http_sock is not None:
        hub.http_address = http_sock.getsockname()[:2]

    async with Supervisor("hub") as tasks:
        writer = tasks.start(store.run, name="store-writer", essential=True)
        if hub.redis is None:
            expiry = tasks.start(hub.expire_forever, name="liveness", essential=True)
        else:  # liveness on Redis: swept by the hub holding the lease (state/lease.py)
            expiry = _start_redis_tasks(hub, hub.redis, tasks)
        relay = tasks.start(hub.relay.run, name="relay", essential=True)
        swarms = tasks.start(hub.keep_swarms, name="swarms", essential=False)
        jobs = tasks.start(hub.jobs.run, name="jobs", essential=False)
        console = tasks.start(hub.console.run, name="console", essential=False)
        if udp_sock is not None:
            core = UdpTracker(hub.tracker, hub.commands.announce, secrets.token_bytes(32))
            hub.udp_tracker = UdpTrackerServer(
                core, udp_sock, now=hub.now, save_tracked=lambda h: hub.save_tracked(h.hex())
            )
            hub.udp_tracker.start()
            hub.udp_tracker_address = hub.udp_tracker.address
            log.info("UDP tracker (BEP 15) on %s:%d", *hub.udp_tracker_address)
        text_server = await loop.create_server(
            lambda: TextProtocolServer(hub.text), sock=text_sock, backlog=1024
        )
        hub.text_address = text_sock.getsockname()[:2]
        log.info("text protocol on %s:%d", *hub.text_address)
        if not settings.no_dht:  # auxiliary: a taken port is logged and tried again
            dht_at = settings.dht or hub.text_address
            tasks.start(lambda: run_dht(hub, dht_at), name="dht", essential=False)
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
            await hub.console.close()  # ends the pages' streams: they reconnect
            console.cancel()
            if http_server is not None:
                await http_server.stop()
            if hub.udp_tracker is not None:
                await hub.udp_tracker.aclose()
            expiry.cancel()
            swarms.cancel()
            jobs.cancel()
            await _stop_relay(hub, relay)
            await hub.save()
            await hub.save_swarms()
            await store.aclose()
            await writer
            if hub.shared_swarms is not None:
                with contextlib.suppress(Exception):  # best effort: peers re-announce
                    await hub.shared_swarms.flush()
            if hub.redis is not None:
                await hub.redis.aclose()
            log.info("hub stopped")
