"""A real redis-server for the tests: its own 127.0.0.x address, port and directory.

Started with the durability the hub promises needs (``appendonly yes``, ``appendfsync
always``), stopped by its PID (never by name), restartable on the same data (a
``kill -9`` test). No mock Redis anywhere in the integration tests.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from smartget.net import free_port
from tests.helpers import wait_until_sync

REDIS = shutil.which("redis-server")
needs_redis = pytest.mark.skipif(
    REDIS is None, reason="redis-server is not installed (scripts/bootstrap --test)"
)
_hosts = itertools.cycle(f"127.0.0.{i}" for i in range(150, 200))


class RedisServer:
    """One redis-server process; ``url`` is what ``smartget hub --state`` takes."""

    def __init__(self, directory: Path, *, fsync: str = "always", extra: tuple[str, ...] = ()):
        assert REDIS is not None
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.host = next(_hosts)
        self.port = free_port(self.host)
        self.fsync = fsync
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def argv(self) -> list[str]:
        assert REDIS is not None
        return [
            REDIS,
            "--bind", self.host,
            "--port", str(self.port),
            "--dir", str(self.dir),
            "--appendonly", "yes",
            "--appendfsync", self.fsync,
            "--save", "",
            "--daemonize", "no",
            "--protected-mode", "no",
            "--logfile", str(self.dir / "redis.log"),
            *self.extra,
        ]  # fmt: skip

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(self.argv(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_until_sync(self.answers, 10, f"redis-server on {self.host}:{self.port}")
        except BaseException:
            self.stop()
            raise
        return self

    def answers(self) -> bool:
        import socket

        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"redis-server exited: {self.log_tail()}")
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the server by its PID and reap it (10 s at most)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            self.proc.wait(10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            if self.proc is not None and self.proc.stderr is not None:
                self.proc.stderr.close()
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()

    def log_tail(self) -> str:
        path = self.dir / "redis.log"
        return path.read_text()[-2000:] if path.exists() else "(no log)"
