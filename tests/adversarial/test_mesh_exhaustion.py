"""Issue 12, item 7: one CA member tries to exhaust a mesh node (a real process).

- 20 packets of 16 MiB to a node nobody knows: the retry queue must stay bounded in
  bytes (before: every one was kept, 320 MiB more RSS).
- 20 heartbeats advertising 10,000 new node ids each: the learned addresses must stay
  bounded (before: 200,000 kept).
- a file for a closed app: refused when its head arrives, before its body is stored.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from smartget.mesh import datapack as dpk
from smartget.mesh.datapack import Datapack, new_flag
from tests.integration.mesh.attack import MeshProcs, RawMember, rss_kib

pytestmark = pytest.mark.slow

MIB = 1 << 20


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[MeshProcs]:
    fleet = MeshProcs(tmp_path)
    try:
        yield fleet
    finally:
        fleet.stop_all()


def _sync(member: RawMember) -> None:
    """A packet to the closed shell: its refusal says everything before it was routed."""
    flag = new_flag()
    member.send(Datapack("post", "shell", {"flag": flag}, b"id"))
    member.wait_for(lambda dp: dp.head.get("re") == flag, within=60)


def test_retry_queue_is_bounded_in_bytes(procs: MeshProcs) -> None:
    proc = procs.start("beta", "127.0.2.111", "--app", "logger")
    member = RawMember(procs.identity("mallory"), procs.addrs["beta"])
    try:
        _sync(member)
        before = rss_kib(proc.pid)
        body = b"x" * (16 * MIB - 64)
        for _ in range(20):
            member.send(Datapack("post", "logger", {"to": "nowhere", "flag": new_flag()}, body))
        _sync(member)
        grown = (rss_kib(proc.pid) - before) // 1024
    finally:
        member.close()
    assert grown < 200, f"RSS grew by {grown} MiB holding packets for an unknown node"
    assert "retry queue is full" in procs.stderr("beta")


def test_learned_addresses_are_bounded(procs: MeshProcs) -> None:
    proc = procs.start("beta", "127.0.2.112", "--app", "logger")
    member = RawMember(procs.identity("mallory"), procs.addrs["beta"])
    try:
        _sync(member)
        before = rss_kib(proc.pid)
        for round_ in range(20):
            peers = {
                f"n{round_}x{i:05d}": f"10.{i % 250}.{round_}.1:{1000 + i}" for i in range(10_000)
            }
            beat = {"listen": "", "peers": peers, "routes": {}}
            member.send(Datapack("post", "net", {"from": "net"}, json.dumps(beat).encode()))
        _sync(member)
        grown = (rss_kib(proc.pid) - before) // 1024
    finally:
        member.close()
    assert grown < 25, f"RSS grew by {grown} MiB learning 200,000 advertised addresses"


def test_file_to_a_closed_app_is_refused_before_its_body(procs: MeshProcs) -> None:
    procs.start("beta", "127.0.2.113", "--app", "logger", "--app", "shell")
    member = RawMember(procs.identity("mallory"), procs.addrs["beta"])
    size = 64 * MIB
    chunk = b"\0" * MIB
    digest = hashlib.sha256(chunk * 64).hexdigest()
    flag = new_flag()
    head = Datapack("file", "shell", {"filename": "big.bin", "sha256": digest, "flag": flag})
    try:
        member.send_bytes(dpk.encode_head(head, size))
        refused = member.wait_for(lambda dp: dp.head.get("re") == flag, within=10)
        assert refused[0].head.get("error") == "refused"
        for _ in range(64):  # the body goes on the wire anyway; it must not be kept
            member.send_bytes(chunk)
        _sync(member)
    finally:
        member.close()
    tmp = procs.data_dir("beta") / "tmp"
    assert not list(tmp.iterdir())
    assert not (procs.data_dir("beta") / "recv" / "big.bin").exists()
