"""``POST /RPC2``: the relay's XML-RPC endpoint on the hub's HTTP port.

XML-RPC answers everything with HTTP 200 and a ``<methodResponse>``: a body that is
too large, too slow, compressed or unauthorized gets a fault that says so, never an
HTTP error page (the issue: "never a 500 with a traceback"). The body limit is the
relay's own (``RelaySettings.max_request``), so :class:`RPC2Passthrough` lets
``/RPC2`` past the hub's generic :class:`~smartget.httpserver.BodyLimit`.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Protocol

from fastapi import FastAPI, Request, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from smartget.auth import presented_secret, secret_matches
from smartget.hub.relay.service import RelayService
from smartget.hub.relay.xmlrpc import APPLICATION_ERROR, TRANSPORT_ERROR, dump_fault

__all__ = [
    "BODY_TIMEOUT",
    "RPC2_PATH",
    "RPC2Passthrough",
    "RelayHost",
    "add_relay_routes",
    "caller_address",
]


class RelayHost(Protocol):
    """What ``/RPC2`` needs from the hub."""

    relay: RelayService
    token: str


RPC2_PATH = "/RPC2"
BODY_TIMEOUT = 30.0  # seconds to receive a whole request body
XML = "text/xml"


def caller_address(host: str | None) -> str | None:
    """The caller's IP as a satellite's host_id holds it (IPv4-mapped IPv6 unmapped)."""
    if not host:
        return None
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def _xml(body: bytes) -> Response:
    # Close after each call: stdlib XML-RPC clients send headers and body in two
    # segments, so on a kept-alive connection Nagle meets delayed ACK and every call
    # waits ~40 ms; a fresh connection is ACKed at once (benchmarks/relay.py: 23 -> 1,100
    # calls/s from one client).
    return Response(body, media_type=XML, headers={"Connection": "close"})


def _fault(code: int, message: str) -> Response:
    return _xml(dump_fault(code, message))


async def _read_body(request: Request, limit: int) -> bytes | Response:
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        return _fault(TRANSPORT_ERROR, f"request of {length} bytes is larger than {limit} bytes")
    body = bytearray()
    try:
        async with asyncio.timeout(BODY_TIMEOUT):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    return _fault(TRANSPORT_ERROR, f"request larger than {limit} bytes")
    except TimeoutError:
        return _fault(TRANSPORT_ERROR, f"request body not received within {BODY_TIMEOUT:g} s")
    return bytes(body)


def add_relay_routes(app: FastAPI, hub: RelayHost) -> None:
    """Add ``POST /RPC2`` (co2's relay registry, seed 004) to the hub's app."""

    @app.post(
        RPC2_PATH,
        tags=["relay"],
        response_class=Response,
        summary="co2 relay registry (XML-RPC)",
        responses={200: {"content": {XML: {}}, "description": "an XML-RPC methodResponse"}},
    )
    async def rpc2(request: Request) -> Response:
        """XML-RPC (POST text/xml). Satellites register, relay to each other and are
        pinged; `sys.listMethods`, `sys.methodHelp` and `sys.methodSignature` describe
        every method."""
        relay = hub.relay
        given = presented_secret(request.headers.get("authorization", ""))
        if relay.settings.require_token and not secret_matches(given, hub.token):
            return _fault(
                APPLICATION_ERROR,
                "this relay needs the hub's token: call http://relay:TOKEN@HOST:PORT/RPC2 "
                "(or send 'Authorization: Bearer TOKEN')",
            )
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            return _fault(TRANSPORT_ERROR, f"Content-Encoding {encoding[:40]!r} is not accepted")
        body = await _read_body(request, relay.settings.max_request)
        if isinstance(body, Response):
            return body
        caller = caller_address(request.client.host if request.client else None)
        return _xml(await relay.handle(body, caller))


class RPC2Passthrough:
    """ASGI: ``/RPC2`` goes straight to ``app`` (it limits its body itself, answering a
    fault); every other request goes to ``limited`` (the app behind BodyLimit)."""

    def __init__(self, limited: ASGIApp, app: ASGIApp) -> None:
        self.limited = limited
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path") == RPC2_PATH:
            await self.app(scope, receive, send)
        else:
            await self.limited(scope, receive, send)
