"""The node service's composition root: the one place that builds and wires the parts.

:func:`running` starts it all in the current event loop and stops it cleanly (resume
data saved, deregistered from the hub)::

    async with running(NodeSettings(ip="127.0.3.2", zone="z", wwwroot=..., data_dir=...)) as node:
        print(node.api_url, node.files_url)
        await node.wait_stopped()

The parts and the arrows between them are drawn in ``README.md`` beside this file. Each
part knows the others only through the small Protocols it declares (the agent's
``TorrentEngine`` and ``StatusReporter``, the API's ``TaskRunner``) or through the
callables passed in here (the engine's ``on_change``, the reporter's ``lookup`` and
``persist``, the hub client's ``free_slots``).

Background tasks (the deadline timer, the cache, the reporter, the hub client) run under one
:class:`~smartget.lifecycle.Supervisor`. None is essential: the node serves tasks and
torrents without them, so a crash is logged with its traceback and the task restarted
after a backoff; it never takes the node down.

Data dir layout: ``node.sqlite3`` (torrents and reporting state), ``resume/`` (libtorrent
resume data), ``node.password`` (generated API password, when none is configured).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from smartget.errors import TorrentError
from smartget.httpserver import BodyLimit, EmbeddedServer, HttpLimits
from smartget.lifecycle import Supervisor
from smartget.net import bind_tcp
from smartget.node.agent import Agent
from smartget.node.api import BODY_LIMITS, create_api_app
from smartget.node.auth import Credentials
from smartget.node.cache import CachePolicy
from smartget.node.engine import Engine
from smartget.node.fetcher import Fetcher
from smartget.node.fetchpolicy import FetchPolicy
from smartget.node.files import create_files_app
from smartget.node.hubclient import HubClient, HubInfo
from smartget.node.paths import Roots
from smartget.node.reporter import Reporter, ReportSchedule
from smartget.node.settings import NodeSettings
from smartget.node.sources import ByteSources
from smartget.node.sources import read as read_sources
from smartget.node.sources import watch as watch_sources
from smartget.node.state import NodeState
from smartget.node.status import TorrentStatus
from smartget.node.tasks import MAX_TASK_BYTES, NodeIdentity

__all__ = ["Node", "NodeSettings", "running"]

log = logging.getLogger(__name__)

STATE_FILE = "node.sqlite3"


class Node:
    """The running node's parts. Touch only from the event loop."""

    def __init__(self, settings: NodeSettings) -> None:
        self.settings = settings
        self.identity = NodeIdentity(ip=settings.ip, zone=settings.zone)
        self.api_address: tuple[str, int] = settings.api
        self.files_address: tuple[str, int] = settings.files
        self._stopped = asyncio.Event()
        self.agent: Agent
        self.engine: Engine
        self.reporter: Reporter | None = None
        self.hub: HubClient | None = None

    def _url(self, address: tuple[str, int]) -> str:
        host, port = address
        if host in ("0.0.0.0", "::", ""):
            host = self.settings.ip
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"

    @property
    def api_url(self) -> str:
        return self._url(self.api_address)

    @property
    def files_url(self) -> str:
        return self._url(self.files_address)

    @property
    def bt_port(self) -> int:
        return self.engine.listen_port or self.settings.bt_port

    def stop(self) -> None:
        """Ask the node to stop (safe from a signal handler in the loop)."""
        self._stopped.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    def statistics(self) -> dict[str, int]:
        stats = {**self.engine.statistics(), **self.agent.statistics()}
        if self.reporter is not None:
            stats.update({f"report_{k}": v for k, v in self.reporter.schedule.statistics().items()})
        if self.hub is not None:
            stats.update({f"hub_{k}": v for k, v in self.hub.statistics().items()})
        return stats


def _build(
    node: Node, state: NodeState, roots: Roots, fetcher: Fetcher, cache: CachePolicy
) -> None:
    """Make the engine, the reporter and the agent, and connect their callbacks."""
    s = node.settings

    def on_change(sha1: str) -> None:  # the engine saw a torrent change state
        if node.agent.byte_sources is not None:  # before finished seeds hang up on each other
            read_sources(node.engine, node.agent.byte_sources, sha1)
        node.agent.on_change(sha1)
        if node.reporter is not None:
            with contextlib.suppress(TorrentError):
                node.reporter.changed(sha1, node.engine.status(sha1).status)

    def lookup(sha1: str) -> tuple[TorrentStatus, str, str] | None:  # what to report
        return node.agent.report_status(sha1)

    def persist(sha1: str, done: bool, retries: int) -> None:  # how far reporting got
        node.agent.report_progress(sha1, done=done, retries=retries)

    node.engine = Engine(s.engine_settings(), s.data_dir / "resume", on_change=on_change)
    if s.report_url:
        node.reporter = Reporter(
            s.report_url, ReportSchedule(s.report_interval), node.identity, lookup, persist
        )
    node.agent = Agent(
        node.identity,
        roots,
        node.engine,
        fetcher,
        state,
        files_url=node.files_url,
        trackers=s.trackers,
        reporter=node.reporter,
        cache=cache,
    )
    node.agent.byte_sources = ByteSources(s.webseed_fallback)


def _hub_client(node: Node) -> HubClient | None:
    s = node.settings
    if not (s.hub_http or s.hub):
        return None
    info = HubInfo(
        ip=s.ip,
        port=node.api_address[1],
        name=s.name or node.identity.nodeid,
        zone=s.zone,
        bt_port=node.bt_port,
        api_url=node.api_url,
        files_url=node.files_url,
    )
    return HubClient(
        info,
        node.engine.free_upload_slots,
        http_urls=s.hub_http,
        text_addresses=() if s.hub_http else s.hub,
        token=s.token or "",
        heartbeat=s.heartbeat,
    )


@contextlib.asynccontextmanager
async def running(settings: NodeSettings) -> AsyncIterator[Node]:
    """Start the node in this loop; on exit stop everything, saving resume data."""
    s = settings
    node = Node(s)
    policy = FetchPolicy.from_texts(s.fetch_allow)  # a bad network fails before anything
    cache = CachePolicy(s.cache_max, s.cache_low)  # so do bad watermarks
    credentials = Credentials.build(s.data_dir, s.user, s.password, s.token)
    roots = Roots.create(s.wwwroot, s.extra_roots)
    api_sock = bind_tcp(*s.api)
    files_sock = bind_tcp(*s.files)
    node.api_address = api_sock.getsockname()[:2]
    node.files_address = files_sock.getsockname()[:2]
    state = NodeState(s.data_dir / STATE_FILE)
    fetcher = Fetcher(
        max_file_size=s.fetch_max_size,
        deadline=s.fetch_timeout,
        policy=policy,
    )
    _build(node, state, roots, fetcher, cache)
    engine, agent = node.engine, node.agent

    def api_statistics() -> dict[str, int]:
        return {**engine.statistics(), **agent.statistics()}

    api_app = create_api_app(agent, credentials, api_statistics)
    limits = s.http_limits or HttpLimits()
    api_server = EmbeddedServer(
        BodyLimit(api_app, MAX_TASK_BYTES, BODY_LIMITS), api_sock, name="api", limits=limits
    )
    files_server = EmbeddedServer(
        create_files_app(roots.all, on_served=agent.served), files_sock, name="files", limits=limits
    )
    try:
        await engine.start()
    except BaseException:
        api_sock.close()
        files_sock.close()
        state.close()
        await fetcher.aclose()
        raise
    restored = await agent.restore()
    log.info("BitTorrent on %s:%d; %d torrents restored", s.ip, node.bt_port, restored)
    node.hub = _hub_client(node)
    # Entered and left by hand, not with ``async with``: the caller's exception, thrown
    # in at the yield, must come out as itself rather than inside an ExceptionGroup.
    supervisor = Supervisor("node")
    await supervisor.__aenter__()
    try:
        await api_server.start()
        await files_server.start()
        log.info("task API on %s, files on %s", node.api_url, node.files_url)
        supervisor.start(agent.run_deadlines, name="deadlines", essential=False)
        supervisor.start(agent.run_cache, name="cache", essential=False)
        sources = agent.byte_sources
        if sources is not None:
            supervisor.start(
                lambda: watch_sources(engine, sources), name="sources", essential=False
            )
        if node.reporter is not None:
            supervisor.start(node.reporter.run, name="reporter", essential=False)
        if node.hub is not None:
            supervisor.start(node.hub.run, name="hub-client", essential=False)
        yield node
    finally:
        log.info("node stopping")
        await supervisor.__aexit__(None, None, None)
        await api_server.stop()
        await files_server.stop()
        if node.hub is not None:
            await node.hub.deregister()
            await node.hub.aclose()
        if node.reporter is not None:
            await node.reporter.aclose()
        await engine.aclose()
        await fetcher.aclose()
        state.close()
        log.info("node stopped")
