"""Registration with the hub, heartbeats, deregistration (issue 4, "Hub").

Two ways to talk to the hub, chosen by the flags:

Several hubs of one fleet may be named (``--hub-http`` or ``--hub`` again): the node uses
the first and moves to the next when the one in use stops answering
(:mod:`smartget.failover`); on one Redis they share the node's id.

- ``--hub-http URL``: the JSON API. ``POST /api/nodes`` (201 with the node's ``id``; on
  409 the body carries the existing ``id`` and the node ``PATCH``es its info), ``PUT
  /api/nodes/{id}/status`` as the heartbeat, ``DELETE /api/nodes/{id}`` on a clean stop.
  The bearer token is the URL's password (``http://:TOKEN@hub:8200``) or else ``--token``.
- ``--hub HOST:PORT``: the backtick text protocol (seed 000), one command per connection:
  `` `register PORT`` -> ``200 OK\\r\\nID``, `` `setstatus ID N``, `` `deregister PORT``.
  The hub takes the node's IP from the TCP peer address, so the connection leaves from
  ``--ip``.

The heartbeat carries the node's free upload slots. While the hub is away the node keeps
working and tries again, 1 s, 2 s, 4 s ... apart (at most ``heartbeat``); a heartbeat the
hub answers with "no such node" (it forgot us) makes the node register again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from smartget.errors import ConfigError, HubError
from smartget.failover import Endpoints

__all__ = ["HubClient", "HubError", "HubInfo"]

log = logging.getLogger(__name__)

IO_TIMEOUT = 5.0


class _Forgotten(HubError):
    """The hub no longer knows this node."""


@dataclass(frozen=True)
class HubInfo:
    ip: str
    port: int  # the task API's port: the node's key at the hub, with ip
    name: str
    zone: str
    bt_port: int
    api_url: str
    files_url: str


class HubClient:
    """Registration and heartbeats with one hub of ``http_urls`` (or ``text_addresses``):
    the first, then the next whenever the one in use stops answering (issue 13)."""

    def __init__(
        self,
        info: HubInfo,
        free_slots: Callable[[], int],
        *,
        http_urls: Sequence[str] = (),
        text_addresses: Sequence[tuple[str, int]] = (),
        token: str = "",
        heartbeat: float,  # NodeSettings.heartbeat
    ) -> None:
        if not http_urls and not text_addresses:
            raise ConfigError("HubClient needs http_urls or text_addresses")
        self.info = info
        self.free_slots = free_slots
        self.heartbeat = heartbeat
        self.node_id: int | None = None
        self.registered = asyncio.Event()
        self.heartbeats = 0
        self.failures = 0
        self._client: httpx.AsyncClient | None = None
        self.hubs: Endpoints[str | tuple[str, int]]
        if http_urls:
            bases = []
            for url in http_urls:
                parts = urlsplit(url)
                token = parts.password or token
                netloc = parts.hostname or ""
                if parts.port:
                    netloc = f"{netloc}:{parts.port}"
                bases.append(urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", "")))
            self.hubs = Endpoints(bases)
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            self._client = httpx.AsyncClient(timeout=IO_TIMEOUT, headers=headers, trust_env=False)
        else:
            self.hubs = Endpoints(list(text_addresses))

    @property
    def http_url(self) -> str:
        """The JSON API of the hub in use ("" with the text protocol)."""
        return self.hubs.current if isinstance(self.hubs.current, str) else ""

    @property
    def text_address(self) -> tuple[str, int] | None:
        """The text protocol's address of the hub in use (None with the JSON API)."""
        current = self.hubs.current
        return None if isinstance(current, str) else current

    def statistics(self) -> dict[str, int]:
        return {
            "registered": int(self.node_id is not None),
            "heartbeats": self.heartbeats,
            "failures": self.failures,
        }

    async def run(self) -> None:
        """Register, then heartbeat forever; survives the hub going away (cancel to stop).

        When the hub in use fails, the next one is tried at once; only a failure of
        every hub in a row waits (1 s, 2 s, 4 s ... at most ``heartbeat``).
        """
        delay = 1.0
        in_row = 0
        while True:
            hub = self.hubs.current
            try:
                if self.node_id is None:
                    self.node_id = await self._register()
                    self.registered.set()
                    log.info("registered with the hub %s as node %d", self._name(hub), self.node_id)
                await self._set_status(self.node_id, self.free_slots())
                self.heartbeats += 1
                delay, in_row = 1.0, 0
                await asyncio.sleep(self.heartbeat)
            except _Forgotten:
                log.warning("the hub forgot node %s; registering again", self.node_id)
                self.node_id = None
                self.registered.clear()
            except (HubError, OSError, httpx.HTTPError, TimeoutError) as exc:
                self.failures += 1
                in_row += 1
                moved = self.hubs.failed(hub)
                if moved and in_row < len(self.hubs):
                    log.warning(
                        "hub %s unreachable (%s); trying %s",
                        self._name(hub),
                        exc,
                        self._name(self.hubs.current),
                    )
                    continue
                in_row = 0
                log.warning("hub unreachable (%s); retrying in %.0f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.heartbeat)

    @staticmethod
    def _name(hub: str | tuple[str, int]) -> str:
        return hub if isinstance(hub, str) else f"{hub[0]}:{hub[1]}"

    async def deregister(self) -> None:
        """Best effort, bounded: a clean stop tells the hub."""
        if self.node_id is None:
            return
        try:
            async with asyncio.timeout(IO_TIMEOUT):
                if self._client is not None:
                    await self._client.delete(f"{self.http_url}/api/nodes/{self.node_id}")
                else:
                    await self._text(f"deregister {self.info.port}")
            log.info("deregistered node %d from the hub", self.node_id)
        except (HubError, OSError, httpx.HTTPError, TimeoutError) as exc:
            log.warning("could not deregister from the hub: %s", exc)
        self.node_id = None

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    # ---- JSON API --------------------------------------------------------------------

    def _body(self) -> dict[str, Any]:
        i = self.info
        return {
            "port": i.port,
            "ip": i.ip,
            "name": i.name,
            "zone": i.zone,
            "bt_port": i.bt_port,
            "api_url": i.api_url,
            "files_url": i.files_url,
            "status": self.free_slots(),
        }

    async def _register(self) -> int:
        if self._client is None:
            return await self._register_text()
        body = self._body()
        reply = await self._client.post(f"{self.http_url}/api/nodes", json=body)
        if reply.status_code == 409:
            node_id = int(reply.json()["id"])
            info = {k: v for k, v in body.items() if k not in ("port", "ip", "status")}
            patched = await self._client.patch(f"{self.http_url}/api/nodes/{node_id}", json=info)
            _check(patched, "update")
            return node_id
        _check(reply, "register")
        return int(reply.json()["id"])

    async def _set_status(self, node_id: int, slots: int) -> None:
        if self._client is None:
            await self._text(f"setstatus {node_id} {slots}", forgotten_ok=False)
            return
        reply = await self._client.put(
            f"{self.http_url}/api/nodes/{node_id}/status", json={"status": slots}
        )
        if reply.status_code == 404:
            raise _Forgotten("no such node")
        _check(reply, "heartbeat")

    # ---- text protocol ---------------------------------------------------------------

    async def _register_text(self) -> int:
        lines = await self._text(f"register {self.info.port}")
        if lines[0].startswith("400") and "exists" in " ".join(lines[1:]).lower():
            await self._text(f"deregister {self.info.port}")
            lines = await self._text(f"register {self.info.port}")
        number = lines[1] if len(lines) > 1 else ""
        if not lines[0].startswith("200") or not (number.isascii() and number.isdigit()):
            raise HubError(f"hub refused register: {' / '.join(lines)[:200]}")
        return int(number)

    async def _text(self, command: str, *, forgotten_ok: bool = True) -> list[str]:
        address = self.text_address
        assert address is not None
        host, port = address
        local = None if self.info.ip in ("", "0.0.0.0") else (self.info.ip, 0)
        async with asyncio.timeout(IO_TIMEOUT):
            reader, writer = await asyncio.open_connection(host, port, local_addr=local)
            try:
                writer.write(f"`{command}\n".encode("ascii"))
                await writer.drain()
                raw = await reader.read(4096)
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
        lines = raw.decode("ascii", "replace").splitlines() or [""]
        if not forgotten_ok and lines[0].startswith("400"):
            raise _Forgotten(" ".join(lines[1:]))
        return lines


def _check(reply: httpx.Response, what: str) -> None:
    if reply.status_code >= 400:
        raise HubError(f"hub refused {what}: HTTP {reply.status_code} {reply.text[:200]}")
