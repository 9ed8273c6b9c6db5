"""Push jobs in the hub (issue 15): a real hub, real nodes, real libtorrent, on 127.0.2x.x."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from smartget.demo import Fleet, _start, _wait, local_fleet, make_file
from tests.helpers import wait_until_sync

pytestmark = [pytest.mark.slow]

MiB = 1 << 20


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Api:
    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.auth = {"Authorization": f"Bearer {fleet.token}"}

    def post(self, path: str, body: Any = None, code: int = 200) -> Any:
        reply = httpx.post(self.fleet.hub_url + path, json=body, headers=self.auth, timeout=10)
        assert reply.status_code == code, reply.text
        return reply.json()

    def get(self, path: str, **params: Any) -> Any:
        reply = httpx.get(self.fleet.hub_url + path, params=params, headers=self.auth, timeout=70)
        reply.raise_for_status()
        return reply.json()

    def job(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = self.get(f"/api/jobs/{job_id}")
        return job

    def wait_state(self, job_id: str, states: tuple[str, ...], within: float) -> dict[str, Any]:
        seen: dict[str, Any] = {}

        def reached() -> bool:
            with_retries = self.job(job_id)
            seen.update(with_retries)
            return with_retries["state"] in states

        wait_until_sync(reached, within, f"job {job_id} in {states} (last: {seen.get('state')})")
        return seen


def smartget(
    *args: str, env: dict[str, str], timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "smartget", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env},
    )


@pytest.fixture
def fleet4(tmp_path: Path) -> Iterator[Fleet]:
    for name in ("a.bin", "b.bin", "c.bin"):
        make_file(tmp_path / "origin" / "set" / name, 3 * MiB)
    # Caps, so the downloads last long enough for the peers' counters to be read.
    with local_fleet(
        tmp_path, nodes=4, ip_prefix="127.0.20", ip_base=10, upload_limit=4 * MiB
    ) as fleet:
        yield fleet


def test_three_files_to_four_nodes_verifies_twelve_copies(fleet4: Fleet, tmp_path: Path) -> None:
    origin = tmp_path / "origin" / "set"
    manifest = tmp_path / "manifest.txt"
    manifest.write_text(
        "# a release\n"
        + "".join(
            f"{fleet4.file_url('set/' + n)} {sha256(origin / n)}\n" for n in ("a.bin", "b.bin")
        )
        + f"{fleet4.file_url('set/c.bin')}\n"
    )
    env = {"SMARTGET_HUB_TOKEN": fleet4.token}
    proc = smartget("push", "--manifest", str(manifest), "--hub-http", fleet4.hub_url, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    api = Api(fleet4)
    (listed,) = api.get("/api/jobs")
    job = api.job(listed["id"])
    assert job["state"] == "done"
    assert [f["url"].rsplit("/", 1)[1] for f in job["files"]] == ["a.bin", "b.bin", "c.bin"]
    copies = [c for n in job["nodes"] for c in n["files"]]
    assert len(copies) == 12
    assert all(c["state"] == "done" and c["verified"] for c in copies)
    for i in range(4):
        for name in ("a.bin", "b.bin", "c.bin"):
            assert sha256(tmp_path / f"node{i + 1}" / "www" / "set" / name) == sha256(origin / name)
    # Where the bytes came from: pipelined, every node fetched its stripe of each file from
    # the origin (each byte once in all) while it got the rest from the others.
    assert all(f["striped"] and f["pipelined"] for f in job["files"])
    assert job["nodes"][0]["role"] == "seed"
    origin_total = sum(n["bytes"]["origin"] for n in job["nodes"])
    assert 9 * MiB <= origin_total <= 1.1 * 9 * MiB, job["nodes"]
    for n in job["nodes"]:
        from_peers = n["bytes"]["peer_same_zone"] + n["bytes"]["peer_other_zone"]
        assert n["bytes"]["origin"] > 0, n
        assert from_peers > 0, n
    assert "c.bin" in proc.stdout
    assert f"job {job['id']}: done" in proc.stdout
    shown = smartget("jobs", "show", job["id"], "--hub-http", fleet4.hub_url, env=env)
    assert shown.returncode == 0
    assert "b.bin" in shown.stdout
    metrics = httpx.get(f"{fleet4.hub_url}/metrics", timeout=5).text
    assert 'smartget_job_bytes_total{source="origin"}' in metrics
    assert 'smartget_job_outcomes_total{state="done"} 1.0' in metrics


def test_a_job_survives_its_controller_and_the_hubs_kill_9(tmp_path: Path) -> None:
    make_file(tmp_path / "origin" / "big.bin", 24 * MiB)
    # Slow uploads, so the job is still running when its controller and the hub die; an
    # origin without torrents, so the stripes are fetched first (the pipelined path is
    # the other tests').
    with local_fleet(
        tmp_path,
        nodes=3,
        ip_prefix="127.0.21",
        ip_base=10,
        upload_limit=2 * MiB,
        origin_args=("--no-torrents",),
    ) as fleet:
        env = {"SMARTGET_HUB_TOKEN": fleet.token}
        controller = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "smartget",
                "push",
                fleet.file_url("big.bin"),
                "--hub-http",
                fleet.hub_url,
            ],
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        api = Api(fleet)
        wait_until_sync(lambda: bool(api.get("/api/jobs")), 30, "the job submitted")
        job_id = api.get("/api/jobs")[0]["id"]
        api.wait_state(job_id, ("running",), 30)
        wait_until_sync(
            lambda: any(
                c["state"] == "downloading" for n in api.job(job_id)["nodes"] for c in n["files"]
            ),
            60,
            "downloads under way",
        )
        controller.send_signal(signal.SIGKILL)
        controller.wait(timeout=10)
        fleet.kill("hub")  # SIGKILL mid-job
        argv = [
            sys.executable,
            "-m",
            "smartget",
            "hub",
            "--listen",
            f"127.0.0.1:{_port_of(fleet, 'listen')}",
            "--http",
            fleet.hub_url.removeprefix("http://"),
            "--data-dir",
            str(tmp_path / "hub"),
            "--tracker-interval",
            "5",
            "--log-level",
            "info",
        ]
        fleet.procs["hub"] = _start(
            argv,
            tmp_path / "logs" / "hub2.log",
            {"SMARTGET_HUB_TOKEN": fleet.token, "SMARTGET_NODE_TOKEN": fleet.token},
        )
        _wait(
            "the hub again",
            lambda: httpx.get(f"{fleet.hub_url}/healthz", timeout=1).is_success,
            fleet.procs,
        )
        job = api.wait_state(job_id, ("done", "partial", "failed"), 150)
        assert job["state"] == "done", job
        events = api.get(f"/api/jobs/{job_id}/events", after=0)["events"]
        assert events[0]["kind"] == "queued"
        assert events[-1]["kind"] == "ended"
        (unpipelined,) = [e for e in events if e["kind"] == "unpipelined"]
        assert "HTTP 404" in unpipelined["text"]
        assert [e for e in events if e["kind"] == "striped"]
    for i in range(3):
        assert sha256(tmp_path / f"node{i + 1}" / "www" / "big.bin") == sha256(
            tmp_path / "origin" / "big.bin"
        )


def _port_of(fleet: Fleet, what: str) -> int:
    """The text protocol port local_fleet gave the hub (from its command line)."""
    argv = fleet.procs["hub"].args
    assert isinstance(argv, list)
    return int(str(argv[argv.index("--" + what) + 1]).rsplit(":", 1)[1])


def test_a_node_that_fails_twice_leaves_the_job_partial(tmp_path: Path) -> None:
    make_file(tmp_path / "origin" / "p.bin", 24 * MiB)
    with local_fleet(
        tmp_path, nodes=3, ip_prefix="127.0.22", ip_base=10, upload_limit=2 * MiB
    ) as fleet:
        api = Api(fleet)
        job = api.post(
            "/api/jobs", {"urls": [fleet.file_url("p.bin")], "seed": fleet.node_ips[0]}, code=201
        )
        assert job["state"] == "queued"
        victim = f"zone-a_{fleet.node_ips[2]}"

        def downloading() -> bool:
            node = next(n for n in api.job(job["id"])["nodes"] if n["nodeid"] == victim)
            return node["files"][0]["state"] == "downloading"

        wait_until_sync(downloading, 60, "the victim downloading")
        fleet.kill("node3")
        ended = api.wait_state(job["id"], ("done", "partial", "failed"), 120)
        assert ended["state"] == "partial"
        node = next(n for n in ended["nodes"] if n["nodeid"] == victim)
        assert node["state"] == "failed"
        assert "failed 2 times" in node["reason"]
        assert "stopped answering" in node["reason"]
        others = [n for n in ended["nodes"] if n["nodeid"] != victim]
        assert all(n["state"] == "done" for n in others)
        env = {"SMARTGET_HUB_TOKEN": fleet.token}
        proc = smartget("jobs", "follow", job["id"], "--hub-http", fleet.hub_url, env=env)
        assert proc.returncode == 1
        assert "ended partial" in proc.stderr
        assert victim in proc.stderr


def test_cancel_stops_downloads_on_every_node(tmp_path: Path) -> None:
    make_file(tmp_path / "origin" / "x.bin", 32 * MiB)
    with local_fleet(
        tmp_path, nodes=3, ip_prefix="127.0.23", ip_base=10, upload_limit=1 * MiB
    ) as fleet:
        api = Api(fleet)
        job = api.post(
            "/api/jobs", {"urls": [fleet.file_url("x.bin")], "seed": fleet.node_ips[0]}, code=201
        )

        def all_downloading() -> bool:
            nodes = api.job(job["id"])["nodes"]
            return len(nodes) == 3 and all(
                n["files"][0]["state"] == "downloading" for n in nodes[1:]
            )

        wait_until_sync(all_downloading, 60, "downloads under way")
        sha1 = api.job(job["id"])["files"][0]["sha1"]
        cancelled = api.post(f"/api/jobs/{job['id']}/cancel")
        assert cancelled["state"] == "cancelled"

        def stopped_everywhere() -> bool:
            for ip in fleet.node_ips[1:]:
                status = httpx.get(f"http://{ip}:8090/status", headers=api.auth, timeout=5).json()
                if any(t["sha1"] == sha1 for t in status["torrents"]):
                    return False
            return True

        wait_until_sync(stopped_everywhere, 30, "downloads stopped on every node")
        final = api.job(job["id"])
        assert all(n["state"] == "cancelled" for n in final["nodes"][1:])


def test_priorities_run_in_order_under_max_running_jobs_1(tmp_path: Path) -> None:
    for name in ("first.bin", "low.bin", "high.bin"):
        make_file(tmp_path / "origin" / name, 2 * MiB)
    with local_fleet(
        tmp_path,
        nodes=2,
        ip_prefix="127.0.24",
        ip_base=10,
        hub_args=("--max-running-jobs", "1"),
    ) as fleet:
        api = Api(fleet)
        first = api.post("/api/jobs", {"urls": [fleet.file_url("first.bin")]}, code=201)
        low = api.post("/api/jobs", {"urls": [fleet.file_url("low.bin")], "priority": 1}, code=201)
        high = api.post(
            "/api/jobs", {"urls": [fleet.file_url("high.bin")], "priority": 9}, code=201
        )
        ended = {j["id"]: api.wait_state(j["id"], ("done",), 90) for j in (first, low, high)}
    starts = {k: v["started_at"] for k, v in ended.items()}
    assert starts[first["id"]] < starts[high["id"]] < starts[low["id"]]
    assert ended[first["id"]]["ended_at"] <= starts[high["id"]]
    assert ended[high["id"]]["ended_at"] <= starts[low["id"]]
