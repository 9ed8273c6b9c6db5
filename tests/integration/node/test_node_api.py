"""The task API over real HTTP: auth on every route, hostile paths, malformed tasks,
shutdown, delete and prune."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import httpx
import pytest

from smartget.node.api import ROUTES

from .conftest import node_settings, random_file, started, task

pytestmark = pytest.mark.asyncio

ALL_ROUTES = [("GET", "/ping"), ("POST", "/ping"), ("GET", "/status"), ("GET", "/metrics")] + [
    ("POST", route) for route in ROUTES
]


async def test_auth_on_every_route(tmp_path: Path) -> None:
    settings = node_settings(tmp_path, "127.0.3.10", user="admin", password="admin123456")
    async with started(settings) as (node, api):
        md5 = hashlib.md5(b"admin123456").hexdigest()
        async with httpx.AsyncClient(base_url=node.api_url) as anon:
            for method, route in ALL_ROUTES:
                for params, headers in (
                    ({}, {}),
                    ({"user": "admin", "pwd": "admin123456"}, {}),  # not the md5
                    ({"user": "root", "pwd": md5}, {}),
                    ({}, {"Authorization": "Bearer wrong"}),
                    ({}, {"Authorization": f"Basic {md5}"}),
                ):
                    reply = await anon.request(
                        method, route, params=params, headers=headers, content=b"{}"
                    )
                    assert reply.status_code == 401, (method, route, params, headers)
                    assert reply.text == "Unauthorized"
            ok = await anon.get("/ping", params={"user": "admin", "pwd": md5})
            assert ok.status_code == 200
            assert ok.text == "PONG"
            ok = await anon.post("/ping", params={"user": "admin", "pwd": md5.upper()})
            assert ok.text == "PONG"
        assert (await api.get("/ping")).text == "PONG"  # the bearer token


async def test_generated_password(tmp_path: Path) -> None:
    settings = node_settings(tmp_path, "127.0.3.11")
    settings.token = None
    async with started(settings) as (node, _):
        path = settings.data_dir / "node.password"
        assert path.stat().st_mode & 0o777 == 0o600
        password = path.read_text().strip()
        async with httpx.AsyncClient(base_url=node.api_url) as anon:
            assert (await anon.get("/ping")).status_code == 401
            md5 = hashlib.md5(password.encode()).hexdigest()
            assert (await anon.get("/ping", params={"user": "admin", "pwd": md5})).text == "PONG"
    # Kept across restarts.
    async with started(settings):
        assert path.read_text().strip() == password


@pytest.mark.parametrize(
    "event_args",
    [
        ("maketorrent", {"fileurl": "http://127.0.3.1:9/../../../etc/passwd"}),
        ("maketorrent", {"fileurl": "http://127.0.3.1:9/%2e%2e/%2e%2e/etc/passwd"}),
        ("maketorrent", {"fileurl": "http://127.0.3.1:9/x", "filename": "/etc/passwd"}),
        ("maketorrent", {"fileurl": "http://127.0.3.1:9/x", "filename": "../../outside"}),
        ("maketorrent", {"fileurl": "http://127.0.3.1:9/x", "wwwroot": "/etc"}),
        ("maketorrent", {"fileurl": "http://127.0.3.1:9/escape/passwd"}),
        ("maketorrent", {"fileurl": "file:///etc/passwd"}),
        ("download", {"torrentfileurl": "http://127.0.3.1:9/../../x.torrent"}),
        ("download", {"torrentfileurl": "http://127.0.3.1:9/escape/x.torrent"}),
        ("download", {"torrentfileurl": "http://127.0.3.1:9/a.torrent", "wwwroot": "/tmp"}),
        ("delete", {"filename": "/etc/hostname"}),
        ("delete", {"filename": "escape/keep.txt"}),
        ("delete", {"filename": "../outside/keep.txt"}),
        ("delete", {"torrentfileurl": "http://h/escape/keep.txt.torrent"}),
        ("delete", {"torrentfileurl": "http://h/x.torrent", "wwwroot": "/"}),
    ],
)
async def test_hostile_paths_touch_nothing(
    tmp_path: Path, event_args: tuple[str, dict[str, str]]
) -> None:
    event, args = event_args
    outside = tmp_path / "outside"
    keep = random_file(outside / "keep.txt", 100)
    async with started(node_settings(tmp_path, "127.0.3.12")) as (node, api):
        www = node.settings.wwwroot
        os.symlink(outside, www / "escape")
        before = sorted(p.name for p in outside.iterdir())
        body = (await api.post(f"/{event}", json=task(event, **args))).json()
        assert body["result"] == "failed", body
        assert body["traceback"]
        assert sorted(p.name for p in outside.iterdir()) == before
        assert keep.read_bytes()
        assert keep.stat().st_size == 100
        assert sorted(p.name for p in www.iterdir()) == ["escape"]


@pytest.mark.parametrize(
    ("route", "raw", "reason"),
    [
        ("/maketorrent", b"", "empty body"),
        ("/maketorrent", b"{not json", "not valid JSON"),
        ("/maketorrent", b"[1, 2]", "JSON object"),
        ("/maketorrent", b'{"event": "maketorrent", "args": []}', "args must be"),
        ("/maketorrent", b'{"event": "maketorrent", "args": {}}', "fileurl is required"),
        ("/maketorrent", b'{"event": "download", "args": {}}', "sent to the /maketorrent"),
        ("/puttask", b'{"args": {}}', "missing event"),
        ("/puttask", b'{"event": "maketorrent"}', "not taken by /puttask"),
        ("/puttask", b'{"event": "explode"}', "unknown event"),
        ("/shutdowntask", b'{"event": "delete"}', "not taken by /shutdowntask"),
        ("/download", b'{"event": "download", "args": {}}', "torrentfileurl is required"),
        ("/download", b'{"args": {"torrentfileurl": 5}}', "must be a string"),
        ("/download", b'{"max_retries": "abc", "args": {}}', "max_retries"),
        ("/download", b'{"max_retries": 99, "args": {}}', "max_retries is at most"),
        ("/download", b'{"expire": "soon", "args": {}}', "expire"),
        ("/shutdown", b'{"expire": 1000000001, "args": {"sha1": "ab"}}', "expired"),
        ("/shutdown", b'{"args": {}}', "sha1 or args.torrentfileurl"),
        ("/shutdown", b'{"args": {"sha1": "00"}}', "no torrent"),
        ("/delete", b'{"args": {}}', "filename or args.torrentfileurl"),
        ("/maketorrent", b'{"args": {"trackers": [1]}}', "trackers"),
    ],
)
async def test_malformed_tasks_fail_clearly(
    tmp_path: Path, route: str, raw: bytes, reason: str
) -> None:
    async with started(node_settings(tmp_path, "127.0.3.13")) as (_, api):
        reply = await api.post(route, content=raw)
        assert reply.status_code == 200
        body = reply.json()
        assert body["result"] == "failed"
        assert reason in body["traceback"], body["traceback"]
        assert body["event"].endswith("_response")


async def test_oversized_body(tmp_path: Path) -> None:
    async with started(node_settings(tmp_path, "127.0.3.13")) as (_, api):
        reply = await api.post("/download", content=b"x" * (2 << 20))
        assert reply.status_code == 413


async def test_shutdown_delete_and_prune(tmp_path: Path) -> None:
    async with started(node_settings(tmp_path, "127.0.3.14")) as (node, api):
        www = node.settings.wwwroot
        random_file(www / "media" / "2013" / "12" / "a.ts", 50_000)
        random_file(www / "media" / "keep.ts", 10)
        made = (
            await api.post(
                "/maketorrent",
                json=task("maketorrent", fileurl="http://127.0.3.1:9/media/2013/12/a.ts"),
            )
        ).json()
        sha1 = made["args"]["sha1"]
        assert sha1 in node.engine.handles
        url = "http://127.0.3.1:80/media/2013/12/a.ts.torrent"

        # shutdown by sha1 (sha1 wins over a wrong URL), then again: no such torrent.
        body = (
            await api.post(
                "/shutdown", json=task("shutdown", sha1=sha1, torrentfileurl="http://x/y")
            )
        ).json()
        assert body["result"] == "success"
        assert body["event"] == "shutdown_response"
        assert sha1 not in node.engine.handles
        assert (www / "media" / "2013" / "12" / "a.ts").exists()  # data stays
        body = (await api.post("/shutdown", json=task("shutdown", sha1=sha1))).json()
        assert body["result"] == "failed"

        # make it again; shutdown by URL through the grouped route; shutdownall.
        await api.post("/maketorrent", json=task("maketorrent", filename="media/2013/12/a.ts"))
        body = (await api.post("/shutdowntask", json=task("shutdown", torrentfileurl=url))).json()
        assert body["result"] == "success", body
        await api.post("/maketorrent", json=task("maketorrent", filename="media/keep.ts"))
        body = (await api.post("/shutdowntask", json=task("shutdownall"))).json()
        assert body["result"] == "success"
        assert body["event"] == "shutdownall_response"
        assert not node.engine.handles

        # delete by torrentfileurl + wwwroot: data, .torrent, empty dirs up to wwwroot.
        await api.post("/maketorrent", json=task("maketorrent", filename="media/2013/12/a.ts"))
        body = (
            await api.post("/puttask", json=task("delete", torrentfileurl=url, wwwroot=str(www)))
        ).json()
        assert body["result"] == "success", body
        assert body["event"] == "delete_response"
        assert not (www / "media" / "2013").exists()
        assert (www / "media" / "keep.ts").exists()
        assert not node.engine.handles
        # Already gone: still success.
        body = (await api.post("/delete", json=task("delete", torrentfileurl=url))).json()
        assert body["result"] == "success"
        # By absolute filename.
        full = www / "media" / "keep.ts"
        body = (await api.post("/delete", json=task("delete", filename=str(full)))).json()
        assert body["result"] == "success"
        assert not (www / "media").exists()
        assert www.exists()
