"""The console's HTTP face on a real hub: sign-in, cookie, CSRF, the live stream, actions
(push jobs started and cancelled through the hub's jobs core), and what a restart keeps.
(The page itself is tested in a real browser: tests/browser.)"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from pathlib import Path

import httpx
import pytest

from smartget.hub.app import Hub, HubSettings, running
from smartget.hub.jobs import JobState

from .conftest import TOKEN

pytestmark = pytest.mark.asyncio


async def sign_in(client: httpx.AsyncClient) -> str:
    """Sign in; the page's CSRF token."""
    reply = await client.post("/login", data={"token": TOKEN})
    assert reply.status_code == 303
    assert reply.headers["location"] == "/"
    page = await client.get("/")
    assert page.status_code == 200
    found = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
    assert found
    return found.group(1)


async def first_event(client: httpx.AsyncClient) -> dict[str, object]:
    async with asyncio.timeout(5), client.stream("GET", "/console/events") as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        async for line in stream.aiter_lines():
            if line.startswith("data: "):
                return json.loads(line[6:])  # type: ignore[no-any-return]
    raise AssertionError("no event")


async def test_sign_in_sets_a_strict_cookie_and_the_page_is_locked_down(hub: Hub) -> None:
    async with httpx.AsyncClient(base_url=hub.http_url, timeout=5) as client:
        refused = await client.get("/")
        assert refused.status_code == 303
        assert refused.headers["location"] == "/login"
        form = await client.get("/login")
        assert 'name="token"' in form.text
        csp = form.headers["content-security-policy"]
        assert "unsafe-inline" not in csp
        assert "script-src 'self'" in csp
        wrong = await client.post("/login", data={"token": "<script>x</script>"})
        assert wrong.status_code == 401
        assert "That is not the hub&#x27;s token." in wrong.text
        assert "<script>x" not in wrong.text
        assert "smartget_session" not in client.cookies

        reply = await client.post("/login", data={"token": TOKEN})
        cookie = reply.headers["set-cookie"].lower()
        for flag in ("httponly", "samesite=strict", "max-age=43200", "path=/"):
            assert flag in cookie
        assert "secure" not in cookie  # plain HTTP here; over TLS it is set
        csrf = await sign_in(client)
        page = await client.get("/")
        assert "unsafe-inline" not in page.headers["content-security-policy"]
        assert page.headers["cache-control"] == "no-store"
        assert '<script type="module" src="/console/static/console.js">' in page.text
        assert "<script>" not in page.text
        assert " style=" not in page.text
        js = await client.get("/console/static/console.js")
        assert js.headers["content-type"].startswith("text/javascript")
        assert "innerHTML" not in js.text
        assert (await client.get("/console/static/..%2Fweb.py")).status_code == 404
        moved = await client.get("/dashboard")  # the old page's address
        assert (moved.status_code, moved.headers["location"]) == (308, "/")

        # The cookie opens the console only: the JSON API keeps its Bearer tokens.
        assert (await client.get("/api/nodes")).status_code == 401
        assert csrf


async def test_actions_need_csrf_and_same_origin(hub: Hub, auth: dict[str, str]) -> None:
    async with httpx.AsyncClient(base_url=hub.http_url, timeout=5) as client:
        node = (await client.post("/api/nodes", json={"port": 9, "status": 3}, headers=auth)).json()
        drain = f"/console/api/nodes/{node['id']}/drain"
        assert (await client.post(drain)).status_code == 401
        csrf = await sign_in(client)
        assert (await client.post(drain)).status_code == 403
        assert (await client.post(drain, headers={"X-CSRF-Token": "x" + csrf})).status_code == 403
        other = {"X-CSRF-Token": csrf, "Origin": "http://evil.example"}
        assert (await client.post(drain, headers=other)).status_code == 403
        site = {"X-CSRF-Token": csrf, "Sec-Fetch-Site": "cross-site"}
        assert (await client.post(drain, headers=site)).status_code == 403
        assert hub.registry.get_node_by_id(node["id"]).status == 3  # type: ignore[union-attr]

        ok = await client.post(drain, headers={"X-CSRF-Token": csrf})
        assert ok.status_code == 200, ok.text
        assert "drained" in ok.json()["message"]
        # The node's heartbeat does not undo it; nothing is handed out.
        beat = await client.put(f"/api/nodes/{node['id']}/status", json={"status": 6}, headers=auth)
        assert beat.json()["status"] == 0
        handed = await client.post("/api/nodes/request", json={"n": 5}, headers=auth)
        assert handed.json() == {"nodes": []}
        snap = await first_event(client)
        nodes = snap["fleet"]["nodes"]  # type: ignore[index]
        assert [(n["id"], n["state"]) for n in nodes] == [(node["id"], "drained")]

        back = await client.post(
            f"/console/api/nodes/{node['id']}/undrain", headers={"X-CSRF-Token": csrf}
        )
        assert back.json()["message"].endswith("status 6")
        alive = await client.post(
            f"/console/api/nodes/{node['id']}/deregister", headers={"X-CSRF-Token": csrf}
        )
        assert alive.status_code == 400
        assert "only zombies" in alive.json()["detail"]

        bad = await client.post(
            "/console/api/jobs",
            json={"urls": ["file:///etc/passwd"]},
            headers={"X-CSRF-Token": csrf},
        )
        assert bad.status_code == 400
        assert "not an http(s) URL" in bad.json()["detail"]
        assert hub.jobs.book.jobs == {}

        out = await client.post("/logout", headers={"X-CSRF-Token": csrf})
        assert out.status_code == 200
        assert (await client.get("/console/api/snapshot")).status_code == 401


async def test_a_job_is_started_and_cancelled_from_the_console(
    hub: Hub, auth: dict[str, str]
) -> None:
    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:  # a node's task API that takes the maketorrent and never answers
            await reader.read()
        finally:
            writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    api_url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    async with server, httpx.AsyncClient(base_url=hub.http_url, timeout=5) as client:
        node = {"port": 9, "status": 3, "zone": "z1", "api_url": api_url}
        assert (await client.post("/api/nodes", json=node, headers=auth)).status_code == 201
        csrf = await sign_in(client)
        body = {"urls": ["http://origin.invalid/a.bin"], "zones": ["z1"], "count": 1}
        body["upload_limit"] = 1 << 20
        assert (await client.post("/console/api/jobs", json=body)).status_code == 403
        made = await client.post("/console/api/jobs", json=body, headers={"X-CSRF-Token": csrf})
        assert made.status_code == 200, made.text
        job_id = made.json()["id"]
        assert made.json()["message"] == f"job {job_id} queued (1 file): watch it below"
        # The hub's jobs core has it, as if POST /api/jobs had made it.
        spec = hub.jobs.book.get(job_id).spec
        assert (spec.zones, spec.nodes, spec.upload_limit) == (("z1",), 1, 1 << 20)
        assert (await client.get(f"/api/jobs/{job_id}", headers=auth)).json()["zones"] == ["z1"]
        for _ in range(100):  # 5 s at most: the runner starts it
            snap = (await client.get("/console/api/snapshot")).json()
            if snap["jobs"][0]["state"] == "running":
                break
            await asyncio.sleep(0.05)
        (job,) = snap["jobs"]
        assert (job["id"], job["state"], job["title"], job["cancellable"]) == (
            job_id,
            "running",
            "a.bin",
            True,
        )
        assert job["files"][0]["state"] == "making"
        assert [(n["role"], n["outcome"]) for n in job["nodes"]] == [
            ("seed", "waiting for the torrent")
        ]
        assert job["bound"] is None  # the file's size comes with its torrent
        assert snap["job_stats"]["running"] == 1

        cancel = f"/console/api/jobs/{job_id}/cancel"
        assert (await client.post(cancel)).status_code == 403
        evil = {"X-CSRF-Token": csrf, "Origin": "http://evil.example"}
        assert (await client.post(cancel, headers=evil)).status_code == 403
        assert hub.jobs.book.get(job_id).state is JobState.RUNNING
        out = await client.post(cancel, headers={"X-CSRF-Token": csrf})
        assert out.status_code == 200, out.text
        assert out.json()["message"].startswith(f"job {job_id} cancelled: what was not done")
        assert hub.jobs.book.get(job_id).state is JobState.CANCELLED
        again = await client.post(cancel, headers={"X-CSRF-Token": csrf})
        assert "had ended already (cancelled)" in again.json()["message"]
        missing = await client.post("/console/api/jobs/nope/cancel", headers={"X-CSRF-Token": csrf})
        assert missing.status_code == 404
        (job,) = (await client.get("/console/api/snapshot")).json()["jobs"]
        assert (job["state"], job["reason"], job["cancellable"]) == (
            "cancelled",
            "cancelled by an operator",
            False,
        )


async def test_zombies_are_deregistered_and_drains_and_sessions_survive_a_restart(
    tmp_path: Path,
) -> None:
    settings = HubSettings(
        data_dir=tmp_path / "hub",
        listen=("127.0.0.1", 0),
        http=("127.0.0.1", 0),
        token=TOKEN,
        udp_tracker=("127.0.0.1", 0),
        node_ttl=0.3,
        zombie_grace=60,
    )
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with running(settings) as hub, httpx.AsyncClient(base_url=hub.http_url) as client:
        a = (await client.post("/api/nodes", json={"port": 1, "status": 2}, headers=auth)).json()
        b = (await client.post("/api/nodes", json={"port": 2, "status": 2}, headers=auth)).json()
        csrf = await sign_in(client)
        cookies = dict(client.cookies)
        drained = await client.post(
            f"/console/api/nodes/{a['id']}/drain", headers={"X-CSRF-Token": csrf}
        )
        assert drained.status_code == 200
        for _ in range(100):  # 5 s at most
            if hub.registry.get_node_by_id(b["id"]).is_zombie:  # type: ignore[union-attr]
                break
            await asyncio.sleep(0.05)
        gone = await client.post(
            f"/console/api/nodes/{b['id']}/deregister", headers={"X-CSRF-Token": csrf}
        )
        assert gone.status_code == 200, gone.text
        assert "zombie node" in gone.json()["message"]
        assert hub.registry.get_node_by_id(b["id"]) is None

    again = dataclasses.replace(settings, node_ttl=60)
    async with (
        running(again) as hub,
        httpx.AsyncClient(base_url=hub.http_url, cookies=cookies) as client,
    ):
        snap = (await client.get("/console/api/snapshot")).json()  # the same session
        assert [n["id"] for n in snap["fleet"]["nodes"]] == [a["id"]]
        assert snap["fleet"]["stats"]["drained"] == 1
        assert hub.console.drains.ids() == [a["id"]]
        assert snap["hubs"][0]["up"]
