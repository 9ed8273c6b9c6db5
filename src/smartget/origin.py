"""A small origin: files under a root over HTTP (GET, HEAD, Range), counting bytes sent.

``smartget demo`` and the distribution benchmark use it as "the origin" so that they
can say how many bytes the origin served (``GET /__origin__/stats``). It is a plain
web server otherwise; any origin works with ``smartget push``.

Run alone: ``python -m smartget.origin --root DIR --listen 127.0.0.1:8000``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from smartget.config import parse_hostport, setup_logging
from smartget.httpserver import EmbeddedServer

__all__ = ["STATS_PATH", "ByteCounter", "create_app", "serve"]

STATS_PATH = "/__origin__/stats"
log = logging.getLogger(__name__)


class ByteCounter:
    """ASGI middleware: count response body bytes and requests (stats requests excluded)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.bytes_sent = 0
        self.requests = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == STATS_PATH:
            await self.app(scope, receive, send)
            return
        self.requests += 1

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.body":
                self.bytes_sent += len(message.get("body", b""))
            await send(message)

        await self.app(scope, receive, counting_send)


def create_app(root: Path) -> ByteCounter:
    root = root.resolve()

    async def stats(request: Request) -> Response:
        return JSONResponse({"bytes_sent": counter.bytes_sent, "requests": counter.requests})

    async def serve_file(request: Request) -> Response:
        relative = request.path_params["path"]
        path = (root / relative).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            return PlainTextResponse("not found\n", status_code=404)
        return FileResponse(path)  # Range and HEAD included

    app = Starlette(
        routes=[
            Route(STATS_PATH, stats),
            Route("/{path:path}", serve_file, methods=["GET", "HEAD"]),
        ]
    )
    counter = ByteCounter(app)
    return counter


async def serve(root: Path, listen: tuple[str, int], ready: Any = None) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(listen)
    server = EmbeddedServer(create_app(root), sock, name="origin")
    await server.start()
    log.info("origin serving %s on http://%s:%d", root, *sock.getsockname()[:2])
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopped.set)
    await stopped.wait()
    await server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="directory to serve")
    parser.add_argument("--listen", default="127.0.0.1:8000", help="HOST:PORT")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args()
    setup_logging(args.log_level)
    asyncio.run(serve(args.root, parse_hostport(args.listen)))


if __name__ == "__main__":
    main()
