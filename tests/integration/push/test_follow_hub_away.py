"""A controller following a job keeps asking while the hub is away (issue 14).

The job runs in the hub, so a hub restart must not end ``smartget push``: it says the
hub is unreachable, retries, and goes on when the hub answers again; past the grace
it gives up with a message saying the job may still go on. A small HTTP server on a
real socket plays the hub's two job routes; it stops and comes back on the same port.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from smartget import jobs_cli
from smartget.errors import HubUnreachableError
from smartget.jobs_cli import follow_job
from smartget.net import free_port
from smartget.push import FleetClient
from tests.helpers import wait_until

pytestmark = pytest.mark.asyncio

HOST = "127.0.49.30"


class JobRoutes:
    """GET /api/jobs/J/events and /api/jobs/J: running until ``done`` is set."""

    def __init__(self) -> None:
        self.done = False
        self.requests = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.requests += 1
        path = head.split(b" ", 2)[1].decode()
        state = "done" if self.done else "running"
        if "/events" in path:
            body = {"id": "J", "state": state, "last_seq": 1, "events": []}
        else:
            body = {"id": "J", "state": state, "nodes": [], "files": []}
        data = json.dumps(body).encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
            + f"Content-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
        await writer.drain()
        writer.close()


async def test_the_hub_goes_away_and_comes_back() -> None:
    port = free_port(HOST)
    routes = JobRoutes()
    server = await asyncio.start_server(routes.handle, HOST, port)
    said: list[str] = []
    client = FleetClient(f"http://{HOST}:{port}", "t", "t", 5)
    try:
        follow = asyncio.create_task(follow_job(client, "J", within=60, on_hub_lost=said.append))
        await wait_until(lambda: routes.requests >= 2, within=10, what="following")
        server.close()
        await server.wait_closed()
        await wait_until(lambda: bool(said), within=10, what="the loss noticed")
        assert not follow.done()
        routes.done = True
        server = await asyncio.start_server(routes.handle, HOST, port)
        view = await asyncio.wait_for(follow, 20)
        assert view["state"] == "done"
        assert "unreachable" in said[0]
        assert "answers again" in said[-1]
    finally:
        server.close()
        await client.aclose()


async def test_a_hub_that_stays_away_ends_the_follow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs_cli, "HUB_GRACE", 1.5)
    client = FleetClient(f"http://{HOST}:{free_port(HOST)}", "t", "t", 5)  # nobody there
    try:
        with pytest.raises(HubUnreachableError, match="may go on in the hub"):
            await asyncio.wait_for(follow_job(client, "J", within=60), 20)
    finally:
        await client.aclose()
