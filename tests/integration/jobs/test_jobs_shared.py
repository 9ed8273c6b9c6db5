"""Issue 13: push jobs on Redis, served by every hub, run by the one holding the lease.

Two hubs in this loop on one real redis-server. What changes a job (a submit, a cancel)
sent to the hub that does not run the jobs goes through the request list to the one
that does; every read answers the same through either hub.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from smartget.hub.app import Hub, running
from smartget.hub.jobs.shared import InboxFull, SharedJobs
from tests.helpers import wait_until
from tests.integration.hub.conftest import TOKEN
from tests.integration.hub.redis_server import RedisServer, needs_redis, running_redis
from tests.integration.hub.test_state_redis import redis_settings

pytestmark = [pytest.mark.asyncio, needs_redis]

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def redis_server(tmp_path: Path) -> Any:
    with running_redis(tmp_path / "redis") as server:
        yield server


@contextlib.asynccontextmanager
async def two_hubs(url: str, base: Path) -> AsyncIterator[tuple[Hub, Hub]]:
    """(the hub running the jobs, the other one)"""
    async with (
        running(redis_settings(base / "a", url)) as a,
        running(redis_settings(base / "b", url)) as b,
    ):
        await wait_until(lambda: a.jobs.leading or b.jobs.leading, within=15, what="a leader")
        yield (a, b) if a.jobs.leading else (b, a)


async def test_a_job_given_to_the_other_hub_runs_and_reads_the_same_everywhere(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    async with (
        two_hubs(redis_server.url, tmp_path) as (leader, other),
        httpx.AsyncClient(headers=AUTH, timeout=10) as http,
    ):
        assert not other.jobs.leading
        body = {"urls": ["http://127.0.49.20:9/a.bin"]}  # no node: it fails at its start
        reply = await http.post(f"{other.http_url}/api/jobs", json=body)
        assert reply.status_code == 201, reply.text
        job_id = reply.json()["id"]
        # At once, through either hub (the record is written before the answer).
        for hub in (leader, other):
            shown = await http.get(f"{hub.http_url}/api/jobs/{job_id}")
            assert shown.status_code == 200, shown.text

        async def ended() -> bool:
            view = (await http.get(f"{other.http_url}/api/jobs/{job_id}")).json()
            return bool(view["state"] == "failed")

        await wait_until(ended, within=10, what="the leader ran the job")
        views = [
            (await http.get(f"{hub.http_url}/api/jobs/{job_id}")).json() for hub in (leader, other)
        ]
        assert views[0] == views[1]
        assert "no live node" in views[0]["reason"]
        listed = [(await http.get(f"{h.http_url}/api/jobs")).json() for h in (leader, other)]
        assert [j["id"] for j in listed[0]] == [j["id"] for j in listed[1]] == [job_id]
        events = (
            await http.get(f"{other.http_url}/api/jobs/{job_id}/events", params={"after": 0})
        ).json()
        assert [e["kind"] for e in events["events"]][:1] == ["queued"]
        assert events["state"] == "failed"
        missing = await http.get(f"{other.http_url}/api/jobs/nosuchjob")
        assert missing.status_code == 404


async def test_a_cancel_through_the_other_hub(redis_server: RedisServer, tmp_path: Path) -> None:
    async with (
        two_hubs(redis_server.url, tmp_path) as (leader, other),
        httpx.AsyncClient(headers=AUTH, timeout=10) as http,
    ):
        # A node whose task API never answers: the job runs, retrying its seed.
        node = {"port": 9, "ip": "127.0.49.21", "api_url": "http://127.0.49.21:9"}
        assert (await http.post(f"{leader.http_url}/api/nodes", json=node)).status_code == 201
        body = {"urls": ["http://127.0.49.20:9/a.bin"], "attempts": 10}
        job_id = (await http.post(f"{leader.http_url}/api/jobs", json=body)).json()["id"]
        await wait_until(
            lambda: leader.jobs.book.get(job_id).state.value == "running",
            within=10,
            what="the job running",
        )
        cancelled = await http.post(f"{other.http_url}/api/jobs/{job_id}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["state"] == "cancelled"
        assert leader.jobs.book.get(job_id).state.value == "cancelled"


async def test_the_request_list_is_bounded(redis_server: RedisServer) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis(host=redis_server.host, port=redis_server.port)
    try:
        shared = SharedJobs(client, "sg:{test}:", max_events=10, max_requests=3)
        for n in range(3):
            await shared.request({"op": "cancel", "id": str(n)})
        with pytest.raises(InboxFull, match="try again"):
            await shared.request({"op": "cancel", "id": "3"})
        assert [r["id"] for r in await shared.take_requests()] == ["0", "1", "2"]
        await shared.request({"op": "cancel", "id": "4"})  # room again
    finally:
        await client.aclose()
