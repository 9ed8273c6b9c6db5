"""A download task's ``upload_limit`` caps that torrent's upload on the node (a job's
per-node rate limit, issue 15), on top of the node's own ``--upload-limit``."""

from __future__ import annotations

from pathlib import Path

import pytest

from smartget.errors import TaskError
from smartget.node.tasks import parse_task

from .conftest import node_settings, random_file, started, task


@pytest.mark.asyncio
async def test_a_download_task_caps_its_torrents_upload(
    tmp_path: Path, origin: tuple[Path, str]
) -> None:
    origin_dir, origin_url = origin
    random_file(origin_dir / "a.bin", 300_000)
    async with started(node_settings(tmp_path, "127.0.3.90")) as (_, seed_api):
        made = (
            await seed_api.post(
                "/maketorrent", json=task("maketorrent", fileurl=f"{origin_url}/a.bin")
            )
        ).json()
        assert made["result"] == "success", made
        url, sha1 = made["args"]["torrentfileurl"], made["args"]["sha1"]
        async with started(node_settings(tmp_path, "127.0.3.91")) as (peer, peer_api):
            body = task("download", torrentfileurl=url, upload_limit="2MiB/s")
            answer = (await peer_api.post("/download", json=body)).json()
            assert answer["result"] == "success", answer
            assert peer.engine.upload_limit(sha1) == 2 * 1024 * 1024


@pytest.mark.parametrize("bad", ["fast", -1, True, [1], 2**41])
def test_a_bad_upload_limit_is_a_task_error(bad: object) -> None:
    body = {
        "event": "download",
        "taskid": "t",
        "args": {"torrentfileurl": "x", "upload_limit": bad},
    }
    with pytest.raises(TaskError, match="upload_limit"):
        parse_task(body, now=0)
