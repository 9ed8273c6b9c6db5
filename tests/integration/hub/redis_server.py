"""A real redis-server for the tests: its own 127.0.0.x address, port and directory.

Started with the durability the hub promises needs (``appendonly yes``, ``appendfsync
always``), stopped by its PID (never by name), restartable on the same data (a
``kill -9`` test). No mock Redis anywhere in the integration tests.

:class:`RedisClusterServers` is a real Redis Cluster of three masters on loopback
(127.0.55.x-127.0.56.x), made by ``redis-cli --cluster create``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from smartget.net import free_port
from tests.helpers import wait_until_sync

REDIS = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")  # Debian's redis-tools, a dependency of redis-server
needs_redis = pytest.mark.skipif(
    REDIS is None, reason="redis-server is not installed (scripts/bootstrap --test)"
)
needs_redis_cluster = pytest.mark.skipif(
    REDIS is None or REDIS_CLI is None,
    reason="redis-server and redis-cli are not installed (scripts/bootstrap --test)",
)
_hosts = itertools.cycle(f"127.0.0.{i}" for i in range(150, 200))
# The clusters' addresses: 127.0.55.1-127.0.56.254, from a random start, so that two
# test runs at once are unlikely to meet (each port is also checked free).
_CLUSTER_HOSTS = [f"127.0.{a}.{b}" for a in (55, 56) for b in range(1, 255)]
_cluster_hosts = itertools.cycle(
    _CLUSTER_HOSTS[(start := random.randrange(len(_CLUSTER_HOSTS))) :] + _CLUSTER_HOSTS[:start]
)


class RedisServer:
    """One redis-server process; ``url`` is what ``smartget hub --state`` takes."""

    def __init__(
        self,
        directory: Path,
        *,
        fsync: str = "always",
        extra: tuple[str, ...] = (),
        host: str | None = None,
        port: int | None = None,
    ):
        assert REDIS is not None
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.host = host or next(_hosts)
        self.port = port or free_port(self.host)
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


class RedisClusterServers:
    """A real Redis Cluster: ``masters`` redis-servers (``--cluster-enabled yes``, no
    replicas), each on its own 127.0.55.x-127.0.56.x address, port and directory, joined
    by ``redis-cli --cluster create``. ``url(i)`` is what ``smartget hub --state`` takes
    to reach the cluster through node ``i``; stopped by PID, as :class:`RedisServer`."""

    def __init__(self, directory: Path, masters: int = 3, *, fsync: str = "always") -> None:
        assert REDIS is not None
        assert REDIS_CLI is not None
        self.dir = directory
        self.nodes: list[RedisServer] = []
        for i in range(masters):
            host = next(_cluster_hosts)
            port = _port_with_bus(host)
            extra = (
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(directory / f"node{i}" / "nodes.conf"),
                # Loopback connections leave from 127.0.0.1: say which address is ours.
                "--cluster-announce-ip", host,
                "--cluster-node-timeout", "5000",
            )  # fmt: skip
            self.nodes.append(
                RedisServer(directory / f"node{i}", fsync=fsync, extra=extra, host=host, port=port)
            )

    def url(self, index: int = 0) -> str:
        node = self.nodes[index]
        return f"redis://{node.host}:{node.port}/0"

    def start(self, within: float = 60.0) -> RedisClusterServers:
        """Start the servers, create the cluster, wait until every node says it is ok."""
        assert REDIS_CLI is not None
        deadline = time.monotonic() + within
        try:
            for node in self.nodes:
                node.start()
            nodes = [f"{n.host}:{n.port}" for n in self.nodes]
            argv = [REDIS_CLI, "--cluster", "create", *nodes, "--cluster-replicas", "0"]
            create = subprocess.run(
                [*argv, "--cluster-yes"],
                capture_output=True,
                text=True,
                timeout=max(1.0, deadline - time.monotonic()),
                check=False,
            )
            if create.returncode != 0:
                raise AssertionError(
                    f"redis-cli --cluster create failed: {create.stdout[-2000:]}"
                    f"{create.stderr[-2000:]}"
                )
            for node in self.nodes:
                wait_until_sync(
                    lambda node=node: self.cluster_info(node).get("cluster_state") == "ok",
                    max(0.1, deadline - time.monotonic()),
                    f"cluster_state:ok on {node.host}:{node.port}",
                )
        except BaseException:
            self.stop()
            raise
        return self

    def cluster_info(self, node: RedisServer) -> dict[str, str]:
        """CLUSTER INFO of one node (empty if it does not answer)."""
        reply = _command(node.host, node.port, b"CLUSTER INFO")
        pairs = (line.partition(":") for line in reply.splitlines() if ":" in line)
        return {key: value.strip() for key, _, value in pairs}

    def owner(self, key: str) -> int:
        """The index of the node serving ``key``'s slot (as node 0 sees the cluster)."""
        node = self.nodes[0]
        slot = int(_command(node.host, node.port, b"CLUSTER KEYSLOT " + key.encode()).strip())
        for i, other in enumerate(self.nodes):
            nodes = _command(other.host, other.port, b"CLUSTER NODES")
            for line in nodes.splitlines():
                fields = line.split()
                if len(fields) > 8 and "myself" in fields[2]:
                    for spec in fields[8:]:
                        low, _, high = spec.partition("-")
                        if low.isdigit() and int(low) <= slot <= int(high or low):
                            return i
        raise AssertionError(f"no node serves slot {slot}")

    def flush(self) -> None:
        """FLUSHALL on every node (between tests on one cluster; functions stay)."""
        for node in self.nodes:
            assert _command(node.host, node.port, b"FLUSHALL") == "OK"

    def move_slot(self, key: str, to: int) -> None:
        """Reshard: move ``key``'s slot, with its keys, to node ``to`` (as ``redis-cli
        --cluster reshard`` does: IMPORTING, MIGRATING, MIGRATE, SETSLOT NODE)."""
        import redis

        clients = [redis.Redis(host=n.host, port=n.port, decode_responses=True) for n in self.nodes]
        try:
            source = clients[self.owner(key)]
            target, dest = clients[to], self.nodes[to]
            slot = int(source.execute_command("CLUSTER KEYSLOT", key))
            source_id = source.execute_command("CLUSTER MYID")
            target_id = target.execute_command("CLUSTER MYID")
            target.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", source_id)
            source.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", target_id)
            for _ in range(10_000):  # bounded: 100 keys a round
                keys = source.execute_command("CLUSTER GETKEYSINSLOT", slot, 100)
                if not keys:
                    break
                source.execute_command("MIGRATE", dest.host, dest.port, "", 0, 5000, "KEYS", *keys)
            for client in [target, source, *clients]:
                client.execute_command("CLUSTER SETSLOT", slot, "NODE", target_id)
        finally:
            for client in clients:
                client.close()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _port_with_bus(host: str) -> int:
    """A port free on ``host`` whose cluster bus port (+10000) is free as well."""
    for _ in range(100):
        port = free_port(host)
        if port + 10000 > 65535:
            continue
        with socket.socket() as sock:
            try:
                sock.bind((host, port + 10000))
            except OSError:
                continue
        return port
    raise AssertionError(f"no port pair free on {host}")


def _command(host: str, port: int, command: bytes) -> str:
    """One inline command, its reply as text (a bulk string's body); "" if no answer."""
    try:
        with socket.create_connection((host, port), timeout=2) as sock:
            sock.sendall(command + b"\r\n")
            data = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
                head, sep, body = data.partition(b"\r\n")
                if not sep:
                    continue
                if head[:1] in (b"+", b"-", b":"):
                    return head[1:].decode()
                if head[:1] == b"$" and len(body) >= int(head[1:]) + 2:
                    return body[: int(head[1:])].decode()
    except OSError:
        return ""
    return ""


@contextlib.contextmanager
def running_redis(directory: Path, host: str | None = None) -> Iterator[RedisServer]:
    """A started redis-server (on ``host``, else the next of 127.0.0.150-199), stopped
    by its PID on the way out: what each test module's ``redis_server`` fixture yields."""
    server = RedisServer(directory, host=host).start()
    try:
        yield server
    finally:
        server.stop()
