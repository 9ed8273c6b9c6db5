"""A mesh node: TLS listener, dialer, router driver, apps, per-app authorization.

:class:`Node` owns the :class:`~smartget.mesh.router.Router` (sans-IO) and carries out
its actions: links write, apps receive, dials go out. It runs in the current event loop::

    async with running(MeshSettings(tls_dir=..., data_dir=...)) as node:
        node.send(Datapack("post", "logger", {"to": "e"}, b"hello"))
        await node.wait_stopped()

Authorization (issue 7, "Security"): a packet's sender is proven by TLS when it comes
straight from its origin (``id`` equals the link's certificate id), or by the origin's
signature (``sig``/``cert``, ca.py) when it came through proxies. ``allow`` maps an app
to the node ids that may send to it (``*``: any proven node). Apps not named are open to
every member of the CA; ``shell`` and ``update`` are closed unless named.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import ssl
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smartget.errors import AuthError, ConfigError, MeshError
from smartget.mesh import link as lk
from smartget.mesh import router as rt
from smartget.mesh.apps import App, AppContext, load_apps
from smartget.mesh.ca import (
    NodeIdentity,
    client_context,
    load_identity,
    server_context,
    sign_datapack,
    verify_datapack,
)
from smartget.mesh.datapack import MAX_FILE, Datapack, new_flag
from smartget.mesh.link import Link, safe_relpath
from smartget.net import bind_tcp

__all__ = ["DEFAULT_APPS", "MeshSettings", "Node", "running"]

log = logging.getLogger(__name__)

DEFAULT_APPS = ["logger", "shell", "update"]
CLOSED_APPS = frozenset({"shell", "update"})
MAX_DIALING = 64  # dials under way at once; the rest wait for the next heartbeat


@dataclass
class MeshSettings:
    """Everything ``smartget mesh run`` takes. ``listen=None`` runs no server (a client)."""

    tls_dir: Path
    data_dir: Path
    listen: tuple[str, int] | None = ("0.0.0.0", 20120)
    peers: list[tuple[str, int]] = field(default_factory=list)
    apps: list[str] = field(default_factory=lambda: list(DEFAULT_APPS))
    apps_dir: Path | None = None
    allow: dict[str, list[str]] = field(default_factory=dict)
    heartbeat: float = 10.0
    retry_count: int = 39
    retry_interval: float = 3.9
    max_hops: int = 16
    dial_learned: bool = True
    connect_timeout: float = 10.0
    idle_timeout: float = 0.0  # 0: three heartbeats plus 10 s
    max_file: int = MAX_FILE
    app_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    extra_apps: dict[str, App] = field(default_factory=dict)  # in-process apps (tests, CLI)

    def __post_init__(self) -> None:
        if not self.idle_timeout:
            self.idle_timeout = 3 * self.heartbeat + 10.0


MAX_PEERS_FILE = 1 << 20  # bytes: tens of thousands of addresses


def read_peers_file(path: Path) -> list[tuple[str, int]]:
    """MSW's address.txt: one ``host:port`` a line; blank lines and ``#`` comments skipped."""
    from smartget.config import parse_hostport

    try:
        with path.open("rb") as file:
            data = file.read(MAX_PEERS_FILE + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read peers file {path}: {exc.strerror}") from exc
    if len(data) > MAX_PEERS_FILE:
        raise ConfigError(f"peers file {path} is larger than {MAX_PEERS_FILE} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"peers file {path} is not UTF-8 text: {exc.reason}") from None
    peers = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if line:
            try:
                peers.append(parse_hostport(line, default_host="127.0.0.1"))
            except ConfigError as exc:
                raise ConfigError(f"{path}:{number}: {exc}") from exc
    return peers


class Node:
    """One mesh node in the running event loop."""

    def __init__(self, settings: MeshSettings, identity: NodeIdentity | None = None) -> None:
        self.settings = settings
        self.identity = identity or load_identity(settings.tls_dir)
        self.node_id = self.identity.node_id
        self.recv_root = settings.data_dir / "recv"
        self.tmp_dir = settings.data_dir / "tmp"
        self.router = rt.Router(
            self.node_id,
            max_hops=settings.max_hops,
            retry_count=settings.retry_count,
            retry_interval=settings.retry_interval,
            dial_learned=settings.dial_learned,
        )
        self.links: dict[str, Link] = {}  # up links by peer id
        self.connections: set[Link] = set()
        self.apps: dict[str, App] = {}
        self.contexts: dict[str, AppContext] = {}
        self.address: tuple[str, int] | None = None
        self.restart_requested = False
        self.last_error = ""  # why the last dial or link failed, for scripts
        self._inbound: Link | None = None  # the link whose packet is being routed
        self.stats: collections.Counter[str] = collections.Counter()
        self._server: asyncio.Server | None = None
        self._server_ctx = server_context(self.identity)
        self._client_ctx = client_context(self.identity)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._dialing: set[tuple[str, int]] = set()
        self._addr_id: dict[tuple[str, int], str] = {}
        self._file_refs: collections.Counter[str] = collections.Counter()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._stopped = asyncio.Event()
        self._changed = asyncio.Event()  # set (and replaced) when links change
        self._loop = asyncio.get_running_loop()

    def now(self) -> float:
        return self._loop.time()

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        settings = self.settings
        for directory in (self.recv_root, self.tmp_dir):
            directory.mkdir(parents=True, exist_ok=True)
        for stale in self.tmp_dir.glob("rx-*"):  # half-received files of an earlier run
            stale.unlink(missing_ok=True)
        self.apps = load_apps(settings.apps, settings.apps_dir)
        self.apps.update(settings.extra_apps)
        if settings.listen is not None:
            sock = bind_tcp(*settings.listen)  # "address in use" as a sentence
            self._server = await self._loop.create_server(
                lambda: Link(self, dialed=False),
                sock=sock,
                ssl=self._server_ctx,
                ssl_handshake_timeout=settings.connect_timeout,
            )
            sockname = self._server.sockets[0].getsockname()
            self.address = (sockname[0], sockname[1])
            self.router.listen = f"{sockname[0]}:{sockname[1]}"
        for name, app in self.apps.items():
            ctx = AppContext(
                self, name, settings.data_dir / "apps" / name, settings.app_settings.get(name, {})
            )
            self.contexts[name] = ctx
            self.spawn(self._run_app(app, ctx))
        self.spawn(self._heartbeat_loop())
        log.info(
            "mesh node %s listening on %s with apps %s",
            self.node_id,
            self.router.listen or "(nothing)",
            ", ".join(sorted(self.apps)) or "(none)",
        )

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _run_app(self, app: App, ctx: AppContext) -> None:
        try:
            await app.run(ctx)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("app %s failed; the node and the other apps go on", ctx.name)

    def stop(self) -> None:
        self._stopped.set()

    def request_restart(self) -> None:
        """Stop so that ``smartget mesh run`` exits 0 and the supervisor restarts it."""
        self.restart_requested = True
        self.stop()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def aclose(self) -> None:
        self._stopped.set()
        if self._server is not None:
            self._server.close()
        for link in list(self.connections):
            link.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        if self._timer is not None:
            self._timer.cancel()
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self._server.wait_closed()

    # -- sending -------------------------------------------------------------------

    def send(self, dp: Datapack) -> None:
        """Route a packet from a local app now; never blocks (seed: send_queue.put)."""
        head = dp.head
        head.setdefault("flag", new_flag())
        head["id"] = self.node_id
        to = head.get("to", "")
        if to and dp.app != rt.NET_APP:
            last = to.rsplit("&", 1)[-1]
            # Sign whatever may pass a proxy (a direct link proves the sender by TLS), and
            # everything for the closed apps; proxies then cannot forge who sent it.
            if (
                "&" in to
                or (last != "*" and last not in self.router.peers)
                or (dp.app in CLOSED_APPS)
            ):
                sign_datapack(dp, self.identity)
        self._execute(self.router.route(dp, self.now()))

    async def wait_peer(self, peer: str) -> None:
        """Wait until a link to ``peer`` is up; wrap it in ``asyncio.timeout``."""
        while peer not in self.links:
            await self._wait_change()

    async def wait_link_or_failure(self) -> None:
        """Wait for any link to come up, or for every dial to have failed."""
        while not self.links and not (self.last_error and not self._dialing):
            await self._wait_change()

    async def _wait_change(self) -> None:
        event = self._changed
        await event.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def link_failed(self) -> None:
        self._notify()

    # -- links ---------------------------------------------------------------------

    def link_made(self, link: Link) -> None:
        self.connections.add(link)
        link.send(self.router.heartbeat_for(link.peer_id))

    def link_up(self, link: Link) -> None:
        peer = link.peer_id
        old = self.links.get(peer)
        if old is not None and old is not link:
            # Both sides dialed: keep the link dialed by the smaller id, on both ends, and
            # retire the other (Link.retire) so nothing already sent on it is lost.
            keep_new = link.dialed == (self.node_id < peer)
            log.debug("two links to %s; retiring one", peer)
            if keep_new:
                self.links[peer] = link
            (old if keep_new else link).retire()
            return
        self.links[peer] = link
        self._notify()
        log.info("link to %s is up (%s)", peer, "dialed" if link.dialed else "accepted")
        self._execute(self.router.link_up(peer, self.now()))

    def link_lost(self, link: Link) -> None:
        self.connections.discard(link)
        if self.links.get(link.peer_id) is link:
            del self.links[link.peer_id]
            log.info("link to %s is down", link.peer_id)
            self.router.link_down(link.peer_id, self.now())
        # What was still waiting to be written goes back to the router: another link, a
        # proxy, or the retry queue. (Bytes already in the socket's buffer are gone.)
        now = self.now()
        for dp in link.take_outbox():
            if dp.app == rt.NET_APP:
                continue
            self._unref(dp)  # no unlink: the re-routed packet still needs its file
            self._execute(self.router.reroute(dp, now))

    def peer_retired(self, link: Link) -> None:
        """The peer retired this link: route by another, hand back its queue, close it."""
        peer = link.peer_id
        if self.links.get(peer) is link:
            others = [
                c
                for c in self.connections
                if c is not link and c.peer_id == peer and c.up and not c.retiring
            ]
            if others:
                self.links[peer] = others[0]
            else:
                del self.links[peer]
                self.router.link_down(peer, self.now())
        link.retiring = True
        now = self.now()
        for dp in link.take_outbox():
            if dp.app == rt.NET_APP:
                continue
            self._unref(dp)
            self._execute(self.router.reroute(dp, now))
        link.close()

    def packet_from(self, link: Link, dp: Datapack) -> None:
        self._inbound = link
        try:
            self._execute(self.router.route(dp, self.now(), link.peer_id, peer_host=link.peer_host))
        finally:
            self._inbound = None

    # A relayed file (in tmp_dir) has one reference per outbox holding it; the retry
    # queue holds it with none. It is removed when the last send ends or it is dropped.

    def _unref(self, dp: Datapack) -> bool:
        """Release one reference; True when that was the last."""
        path = dp.file
        if path is None or path not in self._file_refs:
            return False
        self._file_refs[path] -= 1
        if self._file_refs[path] > 0:
            return False
        del self._file_refs[path]
        return True

    def file_sent(self, dp: Datapack) -> None:
        if self._unref(dp) and dp.file is not None:
            with contextlib.suppress(OSError):
                os.unlink(dp.file)

    # -- actions -------------------------------------------------------------------

    def _execute(self, actions: list[rt.Action]) -> None:
        for action in actions:
            match action:
                case rt.Transmit(peer, dp):
                    link = self.links.get(peer)
                    if link is None:
                        self._drop(dp, f"link to {peer} went away")
                        continue
                    if dp.file is not None and dp.file.startswith(str(self.tmp_dir)):
                        self._file_refs[dp.file] += 1
                    link.send(dp)
                    if self._inbound is not None and link.queued >= lk.OUTBOX_HIGH:
                        link.hold(self._inbound)  # relay backpressure: slow the feeder
                case rt.Deliver(dp, sender):
                    self._deliver(dp, sender)
                case rt.Dial(node_id, host, port):
                    if node_id not in self.links:
                        self.dial(host, port, node_id)
                case rt.Dropped(dp, reason, level):
                    self._drop(dp, reason, level)
        self._arm_timer()

    def _drop(self, dp: Datapack, reason: str, level: str = "info") -> None:
        self.stats["dropped"] += 1
        severity = {"debug": logging.DEBUG, "warning": logging.WARNING}.get(level, logging.INFO)
        log.log(severity, "dropped %s %s packet %s: %s", dp.method, dp.app, dp.flag, reason)
        path = dp.file
        if path is not None and path.startswith(str(self.tmp_dir)) and not self._file_refs[path]:
            with contextlib.suppress(OSError):
                os.unlink(path)

    def _authorize(self, dp: Datapack, sender: str | None) -> str | None:
        """The proven origin of ``dp`` (or None), or :class:`AuthError` if the app refuses it."""
        if sender is None:
            return self.node_id
        claimed = dp.head.get("id")
        origin: str | None = sender if claimed == sender else None
        problem = f"{claimed!r} via {sender!r} is not signed"
        rule = self.settings.allow.get(dp.app)
        app = self.apps.get(dp.app)
        wanted = (
            rule is not None or dp.app in CLOSED_APPS or (app is not None and app.verify_origin)
        )
        if origin is None and wanted and "sig" in dp.head:
            try:
                # Closed and ruled apps also refuse old signatures (replays by a proxy).
                max_age = (
                    self.router.dedupe_seconds
                    if rule is not None or dp.app in CLOSED_APPS
                    else None
                )
                origin = verify_datapack(dp, self.identity.ca_cert, max_age=max_age)
            except AuthError as exc:
                problem = str(exc)
        if rule is None:
            if dp.app not in CLOSED_APPS:
                return origin
            rule = []
        if origin is None:
            raise AuthError(f"app {dp.app!r} needs a proven sender: {problem}")
        if origin not in rule and "*" not in rule:
            raise AuthError(f"node {origin!r} may not use app {dp.app!r} on {self.node_id!r}")
        return origin

    def _deliver(self, dp: Datapack, sender: str | None) -> None:
        ctx = self.contexts.get(dp.app)
        try:
            if ctx is None:
                raise MeshError(f"no app {dp.app!r} on node {self.node_id!r}")
            dp.origin = self._authorize(dp, sender)
            if dp.method == "file" and sender is not None:
                self._store_file(dp)
        except (MeshError, OSError) as exc:
            self.stats["refused"] += 1
            log.warning(
                "refused %s %s packet from %s: %s", dp.method, dp.app, dp.head.get("id"), exc
            )
            self._drop(dp, str(exc))
            if dp.method != "reply" and "id" in dp.head and dp.head["id"] != self.node_id:
                self.send(dp.reply(f"refused: {exc}".encode(), error="refused"))
            return
        self.stats["delivered"] += 1
        ctx.deliver(dp, self.links.get(sender) if sender is not None else None)

    def _store_file(self, dp: Datapack) -> None:
        """Move a verified received file to RECV_ROOT/filename (never outside the root)."""
        rel = safe_relpath(dp.head.get("filename", ""))
        root = self.recv_root.resolve()
        dest = (root / rel).resolve() if rel is not None else None
        if dest is None or not dest.is_relative_to(root) or dest == root:
            raise AuthError(f"filename {dp.head.get('filename', '')[:80]!r} leads outside {root}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        assert dp.file is not None
        os.replace(dp.file, dest)
        dp.file = str(dest)

    # -- timers, dialing, heartbeat --------------------------------------------------

    def _arm_timer(self) -> None:
        deadline = self.router.get_timer()
        if deadline is None or (self._timer is not None and deadline >= (self._timer_at or 0)):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self._execute(self.router.handle_timer(self.now()))

    def dial(self, host: str, port: int, expected_id: str | None = None) -> None:
        """Link to ``host:port`` in the background (at most MAX_DIALING at once)."""
        if (host, port) not in self._dialing and len(self._dialing) < MAX_DIALING:
            self.stats["dials"] += 1
            self._dialing.add((host, port))
            self.spawn(self._dial(host, port, expected_id))

    async def _dial(self, host: str, port: int, expected_id: str | None) -> None:
        try:
            async with asyncio.timeout(self.settings.connect_timeout):
                _, link = await self._loop.create_connection(
                    lambda: Link(self, dialed=True, expected_id=expected_id),
                    host,
                    port,
                    ssl=self._client_ctx,
                    server_hostname=expected_id or "smartget-mesh",
                    ssl_handshake_timeout=self.settings.connect_timeout,
                )
            if link.peer_id:
                self._addr_id[(host, port)] = link.peer_id
                await link.closed
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            self.last_error = str(exc) or type(exc).__name__
            log.debug("cannot link to %s:%d: %s", host, port, self.last_error)
        finally:
            self._dialing.discard((host, port))
            self._notify()

    async def wait_quiet(self) -> None:
        """Wait until nothing waits to be sent (retry queue and outboxes empty).

        No deadline of its own: wrap it in ``asyncio.timeout``.
        """
        while self.router.waiting or any(  # noqa: ASYNC110 - no event for "all written"
            link.queued or link.sending_file for link in self.links.values()
        ):
            await asyncio.sleep(0.02)

    @property
    def dialing(self) -> bool:
        return bool(self._dialing)

    async def _heartbeat_loop(self) -> None:
        """Every heartbeat: tell each peer our tables, dial configured peers not linked."""
        while True:
            self.stats["heartbeat_rounds"] += 1
            for peer, link in list(self.links.items()):
                link.send(self.router.heartbeat_for(peer))
            for host, port in self.settings.peers:
                known = self._addr_id.get((host, port))
                if known != self.node_id and (known is None or known not in self.links):
                    self.dial(host, port)
            await asyncio.sleep(self.settings.heartbeat)

    def statistics(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "links": sorted(self.links),
            "router": self.router.statistics(),
            "apps": {name: ctx.queue.qsize() for name, ctx in self.contexts.items()},
            **self.stats,
        }


@contextlib.asynccontextmanager
async def running(settings: MeshSettings) -> AsyncIterator[Node]:
    node = Node(settings)
    try:
        await node.start()
        yield node
    finally:
        await node.aclose()
