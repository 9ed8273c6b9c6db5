"""A mesh node: the one place that builds the parts and wires them together.

:class:`Node` owns the sans-IO cores (router.py: where packets go; policy.py: who may
send what; registry.py: which link per peer, what to dial) and the I/O around them
(links, the TLS listener and dialer, the file store, the apps), and carries out the
router's actions: links write, apps receive, dials go out. It runs in the current
event loop::

    async with running(MeshSettings(tls_dir=..., data_dir=...)) as node:
        node.send(Datapack("post", "logger", {"to": "e"}, b"hello"))
        await node.wait_stopped()

Links see the node as their :class:`~smartget.mesh.link.LinkOwner`, apps as their
:class:`~smartget.mesh.apps.AppHost`; neither imports this module.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import ssl
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from smartget.errors import AuthError, MeshError
from smartget.mesh import link as lk
from smartget.mesh import router as rt
from smartget.mesh.apps import App, AppContext
from smartget.mesh.ca import (
    NodeIdentity,
    client_context,
    load_identity,
    server_context,
    sign_datapack,
    verify_datapack,
)
from smartget.mesh.datapack import Datapack, Received, new_flag
from smartget.mesh.files import FileStore
from smartget.mesh.link import Link, LinkLimits
from smartget.mesh.loader import load_apps
from smartget.mesh.policy import Policy, relayed_signature
from smartget.mesh.registry import DialBook, LinkRegistry
from smartget.mesh.replay import ReplayCache
from smartget.mesh.replaylog import ReplayLog
from smartget.mesh.settings import MeshSettings
from smartget.net import bind_tcp

__all__ = ["Node", "running"]

log = logging.getLogger(__name__)


class Node:
    """One mesh node in the running event loop."""

    def __init__(self, settings: MeshSettings, identity: NodeIdentity | None = None) -> None:
        self.settings = settings
        self.identity = identity or load_identity(settings.tls_dir)
        self.node_id = self.identity.node_id
        self.files = FileStore(settings.data_dir)
        self.recv_root = self.files.recv_root
        self.tmp_dir = self.files.tmp_dir
        self.router = rt.Router(self.node_id, settings.router_config())
        self.policy = Policy(self.node_id, settings.allow, self.router.config.dedupe_seconds)
        # Signed packets delivered while their signature is valid (issue 12, item 1).
        self.replays = ReplayCache(self.policy.replay_window)
        self.replay_log = ReplayLog(settings.data_dir / "replay.log", self.replays)
        self.registry: LinkRegistry[Link] = LinkRegistry(self.node_id)
        self.dials = DialBook(self.node_id)
        self.links = self.registry.links  # the link in use, by peer id
        self.connections = self.registry.connections
        self.apps: dict[str, App] = {}
        self.contexts: dict[str, AppContext] = {}
        self.address: tuple[str, int] | None = None
        self.restart_requested = False
        self.last_error = ""  # why the last dial or link failed, for scripts
        self.stats: collections.Counter[str] = collections.Counter()
        self._limits = LinkLimits(self.tmp_dir, settings.max_file, settings.idle_timeout)
        self._inbound: Link | None = None  # the link whose packet is being routed
        self._server: asyncio.Server | None = None
        self._server_ctx = server_context(self.identity)
        self._client_ctx = client_context(self.identity)
        self._tasks: set[asyncio.Task[Any]] = set()
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
        self.files.prepare()
        self.replay_log.open(time.time())
        self.apps = load_apps(settings.apps, settings.apps_dir)
        self.apps.update(settings.extra_apps)
        if settings.listen is not None:
            sock = bind_tcp(*settings.listen)  # "address in use" as a sentence
            self._server = await self._loop.create_server(
                lambda: Link(self, self._limits, dialed=False),
                sock=sock,
                ssl=self._server_ctx,
                ssl_handshake_timeout=settings.connect_timeout,
            )
            sockname = self._server.sockets[0].getsockname()
            self.address = (sockname[0], sockname[1])
            self.router.listen = f"{sockname[0]}:{sockname[1]}"
        for name, app in self.apps.items():
            ctx = AppContext(
                self,
                name,
                data_dir=settings.data_dir / "apps" / name,
                node_dir=settings.data_dir,
                recv_root=self.recv_root,
                settings=settings.app_settings.get(name, {}),
            )
            self.contexts[name] = ctx
            self.spawn(self._run_app(app, ctx))
        self.spawn(self._heartbeat_loop())
        log.info(
            "mesh node %s up%s; apps: %s",
            self.node_id,
            f" on {self.address[0]}:{self.address[1]}" if self.address else "",
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
        self.replay_log.close()

    # -- sending -------------------------------------------------------------------

    def send(self, dp: Datapack) -> Datapack:
        """Route a packet from a local app now; never blocks (seed: send_queue.put).

        Returns the packet as routed: with its ``flag``, our ``id`` and, where the
        policy asks for one, our signature.
        """
        dp = dp.with_head({"flag": dp.flag or new_flag(), "id": self.node_id})
        if dp.app != rt.NET_APP and self.policy.must_sign(dp, self.router.peers):
            dp = sign_datapack(dp, self.identity)
        self._execute(self.router.route(dp, self.now()))
        return dp

    async def wait_peer(self, peer: str) -> None:
        """Wait until a link to ``peer`` is up; wrap it in ``asyncio.timeout``."""
        while peer not in self.links:
            await self._wait_change()

    async def wait_link_or_failure(self) -> None:
        """Wait for any link to come up, or for every dial to have failed."""
        while not self.links and not (self.last_error and not self.dials.dialing):
            await self._wait_change()

    async def wait_quiet(self) -> None:
        """Wait until nothing waits to be sent (retry queue and outboxes empty).

        No deadline of its own: wrap it in ``asyncio.timeout``.
        """
        while self.router.waiting or any(  # noqa: ASYNC110 - no event for "all written"
            link.queued or link.sending_file for link in self.links.values()
        ):
            await asyncio.sleep(0.02)

    async def _wait_change(self) -> None:
        event = self._changed
        await event.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # -- links (the LinkOwner side) --------------------------------------------------

    def link_made(self, link: Link) -> None:
        self.registry.made(link)
        link.send(self.router.heartbeat_for(link.peer_id))

    def link_failed(self, link: Link, reason: str) -> None:
        self.last_error = reason
        self._notify()

    def link_up(self, link: Link) -> None:
        outcome = self.registry.up(link)
        if outcome.retire is not None:
            log.debug("two links to %s; retiring one", link.peer_id)
            outcome.retire.retire()
        if not outcome.new:
            return
        self._notify()
        log.info("link to %s is up (%s)", link.peer_id, "dialed" if link.dialed else "accepted")
        self._execute(self.router.link_up(link.peer_id, self.now()))

    def link_lost(self, link: Link) -> None:
        if self.registry.lost(link):
            log.info("link to %s is down", link.peer_id)
            self.router.link_down(link.peer_id, self.now())
        # What was still waiting to be written goes back to the router: another link, a
        # proxy, or the retry queue. (Bytes already in the socket's buffer are gone.)
        self._reroute(link)

    def peer_retired(self, link: Link) -> None:
        """The peer retired this link: route by another, hand back its queue, close it."""
        if self.registry.retired_by_peer(link):
            self.router.link_down(link.peer_id, self.now())
        link.retiring = True
        self._reroute(link)
        link.close()

    def _reroute(self, link: Link) -> None:
        now = self.now()
        for dp in link.take_outbox():
            if dp.app == rt.NET_APP:
                continue
            self.files.release(dp)  # no unlink: the re-routed packet still needs its file
            self._execute(self.router.reroute(dp, now))

    def packet_from(self, link: Link, dp: Datapack) -> None:
        self._inbound = link
        try:
            self._execute(self.router.route(dp, self.now(), link.peer_id, peer_host=link.peer_host))
        finally:
            self._inbound = None

    def screen_file(self, link: Link, dp: Datapack) -> str | None:
        """Why a file arriving on ``link`` is refused at its head, or None to receive it.

        A file for an app here is authorized before its body is stored (issue 12, item
        7): no such app, a sender the app refuses, a bad, misdirected or replayed
        signature. Files for other nodes are relayed (the retry queue bounds them).
        """
        hops = [hop for hop in dp.head.get("to", "").split("&") if hop]
        while hops and hops[0] == self.node_id:
            hops.pop(0)
        if hops:
            return None
        sender = link.peer_id
        dp = dp.with_defaults({"id": sender})
        try:
            if dp.app not in self.contexts:
                raise MeshError(f"no app {dp.app!r} on node {self.node_id!r}")
            origin = self._authorize(dp, sender)
            if (
                origin is not None
                and relayed_signature(dp, sender)
                and self.replays.seen(origin, dp.flag, time.time())
            ):
                raise AuthError(f"replay: file {dp.flag} signed by {origin!r} was delivered")
        except MeshError as exc:
            self.stats["refused"] += 1
            if dp.head["id"] != self.node_id:
                self.send(dp.reply(f"refused: {exc}".encode(), error="refused"))
            return str(exc)
        return None

    def file_sent(self, dp: Datapack) -> None:
        self.files.sent(dp)

    # -- the router's actions --------------------------------------------------------

    def _execute(self, actions: list[rt.Action]) -> None:
        for action in actions:
            match action:
                case rt.Transmit(peer, dp):
                    link = self.links.get(peer)
                    if link is None:
                        self._drop(dp, f"link to {peer} went away")
                        continue
                    self.files.queued(dp)
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
        self.files.dropped(dp)

    def _authorize(self, dp: Datapack, sender: str | None) -> str | None:
        """The proven origin of ``dp`` (or None), or :class:`AuthError` if the app refuses it."""
        app = self.apps.get(dp.app)
        return self.policy.authorize(
            dp,
            sender,
            app_verifies=app is not None and app.verify_origin,
            verify=lambda packet, max_age: verify_datapack(
                packet, self.identity.ca_cert, max_age=max_age
            ),
        )

    def _deliver(self, dp: Datapack, sender: str | None) -> None:
        ctx = self.contexts.get(dp.app)
        try:
            if ctx is None:
                raise MeshError(f"no app {dp.app!r} on node {self.node_id!r}")
            origin = self._authorize(dp, sender)
            if origin is not None and relayed_signature(dp, sender):
                self._admit_signed(dp, origin)
            stored = self.files.store(dp) if dp.method == "file" and sender is not None else None
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
        received = Received(dp, origin, sender, stored or dp.file)
        ctx.deliver(received, self.links.get(sender) if sender is not None else None)

    def _admit_signed(self, dp: Datapack, signer: str) -> None:
        """Record a relayed signed packet's first delivery, on disk before the app has it.

        :class:`AuthError` if it was delivered before (a replay) or the signer is over
        its share of the cache; OSError if the record cannot be written (then refused).
        """
        line = self.replays.admit(signer, dp.flag, float(dp.head["time"]), time.time())
        self.replay_log.append(line)

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
        if self.dials.start(host, port):
            self.stats["dials"] += 1
            self.spawn(self._dial(host, port, expected_id))

    async def _dial(self, host: str, port: int, expected_id: str | None) -> None:
        try:
            async with asyncio.timeout(self.settings.connect_timeout):
                _, link = await self._loop.create_connection(
                    lambda: Link(self, self._limits, dialed=True, expected_id=expected_id),
                    host,
                    port,
                    ssl=self._client_ctx,
                    server_hostname=expected_id or "smartget-mesh",
                    ssl_handshake_timeout=self.settings.connect_timeout,
                )
            if link.peer_id:
                self.dials.learned(host, port, link.peer_id)
                await link.closed
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            self.last_error = str(exc) or type(exc).__name__
            log.debug("cannot link to %s:%d: %s", host, port, self.last_error)
        finally:
            self.dials.finished(host, port)
            self._notify()

    @property
    def dialing(self) -> bool:
        return bool(self.dials.dialing)

    @property
    def _addr_id(self) -> dict[tuple[str, int], str]:
        """Which node each dialed address turned out to be (tests read it)."""
        return self.dials.known

    async def _heartbeat_loop(self) -> None:
        """Every heartbeat: tell each peer our tables, dial configured peers not linked."""
        while True:
            self.stats["heartbeat_rounds"] += 1
            for peer, link in list(self.links.items()):
                link.send(self.router.heartbeat_for(peer))
            for host, port in self.dials.to_redial(self.settings.peers, self.links):
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
