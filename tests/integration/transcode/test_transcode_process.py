"""The CLI as real processes: a server, three workers, one killed (-9) mid-job."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from smartget.net import free_port
from smartget.transcode.ffmpeg import decode_argv, parse_probe, probe_argv
from tests.helpers import wait_until_sync as wait_for
from tests.integration.transcode.conftest import FFMPEG

pytestmark = pytest.mark.slow

SMARTGET = [sys.executable, "-m", "smartget", "transcode"]


class Procs:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with open(self.root / f"{name}.log", "wb") as log:
            # A session of its own, so a kill reaches the worker's ffmpeg too.
            proc = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    procs = Procs(tmp_path)
    try:
        yield procs
    finally:
        procs.stop_all()


def media(path: Path) -> tuple[float, int, int]:
    """(duration, frames, audio streams) of a file, with ffmpeg only."""
    result = subprocess.run(probe_argv(FFMPEG, path), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    found = parse_probe(result.stderr, result.stdout)
    return found.duration, found.frames, found.audio_streams


def test_worker_killed_mid_job_and_the_job_completes(
    procs: Procs, pki: Callable[[str], Path], tmp_path: Path, video: Path
) -> None:
    host = "127.0.5.10"
    server_addr = f"{host}:{free_port(host)}"
    peers = tmp_path / "address.txt"
    peers.write_text(f"{server_addr}\n")
    # w1's ffmpeg stalls, so w1 surely holds a task when it is killed.
    slow = tmp_path / "slow-ffmpeg"
    slow.write_text(f"#!{sys.executable}\nimport os, sys, time\ntime.sleep(60)\n"
                    f"os.execv({FFMPEG!r}, [{FFMPEG!r}, *sys.argv[1:]])\n")  # fmt: skip
    slow.chmod(0o755)
    output = tmp_path / "out.mp4"
    procs.start("server", [
        *SMARTGET, "serve", str(video), str(output), "--tls-dir", str(pki("server")),
        "--listen", server_addr, "--segment-seconds", "4", "--scale", "160:120",
        "--extra-args", "-preset ultrafast", "--worker-timeout", "3", "--heartbeat", "0.3",
        "--decode-check", "--no-progress", "--log-level", "debug",
        "--data-dir", str(tmp_path / "server"),
    ])  # fmt: skip

    def worker(name: str, host: str, *extra: str) -> None:
        procs.start(name, [
            *SMARTGET, "work", "--server", "server", "--tls-dir", str(pki(name)),
            "--listen", f"{host}:0", "--peers", str(peers), "--concurrency", "1",
            "--heartbeat", "0.3", "--data-dir", str(tmp_path / name), *extra,
        ])  # fmt: skip

    # w1 first: it takes a task and its ffmpeg stalls. Then w2 and w3; once they are
    # working, w1 is killed with its task in hand.
    worker("w1", "127.0.5.11", "--ffmpeg", str(slow))
    wait_for(lambda: re.search(r"task \d+ to w1", procs.log("server")) is not None, 60, "w1's task")
    worker("w2", "127.0.5.12")
    worker("w3", "127.0.5.13")
    wait_for(lambda: re.search(r"from w[23] accepted", procs.log("server")) is not None, 60,
             "a result from w2 or w3")  # fmt: skip
    procs.kill("w1")

    server = procs.procs["server"]
    server.wait(timeout=90)
    log = procs.log("server")
    assert server.returncode == 0, log[-3000:]
    assert "worker silent for 3 s; handing it out again" in log
    assert "on w1" in log
    duration, frames, audio = media(output)
    source_duration, source_frames, _ = media(video)
    assert abs(duration - source_duration) <= 0.1
    assert frames == source_frames == 750
    assert audio == 1
    decoded = subprocess.run(decode_argv(FFMPEG, output), capture_output=True, timeout=60)
    assert decoded.returncode == 0
    assert decoded.stderr == b""
