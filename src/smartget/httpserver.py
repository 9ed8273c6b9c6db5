"""Run an ASGI app (FastAPI) with uvicorn inside the caller's event loop.

Every SmartGet HTTP service (hub, node, file server) uses :class:`EmbeddedServer`: it
serves on a socket the caller already bound (so port 0 and clear bind errors work),
shares the loop and never installs signal handlers of its own. :class:`BodyLimit`
caps request bodies, since uvicorn has no limit of its own.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BodyLimit", "EmbeddedServer"]

log = logging.getLogger(__name__)


class BodyLimit:
    """ASGI middleware: answer 413 to a request body larger than ``max_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int = 1 << 20) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._reject(send)
                return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._reject(send)

    async def _reject(self, send: Send) -> None:
        body = f'{{"detail":"request body larger than {self.max_bytes} bytes"}}'.encode()
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


class EmbeddedServer:
    """uvicorn on an already bound socket, in the running loop."""

    def __init__(self, app: Any, sock: socket.socket, *, name: str = "http") -> None:
        self.sock = sock
        self.name = name
        config = uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=5,
            timeout_keep_alive=30,
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
