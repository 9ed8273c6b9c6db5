"""The lab itself: links capped both ways, loss, partitions, and nothing left behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.lab.lab import Host, Lab, available, leftovers, sweep

pytestmark = pytest.mark.skipif(available() is not None, reason=str(available()))

SINK = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 9000)); s.listen()
while True:
    c, _ = s.accept(); n = 0
    while d := c.recv(1 << 16): n += len(d)
    c.sendall(b"k"); c.close()
"""


def send(host: Host, ip: str, size: int, timeout: float = 30) -> float:
    """Seconds to send ``size`` bytes from ``host`` to ``ip``:9000 and hear they arrived."""
    code = (
        f"import socket; s = socket.create_connection(({ip!r}, 9000), timeout=10); "
        f"s.sendall(b'x' * {size}); s.shutdown(socket.SHUT_WR); assert s.recv(1) == b'k'"
    )
    started = time.monotonic()
    subprocess.run(host.argv(sys.executable, "-c", code), check=True, timeout=timeout)
    return time.monotonic() - started


def test_links_loss_partitions_and_cleanup(lab: Lab, tmp_path: Path) -> None:
    a, b = lab.add_host("a"), lab.add_host("b")
    lab.popen(b, [sys.executable, "-c", SINK], tmp_path / "sink.log")
    lab.popen(a, [sys.executable, "-c", SINK], tmp_path / "sink-a.log")
    deadline = time.monotonic() + 10
    while True:  # the sinks listen
        try:
            socket.create_connection((b.ip, 9000), timeout=1).close()
            socket.create_connection((a.ip, 9000), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "the sinks did not start"
            time.sleep(0.05)
    lab.cap(a, 1 << 20, 2 << 20)  # 1 MiB/s up, 2 MiB/s down
    up = send(a, b.ip, 3 << 20)
    down = send(b, a.ip, 3 << 20)
    assert 2.4 < up < 5, f"3 MiB at 1 MiB/s took {up:.2f} s"
    assert 1.2 < down < 2.6, f"3 MiB at 2 MiB/s took {down:.2f} s"
    lab.loss(a, 5)
    send(a, b.ip, 1 << 20)
    assert lab.drops(a) > 0
    lab.partition([a], [b])
    with pytest.raises(subprocess.CalledProcessError):
        send(a, b.ip, 1000, timeout=20)
    lab.heal()
    send(a, b.ip, 1000)
    with (
        lab.small_disk(tmp_path / "disk", 1 << 20) as disk,
        pytest.raises(OSError, match="No space"),
    ):
        (disk / "big").write_bytes(b"x" * (2 << 20))
    assert leftovers(lab.prefix)  # the lab is still there...
    lab.close()
    assert leftovers(lab.prefix) == []  # ...and then nothing is


def test_a_lab_whose_owner_died_is_swept(tmp_path: Path) -> None:
    """A lab made by a process killed with -9 is removed by the next lab's sweep."""
    code = (
        "import sys, time; sys.path.insert(0, '.');"
        "from tests.lab.lab import Lab; lab = Lab(); lab.add_host('x');"
        "print(lab.prefix, flush=True); time.sleep(120)"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, cwd=Path(__file__).parents[2]
    )
    try:
        assert child.stdout is not None
        prefix = child.stdout.readline().decode().strip()
        assert prefix
        assert leftovers(prefix)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        if child.stdout is not None:
            child.stdout.close()
    assert leftovers(prefix)  # kill -9: no cleanup ran
    assert prefix in sweep()
    assert leftovers(prefix) == []


def test_jumbo_frames_cross_the_lab_whole() -> None:
    with Lab(mtu=9000) as lab:
        a, b = lab.add_host("a"), lab.add_host("b")
        for argv, mark in (
            (a.argv("ip", "-o", "link", "show", "eth0"), "eth0"),
            (["ip", "-o", "link", "show"], lab.prefix),  # the bridge and its veths
        ):
            shown = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
            ours = [line for line in shown.splitlines() if mark in line]
            assert ours
            assert all(" mtu 9000 " in line for line in ours), ours
        # 8972 bytes of UDP fill a 9000-byte packet; sent "do not fragment", they arrive whole
        receive = (
            "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
            "s.bind(('0.0.0.0', 9999)); s.settimeout(10); print(len(s.recv(65536)))"
        )
        sink = subprocess.Popen(b.argv(sys.executable, "-c", receive), stdout=subprocess.PIPE)
        send = (
            "import socket, sys, time; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
            "s.setsockopt(socket.IPPROTO_IP, 10, 2)\n"  # IP_MTU_DISCOVER: IP_PMTUDISC_DO
            "for _ in range(50):\n"
            "    s.sendto(b'x' * 8972, (sys.argv[1], 9999)); time.sleep(0.1)"
        )
        sender = subprocess.Popen(a.argv(sys.executable, "-c", send, b.ip))
        try:
            out, _ = sink.communicate(timeout=20)
        finally:
            for proc in (sink, sender):
                proc.kill()
                proc.wait(timeout=10)
        assert out.strip() == b"8972"
