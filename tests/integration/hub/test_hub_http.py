"""The hub's JSON API over real HTTP: auth, registration, filters, status, hand-out."""

from __future__ import annotations

import httpx
import pytest

from smartget.hub.app import Hub

from .conftest import send

pytestmark = pytest.mark.asyncio


async def test_open_routes_and_auth(hub: Hub) -> None:
    async with httpx.AsyncClient(base_url=hub.http_url, timeout=5) as client:
        health = await client.get("/healthz")
        assert health.json() == {"status": "ok", "nodes": 0}
        assert "smartget_hub_nodes 0.0" in (await client.get("/metrics")).text
        assert (await client.get("/openapi.json")).status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            refused = await client.get("/api/nodes", headers=headers)
            assert refused.status_code == 401
            assert "Bearer" in refused.json()["detail"]


async def test_register_list_status_request_delete(hub: Hub, auth: dict[str, str]) -> None:
    async with httpx.AsyncClient(base_url=hub.http_url, headers=auth, timeout=5) as client:
        created = await client.post(
            "/api/nodes",
            json={"port": 8090, "zone": "eu", "bt_port": 6881, "api_url": "http://x:8090"},
        )
        assert created.status_code == 201, created.text
        node = created.json()
        assert node["id"] == 1
        assert node["ip"] == "127.0.0.1"
        again = await client.post("/api/nodes", json={"port": 8090})
        assert again.status_code == 409
        assert again.json()["id"] == 1
        other = await client.post(
            "/api/nodes", json={"port": 8090, "ip": "10.0.0.2", "zone": "us", "status": 2}
        )
        assert other.json()["status"] == 2

        assert [n["id"] for n in (await client.get("/api/nodes")).json()] == [1, 2]
        assert [n["id"] for n in (await client.get("/api/nodes?zone=us")).json()] == [2]
        assert [n["id"] for n in (await client.get("/api/nodes?available=true")).json()] == [2]
        assert [n["id"] for n in (await client.get("/api/nodes?status=0")).json()] == [1]

        status = await client.put("/api/nodes/1/status", json={"status": 3})
        assert status.json()["status"] == 3
        bad = await client.put("/api/nodes/1/status", json={"status": -5})
        assert bad.status_code == 422

        handed = await client.post("/api/nodes/request", json={"n": 5, "zone": "us"})
        assert [n["id"] for n in handed.json()["nodes"]] == [2, 1]
        assert (await client.get("/api/nodes/2")).json()["status"] == 1
        excluded = await client.post("/api/nodes/request", json={"n": 5, "exclude": [1, 2]})
        assert excluded.json() == {"nodes": []}

        patched = await client.patch("/api/nodes/1", json={"zone": "ap"})
        assert patched.json()["zone"] == "ap"
        assert (await client.delete("/api/nodes/1")).status_code == 204
        assert (await client.delete("/api/nodes/1")).status_code == 404
        assert (await client.get("/api/nodes/1")).status_code == 404
        assert (await client.get("/api/stats")).json()["nodes"] == 1


async def test_both_protocols_share_one_registry(hub: Hub, auth: dict[str, str]) -> None:
    await send(hub, b"`register 7\n", src="127.0.0.2")
    async with httpx.AsyncClient(base_url=hub.http_url, headers=auth, timeout=5) as client:
        await client.put("/api/nodes/1/status", json={"status": 1})
    assert await send(hub, b"`requestnodes 1\n", src="127.0.0.3") == b"200 OK\r\n127.0.0.2 7\r\n"


async def test_bad_bodies(hub: Hub, auth: dict[str, str]) -> None:
    async with httpx.AsyncClient(base_url=hub.http_url, headers=auth, timeout=5) as client:
        garbage = await client.post(
            "/api/nodes", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert garbage.status_code == 422
        huge = await client.post("/api/nodes", content=b"x" * (2 << 20))
        assert huge.status_code == 413
        assert (await client.get("/healthz")).status_code == 200
