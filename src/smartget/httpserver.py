"""Run an ASGI app (FastAPI) with uvicorn inside the caller's event loop.

Every SmartGet HTTP service (hub, node, file server) uses :class:`EmbeddedServer`: it
serves on a socket the caller already bound (so port 0 and clear bind errors work),
shares the loop and never installs signal handlers of its own. :class:`BodyLimit`
caps request bodies, since uvicorn has no limit of its own.

Connections are guarded (:class:`HttpLimits`, issue 12): a client must finish a
request's headers within ``header_timeout`` of connecting or of its previous response
(uvicorn waits forever for a first request, so slow or silent clients could hold every
file descriptor); at most ``max_connections`` are open at once and ``max_per_ip`` from
one address. A connection past a cap gets ``503`` and is closed at once.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from smartget.config import setting

__all__ = [
    "REFUSED_RESPONSE",
    "BodyLimit",
    "ConnectionCensus",
    "EmbeddedServer",
    "HttpLimits",
    "guarded_protocol",
]

log = logging.getLogger(__name__)


class BodyLimit:
    """ASGI middleware: answer 413 to a request body larger than ``max_bytes`` (or, on
    a path of ``per_path``, than its own limit)."""

    def __init__(
        self, app: ASGIApp, max_bytes: int = 1 << 20, per_path: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.per_path = dict(per_path or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.per_path.get(scope.get("path", ""), self.max_bytes)
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await self._reject(send, limit)
                return
        seen = 0
        started = False
        too_large = False

        async def limited_receive() -> Message:
            nonlocal seen, too_large
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    too_large = True
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if too_large:
                return  # the app's error page for _TooLarge (a 500): the 413 goes instead
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except Exception:
            # Starlette's error middleware answers 500 and re-raises whatever it caught,
            # _TooLarge too, possibly inside a group: our flag says what happened.
            if not too_large:
                raise
        if too_large and not started:
            await self._reject(send, limit)

    async def _reject(self, send: Send, limit: int) -> None:
        body = f'{{"detail":"request body larger than {limit} bytes"}}'.encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


@dataclass(frozen=True)
class HttpLimits:
    """Connection limits of an HTTP service (``--http-*`` options where a CLI offers them)."""

    header_timeout: float = setting(
        10.0, "Seconds a client has to send a request's headers.", min=0.1
    )
    max_connections: int = setting(
        1024, "HTTP connections open at once; past it new ones get 503.", min=1
    )
    max_per_ip: int = setting(
        64, "HTTP connections open at once from one address; past it, 503.", min=1
    )


KEEP_ALIVE = 30  # seconds an idle keep-alive connection stays open

REFUSED_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n"
    b"connection: close\r\ncontent-length: 25\r\n\r\ntoo many connections; retry"
)


class ConnectionCensus:
    """Open connections of one server, in all and per address."""

    def __init__(self, limits: HttpLimits, name: str) -> None:
        self.limits = limits
        self.name = name
        self.total = 0
        self.per_ip: dict[str, int] = {}
        self.refused = 0
        self.timed_out = 0

    def admit(self, ip: str) -> bool:
        if self.total >= self.limits.max_connections or (
            self.per_ip.get(ip, 0) >= self.limits.max_per_ip
        ):
            self.refused += 1
            return False
        self.total += 1
        self.per_ip[ip] = self.per_ip.get(ip, 0) + 1
        return True

    def leave(self, ip: str) -> None:
        self.total -= 1
        left = self.per_ip[ip] - 1
        if left:
            self.per_ip[ip] = left
        else:
            del self.per_ip[ip]


def guarded_protocol(census: ConnectionCensus) -> type[H11Protocol]:
    """uvicorn's h11 protocol with the caps and the header deadline of ``census``."""

    class Guarded(H11Protocol):
        _ip = ""
        _admitted = False
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            peer = transport.get_extra_info("peername")
            self._ip = str(peer[0]) if peer else "?"
            if not census.admit(self._ip):
                transport.write(REFUSED_RESPONSE)
                transport.close()
                return
            self._admitted = True
            super().connection_made(transport)
            self._await_request(census.limits.header_timeout)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._deadline is None and self._between_requests():
                self._await_request(census.limits.header_timeout)  # a request begins

        def on_response_complete(self) -> None:
            super().on_response_complete()
            # Idle keep-alive ends at uvicorn's own timeout; this also ends a next
            # request whose headers began in the same reads and never finished.
            self._await_request(max(census.limits.header_timeout, KEEP_ALIVE))

        def connection_lost(self, exc: Exception | None) -> None:
            if not self._admitted:
                return
            self._admitted = False
            census.leave(self._ip)
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            super().connection_lost(exc)

        def _between_requests(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _await_request(self, seconds: float) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            self._deadline = self.loop.call_later(seconds, self._header_deadline)

        def _header_deadline(self) -> None:
            self._deadline = None
            if not self._between_requests():
                return  # headers came in time; the response re-arms
            census.timed_out += 1
            self.transport.close()

    return Guarded


class EmbeddedServer:
    """uvicorn on an already bound socket, in the running loop."""

    def __init__(
        self,
        app: Any,
        sock: socket.socket,
        *,
        name: str = "http",
        limits: HttpLimits | None = None,
    ) -> None:
        self.sock = sock
        self.name = name
        self.census = ConnectionCensus(limits or HttpLimits(), name)
        config = uvicorn.Config(
            app,
            http=guarded_protocol(self.census),
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=5,
            timeout_keep_alive=KEEP_ALIVE,
            server_header=False,
        )
        config.load()
        self._server = uvicorn.Server(config)
        self._server.lifespan = config.lifespan_class(config)
        self._ticker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._server.startup(sockets=[self.sock])
        # main_loop refreshes the Date header and returns once should_exit is set.
        self._ticker = asyncio.create_task(self._server.main_loop(), name=f"{self.name}-ticker")

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._ticker is not None:
            await self._ticker
        await self._server.shutdown(sockets=[self.sock])
