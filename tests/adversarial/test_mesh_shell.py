"""Issue 12, item 12: the shell app against a command that floods or outlives its timeout.

ops is allowed to use beta's shell; the command is hostile anyway (a compromised ops, or
a runaway job): 300 MB of output must not be held in memory, and a timeout must end
every process the command started, not only the first.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from smartget.mesh.datapack import Datapack, new_flag
from tests.helpers import wait_until_sync
from tests.integration.mesh.attack import MeshProcs, RawMember, alive, rss_peak_kib

pytestmark = pytest.mark.slow


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[MeshProcs]:
    fleet = MeshProcs(tmp_path)
    try:
        yield fleet
    finally:
        fleet.stop_all()


def _run(ops: RawMember, argv: list[str], within: float = 60) -> Datapack:
    flag = new_flag()
    ops.send(Datapack("post", "shell", {"from": "cli", "flag": flag}, json.dumps(argv).encode()))
    return ops.wait_for(lambda dp: dp.head.get("re") == flag, within=within)[0]


def test_output_is_capped_while_it_streams(procs: MeshProcs) -> None:
    proc = procs.start("beta", "127.0.2.131", "--app", "shell", "--allow", "shell=ops")
    ops = RawMember(procs.identity("ops"), procs.addrs["beta"])
    try:
        assert _run(ops, [sys.executable, "-c", "print(1)"]).head["exit"] == "0"
        before = rss_peak_kib(proc.pid)
        flood = (
            "import sys\nblock = b'y' * (1 << 20)\n"
            "for _ in range(300): sys.stdout.buffer.write(block)"
        )
        reply = _run(ops, [sys.executable, "-c", flood])
        grown = (rss_peak_kib(proc.pid) - before) // 1024
    finally:
        ops.close()
    assert grown < 100, f"peak RSS grew by {grown} MiB for 300 MiB of output cut to 1 MiB"
    assert reply.head["exit"] == "0"
    assert len(reply.body) == 1 << 20
    assert reply.head.get("truncated") == "yes"


def test_timeout_kills_the_whole_process_group(procs: MeshProcs, tmp_path: Path) -> None:
    procs.start(
        "beta", "127.0.2.132", "--app", "shell", "--allow", "shell=ops", "--shell-timeout", "1"
    )
    pid_file = tmp_path / "grandchild.pid"
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(120)\n"
    )
    ops = RawMember(procs.identity("ops"), procs.addrs["beta"])
    grandchild = 0
    try:
        reply = _run(ops, [sys.executable, "-c", script], within=30)
        assert reply.head["exit"] == "timeout"
        grandchild = int(pid_file.read_text())
        wait_until_sync(lambda: not alive(grandchild), 10, "the command's own child killed")
    finally:
        ops.close()
        if grandchild and alive(grandchild):
            os.kill(grandchild, signal.SIGKILL)
