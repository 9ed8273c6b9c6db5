"""A download task's ``expire`` over real HTTP and real libtorrent: a download that cannot
finish is stopped at its deadline (data kept, reported ``expired``), a completed one
keeps seeding past it, the same torrent downloads again, and the deadline survives a
``kill -9`` (one that fell while the node was down is enforced at start)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from smartget.net import free_port
from smartget.node.files import create_files_app
from smartget.node.maker import make_torrent
from smartget.node.tasks import EXPIRED
from tests.helpers import wait_until

from .conftest import (
    AUTH,
    TOKEN,
    node_settings,
    random_file,
    serve,
    started,
    task,
)

pytestmark = pytest.mark.asyncio

ORIGIN = "127.0.3.150"
NODE = "127.0.3.151"
RESTARTED = "127.0.3.152"
RATE = 250_000  # bytes/s the downloading node may take: a 4 MB file needs 16 s


class Collector:
    """Records status reports; answers success to every one."""

    def __init__(self) -> None:
        self.reports: list[dict[str, Any]] = []

    def app(self) -> Starlette:
        async def report(request: Request) -> Response:
            self.reports.append(json.loads(await request.body()))
            return JSONResponse({"result": "success"})

        return Starlette(routes=[Route("/report_peerstatus", report, methods=["POST"])])

    def of(self, sha1: str) -> list[dict[str, Any]]:
        return [r for r in self.reports if r["args"]["sha1"] == sha1]


@contextlib.asynccontextmanager
async def origin_with(tmp: Path, **sizes: int) -> AsyncIterator[tuple[str, dict[str, str]]]:
    """An origin on ORIGIN serving files and their .torrents (the origin as web seed);
    yields (base URL, name -> torrent URL)."""
    root = tmp / "origin"
    root.mkdir()
    async with serve(create_files_app(root), ORIGIN) as url:
        urls = {}
        for name, size in sizes.items():
            path = random_file(root / "media" / f"{name}.bin", size)
            made = make_torrent(path, web_seeds=[f"{url}/media/{name}.bin"])
            path.with_name(f"{name}.bin.torrent").write_bytes(made.data)
            urls[name] = f"{url}/media/{name}.bin.torrent"
        yield url, urls


def expired_at(caplog: pytest.LogCaptureFixture, sha1: str) -> float:
    """When the node logged that ``sha1`` expired (the moment it stopped it)."""
    (record,) = [r for r in caplog.records if r.getMessage().startswith(f"download {sha1} (")]
    return record.created


def download(url: str, expire: float | str = "", taskid: str = "t1") -> dict[str, Any]:
    return task("download", taskid, torrentfileurl=url) | {"expire": expire}


async def test_deadline_stops_an_unfinished_download_and_spares_a_finished_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="smartget.node.agent")
    collector = Collector()
    async with (
        origin_with(tmp_path, big=4_000_000, small=100_000) as (_, urls),
        serve(collector.app(), ORIGIN) as collector_url,
    ):
        settings = node_settings(
            tmp_path,
            NODE,
            download_limit=RATE,
            report_url=(f"{collector_url}/report_peerstatus",),
            report_interval=0.5,
        )
        async with started(settings) as (node, api):
            deadline = time.time() + 3.0
            big = (await api.post("/download", json=download(urls["big"], deadline))).json()
            small = (await api.post("/download", json=download(urls["small"], deadline))).json()
            assert big["result"] == small["result"] == "success", (big, small)
            assert big["status"] == "Initial startup"
            big_sha1, small_sha1 = big["args"]["sha1"], small["args"]["sha1"]
            assert node.agent.state.get(big_sha1).expire_at == deadline  # type: ignore[union-attr]
            await wait_until(
                lambda: small_sha1 in node.engine.complete, within=10, what="small complete"
            )
            assert node.agent.state.get(small_sha1).expire_at is None  # type: ignore[union-attr]

            # Running until the deadline, stopped right after it.
            await wait_until(
                lambda: bool(node.agent.state.get(big_sha1).expired),  # type: ignore[union-attr]
                within=8,
                what="big expired",
            )
            assert deadline <= expired_at(caplog, big_sha1) < deadline + 2.0
            assert big_sha1 not in node.engine.handles
            record = node.agent.state.get(big_sha1)
            assert record is not None
            figures = record.expired_figures()
            assert 0.0 < figures["percent"] < 100.0, figures
            # Partial data and .torrent kept.
            assert await asyncio.to_thread(Path(record.data_path).exists)
            assert await asyncio.to_thread(Path(record.torrentfile).exists)
            assert f"download {big_sha1} (task 't1') expired at" in caplog.text

            # The last report says expired; acknowledged, it ends reporting.
            await wait_until(
                lambda: any(r["status"] == EXPIRED for r in collector.of(big_sha1)),
                within=5,
                what="the expired report",
            )
            last = collector.of(big_sha1)[-1]
            assert last["status"] == EXPIRED
            assert last["event"] == "status_response"
            assert float(last["args"]["percent"]) == pytest.approx(figures["percent"])
            # GET /status still lists it, as expired.
            listed = (await api.get("/status")).json()["torrents"]
            [shown] = [t for t in listed if t["sha1"] == big_sha1]
            assert shown["status"] == EXPIRED
            assert shown["percent"] == pytest.approx(figures["percent"])
            assert last["args"]["torrentfile"] == "big.bin.torrent"
            await wait_until(
                lambda: node.agent.state.get(big_sha1).report_done,  # type: ignore[union-attr]
                within=5,
                what="reporting ended",
            )

            # The completed one keeps seeding past the deadline.
            assert small_sha1 in node.engine.handles
            assert node.engine.status(small_sha1).status == "seeding"
            assert not node.agent.state.get(small_sha1).expired  # type: ignore[union-attr]

            # A new task downloads it again, going on from the partial data kept.
            again = (await api.post("/download", json=download(urls["big"], taskid="t2"))).json()
            assert again["result"] == "success", again
            assert "already" not in again["args"]
            assert big_sha1 in node.engine.handles
            record = node.agent.state.get(big_sha1)
            assert record is not None
            assert not record.expired
            assert record.expire_at is None
            assert record.taskid == "t2"
            await wait_until(
                lambda: node.engine.status(big_sha1).percent >= figures["percent"],
                within=10,
                what="partial data rechecked",
            )
            assert node.engine.status(big_sha1).downtotal < figures["downtotal"]
            count = len(collector.of(big_sha1))
            await wait_until(
                lambda: len(collector.of(big_sha1)) > count, within=5, what="reports again"
            )
            assert collector.of(big_sha1)[-1]["status"] != EXPIRED
            assert node.agent.statistics()["expired"] == 1
            assert node.agent.statistics()["deadlines"] == 0


async def test_repeated_task_keeps_the_later_deadline(tmp_path: Path) -> None:
    async with (
        origin_with(tmp_path, big=4_000_000) as (_, urls),
        started(node_settings(tmp_path, "127.0.3.153", download_limit=RATE)) as (node, api),
    ):
        soon = time.time() + 60
        first = (await api.post("/download", json=download(urls["big"], soon))).json()
        sha1 = first["args"]["sha1"]
        for expire, expected in ((soon - 30, soon), (soon + 30, soon + 30), ("", None)):
            body = (await api.post("/download", json=download(urls["big"], expire))).json()
            assert body["args"]["already"] is True
            assert node.agent.state.get(sha1).expire_at == expected  # type: ignore[union-attr]
            assert node.agent.deadlines.get(sha1) == expected
        # Unbounded now: a later deadline does not bound it again.
        await api.post("/download", json=download(urls["big"], soon))
        assert node.agent.deadlines.get(sha1) is None
        body = (await api.post("/shutdown", json=task("shutdown", sha1=sha1))).json()
        assert body["result"] == "success"
        assert len(node.agent.deadlines) == 0


@contextlib.asynccontextmanager
async def node_process(tmp: Path, port: int) -> AsyncIterator[asyncio.subprocess.Process]:
    command = [
        sys.executable, "-m", "smartget", "node",
        "--ip", RESTARTED, "--zone", "beijing",
        "--wwwroot", str(tmp / RESTARTED / "www"), "--data-dir", str(tmp / RESTARTED / "data"),
        "--api", f"{RESTARTED}:{port}", "--files", f"{RESTARTED}:0", "--bt-port", "0",
        "--fetch-allow", "127.0.0.0/8", "--log-level", "warning", "--webseed-fallback", "0",
        "--download-limit", str(RATE),
    ]  # fmt: skip
    log = (tmp / "node.log").open("ab")
    env = {**os.environ, "SMARTGET_NODE_TOKEN": TOKEN}  # secrets by environment, not argv
    proc = await asyncio.create_subprocess_exec(*command, stdout=log, stderr=log, env=env)
    try:
        async with httpx.AsyncClient() as client:

            async def up() -> bool:
                assert proc.returncode is None, (tmp / "node.log").read_text()
                with contextlib.suppress(httpx.HTTPError):
                    reply = await client.get(f"http://{RESTARTED}:{port}/ping", headers=AUTH)
                    return reply.text == "PONG"
                return False

            await wait_until(up, within=30, what="the node process")
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        log.close()


@pytest.mark.slow
async def test_deadlines_survive_kill_9(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="smartget.node.agent")
    collector = Collector()
    port = free_port(RESTARTED)
    async with (
        origin_with(tmp_path, early=4_000_000, late=4_000_000) as (_, urls),
        serve(collector.app(), ORIGIN) as collector_url,
    ):
        async with (
            node_process(tmp_path, port) as proc,
            httpx.AsyncClient(base_url=f"http://{RESTARTED}:{port}", headers=AUTH) as api,
        ):
            start = time.time()
            early = (await api.post("/download", json=download(urls["early"], start + 4))).json()
            late = (await api.post("/download", json=download(urls["late"], start + 9))).json()
            assert early["result"] == late["result"] == "success", (early, late)
            resume = tmp_path / RESTARTED / "data" / "resume" / f"{early['args']['sha1']}.resume"
            data = Path(early["args"]["filename"])
            await wait_until(resume.exists, within=2, what="resume data")
            await wait_until(data.exists, within=2, what="partial data on disk")
            os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()
            assert time.time() < start + 3.5, "too slow to kill it before the early deadline"
        # The early deadline falls while the node is down.
        await wait_until(lambda: time.time() > start + 4.2, within=6, what="the clock")

        settings = node_settings(
            tmp_path,
            RESTARTED,
            download_limit=RATE,
            report_url=(f"{collector_url}/report_peerstatus",),
            report_interval=0.5,
        )
        async with started(settings) as (node, _):
            early_sha1, late_sha1 = early["args"]["sha1"], late["args"]["sha1"]
            # Enforced at start: never added back.
            assert "s ago, while the node was down)" in caplog.text
            record = node.agent.state.get(early_sha1)
            assert record is not None
            assert record.expired
            assert early_sha1 not in node.engine.handles
            assert not await asyncio.to_thread(resume.exists)
            assert await asyncio.to_thread(data.exists)
            assert data == Path(record.data_path)
            # The other one runs again, with its deadline as the task gave it.
            assert late_sha1 in node.engine.handles
            assert node.agent.deadlines.get(late_sha1) == pytest.approx(start + 9)
            await wait_until(
                lambda: any(r["status"] == EXPIRED for r in collector.of(early_sha1)),
                within=5,
                what="the early expired report",
            )
            await wait_until(
                lambda: bool(node.agent.state.get(late_sha1).expired),  # type: ignore[union-attr]
                within=12,
                what="late expired",
            )
            assert late_sha1 not in node.engine.handles
            assert start + 9 <= expired_at(caplog, late_sha1) < start + 11
            await wait_until(
                lambda: any(r["status"] == EXPIRED for r in collector.of(late_sha1)),
                within=5,
                what="the late expired report",
            )
            assert float(collector.of(late_sha1)[-1]["args"]["percent"]) > 0.0
