"""The main job end to end: an origin, a hub and nodes as processes on 127.0.0.x; push."""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote_from_bytes

import fastbencode
import httpx
import pytest

from smartget.demo import Fleet, local_fleet, make_file
from smartget.push import PushResult, push, render

pytestmark = [pytest.mark.slow]

SIZE = 4 * 1024 * 1024


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def fleet3(tmp_path: Path) -> Iterator[Fleet]:
    make_file(tmp_path / "origin" / "media" / "a.bin", SIZE)
    with local_fleet(tmp_path, nodes=3, ip_base=170, log_level="info") as fleet:
        yield fleet


def run_push(fleet: Fleet, name: str, **kwargs: object) -> PushResult:
    import asyncio

    return asyncio.run(
        push(
            fleet.file_url(name),
            hub_url=fleet.hub_url,
            token=fleet.token,
            give_up_after=90,
            **kwargs,
        )
    )  # type: ignore[arg-type]


def test_push_to_three_nodes(fleet3: Fleet, tmp_path: Path) -> None:
    result = run_push(fleet3, "media/a.bin")
    assert result.ok, render(result)
    assert [o.role for o in result.outcomes] == ["seed", "peer", "peer"]
    assert all(o.verified for o in result.outcomes)
    want = sha256(tmp_path / "origin" / "media" / "a.bin")
    for i in range(3):
        assert sha256(tmp_path / f"node{i + 1}" / "www" / "media" / "a.bin") == want
    progress = httpx.get(
        f"{fleet3.hub_url}/api/progress",
        params={"sha1": result.sha1},
        headers={"Authorization": f"Bearer {fleet3.token}"},
        timeout=5,
    ).json()
    assert {p["nodeid"] for p in progress if p["done"]} == {o.node.nodeid for o in result.outcomes}
    assert result.origin_bytes is not None
    assert result.origin_bytes >= SIZE


def test_a_node_that_dies_is_named(tmp_path: Path) -> None:
    make_file(tmp_path / "origin" / "b.bin", 24 * 1024 * 1024)
    # Slow uploads so the push is still running when the node dies.
    with local_fleet(tmp_path, nodes=3, ip_base=175, upload_limit=2 * 1024 * 1024) as fleet:
        victims: list[str] = []

        def on_update(result: PushResult) -> None:
            peers = [o for o in result.outcomes if o.role == "peer"]
            if not victims and peers:
                victim = peers[-1].node
                victims.append(victim.nodeid)
                fleet.kill(f"node{fleet.node_ips.index(victim.ip) + 1}")

        result = run_push(fleet, "b.bin", on_update=on_update)
    assert victims
    assert not result.ok
    failed = {o.node.nodeid: o.error for o in result.failed}
    assert list(failed) == victims, failed
    assert "stopped answering" in (failed[victims[0]] or "")
    survivors = [o for o in result.outcomes if o.node.nodeid not in victims]
    assert all(o.done_at is not None and o.verified for o in survivors), failed


def test_zone_preference_in_tracker_replies(fleet3: Fleet) -> None:
    result = run_push(fleet3, "media/a.bin")
    assert result.ok
    info_hash = bytes.fromhex(result.sha1)
    # Announce from the zone-a node .171's address (another client there: its own port,
    # since only a peer itself may change its entry): zone-a .173 must come first, then
    # zone-b .172.
    query = (
        f"info_hash={quote_from_bytes(info_hash)}&peer_id=-XX0001-000000000000"
        f"&port=6999&left=100&compact=1"
    )
    url = f"{fleet3.hub_url}/announce?{query}"
    transport = httpx.HTTPTransport(local_address=fleet3.node_ips[0])
    with httpx.Client(transport=transport, timeout=5) as client:
        body = fastbencode.bdecode(client.get(url).content)
    assert b"peers" in body, body  # a failure reason says why
    peers = body[b"peers"]
    ips = [socket.inet_ntoa(peers[i : i + 4]) for i in range(0, len(peers), 6)]
    ips = [ip for ip in ips if ip != fleet3.node_ips[0]]  # .171's own node is a peer too
    assert ips[0] == fleet3.node_ips[2]  # same zone first
    assert fleet3.node_ips[1] in ips


@pytest.mark.interop
@pytest.mark.skipif(shutil.which("aria2c") is None, reason="aria2c not installed")
def test_aria2c_downloads_from_a_node_via_the_tracker(tmp_path: Path) -> None:
    make_file(tmp_path / "origin" / "c.bin", SIZE)
    with local_fleet(tmp_path, nodes=1, ip_base=180) as fleet:
        result = run_push(fleet, "c.bin")
        assert result.ok
        fleet.kill("origin")  # no web seed to fall back on: only the node can serve it
        torrent = httpx.get(f"http://{fleet.node_ips[0]}:8080/c.bin.torrent", timeout=5).content
        (tmp_path / "c.torrent").write_bytes(torrent)
        out = tmp_path / "aria2"
        proc = subprocess.run(
            [
                "aria2c",
                "--dir",
                str(out),
                "--seed-time=0",
                "--enable-dht=false",
                "--bt-enable-lpd=false",
                "--enable-peer-exchange=false",
                "--interface=127.0.0.1",
                "--listen-port=51413",
                "--bt-stop-timeout=60",
                "--console-log-level=warn",
                "--summary-interval=0",
                str(tmp_path / "c.torrent"),
            ],
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sha256(out / "c.bin") == sha256(tmp_path / "origin" / "c.bin")
