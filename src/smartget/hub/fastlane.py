"""The hub's HTTP port: a fast lane for the tracker and collector, FastAPI for the rest.

Profiled (issue 18), an announce through uvicorn (h11) and FastAPI cost about 1.4 ms
of CPU, almost all of it in the framework: routing, Request objects, dependency
machinery, h11's state machine. The fleet sends hundreds of announces a second, so the
hub's HTTP port is served by :class:`FastLane`, a small HTTP/1.1 protocol that answers
the three hot routes itself::

    GET  /announce            -> FleetHandlers.announce  (bencoded, BEP 3/23)
    GET  /scrape              -> FleetHandlers.scrape
    POST /report_peerstatus   -> FleetHandlers.report    (JSON, seed 003)

Anything else, or anything it does not parse with certainty (chunked bodies,
``Expect``, a request line it does not know, another method), and the connection is
handed to uvicorn's own protocol with the bytes read so far: FastAPI serves the rest
of the API and the OpenAPI docs as before. Once handed over, a connection stays with
uvicorn, where :class:`HotRoutes` (ASGI) still answers the hot routes before FastAPI.

Limits: a request head of at most 8 KiB, a report body of at most 64 KiB; pipelined
requests are answered in order; the lane stops reading while the peer does not read
its replies. The hub's ``--http-*`` options (:class:`~smartget.httpserver.HttpLimits`,
issue 12.4) hold here as on every SmartGet HTTP service, through a :class:`Gate`:

* a request, once begun, and the first one from the moment of connecting, must arrive
  whole within ``header_timeout`` (bytes trickled in do not extend it); a connection
  idle after a reply stays ``max(header_timeout, 30 s)``;
* at most ``max_connections`` connections are open at once and ``max_per_ip`` from one
  address, counted until they close, also once handed to uvicorn (whose protocol is
  :mod:`smartget.httpserver`'s guarded one, with the same census and deadlines);
* past a cap the connection gets ``503``, then a FIN; what it sends meanwhile is read
  and dropped, and it is closed after :data:`LINGER` seconds or at its FIN, so no RST
  destroys the reply. At most :data:`MAX_LINGERING` refusals linger; past that they
  close at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any, cast

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from smartget.httpserver import REFUSED_RESPONSE, ConnectionCensus, HttpLimits, guarded_protocol
from smartget.hub.fleet import FleetHandlers

__all__ = ["FastLane", "FastLaneServer", "Gate", "HotRoutes"]

log = logging.getLogger(__name__)

MAX_HEAD = 8192
MAX_BODY = 64 * 1024
IDLE_TIMEOUT = 30.0
REQUEST_TIMEOUT = 10.0  # without a Gate; with one, its header_timeout
LINGER = 1.0  # seconds a refused connection stays to drain before it is closed
MAX_LINGERING = 256  # refused connections draining at once; past it, closed at once
ANNOUNCE, SCRAPE, REPORT = b"/announce", b"/scrape", b"/report_peerstatus"
BENCODE = b"text/plain"
JSON = b"application/json"
REASONS = {
    200: b"OK",
    400: b"Bad Request",
    413: b"Content Too Large",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}


def _response(status: int, body: bytes, kind: bytes, keep_alive: bool) -> bytes:
    return b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n%s\r\n%s" % (
        status,
        REASONS.get(status, b"OK"),
        kind,
        len(body),
        b"" if keep_alive else b"connection: close\r\n",
        body,
    )


class Gate:
    """The caps and deadlines of one HTTP port, shared by its lanes (:class:`HttpLimits`).

    ``census`` counts the open connections, in all and per address; the uvicorn
    protocol a lane hands its connection to counts in the same census.
    """

    def __init__(self, limits: HttpLimits) -> None:
        self.limits = limits
        self.census = ConnectionCensus(limits, "hub-http")
        self.request_timeout = limits.header_timeout
        self.idle_timeout = max(limits.header_timeout, IDLE_TIMEOUT)
        self.lingering = 0

    def statistics(self) -> dict[str, int]:
        census = self.census
        return {
            "open": census.total,
            "refused": census.refused,
            "timed_out": census.timed_out,
            "lingering": self.lingering,
        }


class FastLane(asyncio.Protocol):
    """One HTTP connection: hot routes answered here, the rest handed to uvicorn."""

    def __init__(
        self,
        handlers: FleetHandlers,
        fallback: Callable[[], asyncio.Protocol],
        lanes: set[FastLane],
        clock: Callable[[], float],
        gate: Gate | None = None,
    ) -> None:
        self.handlers = handlers
        self.fallback = fallback
        self.lanes = lanes
        self.clock = clock
        self.gate = gate
        self.request_timeout = gate.request_timeout if gate else REQUEST_TIMEOUT
        self.idle_timeout = gate.idle_timeout if gate else IDLE_TIMEOUT
        self._admitted = False  # counted in the gate's census, until closed or handed over
        self._refused = False  # past a cap: 503 sent, draining until closed
        self._begun = False  # a request has begun arriving: its deadline runs
        self.transport: asyncio.Transport | None = None
        self.client = ""
        self.buffer = bytearray()
        self.deadline = 0.0
        self._waiting: asyncio.Task[None] | None = None  # a reply that waits for a save
        self._paused = False  # the peer is not reading its replies

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a cast, not an isinstance check: uvloop's transports are no asyncio.Transport
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.client = str(peer[0]) if peer else ""
        gate = self.gate
        if gate is not None and not gate.census.admit(self.client):
            self._refuse(transport, gate)
            return
        self._admitted = gate is not None
        self.deadline = self.clock() + self.request_timeout  # the first request's head
        self.lanes.add(self)

    def _refuse(self, transport: asyncio.Transport, gate: Gate) -> None:
        """503, then FIN; drain what comes until the peer's FIN or LINGER seconds."""
        transport.write(REFUSED_RESPONSE)
        if gate.lingering >= MAX_LINGERING or not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self._refused = True
        gate.lingering += 1
        self.deadline = self.clock() + LINGER
        self.lanes.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lanes.discard(self)
        self.transport = None
        self._leave()
        if self._waiting is not None:
            self._waiting.cancel()

    def _leave(self) -> None:
        if self.gate is None:
            return
        if self._admitted:
            self._admitted = False
            self.gate.census.leave(self.client)
        if self._refused:
            self._refused = False
            self.gate.lingering -= 1

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # read and dropped: unread bytes at close would send an RST
        if not self._begun and not self.buffer:
            self._begun = True  # a request begins: it has request_timeout to arrive whole
            self.deadline = self.clock() + self.request_timeout
        self.buffer += data
        if self._waiting is None:
            self._serve()

    def pause_writing(self) -> None:
        self._paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._paused = False
        if self.transport is not None:
            self.transport.resume_reading()

    def eof_received(self) -> bool | None:
        if self._refused and self.transport is not None:
            self.transport.close()  # the refused peer has read our FIN and sent its own
        return None  # close once the replies written are sent

    # -- the lane -----------------------------------------------------------------------

    def _serve(self) -> None:
        """Answer every complete request in the buffer, in order."""
        buffer = self.buffer
        while buffer and self.transport is not None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD:
                    self._fail(431, b"request head larger than 8192 bytes")
                return
            if end > MAX_HEAD:
                self._fail(431, b"request head larger than 8192 bytes")
                return
            head = bytes(buffer[:end])
            line, _, header_block = head.partition(b"\r\n")
            parts = line.split(b" ")
            if len(parts) != 3 or parts[2] not in (b"HTTP/1.1", b"HTTP/1.0"):
                self._hand_over()
                return
            method, target, version = parts
            path, _, query = target.partition(b"?")
            if path not in (ANNOUNCE, SCRAPE, REPORT):
                self._hand_over()
                return
            length, connection, plain = 0, b"", True
            for header in header_block.split(b"\r\n"):
                name, _, value = header.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    value = value.strip()
                    if not value.isdigit() or len(value) > 9:
                        plain = False
                    else:
                        length = int(value)
                elif name == b"connection":
                    connection = value.strip().lower()
                elif name in (b"transfer-encoding", b"expect", b"upgrade"):
                    plain = False
            wanted = b"POST" if path == REPORT else b"GET"
            if not plain or method != wanted or (length and method == b"GET"):
                self._hand_over()
                return
            if length > MAX_BODY:
                self._fail(413, b'{"result":"failed","traceback":"report larger than 65536 bytes"}')
                return
            if len(buffer) < end + 4 + length:
                return  # the body is still on its way, within the request's deadline
            body = bytes(buffer[end + 4 : end + 4 + length])
            del buffer[: end + 4 + length]
            keep_alive = (
                b"close" not in connection
                if version == b"HTTP/1.1"
                else b"keep-alive" in connection
            )
            self.deadline = self.clock() + self.idle_timeout
            self._begun = bool(buffer)  # a pipelined next request has begun already
            if self._begun:
                self.deadline = self.clock() + self.request_timeout
            if not self._answer(path, query, body, keep_alive):
                return

    def _answer(self, path: bytes, query: bytes, body: bytes, keep_alive: bool) -> bool:
        """Reply to one request; False if the lane must wait (for a save or a close)."""
        handlers = self.handlers
        saved: Awaitable[Any] | None
        if path == ANNOUNCE:
            status, kind = 200, BENCODE
            content, saved = handlers.announce(query.decode("latin-1"), self.client)
        elif path == SCRAPE:
            status, kind, saved = 200, BENCODE, None
            content = handlers.scrape(query.decode("latin-1"))
        else:
            kind = JSON
            status, content, saved = handlers.report(body, self.client)
        reply = _response(status, content, kind, keep_alive)
        if saved is not None:
            self._waiting = asyncio.ensure_future(self._send_when_saved(saved, reply, keep_alive))
            return False
        return self._send(reply, keep_alive)

    def _send(self, reply: bytes, keep_alive: bool) -> bool:
        transport = self.transport
        if transport is None:
            return False
        transport.write(reply)
        if not keep_alive:
            transport.close()
            return False
        return True

    async def _send_when_saved(self, saved: Awaitable[Any], reply: bytes, keep: bool) -> None:
        """What the reply acknowledges is durable before it leaves (DESIGN.md). A report
        on the fleet's shared state gets its reply from ``saved`` (FleetHandlers.report)."""
        try:
            if (decided := await saved) is not None:
                reply = _response(decided[0], decided[1], JSON, keep)
        except Exception:
            log.exception("could not save what a reply acknowledges; closing")
            if self.transport is not None:
                self.transport.abort()
            return
        finally:
            self._waiting = None
        if self._send(reply, keep):
            self._serve()

    def _fail(self, status: int, message: bytes) -> None:
        if self.transport is not None:
            self.transport.write(_response(status, message, JSON, keep_alive=False))
            self.transport.close()

    def _hand_over(self) -> None:
        """Give the connection, and what it sent so far, to uvicorn's protocol."""
        transport = self.transport
        if transport is None:
            return
        self.lanes.discard(self)
        self.transport = None
        self._leave()  # the guarded uvicorn protocol counts it from here, in the same census
        protocol = self.fallback()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if self._paused:
            protocol.pause_writing()
            transport.resume_reading()
        data, self.buffer = bytes(self.buffer), bytearray()
        protocol.data_received(data)

    def expired(self, now: float) -> bool:
        return now > self.deadline and self._waiting is None


class HotRoutes:
    """ASGI: the hot routes on connections uvicorn serves, before FastAPI sees them."""

    def __init__(self, app: ASGIApp, handlers: FleetHandlers) -> None:
        self.app = app
        self.handlers = handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path") if scope["type"] == "http" else None
        method = scope.get("method")
        client = scope["client"][0] if scope.get("client") else ""
        saved: Awaitable[Any] | None = None
        if path == "/announce" and method == "GET":
            content, saved = self.handlers.announce(scope["query_string"].decode("latin-1"), client)
            status, kind = 200, BENCODE
        elif path == "/scrape" and method == "GET":
            content = self.handlers.scrape(scope["query_string"].decode("latin-1"))
            status, kind = 200, BENCODE
        elif path == "/report_peerstatus" and method == "POST":
            body = bytearray()
            while True:
                message = await receive()
                body += message.get("body", b"")
                if len(body) > MAX_BODY or not message.get("more_body"):
                    break
            status, content, saved = self.handlers.report(bytes(body), client)
            kind = JSON
        else:
            await self.app(scope, receive, send)
            return
        if saved is not None and (decided := await saved) is not None:
            status, content = decided
        headers = [(b"content-type", kind), (b"content-length", str(len(content)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})


class FastLaneServer:
    """The hub's HTTP server on an already bound socket, in the running loop."""

    def __init__(
        self,
        app: Any,
        handlers: FleetHandlers,
        sock: socket.socket,
        limits: HttpLimits | None = None,
    ) -> None:
        self.sock = sock
        self.handlers = handlers
        # The hub's --http-* options (Hub.http_limits) unless the caller names others.
        limits = limits or getattr(handlers.hub, "http_limits", None) or HttpLimits()
        self.gate = Gate(limits)
        config = uvicorn.Config(
            HotRoutes(app, handlers),
            http=guarded_protocol(self.gate.census),
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=5,
            timeout_keep_alive=int(self.gate.idle_timeout),
            server_header=False,
        )
        config.load()
        self._config = config
        self._uvicorn = uvicorn.Server(config)
        self._uvicorn.lifespan = config.lifespan_class(config)
        self.lanes: set[FastLane] = set()
        self._server: asyncio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def _fallback(self) -> asyncio.Protocol:
        protocol: asyncio.Protocol = self._config.http_protocol_class(  # type: ignore[call-arg]
            config=self._config,
            server_state=self._uvicorn.server_state,
            app_state=self._uvicorn.lifespan.state,
        )
        return protocol

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await self._uvicorn.startup(sockets=[])  # no listener of its own: it gets handovers
        self._tasks.append(asyncio.create_task(self._uvicorn.main_loop(), name="hub-http-date"))
        self._tasks.append(asyncio.create_task(self._sweep(), name="hub-http-timeouts"))
        self._server = await loop.create_server(
            lambda: FastLane(self.handlers, self._fallback, self.lanes, loop.time, self.gate),
            sock=self.sock,
            backlog=1024,
        )

    async def _sweep(self) -> None:
        """Close lane connections idle too long or too slow to send a request, and
        refused ones done draining."""
        loop = asyncio.get_running_loop()
        tick = min(1.0, max(0.1, self.gate.limits.header_timeout / 4))
        while True:
            await asyncio.sleep(tick)
            now = loop.time()
            for lane in [lane for lane in self.lanes if lane.expired(now)]:
                if lane.transport is not None:
                    lane.transport.close()
                self.lanes.discard(lane)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for lane in list(self.lanes):
            if lane.transport is not None:
                lane.transport.close()
        self._uvicorn.should_exit = True
        for task in self._tasks[1:]:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._uvicorn.shutdown()
        if self._server is not None:
            await self._server.wait_closed()
