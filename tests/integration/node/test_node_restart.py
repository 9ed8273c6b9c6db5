"""``kill -9`` a node mid-download, restart it: the download resumes without a recheck
and completes with the right hash; its tasks survive."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from asyncio.subprocess import Process
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from smartget.net import free_port
from tests.helpers import stop_process, wait_until

from .conftest import (
    AUTH,
    TOKEN,
    node_settings,
    random_file,
    sha256,
    started,
    task,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

IP = "127.0.3.31"


@contextlib.asynccontextmanager
async def node_process(tmp: Path, port: int, *extra: str) -> AsyncIterator[Process]:
    command = [
        sys.executable, "-m", "smartget", "node",
        "--ip", IP, "--zone", "beijing",
        "--wwwroot", str(tmp / "b" / "www"), "--data-dir", str(tmp / "b" / "data"),
        "--api", f"{IP}:{port}", "--files", f"{IP}:0", "--bt-port", "0",
        "--fetch-allow", "127.0.0.0/8", "--log-level", "warning", "--webseed-fallback", "0", *extra,
    ]  # fmt: skip
    log = (tmp / "b.log").open("ab")
    env = {**os.environ, "SMARTGET_NODE_TOKEN": TOKEN}  # secrets by environment, not argv
    proc = await asyncio.create_subprocess_exec(*command, stdout=log, stderr=log, env=env)
    try:
        async with httpx.AsyncClient() as client:

            async def up() -> bool:
                assert proc.returncode is None, (tmp / "b.log").read_text()
                with contextlib.suppress(httpx.HTTPError):
                    return (
                        await client.get(f"http://{IP}:{port}/ping", headers=AUTH)
                    ).text == "PONG"
                return False

            await wait_until(up, within=30, what="the node process")
        yield proc
    finally:
        await stop_process(proc, within=20)
        log.close()


async def test_kill_9_mid_download_resumes(tmp_path: Path, origin: tuple[Path, str]) -> None:
    origin_dir, origin_url = origin
    random_file(origin_dir / "video" / "big.ts", 12_000_000)
    port = free_port(IP)
    base = f"http://{IP}:{port}"
    async with started(node_settings(tmp_path, "127.0.3.30")) as (_, seed_api):
        made = (
            await seed_api.post(
                "/maketorrent", json=task("maketorrent", fileurl=f"{origin_url}/video/big.ts")
            )
        ).json()
        assert made["result"] == "success", made
        sha1 = made["args"]["sha1"]
        local = Path(made["args"]["filename"])
        async with httpx.AsyncClient(base_url=base, headers=AUTH, timeout=30) as api:

            async def percent() -> float:
                torrents = (await api.get("/status")).json()["torrents"]
                return float(torrents[0]["percent"]) if torrents else -1.0

            # 1 MiB/s from the web seed (the origin): about 12 s for the whole file.
            async with node_process(tmp_path, port, "--download-limit", "1MiB/s") as proc:
                body = (
                    await api.post(
                        "/download",
                        json=task("download", torrentfileurl=made["args"]["torrentfileurl"]),
                    )
                ).json()
                assert body["result"] == "success", body

                async def far_enough() -> bool:
                    return await percent() >= 30.0

                await wait_until(far_enough, within=40, what="30% downloaded")
                resume = tmp_path / "b" / "data" / "resume" / f"{sha1}.resume"
                await wait_until(resume.exists, within=10, what="resume data")
                os.kill(proc.pid, signal.SIGKILL)
                await proc.wait()
            assert await asyncio.to_thread(resume.exists)

            async with node_process(tmp_path, port):
                # Restored from the state and the resume data: progress is back at once.
                async def resumed() -> bool:
                    return await percent() > 0.0

                await wait_until(resumed, within=3, what="progress restored")
                metrics = (await api.get("/metrics")).text
                assert "smartget_node_resume_rejected 0.0" in metrics
                assert "smartget_node_torrents 1.0" in metrics

                async def done() -> bool:
                    return await percent() == 100.0

                await wait_until(done, within=60, what="completion after restart")
                data = tmp_path / "b" / "www" / "video" / "big.ts"
                assert sha256(data) == sha256(local)
                status = (await api.get("/status")).json()["torrents"][0]
                assert status["status"] == "seeding"
