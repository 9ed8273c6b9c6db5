"""Interop with Debian's aria2c and mktorrent (issue 4): a torrent the node made downloads
completely in aria2c, and the node downloads a torrent made by mktorrent and seeded by
aria2c. A minimal tracker on 127.0.3.1 introduces them (no DHT, no LSD)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from asyncio.subprocess import Process
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from smartget.net import free_port
from smartget.node.files import create_files_app
from tests.helpers import stop_process, wait_until
from tests.integration.node.conftest import (
    Tracker,
    node_settings,
    random_file,
    serve,
    sha256,
    started,
    task,
)

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.interop,
    pytest.mark.skipif(
        shutil.which("aria2c") is None or shutil.which("mktorrent") is None,
        reason="needs Debian's aria2 and mktorrent (apt-get install aria2 mktorrent)",
    ),
]

ARIA_IP = "127.0.3.41"


@contextlib.asynccontextmanager
async def aria2c(tmp: Path, torrent: Path, directory: Path, *extra: str) -> AsyncIterator[Process]:
    log = (tmp / "aria2c.log").open("ab")
    command = [
        "aria2c", "--no-conf", "--quiet=true", "--console-log-level=warn",
        f"--interface={ARIA_IP}", f"--listen-port={free_port(ARIA_IP)}",
        "--enable-dht=false", "--enable-dht6=false", "--bt-enable-lpd=false",
        "--enable-peer-exchange=false", "--file-allocation=none",
        "--bt-tracker-interval=1", "--bt-stop-timeout=60",
        f"--dir={directory}", *extra, str(torrent),
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(*command, stdout=log, stderr=log)
    try:
        yield proc
    finally:
        await stop_process(proc)
        log.close()


async def test_aria2c_downloads_a_torrent_the_node_made(tmp_path: Path) -> None:
    tracker = Tracker()
    async with serve(tracker.app()) as tracker_url:
        settings = node_settings(tmp_path, "127.0.3.40", trackers=(f"{tracker_url}/announce",))
        async with started(settings) as (node, api):
            source = random_file(node.settings.wwwroot / "v" / "clip.ts", 4_500_000)
            made = (
                await api.post("/maketorrent", json=task("maketorrent", filename="v/clip.ts"))
            ).json()
            assert made["result"] == "success", made
            # The node announces first, so aria2c hears of it.
            await wait_until(lambda: tracker.announces >= 1, within=15, what="node's announce")
            out = tmp_path / "aria2"
            out.mkdir()
            async with aria2c(
                tmp_path, Path(made["args"]["torrentfile"]), out, "--seed-time=0"
            ) as proc:
                await asyncio.wait_for(proc.wait(), 60)
            assert proc.returncode == 0, (tmp_path / "aria2c.log").read_text()
            assert sha256(out / "clip.ts") == sha256(source)


async def test_node_downloads_mktorrent_torrent_seeded_by_aria2c(tmp_path: Path) -> None:
    tracker = Tracker()
    async with serve(tracker.app()) as tracker_url:
        origin = tmp_path / "origin"
        source = random_file(origin / "pkg" / "data.bin", 3_300_000)
        torrent = origin / "pkg" / "data.bin.torrent"
        made = await asyncio.create_subprocess_exec(
            "mktorrent", "-a", f"{tracker_url}/announce", "-l", "16",
            "-o", str(torrent), str(source),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await made.communicate()
        assert made.returncode == 0, err
        async with (
            aria2c(tmp_path, torrent, source.parent, "--check-integrity=true", "--seed-ratio=0.0"),
            serve(create_files_app(origin)) as origin_url,
        ):
            await wait_until(lambda: tracker.announces >= 1, within=20, what="aria2c's announce")
            async with started(node_settings(tmp_path, "127.0.3.42")) as (node, api):
                body = (
                    await api.post(
                        "/download",
                        json=task("download", torrentfileurl=f"{origin_url}/pkg/data.bin.torrent"),
                    )
                ).json()
                assert body["result"] == "success", body
                await node.engine.wait_complete(body["args"]["sha1"], 60)
                assert sha256(node.settings.wwwroot / "pkg" / "data.bin") == sha256(source)
