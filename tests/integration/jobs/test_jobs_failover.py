"""Issue 13: ``kill -9`` the hub that runs a push job; the job completes through another.

Two hub processes on one real redis-server, four nodes naming both hubs, real
libtorrent. The job is submitted through the hub that does *not* run the jobs (so it
goes through the request list to the one holding the fleet's lease); that hub is then
killed with SIGKILL while the copies download. The other hub takes the lease over,
loads the job from Redis and finishes it; the controller, naming both hubs, follows it
to the end and every copy is verified.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from smartget.demo import Fleet, local_fleet, make_file
from smartget.jobs_cli import follow_job
from smartget.push import FleetClient
from tests.helpers import wait_until_sync
from tests.integration.hub.redis_server import RedisServer, needs_redis

pytestmark = [pytest.mark.slow, needs_redis, pytest.mark.timeout(300)]

MiB = 1 << 20
SIZE = 24 * MiB


def hub_names(fleet: Fleet) -> dict[str, str]:
    return {url: ("hub" if i == 0 else f"hub{i + 1}") for i, url in enumerate(fleet.hub_urls)}


def runners(fleet: Fleet) -> set[str]:
    """The URLs of the hubs that say they run the jobs (their heartbeats, each second)."""
    auth = {"Authorization": f"Bearer {fleet.token}"}
    for url in fleet.hub_urls:
        try:
            stats = httpx.get(f"{url}/api/stats", headers=auth, timeout=2).json()
        except httpx.HTTPError:
            continue
        return {str(hub["http"]) for hub in stats["hubs"] if hub.get("runs_jobs")}
    return set()


def test_the_hub_running_a_push_is_killed_and_another_finishes_it(tmp_path: Path) -> None:
    make_file(tmp_path / "origin" / "big.bin", SIZE)
    redis = RedisServer(tmp_path / "redis").start()
    try:
        with local_fleet(
            tmp_path,
            nodes=4,
            hubs=2,
            ip_prefix="127.0.21",
            ip_base=40,
            upload_limit=4 * MiB,  # the copies take seconds: time to kill the runner
            hub_args=("--state", redis.url),
        ) as fleet:
            wait_until_sync(lambda: len(runners(fleet)) == 1, 30, "a hub running the jobs")
            (leader,) = runners(fleet)
            other = next(u for u in fleet.hub_urls if u != leader)
            view = asyncio.run(_push_and_kill(fleet, leader, other))
            assert view["state"] == "done", view
            assert len(view["nodes"]) == 4
            assert all(n["state"] == "done" for n in view["nodes"]), view["nodes"]
            assert all(c["verified"] for n in view["nodes"] for c in n["files"])
            wait_until_sync(lambda: runners(fleet) == {other}, 15, "the other hub runs the jobs")
            events = [
                e["text"] for e in _get(fleet, other, f"/api/jobs/{view['id']}/events")["events"]
            ]
            assert any("queued" in text for text in events), events
    finally:
        redis.stop()


def _get(fleet: Fleet, url: str, path: str) -> Any:
    auth = {"Authorization": f"Bearer {fleet.token}"}
    return httpx.get(url + path, headers=auth, timeout=10).json()


async def _push_and_kill(fleet: Fleet, leader: str, other: str) -> dict[str, Any]:
    # The controller names the hub that does not run the jobs first: the job goes
    # through the request list; then both, so it follows through whichever answers.
    client = FleetClient([other, leader], fleet.token, fleet.token, 30)
    try:
        body = {"urls": [fleet.file_url("big.bin")], "deadline": 240}
        job = await client.hub("POST", "/api/jobs", json=body)
        job_id = job["id"]
        seen: dict[str, Any] = {}

        def downloading(view: dict[str, Any]) -> None:
            seen.update(view)

        async def copies_underway() -> None:
            while True:
                view = await client.hub("GET", f"/api/jobs/{job_id}")
                copies = [c for n in view["nodes"] if n["role"] != "seed" for c in n["files"]]
                if any(0 < c["percent"] < 100 for c in copies):
                    return
                assert view["state"] not in ("done", "failed", "partial", "cancelled"), view
                await asyncio.sleep(0.2)  # pacing the look at the job, not a wait for a state

        await asyncio.wait_for(copies_underway(), 120)
        fleet.kill(hub_names(fleet)[leader])  # SIGKILL: no goodbye, the lease lapses
        return await follow_job(client, job_id, downloading, within=240)
    finally:
        await client.aclose()
