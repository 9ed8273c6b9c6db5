"""Real nodes, a real origin and a small tracker on 127.0.3.x, in the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

import httpx
import pytest_asyncio
from fastbencode import bencode
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from smartget.httpserver import EmbeddedServer
from smartget.node.files import create_files_app
from smartget.node.service import Node, NodeSettings, running

TOKEN = "node-token"
ORIGIN_IP = "127.0.3.1"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def bind(ip: str) -> socket.socket:
    sock = socket.socket()
    sock.bind((ip, 0))
    return sock


@contextlib.asynccontextmanager
async def serve(app: Any, ip: str = ORIGIN_IP) -> AsyncIterator[str]:
    """Serve an ASGI app on ip:0; yields its base URL."""
    sock = bind(ip)
    server = EmbeddedServer(app, sock, name="test")
    await server.start()
    try:
        yield f"http://{ip}:{sock.getsockname()[1]}"
    finally:
        await server.stop()


class Tracker:
    """A minimal HTTP tracker (BEP 3, compact BEP 23): every announcer learns the others."""

    def __init__(self) -> None:
        self.peers: dict[bytes, dict[tuple[str, int], float]] = {}
        self.announces = 0

    def app(self) -> Starlette:
        async def announce(request: Request) -> Response:
            query: dict[bytes, list[bytes]] = {}
            for pair in request.url.query.split("&"):
                key, _, value = pair.partition("=")
                query.setdefault(unquote_to_bytes(key), []).append(unquote_to_bytes(value))
            info_hash = query[b"info_hash"][0]
            port = int(query[b"port"][0])
            ip = query.get(b"ip", [b""])[0].decode() or (
                request.client.host if request.client else ""
            )
            self.announces += 1
            swarm = self.peers.setdefault(info_hash, {})
            if query.get(b"event", [b""])[0] == b"stopped":
                swarm.pop((ip, port), None)
            else:
                swarm[(ip, port)] = time.monotonic()
            compact = b"".join(
                socket.inet_aton(p_ip) + p_port.to_bytes(2, "big")
                for (p_ip, p_port) in swarm
                if (p_ip, p_port) != (ip, port)
            )
            return Response(bencode({b"interval": 2, b"min interval": 1, b"peers": compact}))

        return Starlette(routes=[Route("/announce", announce)])


def node_settings(tmp: Path, ip: str, **extra: Any) -> NodeSettings:
    return NodeSettings(
        ip=ip,
        zone="beijing",
        wwwroot=tmp / ip / "www",
        data_dir=tmp / ip / "data",
        api=(ip, 0),
        files=(ip, 0),
        bt_port=0,
        token=TOKEN,
        resume_interval=0.5,
        **({"webseed_fallback": 0.0, "fetch_allow": ("127.0.0.0/8",)} | extra),
    )


@contextlib.asynccontextmanager
async def started(settings: NodeSettings) -> AsyncIterator[tuple[Node, httpx.AsyncClient]]:
    async with (
        running(settings) as node,
        httpx.AsyncClient(base_url=node.api_url, headers=AUTH, timeout=30) as client,
    ):
        yield node, client


@pytest_asyncio.fixture
async def origin(tmp_path: Path) -> AsyncIterator[tuple[Path, str]]:
    """An origin web server (with Range) over tmp/origin; yields (dir, base URL)."""
    root = tmp_path / "origin"
    root.mkdir()
    async with serve(create_files_app(root)) as url:
        yield root, url


def random_file(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return path


def task(event: str, taskid: str = "t1", **args: Any) -> dict[str, Any]:
    return {"taskid": taskid, "event": event, "expire": "", "max_retries": "", "args": args}


async def trade_to_completion(
    nodes: Sequence[Node], sha1: str, source: Path, relpath: str, within: float = 60
) -> None:
    """Connect every node to those before it, wait until each has ``sha1`` complete,
    and check each copy (``relpath`` under its wwwroot) against ``source``."""
    for i, node in enumerate(nodes):
        for before in nodes[:i]:
            node.engine.connect_peer(sha1, (before.settings.ip, before.bt_port))
    for node in nodes:
        await node.engine.wait_complete(sha1, within)
    want = await asyncio.to_thread(sha256, source)
    for node in nodes:
        local = node.agent.roots.wwwroot / relpath
        assert await asyncio.to_thread(sha256, local) == want, node.settings.ip
