"""Calling satellites: one XML-RPC call over HTTP with a deadline and a size limit.

The relay calls two methods on a satellite (seed 004): ``notify(dict)`` to hand it a
relayed message and ``ping(dict)`` to see it is alive. Satellites of co2 serve
XML-RPC at ``http://ip:port/`` (the stdlib's ``SimpleXMLRPCServer`` answers there).
Every error of the call (refused, timed out, malformed, too large, a fault) becomes a
:class:`CallFailed` with a sentence to log.
"""

from __future__ import annotations

import asyncio
import xmlrpc.client
from typing import Any

import httpx

from smartget.errors import CallFailed
from smartget.hub.relay.xmlrpc import XmlRpcError, dump_request, parse_response

__all__ = ["MAX_RESPONSE_BYTES", "CallFailed", "SatelliteClient"]

MAX_RESPONSE_BYTES = 64 * 1024


class SatelliteClient:
    """An httpx client for many satellites; no proxies from the environment."""

    def __init__(self, *, max_connections: int = 256) -> None:
        self._http = httpx.AsyncClient(
            trust_env=False,
            follow_redirects=False,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            headers={"Content-Type": "text/xml", "User-Agent": "smartget-relay"},
        )

    async def call(self, url: str, method: str, params: Any, deadline: float) -> Any:
        """``method(params)`` at ``url``, all done within ``deadline`` seconds."""
        body = dump_request(method, params)
        try:
            async with asyncio.timeout(deadline):
                async with self._http.stream(
                    "POST", url, content=body, timeout=deadline
                ) as response:
                    if response.status_code != 200:
                        raise CallFailed(f"{method} at {url}: HTTP {response.status_code}")
                    data = bytearray()
                    async for chunk in response.aiter_bytes():
                        data += chunk
                        if len(data) > MAX_RESPONSE_BYTES:
                            raise CallFailed(
                                f"{method} at {url}: reply larger than {MAX_RESPONSE_BYTES} bytes"
                            )
        except TimeoutError:
            raise CallFailed(f"{method} at {url}: no reply within {deadline:g} s") from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise CallFailed(f"{method} at {url}: {str(exc) or type(exc).__name__}") from None
        try:
            return parse_response(bytes(data), max_bytes=MAX_RESPONSE_BYTES)
        except xmlrpc.client.Fault as fault:
            raise CallFailed(
                f"{method} at {url}: fault {fault.faultCode}: {fault.faultString[:200]}", fault
            ) from None
        except XmlRpcError as exc:
            raise CallFailed(f"{method} at {url}: {exc}") from None

    async def aclose(self) -> None:
        await self._http.aclose()
