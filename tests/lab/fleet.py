"""A fleet of real SmartGet processes on lab hosts (or on 127.x addresses), and a push
driven without the hub.

:class:`ProcFleet` starts an origin, a hub, an optional standalone DHT node and nodes,
each ``python -m smartget ...`` on its :class:`~tests.lab.lab.Host` (inside its network
namespace, or in this one for a loopback host), with fixed ports on each host's own
address. :meth:`ProcFleet.push` puts a file on the fleet as ``smartget push`` does
(maketorrent on the seed, the torrent tracked by the hub, download on the others) but
follows progress on the nodes' own ``GET /status``, so it keeps going when the hub is
killed; copies are checked by hashing them on disk (every host sees this file system),
which costs no link bandwidth.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

from tests.helpers import wait_until
from tests.lab.lab import Host

MiB = 1 << 20
API, FILES, BT, HUB_TEXT, HUB_HTTP, ORIGIN, UDP_TRACKER, DHT = (
    8090, 8080, 6881, 20110, 8200, 8000, 6969, 6881,
)  # fmt: skip


def make_file(path: Path, size: int) -> str:
    """``size`` random bytes at ``path``; returns their SHA-256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with path.open("wb") as out:
        left = size
        while left:
            block = os.urandom(min(left, MiB))
            digest.update(block)
            out.write(block)
            left -= len(block)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        while block := data.read(MiB):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class NodeProc:
    index: int
    host: Host
    zone: str
    home: Path
    proc: subprocess.Popen[bytes] | None = None
    wwwroot: Path | None = None  # None: home/www

    @property
    def root(self) -> Path:
        return self.wwwroot or self.home / "www"

    @property
    def api_url(self) -> str:
        return f"http://{self.host.ip}:{API}"

    @property
    def files_url(self) -> str:
        return f"http://{self.host.ip}:{FILES}"

    @property
    def nodeid(self) -> str:
        return f"{self.zone}_{self.host.ip}"


@dataclass
class Progress:
    """One node's part in a push, as its /status showed it."""

    node: NodeProc
    percent: float = 0.0
    done_at: float | None = None
    status: str = ""
    error: str = ""
    downtotal: int = 0
    uptotal: int = 0


@dataclass
class PushRun:
    fileurl: str
    size: int
    sha1: str = ""
    torrent_url: str = ""
    seed_ready: float = 0.0  # seconds from the start until the seed had made the torrent
    makespan: float = 0.0
    origin_bytes: int = 0
    nodes: list[Progress] = field(default_factory=list)
    striped: bool = False  # every node fetched its stripe from the origin first
    started_at: float = 0.0  # UNIX time of the start: nodes say when they completed in it

    def copy_path(self, node: NodeProc) -> Path:
        rel = unquote(urlsplit(self.torrent_url).path).lstrip("/").removesuffix(".torrent")
        return node.root / rel

    def lower_bound(
        self, up: float, down: float, seed_up: float | None = None, origin_up: float = 0
    ) -> float:
        """No schedule is faster. Through one seed, for N receivers: max(F/u_s, F/d,
        N*F/(u_s + N*u)). Striped over M nodes, the origin sending F: max(F/d,
        F/origin_up, (M-1)*F/(M*u))."""
        size = self.size
        if self.striped:
            m = len(self.nodes)
            origin = size / origin_up if origin_up else 0.0
            return max(size / down, origin, (m - 1) * size / (m * up))
        n = len(self.nodes) - 1
        u_s = seed_up or up
        return max(size / u_s, size / down, n * size / (u_s + n * up))


class ProcFleet:
    """The processes of one fleet; :meth:`close` (or ``finally``) stops what still runs."""

    def __init__(
        self,
        workdir: Path,
        *,
        origin: Host,
        hub: Host | None,
        nodes: Sequence[Host],
        dht: Host | None = None,
        zones: Sequence[str] = ("zone-a", "zone-b"),
        log_level: str = "info",
    ) -> None:
        self.workdir = workdir
        self.origin_host, self.hub_host, self.dht_host = origin, hub, dht
        self.token = secrets.token_urlsafe(16)
        self.log_level = log_level
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.nodes = [
            NodeProc(i, host, zones[i % len(zones)], workdir / f"node{i}")
            for i, host in enumerate(nodes)
        ]
        self.auth = {"Authorization": f"Bearer {self.token}"}
        self.http = httpx.AsyncClient(timeout=10, trust_env=False)

    # -- addresses ---------------------------------------------------------------------

    @property
    def origin_url(self) -> str:
        return f"http://{self.origin_host.ip}:{ORIGIN}"

    @property
    def hub_url(self) -> str:
        assert self.hub_host is not None
        return f"http://{self.hub_host.ip}:{HUB_HTTP}"

    def dht_bootstrap(self) -> list[str]:
        """The fleet's DHT nodes: the hub's (UDP on its text port) and the standalone one."""
        found = []
        if self.hub_host is not None:
            found.append(f"{self.hub_host.ip}:{HUB_TEXT}")
        if self.dht_host is not None:
            found.append(f"{self.dht_host.ip}:{DHT}")
        return found

    # -- processes ---------------------------------------------------------------------

    def _start(
        self, name: str, host: Host, argv: Sequence[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = self.workdir / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            proc = subprocess.Popen(
                host.argv(sys.executable, "-m", *argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **(env or {})},
            )
        self.procs[name] = proc
        return proc

    def log_text(self, name: str) -> str:
        return (self.workdir / "logs" / f"{name}.log").read_text(errors="replace")

    def start_origin(self, upload_limit: int = 0) -> None:
        argv = ["smartget.origin", "--root", str(self.workdir / "origin")]
        argv += ["--listen", f"{self.origin_host.ip}:{ORIGIN}"]
        if upload_limit:
            argv += ["--upload-limit", str(upload_limit)]
        self._start("origin", self.origin_host, argv)

    def start_hub(self) -> None:
        host = self.hub_host
        assert host is not None
        argv = ["smartget", "hub", "--listen", f"{host.ip}:{HUB_TEXT}"]
        argv += ["--http", f"{host.ip}:{HUB_HTTP}", "--udp-tracker", f"{host.ip}:{UDP_TRACKER}"]
        argv += ["--data-dir", str(self.workdir / "hub"), "--tracker-interval", "5"]
        argv += ["--log-level", self.log_level]
        self._start("hub", host, argv, {"SMARTGET_HUB_TOKEN": self.token})

    def start_dht(self) -> None:
        """A standalone ``smartget dht run`` (the fleet's second DHT node), bootstrapped
        from the hub's."""
        host = self.dht_host
        assert host is not None
        argv = ["smartget", "dht", "run", "--bind", f"{host.ip}:{DHT}"]
        if self.hub_host is not None:
            argv += ["--bootstrap", f"{self.hub_host.ip}:{HUB_TEXT}"]
        argv += ["--log-level", self.log_level]
        self._start("dht", host, argv)

    def start_node(self, node: NodeProc, *extra: str, bootstrap: Sequence[str] = ()) -> None:
        ip = node.host.ip
        argv = ["smartget", "node", "--ip", ip, "--zone", node.zone]
        argv += ["--wwwroot", str(node.root), "--data-dir", str(node.home / "data")]
        argv += ["--api", f"{ip}:{API}", "--files", f"{ip}:{FILES}", "--bt-port", str(BT)]
        argv += ["--fetch-allow", "10.0.0.0/8", "--fetch-allow", "127.0.0.0/8"]
        if self.hub_host is not None:
            argv += ["--hub-http", self.hub_url, "--report-interval", "1"]
            argv += ["--report-url", f"{self.hub_url}/report_peerstatus"]
        for address in [*self.dht_bootstrap(), *bootstrap]:
            argv += ["--dht-bootstrap", address]
        argv += ["--log-level", self.log_level, *extra]
        self._start(f"node{node.index}", node.host, argv, {"SMARTGET_NODE_TOKEN": self.token})

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[name]
        if proc.poll() is None:
            os.kill(proc.pid, sig)
            proc.wait(timeout=15)

    async def close(self) -> None:
        await self.http.aclose()
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs.values():
            try:
                await asyncio.to_thread(proc.wait, max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                await asyncio.to_thread(proc.wait, 5)

    # -- readiness ---------------------------------------------------------------------

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.returncode is None and proc.poll() is not None:
                tail = self.log_text(name)[-2000:]
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{tail}")

    async def _ok(self, url: str, headers: dict[str, str] | None = None) -> bool:
        self._check_alive()
        with contextlib.suppress(httpx.HTTPError):
            return (await self.http.get(url, headers=headers, timeout=2)).is_success
        return False

    async def wait_origin(self, within: float = 60) -> None:
        await wait_until(lambda: self._ok(f"{self.origin_url}/__origin__/stats"), within, "origin")

    async def wait_hub(self, within: float = 60) -> None:
        await wait_until(lambda: self._ok(f"{self.hub_url}/healthz"), within, "hub")

    async def wait_nodes(self, nodes: Sequence[NodeProc], within: float = 90) -> None:
        async def up() -> bool:
            answers = await asyncio.gather(
                *(self._ok(f"{n.api_url}/ping", self.auth) for n in nodes)
            )
            return all(answers)

        await wait_until(up, within, f"{len(nodes)} nodes answering /ping")

    async def wait_registered(self, count: int, within: float = 60) -> None:
        async def registered() -> bool:
            self._check_alive()
            with contextlib.suppress(httpx.HTTPError, ValueError):
                listed = (
                    await self.http.get(
                        f"{self.hub_url}/api/nodes", headers=self.auth, params={"limit": 100_000}
                    )
                ).json()
                return sum(1 for n in listed if n["api_url"]) >= count
            return False

        await wait_until(registered, within, f"{count} nodes registered with the hub")

    async def wait_dht(
        self, nodes: Sequence[NodeProc], at_least: int = 1, within: float = 60
    ) -> None:
        """Until every node's DHT holds ``at_least`` other nodes (``GET /metrics``)."""

        async def joined() -> bool:
            counts = await asyncio.gather(*(self.metric(n, "dht_nodes") for n in nodes))
            return all(c >= at_least for c in counts)

        await wait_until(joined, within, f"every node's DHT knowing {at_least} nodes")

    async def metric(self, node: NodeProc, name: str) -> float:
        with contextlib.suppress(httpx.HTTPError):
            reply = await self.http.get(f"{node.api_url}/metrics", headers=self.auth, timeout=3)
            for line in reply.text.splitlines():
                if line.startswith(f"smartget_node_{name} "):
                    return float(line.split()[1])
        return -1.0

    async def start_all(self, *, origin_upload_limit: int = 0) -> None:
        """Origin, hub, standalone DHT and every node, each waited for."""
        self.start_origin(origin_upload_limit)
        if self.hub_host is not None:
            self.start_hub()
            await self.wait_hub()
        if self.dht_host is not None:
            self.start_dht()
        for node in self.nodes:
            self.start_node(node)
        await self.wait_origin()
        await self.wait_nodes(self.nodes)
        if self.hub_host is not None:
            await self.wait_registered(len(self.nodes))

    # -- tasks ---------------------------------------------------------------------------

    async def task(
        self, node: NodeProc, event: str, args: dict[str, Any], within: float = 600
    ) -> dict[str, Any]:
        body = {"taskid": uuid.uuid4().hex, "event": event, "expire": "", "max_retries": "",
                "args": args}  # fmt: skip
        reply = await self.http.post(
            f"{node.api_url}/{event}", json=body, headers=self.auth, timeout=within
        )
        answer = dict(reply.json())
        if answer.get("result") != "success":
            raise AssertionError(f"{event} on {node.nodeid}: {answer.get('traceback')}")
        return dict(answer.get("args") or {})

    async def torrent_status(self, node: NodeProc, sha1: str) -> dict[str, Any] | None:
        """The node's /status entry for ``sha1``, or None (no answer, or not there)."""
        with contextlib.suppress(httpx.HTTPError, ValueError):
            reply = await self.http.get(f"{node.api_url}/status", headers=self.auth, timeout=3)
            for entry in reply.json()["torrents"]:
                if entry["sha1"] == sha1:
                    return dict(entry)
        return None

    async def origin_sent(self, tries: int = 3) -> int:
        """The origin's count of bytes sent; asked again when its capped link is so busy
        that the request does not get through in time (N = 32 in benchmarks/fleet.py)."""
        for tried in range(tries):
            try:
                reply = await self.http.get(f"{self.origin_url}/__origin__/stats", timeout=10)
                return int(reply.json()["bytes_sent"])
            except httpx.TransportError:
                if tried == tries - 1:
                    raise
        raise AssertionError("unreachable")

    async def push(
        self,
        name: str,
        receivers: Sequence[NodeProc],
        *,
        seed: NodeProc | None = None,
        within: float = 300,
        during: Callable[[PushRun, float], Awaitable[None]] | None = None,
        poll: float = 0.25,
        striped: bool = False,
        pipelined: bool = False,
    ) -> PushRun:
        """Push ``origin/name`` from ``seed`` (default: node 0) to ``receivers``.

        ``striped``: as a hub's job does where the origin has no torrent of the file,
        every node first fetches its own stripe from the origin (``prefetch``), the seed
        makes the torrent from their digests and all of them, the seed too, download the
        rest with their stripe had. ``pipelined`` (striped too): as a hub's job does
        where the origin publishes the file's torrent, every node makes the torrent from
        it at once and downloads it while fetching its stripe.
        ``during(run, elapsed)`` is awaited after every poll (faults go there). Returns
        when every receiver is complete or failed; raises AssertionError at ``within``.
        """
        seed = seed or self.nodes[0]
        size = (self.workdir / "origin" / name).stat().st_size
        striped = striped or pipelined
        run = PushRun(f"{self.origin_url}/{name}", size, striped=striped)
        before = await self.origin_sent()
        started, run.started_at = time.monotonic(), time.time()
        trackers = [f"{self.hub_url}/announce"] if self.hub_host is not None else []
        args: dict[str, Any] = {"fileurl": run.fileurl, "trackers": trackers}
        haves: dict[str, list[int]] = {}
        everyone = [seed, *receivers]
        stripe_of = {
            n.nodeid: {"stripe": i, "stripes": len(everyone)} for i, n in enumerate(everyone)
        }
        if pipelined:
            args |= {"origin_torrent": f"{run.fileurl}.torrent", **stripe_of[seed.nodeid]}
        elif striped:
            stripes = await asyncio.gather(
                *(self.task(n, "prefetch", {"fileurl": run.fileurl, "stripe": i,
                                            "stripes": len(everyone)}, within)
                  for i, n in enumerate(everyone))
            )  # fmt: skip
            for node, got in zip(everyone, stripes, strict=True):
                haves[node.nodeid] = [int(got["first_piece"]), int(got["end_piece"])]
            ordered = sorted(stripes, key=lambda got: int(got["first_piece"]))
            args |= {
                "pieces": "".join(str(got["pieces"]) for got in ordered),
                "piece_length": int(stripes[0]["piece_length"]),
                "filesize": size,
                "have": haves[seed.nodeid],
            }
        if pipelined:  # every node makes it from the origin's at once (hub/jobs/core.py)
            everyone_made = await asyncio.gather(
                *(self.task(n, "maketorrent", args | stripe_of[n.nodeid]) for n in everyone)
            )
            made = everyone_made[0]
            assert {str(m["sha1"]).lower() for m in everyone_made} == {made["sha1"].lower()}
        else:
            made = await self.task(seed, "maketorrent", args)
        run.sha1, run.torrent_url = str(made["sha1"]).lower(), str(made["torrentfileurl"])
        run.seed_ready = time.monotonic() - started
        if self.hub_host is not None:
            for tried in range(3):  # at N = 32 on two cores the hub may not accept in time
                try:
                    await self.http.post(
                        f"{self.hub_url}/api/torrents",
                        json={"info_hash": run.sha1, "name": name},
                        headers=self.auth,
                    )
                    break
                except httpx.TransportError:
                    if tried == 2:
                        raise
        run.nodes = [
            Progress(seed) if striped else Progress(seed, 100.0, run.seed_ready, "seeding")
        ]
        run.nodes += [Progress(n) for n in receivers]

        def download_args(node: NodeProc) -> dict[str, Any]:
            have: dict[str, Any] = {"have": haves[node.nodeid]} if node.nodeid in haves else {}
            return {"torrentfileurl": run.torrent_url, **have}

        if not pipelined:
            await asyncio.gather(
                *(self.task(p.node, "download", download_args(p.node), 60) for p in run.nodes[1:])
            )
        await self.follow(run, started, within=within, during=during, poll=poll)
        run.makespan = max(p.done_at or 0.0 for p in run.nodes)
        run.origin_bytes = await self.origin_sent() - before
        return run

    async def follow(
        self,
        run: PushRun,
        started: float,
        *,
        within: float,
        during: Callable[[PushRun, float], Awaitable[None]] | None = None,
        poll: float = 0.25,
    ) -> None:
        """Poll the receivers' /status until each is complete or failed."""

        async def check(p: Progress) -> None:
            entry = await self.torrent_status(p.node, run.sha1)
            if entry is None or p.done_at is not None:
                return
            p.percent, p.status = float(entry["percent"]), str(entry["status"])
            p.downtotal, p.uptotal = int(entry["downtotal"]), int(entry["uptotal"])
            p.error = str(entry.get("error") or "")
            if entry["complete"]:  # when the node saw it complete, not when a poll did
                completed_at = entry.get("completed_at") or time.time()
                p.done_at = max(0.0, completed_at - run.started_at)

        deadline = started + within
        while True:  # a poll every ``poll`` s (not wait_until's 20 ms: N nodes answer each)
            waiting = [
                p
                for p in run.nodes[0 if run.striped else 1 :]
                if p.done_at is None and p.status != "failed"
            ]
            if not waiting:
                return
            if time.monotonic() > deadline:
                late = ", ".join(f"{p.node.nodeid} at {p.percent}% {p.error}" for p in waiting)
                raise AssertionError(f"push not complete within {within} s: {late}")
            async with asyncio.timeout(max(1.0, deadline - time.monotonic())):
                await asyncio.gather(*(check(p) for p in waiting))
            if during is not None:
                await during(run, time.monotonic() - started)
            await asyncio.sleep(poll)

    def verify(self, run: PushRun, expected: str, nodes: Sequence[NodeProc] = ()) -> None:
        """Every copy that completed (or ``nodes``) has the origin's SHA-256."""
        for node in nodes or [p.node for p in run.nodes if p.done_at is not None]:
            path = run.copy_path(node)
            assert sha256_of(path) == expected, f"{node.nodeid}: {path} differs from the origin"
