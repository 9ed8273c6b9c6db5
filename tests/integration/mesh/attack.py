"""Helpers for adversarial mesh tests: node processes, and a raw TLS member that misbehaves.

``MeshProcs`` starts ``smartget mesh run`` processes (their own data dirs, stderr in
ROOT/NAME.stderr). ``RawMember`` is a CA member speaking Datapacks over a bare TLS socket:
it sends whatever bytes a test builds (replays, floods, forged heads) and reads what the
node sends back. Everything waits with a deadline; nothing sleeps to synchronise.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from smartget.mesh import datapack as dpk
from smartget.mesh.ca import NodeIdentity, client_context, init_ca, issue_node, load_identity
from smartget.mesh.datapack import Datapack
from smartget.net import free_port
from tests.helpers import stop_processes

SMARTGET = [sys.executable, "-m", "smartget"]
_EMPTY_HEARTBEAT = b'{"listen": "", "peers": {}, "routes": {}}'


def rss_peak_kib(pid: int) -> int:
    """The peak resident set size of a process (VmHWM), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for {pid}")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


class MeshProcs:
    """A CA under ROOT/ca and mesh node processes made from it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        init_ca(root / "ca")
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.args: dict[str, list[str]] = {}
        self.addrs: dict[str, tuple[str, int]] = {}
        self.cwd: dict[str, Path | None] = {}

    def issue(self, name: str) -> Path:
        out = self.root / "nodes" / name
        if not (out / "node.crt").exists():
            issue_node(self.root / "ca", name, out)
        return out

    def identity(self, name: str) -> NodeIdentity:
        return load_identity(self.issue(name))

    def data_dir(self, name: str) -> Path:
        return self.root / "data" / name

    def start(
        self,
        name: str,
        host: str,
        *extra: str,
        peers: list[str] = (),  # type: ignore[assignment]
        data_dir: str | None = None,
        cwd: Path | None = None,
        stdin: bool = False,
    ) -> subprocess.Popen[bytes]:
        """Start node ``name`` on ``host`` (a free port); returns once it accepts links."""
        if name not in self.args:
            port = free_port(host)
            self.addrs[name] = (host, port)
            peers_file = self.root / f"{name}.address.txt"
            peers_file.write_text("".join(f"{p}\n" for p in peers))
            self.args[name] = [
                *SMARTGET, "mesh", "run",
                "--tls-dir", str(self.issue(name)),
                "--listen", f"{host}:{port}",
                "--peers", str(peers_file),
                "--data-dir", data_dir or str(self.data_dir(name)),
                "--heartbeat", "0.3",
                "--retry-interval", "0.2",
                "--no-dial-learned",
                "--log-level", "debug",
                *extra,
            ]  # fmt: skip
            self.cwd[name] = cwd
        log = open(self.root / f"{name}.stderr", "ab")  # noqa: SIM115 - the child owns it
        proc = subprocess.Popen(
            self.args[name],
            stdout=log,
            stderr=log,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            cwd=self.cwd[name],
        )
        log.close()
        self.procs[name] = proc
        self.wait_listening(name)
        return proc

    def wait_listening(self, name: str, within: float = 20.0) -> None:
        deadline = time.monotonic() + within
        while True:
            proc = self.procs[name]
            if proc.poll() is not None:
                raise AssertionError(
                    f"{name} exited {proc.returncode}: {self.stderr(name)[-2000:]}"
                )
            with contextlib.suppress(OSError), socket.create_connection(self.addrs[name], 0.5):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} not listening within {within} s")
            time.sleep(0.05)

    def addr(self, name: str) -> str:
        host, port = self.addrs[name]
        return f"{host}:{port}"

    def stderr(self, name: str) -> str:
        path = self.root / f"{name}.stderr"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.kill()
        proc.wait(timeout=10)

    def stop_all(self) -> None:
        stop_processes(self.procs.values())
        for proc in self.procs.values():
            if proc.stdin is not None:
                proc.stdin.close()
        self.procs.clear()


class RawMember:
    """A CA member on a bare TLS socket: sends raw Datapacks, reads what comes back."""

    def __init__(self, identity: NodeIdentity, addr: tuple[str, int], within: float = 10.0):
        self.identity = identity
        ctx: ssl.SSLContext = client_context(identity)
        raw = socket.create_connection(addr, within)
        self.sock = ctx.wrap_socket(raw, server_hostname="smartget-mesh")
        self.sock.settimeout(within)
        self.decoder = dpk.DatapackDecoder()
        self.received: list[Datapack] = []
        self._last_sent = time.monotonic()
        # A heartbeat with nothing in it makes the link "up" and teaches the node nothing.
        self.send(Datapack("post", "net", {"from": "net"}, _EMPTY_HEARTBEAT))

    def send(self, dp: Datapack) -> None:
        self.send_bytes(dpk.encode(dp))

    def send_bytes(self, data: bytes) -> None:
        self.sock.settimeout(60)
        self.sock.sendall(data)
        self._last_sent = time.monotonic()

    def _pump(self, timeout: float) -> None:
        if time.monotonic() - self._last_sent > 2:  # stay inside the node's idle timeout
            self.send(Datapack("post", "net", {"from": "net"}, _EMPTY_HEARTBEAT))
        self.sock.settimeout(max(0.01, timeout))
        try:
            data = self.sock.recv(1 << 16)
        except TimeoutError:
            return
        if not data:
            raise ConnectionError("the node closed the link")
        for event in self.decoder.receive_data(data):
            match event:
                case dpk.PacketReceived(dp) if dp.app != "net":
                    self.received.append(dp)
                case dpk.FileStarted(dp, _):
                    self.received.append(dp)

    def wait_for(
        self, predicate: Callable[[Datapack], bool], within: float = 20.0, count: int = 1
    ) -> list[Datapack]:
        """Read until ``count`` packets match ``predicate``; AssertionError after ``within`` s."""
        deadline = time.monotonic() + within
        while True:
            found = [dp for dp in self.received if predicate(dp)]
            if len(found) >= count:
                return found
            left = deadline - time.monotonic()
            if left <= 0:
                seen = [(d.method, d.app, dict(d.head), d.body[:80]) for d in self.received]
                raise AssertionError(f"{count} matching packets not seen in {within} s: {seen}")
            self._pump(min(left, 0.5))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "Z":
            return False
    return True
