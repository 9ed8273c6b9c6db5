"""Original MSW plugins, run unchanged: threads, blocking queues, a mutable Datapack.

An MSW plugin (seed 001, "编写第一个插件"; heimoshuiyu/msw ``plugins/*.py``) is a module
that, when imported, takes its queue and starts a thread::

    import threading
    from mswp import Datapack
    from forwarder import receive_queues, send_queue
    from config import msw_queue, dprint as print
    receive_queue = receive_queues[__name__]      # __name__ is 'plugins.<file name>'

    def main():
        while True:
            dp = receive_queue.get()               # blocks the plugin's thread
            ndp = dp.reply()
            ndp.body = b'got ' + dp.body
            send_queue.put(ndp)

    threading.Thread(target=main, daemon=True).start()

Put such a file in ``--apps-dir``: the loader (apps/__init__.py) sees that it imports
``forwarder``, ``mswp`` or ``config`` (the seed's ``recive_queues`` spelling too), gives it
for the time of its import modules of those names made for this node and this plugin,
and runs it as the app named after its file, through :class:`MswPlugin`:

- packets for the app (after the same authorization as every app: ``--allow``, closed
  ``shell``/``update``) are turned into this module's :class:`Datapack` and put on the
  plugin's ``receive_queue`` (bounded: when the plugin falls behind, the node stops
  reading the links that feed it, as for any app);
- what the plugin puts on ``send_queue`` is routed by the node (``to`` over the mesh,
  ``file`` streams ``head['filename']``); ``send_queue.put`` blocks the plugin's thread
  when ``SEND_MAX`` packets wait;
- ``msw_queue.put(0)`` restarts the node (exit 0, as MSW's main.py), any other code stops it;
  ``dprint`` logs; ``jsondata.try_to_read_jsondata('id', ...)`` is the node id, other keys
  come from the app's settings.

A plugin may also import these names from here (``from smartget.mesh.msw import
Datapack, receive_queues, send_queue``): during its import they are its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import importlib.util
import logging
import os
import queue
import re
import sys
import threading
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from smartget.errors import ConfigError, DatapackError
from smartget.mesh import datapack as dpk
from smartget.mesh.apps import App, AppContext
from smartget.mesh.datapack import Received, new_flag
from smartget.mesh.policy import safe_relpath

__all__ = [
    "RECEIVE_MAX",
    "SEND_MAX",
    "Datapack",
    "MswPlugin",
    "is_msw_plugin",
    "load_plugin",
    "process_plugins_name",
]

log = logging.getLogger(__name__)

RECEIVE_MAX = 1_000  # packets waiting in a plugin's receive_queue
SEND_MAX = 10_000  # packets a plugin's send_queue holds before put() blocks
_IMPORTS = re.compile(
    r"^\s*(from\s+(forwarder|mswp|config|smartget\.mesh\.msw)\s+import|import\s+(forwarder|mswp))\b",
    re.MULTILINE,
)
_NOT_SENT = frozenset({"length", "sig", "cert", "time", "dest", "hops", "id"})
_LOAD_LOCK = threading.Lock()  # plugins are imported one at a time (module shims)

BUFFSIZE = 4096


def process_plugins_name(name: str) -> str:
    """MSW's helper: ``plugins.shell`` -> ``shell``."""
    return name.replace("plugins.", "") if "plugins." in name else name


class Datapack:
    """MSW's mutable Datapack (``mswp.py``): ``method``, ``app``, ``version``, ``head``, ``body``.

    As the original: a new packet gets ``head['id']`` (this node), ``head['from']``
    (``plugins.`` stripped; ``unkonwn_app`` if none, sic) and a random ``flag``;
    :meth:`encode` fills ``encode_data``, :meth:`decode` parses it back, :meth:`reply`
    copies the packet back to its sender's ``from`` app. ``origin`` is what SmartGet
    adds: the sender's node id when proven (TLS or signature), else None.
    """

    ID = "unknown_id"  # the node's id; set per node by the loader

    def __init__(
        self,
        method: str = "post",
        app: str = "all",
        version: str = "msw/0.1",
        head: dict[str, Any] | None = None,
        body: bytes = b"",
        file: str | None = None,
        gen_flag: bool = True,
        delete: bool = False,
    ) -> None:
        self.id = self.ID
        if head is None:
            head = {}
        self.head: dict[str, Any] = head
        self.head["id"] = self.id
        self.method = method
        self.file = file
        self.delete = delete
        self.failed_times = 0
        self.app = app
        self.version = version
        self.body = body
        self.encode_data = b""
        self.origin: str | None = None
        if self.head.get("from"):
            self.head["from"] = process_plugins_name(str(self.head["from"]))
        else:
            self.head["from"] = "unkonwn_app"
        if gen_flag:
            self.head["flag"] = new_flag()

    def encode(self) -> None:
        if self.method == "file":
            self.body = b""
            self.head["length"] = str(os.path.getsize(self.head["filename"]))
        else:
            self.head["length"] = str(len(self.body))
        for key in [k for k, v in self.head.items() if not v]:  # empty values are dropped
            del self.head[key]
        lines = [f"{self.method} {self.app} {self.version}\n"]
        lines += [f"{k}: {v}\n" for k, v in self.head.items()]
        self.encode_data = "".join(lines).encode() + b"\n" + self.body

    def decode(self, only_head: bool = False) -> bytes | None:
        index = self.encode_data.index(b"\n\n")
        lines = self.encode_data[:index].decode().split("\n")
        self.body = b"" if only_head else self.encode_data[index + 2 :]
        self.method, self.app, self.version = lines.pop(0).split(" ")
        for line in lines:
            key, value = line.split(": ", 1)
            self.head[key] = value
        return self.encode_data[index + 2 :] if only_head else None

    def reply(self) -> Datapack:
        ndp = copy.deepcopy(self)
        ndp.app = ndp.head["from"]
        ndp.method = "reply"
        ndp.delete = False
        if self.head.get("id") != self.ID:  # a packet from the network
            ndp.head["to"] = self.head["id"]
            ndp.head["id"] = self.ID
        return ndp

    def __repr__(self) -> str:
        return f"<msw Datapack {self.method} {self.app} {self.head!r} {self.body[:40]!r}>"


class _ReceiveQueues(Mapping[str, "queue.Queue[Datapack]"]):
    """``receive_queues[__name__]``: this plugin's own queue, under either spelling."""

    def __init__(self, name: str, inbox: queue.Queue[Datapack]) -> None:
        self._names = {name, f"plugins.{name}"}
        self._inbox = inbox

    def __getitem__(self, key: str) -> queue.Queue[Datapack]:
        if key not in self._names:
            raise KeyError(f"{key!r}: a plugin reads only its own queue ({sorted(self._names)})")
        return self._inbox

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._names))

    def __len__(self) -> int:
        return len(self._names)


class _SendQueue:
    """``send_queue``: ``put`` from the plugin's threads, drained by the node's loop."""

    def __init__(self) -> None:
        self.queue: queue.Queue[Datapack] = queue.Queue(SEND_MAX)
        self._lock = threading.Lock()
        self._wake: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None

    def put(self, dp: Datapack, block: bool = True, timeout: float | None = None) -> None:
        self.queue.put(dp, block, timeout)
        with self._lock:
            wake = self._wake
        if wake is not None:
            loop, event = wake
            with contextlib.suppress(RuntimeError):  # the loop closed: the node is gone
                loop.call_soon_threadsafe(event.set)

    def put_nowait(self, dp: Datapack) -> None:
        self.put(dp, block=False)

    def attach(self, loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
        with self._lock:
            self._wake = (loop, event)
        event.set()  # anything put before the node ran


class _ExitQueue:
    """``msw_queue``: ``put(0)`` restarts the node (exit 0), any other code stops it."""

    def __init__(self, plugin: MswPlugin) -> None:
        self._plugin = plugin

    def put(self, code: int, block: bool = True, timeout: float | None = None) -> None:
        self._plugin.exit_requested(int(code))


class _JsonData:
    """``config.jsondata``: the node id and the app's settings instead of config.json."""

    def __init__(self, plugin: MswPlugin) -> None:
        self._plugin = plugin
        self.raw_jsondata: dict[str, Any] = {}

    def try_to_read_jsondata(
        self, key: str, or_value: Any, template: Any = 0, output: bool = True
    ) -> Any:
        value = self.get(key)
        return or_value if value is None else value

    def get(self, key: str) -> Any:
        if key == "id":
            return self._plugin.node_id
        if key in self.raw_jsondata:
            return self.raw_jsondata[key]
        return self._plugin.settings.get(key)

    def set(self, key: str, value: Any) -> None:
        self.raw_jsondata[key] = value


def _create_floder(path: str) -> None:
    """MSW's ``create_floder``: make the directories above ``path``."""
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)


def _make_dir(path: str) -> None:
    if path:
        os.makedirs(path, exist_ok=True)


class MswPlugin(App):
    """An original MSW plugin module, bridged to the node's async app API."""

    verify_origin = True

    def __init__(self, name: str, path: Path) -> None:
        self.plugin_name = name
        self.path = path
        self.inbox: queue.Queue[Datapack] = queue.Queue(RECEIVE_MAX)
        self.outbox = _SendQueue()
        self.datapack_class: type[Datapack] = type("Datapack", (Datapack,), {"ID": "unknown_id"})
        self.settings: dict[str, Any] = {}
        self.node_id = "unknown_id"
        self.module: types.ModuleType | None = None
        self._ctx: AppContext | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending_exit: int | None = None
        self.log = logging.getLogger(f"smartget.mesh.apps.{name}")

    # -- loading ---------------------------------------------------------------------

    def _modules(self) -> dict[str, types.ModuleType]:
        """The ``mswp``, ``forwarder`` and ``config`` this plugin sees while it is imported."""
        receive_queues = _ReceiveQueues(self.plugin_name, self.inbox)
        exit_queue = _ExitQueue(self)
        names: dict[str, dict[str, Any]] = {
            "mswp": {
                "Datapack": self.datapack_class,
                "BUFFSIZE": BUFFSIZE,
                "ID": self.node_id,
                "process_plugins_name": process_plugins_name,
            },
            "forwarder": {
                "send_queue": self.outbox,
                "receive_queues": receive_queues,
                "recive_queues": receive_queues,  # the seed's spelling
            },
            "config": {
                "jsondata": _JsonData(self),
                "global_config": {"plugins_realname_list": [self.plugin_name]},
                "msw_queue": exit_queue,
                "dprint": self._dprint,
                "create_floder": _create_floder,
                "_create_floder": _make_dir,
            },
        }
        modules = {}
        for module_name, attrs in names.items():
            module = types.ModuleType(module_name, f"MSW's {module_name}, as SmartGet offers it")
            module.__dict__.update(attrs)
            modules[module_name] = module
        return modules

    def load(self) -> None:
        """Import the plugin's file with its own ``mswp``/``forwarder``/``config``."""
        spec = importlib.util.spec_from_file_location(f"plugins.{self.plugin_name}", self.path)
        if spec is None or spec.loader is None:
            raise ConfigError(f"cannot load MSW plugin {self.path}")
        module = importlib.util.module_from_spec(spec)
        shims = self._modules()
        # The same names, here too, for a plugin that imports them from smartget.mesh.msw.
        exported = {
            key: value
            for shim in shims.values()
            for key, value in vars(shim).items()
            if not key.startswith("__")
        }
        here = vars(sys.modules[__name__])
        with _LOAD_LOCK:
            saved_modules = {name: sys.modules.get(name) for name in shims}
            saved_here = {key: here[key] for key in exported if key in here}
            sys.modules.update(shims)
            here.update(exported)
            try:
                spec.loader.exec_module(module)
            except Exception as exc:
                raise ConfigError(f"MSW plugin {self.path} failed to load: {exc!r}") from exc
            finally:
                for name, previous in saved_modules.items():
                    if previous is None:
                        sys.modules.pop(name, None)
                    else:
                        sys.modules[name] = previous
                for key in exported:
                    here.pop(key, None)
                here.update(saved_here)
        self.module = module

    # -- running ---------------------------------------------------------------------

    async def run(self, ctx: AppContext) -> None:
        self._ctx = ctx
        self._loop = asyncio.get_running_loop()
        self.node_id = ctx.node_id
        self.datapack_class.ID = ctx.node_id
        self.settings = ctx.settings
        if self._pending_exit is not None:
            self.exit_requested(self._pending_exit)
        wake = asyncio.Event()
        self.outbox.attach(self._loop, wake)
        ctx.spawn(self._pump_out(ctx, wake))
        while True:
            received = await ctx.receive()
            dp = self._to_msw(received)
            try:
                self.inbox.put_nowait(dp)
            except queue.Full:
                # The plugin is behind: wait for room (in a thread: its get() is blocking),
                # and meanwhile ctx's queue fills up and the links feeding us pause.
                await asyncio.to_thread(self.inbox.put, dp)

    def _to_msw(self, received: Received) -> Datapack:
        dp = self.datapack_class.__new__(self.datapack_class)
        head: dict[str, Any] = dict(received.head)
        if received.method == "file" and received.file is not None:
            head["msw-filename"] = head.get("filename", "")
            head["filename"] = received.file  # where the node stored it
        dp.id = self.node_id
        dp.head = head
        dp.method = received.method
        dp.app = received.app
        dp.version = received.version
        dp.body = received.body
        dp.file = received.file
        dp.delete = False
        dp.failed_times = 0
        dp.encode_data = b""
        dp.origin = received.origin
        return dp

    async def _pump_out(self, ctx: AppContext, wake: asyncio.Event) -> None:
        while True:
            await wake.wait()
            wake.clear()
            while True:
                try:
                    dp = self.outbox.queue.get_nowait()
                except queue.Empty:
                    break
                try:
                    await self._send(ctx, dp)
                except (DatapackError, OSError, ValueError, TypeError, AttributeError) as exc:
                    self.log.warning("cannot send %r: %s", dp, exc)

    async def _send(self, ctx: AppContext, dp: Datapack) -> None:
        head = {str(k): str(v) for k, v in dp.head.items() if v and k not in _NOT_SENT}
        head["from"] = process_plugins_name(head.get("from", "")) or self.plugin_name
        if head["from"] == "unkonwn_app" or dp.method == "reply":
            head["from"] = self.plugin_name
        if dp.method == "reply" and "flag" in head:
            head.setdefault("re", head.pop("flag"))  # its flag was the request's
        body = dp.body.encode() if isinstance(dp.body, str) else bytes(dp.body)
        for app in str(dp.app).split("&"):
            if dp.method == "file":
                path = Path(head.pop("filename", ""))
                rel = safe_relpath(str(path)) if not path.is_absolute() else None
                name = rel.as_posix() if rel is not None else path.name
                to = head.pop("to", ctx.node_id)
                head.pop("from", None)
                await ctx.send_file(path, to=to, app=app, filename=name, **head)
            else:
                ctx.send(dpk.Datapack(dp.method, app, head, body, dp.version))

    def exit_requested(self, code: int) -> None:
        """``msw_queue.put(code)`` from any thread: 0 restarts the node, else stops it."""
        loop, ctx = self._loop, self._ctx
        if loop is None or ctx is None:
            self._pending_exit = code
            return
        action = ctx.request_restart if code == 0 else ctx.request_stop
        what = "restart" if code == 0 else "exit"
        self.log.warning("plugin asked MSW to %s (code %d)", what, code)
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(action)

    def _dprint(self, word: object, dp: Datapack | None = None) -> None:
        flag = f"<{dp.head.get('flag')}> " if dp is not None else ""
        self.log.info("%s%s", flag, word)


def is_msw_plugin(source: str) -> bool:
    """True when a module's source imports MSW's ``forwarder``/``mswp``/``config``."""
    return bool(_IMPORTS.search(source))


def load_plugin(path: Path) -> MswPlugin:
    """Import the MSW plugin at ``path`` (its threads start now, as in MSW)."""
    plugin = MswPlugin(path.stem, path)
    plugin.load()
    return plugin
