"""The mesh app interface: MSW's plugins, each with its own inbound queue.

Seed 001 ("介绍"): every plugin gets its own receive queue and shares one send queue; the
forwarder delivers by ``Datapack.app``. Here an app is an object with a ``name`` and an
``async run(ctx)`` method; the node gives it an :class:`AppContext`::

    class Echo(App):
        name = "echo"

        async def run(self, ctx: AppContext) -> None:
            while True:
                dp = await ctx.receive()          # this app's own queue
                ctx.send(dp.reply(dp.body))       # never waits on another app

``ctx.send`` routes at once (locally by ``app``, over the mesh when ``to`` is set),
never blocks, and returns the packet as sent (its ``flag`` set). ``await
ctx.request(dp, within)`` sends and waits for the reply that carries ``re: <flag>``.
``await ctx.send_file(path, to=..., app=...)`` streams a file. ``ctx.receive()`` gives a
:class:`~smartget.mesh.datapack.Received`: the packet (read through: ``dp.head``,
``dp.body``, ``dp.reply()``) and what the node knows of it. ``dp.origin`` is the
sender's node id when the node proved it: by TLS on a direct link, or, for packets that
came through proxies, by the origin's signature when the app sets ``verify_origin`` or
has an ``--allow`` rule. For method ``file``, ``dp.file`` is the verified copy under
the receive root and ``head['filename']`` the name it was sent as.

An app sees the node only through its :class:`AppContext`, which reaches the node
through the small :class:`AppHost` protocol (the node implements it); apps never hold
the node itself.

Where apps come from: mesh/loader.py. An app's failure is logged and does not stop the
node or the other apps.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, ClassVar, Protocol

from smartget.errors import MeshError
from smartget.mesh.datapack import Datapack, Received, new_flag

__all__ = [
    "BUILTIN_APPS",
    "ENTRY_POINT_GROUP",
    "App",
    "AppContext",
    "AppHost",
    "Received",
    "sha256_file",
]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "smartget.mesh_apps"
QUEUE_HIGH = 10_000  # past this, links feeding the app stop being read
QUEUE_MAX = 100_000  # past this (local senders only), packets are dropped


class Pausable(Protocol):
    """What the node hands :meth:`AppContext.deliver`: the link a packet came in on."""

    def pause(self, reason: str) -> None: ...
    def resume(self, reason: str) -> None: ...


class AppHost(Protocol):
    """What an app's context needs from the node."""

    @property
    def node_id(self) -> str: ...
    def send(self, dp: Datapack) -> Datapack: ...
    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]: ...
    def now(self) -> float: ...
    async def wait_quiet(self) -> None: ...
    def request_restart(self) -> None: ...
    def stop(self) -> None: ...


class App:
    """Base class of a mesh app. Subclasses set ``name`` and implement :meth:`run`."""

    name: ClassVar[str] = ""
    # Apps closed to every peer unless the config opens them (issue 7, "Security").
    closed_by_default: ClassVar[bool] = False
    # Check the signature of packets that came through proxies so ``dp.origin`` is set
    # (about 0.1 ms a packet; apps with an --allow rule are always checked).
    verify_origin: ClassVar[bool] = False

    async def run(self, ctx: AppContext) -> None:
        raise NotImplementedError


def sha256_file(path: Path, chunk: int = 1 << 20) -> tuple[str, int]:
    """(hex sha256, size) of a file; blocking, so call it with ``asyncio.to_thread``."""
    hasher = hashlib.sha256()
    size = 0
    with open(path, "rb") as file:
        while data := file.read(chunk):
            hasher.update(data)
            size += len(data)
    return hasher.hexdigest(), size


class AppContext:
    """What the node gives an app: its queue, the send API, its directories, settings.

    ``data_dir`` is the app's own directory, ``node_dir`` the node's (shared by every
    app), ``recv_root`` where received files are stored.
    """

    def __init__(
        self,
        host: AppHost,
        name: str,
        *,
        data_dir: Path,
        node_dir: Path,
        recv_root: Path,
        settings: dict[str, Any] | None = None,
    ) -> None:
        self._host = host
        self.name = name
        self.data_dir = data_dir
        self.node_dir = node_dir
        self.recv_root = recv_root
        self.settings: dict[str, Any] = settings or {}
        self.queue: asyncio.Queue[Received] = asyncio.Queue()
        self.dropped = 0
        self.log = logging.getLogger(f"smartget.mesh.apps.{name}")
        self._replies: dict[str, asyncio.Future[Received]] = {}
        self._paused: set[Pausable] = set()

    @property
    def node_id(self) -> str:
        return self._host.node_id

    def now(self) -> float:
        """The node's monotonic clock (the event loop's), in seconds."""
        return self._host.now()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` as a task of the node (cancelled when the node stops)."""
        return self._host.spawn(coro)

    async def wait_quiet(self) -> None:
        """Wait until the node has nothing left to send; wrap it in ``asyncio.timeout``."""
        await self._host.wait_quiet()

    def request_restart(self) -> None:
        """Stop the node so that ``smartget mesh supervise`` restarts it (exit 0)."""
        self._host.request_restart()

    def request_stop(self) -> None:
        """Stop the node for good (``smartget mesh run`` exits non-zero; no restart)."""
        self._host.stop()

    async def receive(self) -> Received:
        """The next packet for this app (replies awaited by :meth:`request` excepted)."""
        dp = await self.queue.get()
        if self._paused and self.queue.qsize() <= QUEUE_HIGH // 2:
            for link in self._paused:
                link.resume(self.name)
            self._paused.clear()
        return dp

    def send(self, dp: Datapack) -> Datapack:
        """Route ``dp`` now (``from`` defaults to this app); returns it as sent (flag set)."""
        return self._host.send(dp.with_defaults({"from": self.name}))

    async def request(self, dp: Datapack, within: float) -> Received:
        """Send ``dp`` and wait up to ``within`` s for its reply; :class:`MeshError` if none."""
        if not dp.flag:
            dp = dp.with_head({"flag": new_flag()})
        flag = dp.flag
        future: asyncio.Future[Received] = asyncio.get_running_loop().create_future()
        self._replies[flag] = future
        try:
            self.send(dp)
            async with asyncio.timeout(within):
                return await future
        except TimeoutError:
            raise MeshError(
                f"no reply to {dp.app!r} on {dp.head.get('to')!r} within {within} s"
            ) from None
        finally:
            self._replies.pop(flag, None)

    async def send_file(
        self, path: Path, *, to: str, app: str, filename: str | None = None, **head: str
    ) -> Datapack:
        """Stream the file at ``path`` to ``app`` on ``to`` (hashed first, in a thread)."""
        digest, _size = await asyncio.to_thread(sha256_file, path)
        dp = Datapack(
            "file",
            app,
            {"to": to, "filename": filename or path.name, "sha256": digest, **head},
            file=os.fspath(path),
        )
        return self.send(dp)

    def deliver(self, dp: Received, link: Pausable | None = None) -> None:
        """Called by the node: wake a waiting :meth:`request`, else queue.

        Backpressure: an app more than ``QUEUE_HIGH`` packets behind stops the links
        feeding it from being read (TCP then slows the senders) until it is half way
        through. Packets from local apps past ``QUEUE_MAX`` are dropped, with a log line.
        """
        waiter = self._replies.get(dp.head.get("re", "")) if dp.method == "reply" else None
        if waiter is not None and not waiter.done():
            waiter.set_result(dp)
            return
        size = self.queue.qsize()
        if link is None and size >= QUEUE_MAX:
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                self.log.warning("queue full: dropped %d packets so far", self.dropped)
            return
        self.queue.put_nowait(dp)
        if link is not None and size + 1 >= QUEUE_HIGH and link not in self._paused:
            self._paused.add(link)
            link.pause(self.name)


BUILTIN_APPS = ("logger", "console", "shell", "update")
