"""The node service: state, engine, task API, file server, reporter, hub client.

:func:`running` starts it all in the current event loop and stops it cleanly (resume
data saved, deregistered from the hub)::

    async with running(NodeSettings(ip="127.0.3.2", zone="z", wwwroot=..., data_dir=...)) as node:
        print(node.api_url, node.files_url)
        await node.wait_stopped()

Data dir layout: ``node.sqlite3`` (torrents and reporting state), ``resume/`` (libtorrent
resume data), ``node.password`` (generated API password, when none is configured).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from smartget.errors import TorrentError
from smartget.httpserver import BodyLimit, EmbeddedServer
from smartget.net import bind_tcp
from smartget.node.agent import Agent
from smartget.node.api import create_api_app
from smartget.node.auth import Credentials
from smartget.node.engine import Engine, EngineSettings, TorrentStatus
from smartget.node.fetcher import Fetcher
from smartget.node.files import create_files_app
from smartget.node.hubclient import HubClient, HubInfo
from smartget.node.paths import Roots
from smartget.node.reporter import Reporter, ReportSchedule
from smartget.node.state import NodeState
from smartget.node.tasks import MAX_TASK_BYTES, NodeIdentity

__all__ = ["Node", "NodeSettings", "running"]

log = logging.getLogger(__name__)

STATE_FILE = "node.sqlite3"


@dataclass
class NodeSettings:
    """Everything ``smartget node`` takes (and a few knobs only tests and libraries set)."""

    ip: str
    zone: str
    wwwroot: Path
    data_dir: Path
    api: tuple[str, int] = ("0.0.0.0", 8090)
    files: tuple[str, int] = ("0.0.0.0", 8080)
    bt_port: int = 6881
    hub: tuple[str, int] | None = None
    hub_http: str | None = None
    report_url: str | None = None
    report_interval: float = 30.0
    user: str | None = None
    password: str | None = None
    token: str | None = None
    trackers: tuple[str, ...] = ()
    upload_limit: int = 0
    download_limit: int = 0
    extra_roots: tuple[Path, ...] = ()
    heartbeat: float = 20.0
    resume_interval: float = 5.0
    outgoing_utp: bool = False
    webseed_fallback: float = 10.0  # see EngineSettings
    peer_request_queue: int | None = None  # see EngineSettings
    name: str = ""
    extra: dict[str, object] = field(default_factory=dict)


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

    def _on_change(self, sha1: str) -> None:
        self.agent.on_change(sha1)
        if self.reporter is None:
            return
        with contextlib.suppress(TorrentError):
            self.reporter.changed(sha1, self.engine.status(sha1).status)

    def _lookup(self, sha1: str) -> tuple[TorrentStatus, str, str] | None:
        return self.agent.report_status(sha1)

    def _persist_report(self, sha1: str, done: bool, retries: int) -> None:
        self.agent.state.update_report(sha1, done=done, retries=retries)


@contextlib.asynccontextmanager
async def running(settings: NodeSettings) -> AsyncIterator[Node]:
    """Start the node in this loop; on exit stop everything, saving resume data."""
    s = settings
    node = Node(s)
    credentials = Credentials.build(s.data_dir, s.user, s.password, s.token)
    roots = Roots.create(s.wwwroot, s.extra_roots)
    api_sock = bind_tcp(*s.api)
    files_sock = bind_tcp(*s.files)
    node.api_address = api_sock.getsockname()[:2]
    node.files_address = files_sock.getsockname()[:2]
    state = NodeState(s.data_dir / STATE_FILE)
    engine = Engine(
        EngineSettings(
            ip=s.ip,
            bt_port=s.bt_port,
            upload_limit=s.upload_limit,
            download_limit=s.download_limit,
            outgoing_utp=s.outgoing_utp,
            resume_interval=s.resume_interval,
            webseed_fallback=s.webseed_fallback,
            peer_request_queue=s.peer_request_queue,
        ),
        s.data_dir / "resume",
        on_change=node._on_change,
    )
    node.engine = engine
    fetcher = Fetcher()
    if s.report_url:
        node.reporter = Reporter(
            s.report_url,
            ReportSchedule(s.report_interval),
            node.identity,
            node._lookup,
            node._persist_report,
        )
    node.agent = Agent(
        node.identity,
        roots,
        engine,
        fetcher,
        state,
        files_url=node.files_url,
        trackers=s.trackers,
        reporter=node.reporter,
    )
    api_server = EmbeddedServer(
        BodyLimit(create_api_app(node.agent, credentials), MAX_TASK_BYTES), api_sock, name="api"
    )
    files_server = EmbeddedServer(create_files_app(roots.wwwroot), files_sock, name="files")
    try:
        await engine.start()
    except BaseException:
        api_sock.close()
        files_sock.close()
        state.close()
        await fetcher.aclose()
        raise
    restored = await node.agent.restore()
    log.info("BitTorrent on %s:%d; %d torrents restored", s.ip, node.bt_port, restored)
    if s.hub_http or s.hub:
        info = HubInfo(
            ip=s.ip,
            port=node.api_address[1],
            name=s.name or node.identity.nodeid,
            zone=s.zone,
            bt_port=node.bt_port,
            api_url=node.api_url,
            files_url=node.files_url,
        )
        node.hub = HubClient(
            info,
            engine.free_upload_slots,
            http_url=s.hub_http,
            text_address=None if s.hub_http else s.hub,
            token=s.token or "",
            heartbeat=s.heartbeat,
        )
    background: list[asyncio.Task[None]] = []
    try:
        await api_server.start()
        await files_server.start()
        log.info("task API on %s, files on %s", node.api_url, node.files_url)
        # Not a TaskGroup: the caller's exceptions must come out unwrapped. Each task is
        # cancelled and awaited below; a crash is logged at once.
        background.append(asyncio.create_task(node.agent.run_deadlines(), name="deadlines"))
        if node.reporter is not None:
            background.append(asyncio.create_task(node.reporter.run(), name="reporter"))
        if node.hub is not None:
            background.append(asyncio.create_task(node.hub.run(), name="hub-client"))
        for task in background:
            task.add_done_callback(_log_crash)
        yield node
    finally:
        log.info("node stopping")
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
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


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s crashed", task.get_name(), exc_info=task.exception())
