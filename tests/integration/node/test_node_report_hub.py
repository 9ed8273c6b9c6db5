"""Status reports against a local collector (delivery, backoff, the end), and the hub."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from smartget.hub.app import HubSettings
from smartget.hub.app import running as hub_running
from tests.helpers import wait_until

from .conftest import node_settings, random_file, serve, started, task

pytestmark = pytest.mark.asyncio


class Collector:
    """Records reports; answers 500 to the first ``fail`` of them, then success."""

    def __init__(self, fail: int) -> None:
        self.fail = fail
        self.reports: list[tuple[float, dict[str, object]]] = []

    def app(self) -> Starlette:
        async def report(request: Request) -> Response:
            self.reports.append((time.monotonic(), json.loads(await request.body())))
            if len(self.reports) <= self.fail:
                return Response("down", status_code=500)
            return JSONResponse({"result": "success"})

        return Starlette(routes=[Route("/report_peerstatus", report, methods=["POST"])])


async def test_reports_backoff_and_end(tmp_path: Path) -> None:
    collector = Collector(fail=2)
    interval = 0.3
    async with serve(collector.app()) as collector_url:
        settings = node_settings(
            tmp_path,
            "127.0.3.20",
            report_url=(f"{collector_url}/report_peerstatus",),
            report_interval=interval,
        )
        async with started(settings) as (node, api):
            random_file(node.settings.wwwroot / "fhs-2.3.pdf", 10_000)
            made = (
                await api.post("/maketorrent", json=task("maketorrent", filename="fhs-2.3.pdf"))
            ).json()
            await wait_until(lambda: len(collector.reports) >= 3, within=10, what="3 reports")
            times = [t for t, _ in collector.reports]
            # Failed POST n waits min(900, interval * n**2): 0.3 s, then 1.2 s.
            assert times[1] - times[0] >= interval * 1 - 0.05
            assert times[2] - times[1] >= interval * 4 - 0.05
            body = collector.reports[2][1]
            assert body["event"] == "status_response"
            assert body["status"] == "seeding"
            assert body["nodeid"] == "beijing_127.0.3.20"
            args = body["args"]
            assert isinstance(args, dict)
            assert args["sha1"] == made["args"]["sha1"]
            assert args["percent"] == "100.0"
            assert args["torrentfile"] == "fhs-2.3.pdf.torrent"
            assert set(args) == {
                "downrate", "downtotal", "numpeers", "numseeds", "percent",
                "sha1", "timeleft", "torrentfile", "uprate", "uptotal",
            }  # fmt: skip
            # Acknowledged seeding: no more reports for this torrent.
            count = len(collector.reports)
            await wait_until(
                lambda: time.monotonic() - times[2] > 4 * interval, within=5, what="time"
            )
            assert len(collector.reports) == count
            assert node.agent.state.get(args["sha1"]).report_done  # type: ignore[union-attr]


async def test_registers_heartbeats_deregisters_http(tmp_path: Path) -> None:
    hub_settings = HubSettings(
        data_dir=tmp_path / "hub", listen=("127.0.3.1", 0), http=("127.0.3.1", 0), token="t"
    )
    async with hub_running(hub_settings) as hub:
        settings = node_settings(tmp_path, "127.0.3.21", hub_http=(hub.http_url,), heartbeat=0.2)
        settings.token = "t"
        async with started(settings) as (node, _):
            assert node.hub is not None
            await wait_until(
                lambda: node.hub is not None and node.hub.heartbeats >= 2,
                within=10,
                what="heartbeats",
            )
            async with httpx.AsyncClient(headers={"Authorization": "Bearer t"}) as client:
                nodes = (await client.get(f"{hub.http_url}/api/nodes")).json()
            assert len(nodes) == 1
            entry = nodes[0]
            assert entry["ip"] == "127.0.3.21"
            assert entry["zone"] == "beijing"
            assert entry["api_url"] == node.api_url
            assert entry["files_url"] == node.files_url
            assert entry["bt_port"] == node.bt_port
            assert entry["status"] == 8
        assert len(hub.registry) == 0  # deregistered on a clean stop
        # A node registered before (same ip+port, e.g. after kill -9) takes its entry over.
        sock = socket.socket()
        sock.bind(("127.0.3.21", 0))
        port = sock.getsockname()[1]
        sock.close()
        old = hub.registry.register("127.0.3.21", port, hub.now(), zone="old")
        settings.api = ("127.0.3.21", port)
        async with started(settings) as (node, _):
            assert node.hub is not None
            await wait_until(node.hub.registered.is_set, within=10, what="registration")
            assert node.hub.node_id == old.node_id
            assert hub.registry.get_node_by_id(old.node_id).zone == "beijing"  # type: ignore[union-attr]


async def test_text_protocol_and_hub_away(tmp_path: Path) -> None:
    # Two hubs named, neither up at first; the second comes up and the node moves to it.
    hub_settings = HubSettings(data_dir=tmp_path / "hub", listen=("127.0.3.1", 20731), http=None)
    both = (("127.0.3.1", 1), hub_settings.listen)
    settings = node_settings(tmp_path, "127.0.3.22", hub=both, heartbeat=0.2)
    async with started(settings) as (node, api):
        assert node.hub is not None
        await wait_until(
            lambda: node.hub is not None and node.hub.failures >= 1, within=10, what="a failure"
        )
        assert (await api.get("/ping")).text == "PONG"  # works while the hub is away
        async with hub_running(hub_settings) as hub:
            # The hub holds the node before its reply reaches the node: wait for both.
            await wait_until(
                lambda: len(hub.registry) == 1 and node.hub is not None and node.hub.node_id,
                within=15,
                what="registration",
            )
            registered = hub.registry.get_node_by_id(node.hub.node_id or 0)
            assert registered is not None
            assert registered.addr == "127.0.3.22"
            await wait_until(
                lambda: node.hub is not None and node.hub.heartbeats >= 2,
                within=10,
                what="heartbeats",
            )
            await node.hub.deregister()
            assert len(hub.registry) == 0
