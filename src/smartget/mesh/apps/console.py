"""console: type Datapacks on stdin in MSW's input syntax (seed 001, plugins/input.py).

One line per packet: ``app:body;k:v,k2:v2`` sends ``body`` to ``app`` with those
headers (``to`` among them sends it over the mesh, ``to:*`` to every direct peer). The
prefix ``(net ID)`` is short for ``to:ID``; the prefix ``(file)`` makes the body a local
file path to stream::

    logger:hello;to:miku
    (net miku)shell:uptime
    (file)(net miku)logger:/tmp/report.txt

MSW's shortcuts (plugins/input.py): ``update`` is ``update:compress;update_to:*`` (push
this node's signed code to every direct peer; apps/update.py), ``restart`` restarts the
node (exit 0 under ``smartget mesh supervise``), ``exit`` stops it, ``r`` repeats the
last line.

Replies to the console are printed to stdout. Enable it with ``--app console``.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path

from smartget.mesh.apps import App, AppContext
from smartget.mesh.datapack import Datapack

__all__ = ["APP", "SHORTCUTS", "ConsoleApp", "parse_line"]

# plugins/input.py's words that stand for a whole line
SHORTCUTS = {"update": "update:compress;update_to:*"}


def parse_line(line: str) -> tuple[Datapack, bool]:
    """``(datapack, is_file)`` for one console line; ValueError when it is not the syntax."""
    is_file = False
    to = None
    line = line.strip()
    if line.startswith("(file)"):
        is_file, line = True, line[6:]
    if line.startswith("(net "):
        end = line.find(")")
        if end < 0:
            raise ValueError("'(net ID)' is not closed")
        to, line = line[5:end].strip(), line[end + 1 :]
    app, sep, rest = line.partition(":")
    app = app.strip()
    if not sep or not app:
        raise ValueError("expected app:body;key:value,key2:value2")
    body, _, params = rest.partition(";")
    head: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in params.split(","))):
        key, sep, value = item.partition(":")
        if not sep or not key.strip():
            raise ValueError(f"parameter {item!r} is not key:value")
        head[key.strip()] = value.strip()
    if to is not None:
        head["to"] = to
    if is_file:
        return Datapack("file", app, head, b"", file=body.strip()), True
    return Datapack("post", app, head, body.encode()), False


class ConsoleApp(App):
    name = "console"

    async def run(self, ctx: AppContext) -> None:
        lines: asyncio.Queue[str | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def read_stdin() -> None:  # a daemon thread: a blocked read never holds up exit
            for line in sys.stdin:
                loop.call_soon_threadsafe(lines.put_nowait, line)
            loop.call_soon_threadsafe(lines.put_nowait, None)

        threading.Thread(target=read_stdin, name="mesh-console", daemon=True).start()
        ctx.spawn(self._print_replies(ctx))
        last = ""
        while (line := await lines.get()) is not None:
            word = line.strip()
            if not word:
                continue
            if word == "r":
                line = word = last
            last = word
            if word == "restart":
                ctx.request_restart()
                continue
            if word == "exit":
                ctx.request_stop()
                continue
            line = SHORTCUTS.get(word, line)
            try:
                dp, is_file = parse_line(line)
                if is_file:
                    path = Path(dp.file or "")
                    head = dict(dp.head)
                    to = head.pop("to", ctx.node_id)
                    await ctx.send_file(path, to=to, app=dp.app, **head)
                else:
                    ctx.send(dp)
            except (ValueError, OSError) as exc:
                print(f"console: {exc}", file=sys.stderr, flush=True)

    async def _print_replies(self, ctx: AppContext) -> None:
        while True:
            dp = await ctx.receive()
            extra = " ".join(f"{k}={v}" for k, v in dp.head.items() if k not in ("sig", "cert"))
            print(f"[{dp.method} from {dp.head.get('id', '?')}] {extra}", flush=True)
            print(dp.body.decode("utf-8", "replace"), flush=True)


APP = ConsoleApp
