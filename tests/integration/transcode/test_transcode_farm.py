"""A server and workers as in-process mesh nodes on real TLS sockets (127.0.5.0/24)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from smartget.errors import TranscodeError
from smartget.mesh import Node
from smartget.transcode import JobParams, JobSettings, ServerApp, WorkerApp
from smartget.transcode.runner import decode_check, probe
from smartget.transcode.server import partial_path
from tests.integration.transcode.conftest import FFMPEG, node_settings

QUICK = JobParams(scale="160:120", extra=("-preset", "ultrafast"))


@contextlib.asynccontextmanager
async def farm(
    pki: Callable[[str], Path],
    root: Path,
    job: JobSettings,
    workers: dict[str, WorkerApp],
) -> AsyncIterator[ServerApp]:
    """A server node on 127.0.5.1 and one node per worker on 127.0.5.2... dialing it."""
    nodes: list[Node] = []
    try:
        server = ServerApp(job)
        node = Node(node_settings(pki("server"), root / "server", "127.0.5.1", server))
        nodes.append(node)
        await node.start()
        assert node.address is not None
        for i, (name, app) in enumerate(workers.items(), 2):
            settings = node_settings(pki(name), root / name, f"127.0.5.{i}", app, [node.address])
            nodes.append(Node(settings))
            await nodes[-1].start()
        yield server
    finally:
        # Workers first: a file still in flight to the server is then cut by a closed
        # link, not by the server's own shutdown.
        for node in reversed(nodes):
            await node.aclose()


def job_settings(root: Path, source: Path, params: JobParams = QUICK, **kw: object) -> JobSettings:
    kw.setdefault("segment_seconds", 4.0)
    kw.setdefault("worker_timeout", 3.0)
    return JobSettings(
        input=source,
        output=root / "out.mp4",
        work_dir=root / "job",
        params=params,
        ffmpeg=FFMPEG,
        **kw,  # type: ignore[arg-type]
    )


@pytest.mark.asyncio
async def test_three_workers_transcode_a_30s_video(
    pki: Callable[[str], Path], tmp_path: Path, video: Path
) -> None:
    job = job_settings(tmp_path, video)
    workers = {f"w{i}": WorkerApp("server", ffmpeg=FFMPEG, concurrency=1) for i in range(3)}
    async with farm(pki, tmp_path, job, workers) as server:
        async with asyncio.timeout(60):
            output = await server.wait()
        stats = server.statistics()
    source, result = await probe(FFMPEG, video), await probe(FFMPEG, output)
    assert abs(result.duration - source.duration) <= 0.1
    assert result.frames == source.frames == 750
    assert (result.video_streams, result.audio_streams) == (1, 1)
    await decode_check(FFMPEG, output)
    assert stats["done"] == stats["tasks"] == 9  # 8 segments of 4 s, and the audio
    assert sum(w.stats["tasks"] for w in workers.values()) >= 9
    assert sum(1 for w in workers.values() if w.stats["tasks"]) >= 2  # the work was shared
    assert not partial_path(output).exists()


@pytest.mark.asyncio
async def test_volunteer_worker_takes_the_job_from_an_offer(
    pki: Callable[[str], Path], tmp_path: Path, video: Path
) -> None:
    job = job_settings(tmp_path, video, segment_seconds=10.0, offer_interval=0.3)
    volunteer = WorkerApp(None, ffmpeg=FFMPEG, concurrency=2)  # as `mesh run --app transcode`
    async with farm(pki, tmp_path, job, {"v": volunteer}) as server:
        async with asyncio.timeout(60):
            output = await server.wait()
    assert volunteer.server == "server"
    assert volunteer.stats["tasks"] == 4
    assert (await probe(FFMPEG, output)).frames == 750


@pytest.mark.asyncio
async def test_input_that_is_not_a_video_fails_clearly(
    pki: Callable[[str], Path], tmp_path: Path
) -> None:
    bogus = tmp_path / "notes.mp4"
    bogus.write_bytes(b"this is not a video\n" * 100)
    job = job_settings(tmp_path, bogus)
    async with farm(pki, tmp_path, job, {}) as server:
        with pytest.raises(TranscodeError, match="INPUT is not a video"):
            async with asyncio.timeout(30):
                await server.wait()
    assert not job.output.exists()


@pytest.mark.asyncio
async def test_parameter_ffmpeg_rejects_fails_before_any_work(
    pki: Callable[[str], Path], tmp_path: Path, video: Path
) -> None:
    job = job_settings(tmp_path, video, JobParams(vcodec="nosuchcodec"))
    async with farm(pki, tmp_path, job, {}) as server:
        with pytest.raises(
            TranscodeError, match=r"ffmpeg rejects the job's parameters.*nosuchcodec"
        ):
            async with asyncio.timeout(30):
                await server.wait()
    assert not job.output.exists()


@pytest.mark.asyncio
async def test_worker_returning_garbage_fails_the_job_and_writes_nothing(
    pki: Callable[[str], Path], tmp_path: Path, video: Path
) -> None:
    # A "ffmpeg" that writes random bytes where the output should go.
    fake = tmp_path / "garbage-ffmpeg"
    fake.write_text(
        f"#!{sys.executable}\nimport os, sys\nopen(sys.argv[-1], 'wb').write(os.urandom(50000))\n"
    )
    fake.chmod(0o755)
    job = job_settings(tmp_path, video)
    bad = WorkerApp("server", ffmpeg=str(fake), concurrency=2, once=True)
    async with farm(pki, tmp_path, job, {"bad": bad}) as server:
        with pytest.raises(TranscodeError, match="result rejected"):
            async with asyncio.timeout(60):
                await server.wait()
        # The server tells the worker the job is over, and answers every late result.
        async with asyncio.timeout(30):
            await bad.finished.wait()
            while bad.stats["accepted"] + bad.stats["rejected"] < bad.stats["tasks"]:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
    assert bad.stats["accepted"] == 0
    assert not job.output.exists()
    assert not partial_path(job.output).exists()
