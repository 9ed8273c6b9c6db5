"""A small origin: files under a root over HTTP (GET, HEAD, Range), counting bytes sent.

``smartget demo`` and the distribution benchmark use it as "the origin" so that they
can say how many bytes the origin served (``GET /__origin__/stats``). It is a plain
web server otherwise; any origin works with ``smartget push``.

``--upload-limit RATE`` caps what it sends, all requests together (off by default):
:class:`RateCap` is the ASGI layer that paces response bodies with the shared
:class:`~smartget.ratelimit.TokenBucket`. The distribution benchmark (issue 6) uses it to time N
plain HTTP downloads under the same upload cap as the swarm's seed.

Torrents of its files: ``GET /NAME.torrent``, where NAME is a file and no file
``NAME.torrent`` is there, answers a v1 torrent of NAME (its web seed NAME's URL, no
tracker), made the first time it is asked for and kept while NAME's size and mtime stay
(:class:`TorrentMaker`). A push reads the pieces from it, so the nodes can trade from
the first piece the origin sends (a pipelined push, :mod:`smartget.node.prefetch`);
the hashing is done here, where the file is, once. ``--no-torrents`` turns it off.

Run alone: ``python -m smartget.origin --root DIR --listen 127.0.0.1:8000``.
"""

from __future__ import annotations

import argparse
import asyncio
import email.utils
import logging
import socket
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from smartget.config import parse_hostport, parse_size, setup_logging
from smartget.errors import ConfigError, TorrentError
from smartget.httpserver import EmbeddedServer
from smartget.lifecycle import on_stop_signals
from smartget.ratelimit import TokenBucket

__all__ = ["STATS_PATH", "ByteCounter", "RateCap", "TorrentMaker", "create_app", "serve"]

STATS_PATH = "/__origin__/stats"
PACE_CHUNK = 64 << 10  # bodies are paced in pieces of at most this many bytes
FILE_CHUNK = 1 << 20  # a file is read and sent in pieces this large (Starlette: 64 KiB)
TORRENT_SUFFIX = ".torrent"
TORRENTS_KEPT = 64  # torrents of files kept made (the least recently asked for go first)
log = logging.getLogger(__name__)


class RateCap:
    """ASGI middleware: response bodies of every request share one :class:`TokenBucket`."""

    def __init__(self, app: ASGIApp, rate: float) -> None:
        self.app = app
        self.bucket = TokenBucket(rate, burst=max(PACE_CHUNK, rate / 20), now=time.monotonic())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == STATS_PATH:
            await self.app(scope, receive, send)
            return

        async def paced_send(message: Message) -> None:
            body = message.get("body", b"") if message["type"] == "http.response.body" else b""
            if len(body) <= PACE_CHUNK:
                await self._pace(len(body))
                await send(message)
                return
            view, more = memoryview(body), message.get("more_body", False)
            for start in range(0, len(body), PACE_CHUNK):
                part = bytes(view[start : start + PACE_CHUNK])
                await self._pace(len(part))
                last = start + PACE_CHUNK >= len(body)
                await send({**message, "body": part, "more_body": more or not last})

        await self.app(scope, receive, paced_send)

    async def _pace(self, amount: int) -> None:
        if amount:
            delay = self.bucket.take(amount, time.monotonic())
            if delay > 0:
                await asyncio.sleep(delay)  # pacing, not synchronisation


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


class TorrentMaker:
    """Torrents of files, made on request and kept by (path, size, mtime, web seed).

    One is hashed at a time: whoever asks for many torrents at once waits in line rather
    than taking every core; at most ``limit`` are kept."""

    def __init__(self, limit: int = TORRENTS_KEPT) -> None:
        self.limit = limit
        self.made = 0
        self._kept: OrderedDict[tuple[str, int, int, str], bytes] = OrderedDict()
        self._lock = asyncio.Lock()

    def __len__(self) -> int:
        return len(self._kept)

    async def torrent(self, path: Path, web_seed: str) -> tuple[bytes, float]:
        """The torrent of ``path``, and the file's mtime it was made at."""
        from smartget.node.maker import make_torrent  # libtorrent: only when asked

        stat = await asyncio.to_thread(path.stat)
        key = (str(path), stat.st_size, stat.st_mtime_ns, web_seed)
        async with self._lock:
            data = self._kept.get(key)
            if data is None:
                began = time.monotonic()
                made = await asyncio.to_thread(make_torrent, path, web_seeds=[web_seed])
                data = made.data
                self.made += 1
                log.info(
                    "origin: torrent of %s made (%s bytes hashed in %.2f s)",
                    path,
                    f"{made.size:,}",
                    time.monotonic() - began,
                )
            self._kept[key] = data
            self._kept.move_to_end(key)
            while len(self._kept) > self.limit:
                self._kept.popitem(last=False)
            return data, stat.st_mtime


def create_app(
    root: Path,
    upload_limit: float = 0,
    *,
    torrents: bool = True,
    maker: TorrentMaker | None = None,
) -> ByteCounter:
    """The origin's ASGI app; ``upload_limit`` bytes/s for all responses (0: none);
    ``torrents``: answer ``NAME.torrent`` for a file NAME (made by ``maker``)."""
    root = root.resolve()
    maker = TorrentMaker() if maker is None else maker

    async def stats(request: Request) -> Response:
        return JSONResponse({"bytes_sent": counter.bytes_sent, "requests": counter.requests})

    async def serve_file(request: Request) -> Response:
        relative = request.path_params["path"]
        path = (root / relative).resolve()
        if not path.is_relative_to(root):
            return PlainTextResponse("not found\n", status_code=404)
        if not path.is_file():
            described = path.with_name(path.name.removesuffix(TORRENT_SUFFIX))
            if torrents and path.name.endswith(TORRENT_SUFFIX) and described.is_file():
                return await torrent_of(request, described)
            return PlainTextResponse("not found\n", status_code=404)
        response = FileResponse(path)  # Range and HEAD included
        response.chunk_size = FILE_CHUNK
        return response

    async def torrent_of(request: Request, path: Path) -> Response:
        web_seed = str(request.url.replace(query=None)).removesuffix(TORRENT_SUFFIX)
        try:
            data, mtime = await maker.torrent(path, web_seed)
        except (TorrentError, OSError) as exc:
            return PlainTextResponse(f"no torrent of {path.name}: {exc}\n", status_code=422)
        headers = {"Last-Modified": email.utils.formatdate(mtime, usegmt=True)}
        return Response(data, media_type="application/x-bittorrent", headers=headers)

    app = Starlette(
        routes=[
            Route(STATS_PATH, stats),
            Route("/{path:path}", serve_file, methods=["GET", "HEAD"]),
        ]
    )
    counter = ByteCounter(RateCap(app, upload_limit) if upload_limit > 0 else app)
    return counter


async def serve(
    root: Path,
    listen: tuple[str, int],
    ready: Any = None,
    *,
    upload_limit: float = 0,
    torrents: bool = True,
) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(listen)
    app = create_app(root, upload_limit, torrents=torrents)
    server = EmbeddedServer(app, sock, name="origin")
    await server.start()
    log.info(
        "origin serving %s on http://%s:%d%s",
        root,
        *sock.getsockname()[:2],
        f", upload capped at {upload_limit:,.0f} B/s" if upload_limit > 0 else "",
    )
    stopped = asyncio.Event()
    on_stop_signals(lambda _: stopped.set())
    await stopped.wait()
    await server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="directory to serve")
    parser.add_argument("--listen", default="127.0.0.1:8000", help="HOST:PORT")
    parser.add_argument(
        "--upload-limit",
        default="0",
        help="cap on bytes sent per second, all requests together, e.g. 4MiB/s (0: none)",
    )
    parser.add_argument(
        "--no-torrents",
        action="store_true",
        help="do not answer NAME.torrent for a file NAME (pushes then stripe the file first)",
    )
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args()
    setup_logging(args.log_level)
    try:
        limit = parse_size(args.upload_limit.removesuffix("/s"))
    except ConfigError as exc:
        parser.error(str(exc))
    listen = parse_hostport(args.listen)
    asyncio.run(serve(args.root, listen, upload_limit=limit, torrents=not args.no_torrents))


if __name__ == "__main__":
    main()
