"""The hub as users run it: a separate process, SIGTERM, and kill -9 with a restart."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from smartget.net import free_port


def talk(port: int, data: bytes, src: str = "127.0.0.2") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(src, 0)) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(4096):
            chunks.append(chunk)
        return b"".join(chunks)


class HubProcess:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.text_port = free_port()
        self.http_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "smartget",
                "hub",
                "--listen",
                f"127.0.0.1:{self.text_port}",
                "--http",
                f"127.0.0.1:{self.http_port}",
                "--data-dir",
                str(self.data_dir),
                "--log-level",
                "warning",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "SMARTGET_HUB_TOKEN": "t"},  # never on the command line
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.proc.stdout.read() if self.proc.stdout else ""
            try:
                httpx.get(f"http://127.0.0.1:{self.http_port}/healthz", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise AssertionError("hub did not start within 20 s")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=15)
        if self.proc.stdout:
            self.proc.stdout.close()
        return code


@pytest.fixture
def hub_process(tmp_path: Path) -> Iterator[HubProcess]:
    hub = HubProcess(tmp_path / "hub")
    yield hub
    if hub.proc is not None and hub.proc.poll() is None:
        hub.stop(signal.SIGKILL)


def test_sigterm_stops_cleanly(hub_process: HubProcess) -> None:
    hub_process.start()
    assert talk(hub_process.text_port, b"`register 1\n") == b"200 OK\r\n1\r\n"
    assert hub_process.stop(signal.SIGTERM) == 0


def test_sigint_stops_cleanly(hub_process: HubProcess) -> None:
    hub_process.start()
    assert hub_process.stop(signal.SIGINT) == 0


@pytest.mark.slow
def test_kill_9_loses_nothing_acknowledged(hub_process: HubProcess) -> None:
    hub_process.start()
    acknowledged = []
    for i in range(60):
        reply = talk(
            hub_process.text_port, b"`register %d\n" % (100 + i), src=f"127.0.0.{2 + i % 5}"
        )
        assert reply.startswith(b"200 OK\r\n")
        acknowledged.append((f"127.0.0.{2 + i % 5}", 100 + i, int(reply.split(b"\r\n")[1])))
    assert (
        talk(hub_process.text_port, b"`setstatus 60 4\n", src=acknowledged[-1][0]) == b"200 OK\r\n"
    )
    hub_process.stop(signal.SIGKILL)  # no chance to flush anything

    hub_process.start()
    nodes = httpx.get(
        f"http://127.0.0.1:{hub_process.http_port}/api/nodes",
        headers={"Authorization": "Bearer t"},
        timeout=5,
    ).json()
    assert sorted((n["ip"], n["port"], n["id"]) for n in nodes) == sorted(acknowledged)
    assert [n["status"] for n in nodes if n["id"] == 60] == [4]
    ip, port, _ = acknowledged[0]
    assert talk(hub_process.text_port, b"`register %d\n" % port, src=ip) == (
        b"400 BAD REQUEST\r\nNode already exists!\r\n"
    )
    # The id counter survived too: removed ids are never handed out again.
    assert (
        talk(
            hub_process.text_port,
            b"`deregister %d\n" % acknowledged[-1][1],
            src=acknowledged[-1][0],
        )
        == b"200 OK\r\n"
    )
    hub_process.stop(signal.SIGKILL)
    hub_process.start()
    assert talk(hub_process.text_port, b"`register 9\n", src="127.0.0.9") == b"200 OK\r\n61\r\n"


def test_cli_help_and_bad_flags() -> None:
    env = {**os.environ, "COLUMNS": "100"}
    out = subprocess.run(
        [sys.executable, "-m", "smartget", "hub", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert out.returncode == 0
    for flag in ("--listen", "--http", "--data-dir", "--node-ttl", "--config", "--log-level"):
        assert flag in out.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "smartget", "hub", "--listen", "nowhere", "--data-dir", "/tmp/x"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode == 2
    assert "expected HOST:PORT" in bad.stderr


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "smartget",
                "hub",
                "--listen",
                f"127.0.0.1:{port}",
                "--http",
                "127.0.0.1:0",
                "--data-dir",
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert out.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in out.stderr
