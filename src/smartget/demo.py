"""``smartget demo``: a whole fleet on this machine, and one push job through it.

Starts, each as its own process with its own 127.0.0.x address and data directory: an
origin web server holding a generated file, a hub, and N nodes (in two zones, with
upload limits that hold between loopback peers too). Then pushes the file to every
node as a job of the hub (``POST /api/jobs``, followed like ``smartget push``), prints
the table, and stops everything it started (``--keep`` leaves it running
until Ctrl-C).

Secrets never go on a command line (anyone on the machine reads those with ``ps``): the
hub and the nodes get the fleet's token in their environment (SMARTGET_HUB_TOKEN,
SMARTGET_NODE_TOKEN), which only the same user can read. The nodes fetch from the
origin on 127.0.0.1, so they are started with ``--fetch-allow 127.0.0.0/8``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import httpx

from smartget.config import RATE, SIZE
from smartget.errors import StartupError
from smartget.net import free_port

__all__ = ["Fleet", "demo", "local_fleet"]

NODE_IP_BASE = 100  # nodes on 127.0.0.101, .102, ...
ZONES = ("zone-a", "zone-b")
START_TIMEOUT = 60.0


def make_file(path: Path, size: int) -> None:
    """``size`` random bytes (incompressible, like video), written in 1 MiB blocks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        left = size
        while left:
            block = min(left, 1 << 20)
            out.write(os.urandom(block))
            left -= block


@dataclass
class Fleet:
    """What :func:`local_fleet` started; everything needed to push and to measure."""

    workdir: Path
    token: str
    origin_url: str
    hub_url: str
    node_ips: list[str]
    upload_limit: int
    seed_upload_limit: int
    download_limit: int
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    hub_urls: list[str] = field(default_factory=list)  # every hub's (hubs=N); hub_url first

    def caps(self) -> dict[str, tuple[float, float]]:
        """nodeid -> (upload, download) caps in bytes/s (0 = none) for the lower bound."""
        caps = {}
        for i, ip in enumerate(self.node_ips):
            up = self.seed_upload_limit if i == 0 else self.upload_limit
            caps[f"{ZONES[i % len(ZONES)]}_{ip}"] = (
                float(up or float("inf")),
                float(self.download_limit or float("inf")),
            )
        return caps

    def file_url(self, name: str) -> str:
        return f"{self.origin_url}/{name}"

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[name]
        proc.send_signal(sig)
        proc.wait(timeout=15)


def _start(
    argv: list[str], log: Path, secrets_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a process of the fleet; ``secrets_env`` joins its environment, never argv."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **(secrets_env or {})}
    with log.open("ab") as out:
        return subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )


def _wait(
    what: str, check: Any, procs: dict[str, subprocess.Popen[bytes]], within: float = START_TIMEOUT
) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for name, proc in procs.items():
            if proc.poll() is not None:
                raise StartupError(f"{name} exited with {proc.returncode} during start-up")
        with contextlib.suppress(httpx.HTTPError, OSError):
            if check():
                return
        time.sleep(0.1)
    raise StartupError(f"{what} not ready within {within:g} s")


def _stop_all(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 20
    for proc in procs.values():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@contextlib.contextmanager
def local_fleet(
    workdir: Path,
    *,
    nodes: int = 4,
    upload_limit: int = 0,
    seed_upload_limit: int | None = None,
    download_limit: int = 0,
    ip_base: int = NODE_IP_BASE,
    log_level: str = "info",
    ip_prefix: str = "127.0.0",
    hub_args: tuple[str, ...] = (),
    node_args: tuple[str, ...] = (),
    hubs: int = 1,
    origin_args: tuple[str, ...] = (),
) -> Iterator[Fleet]:
    """Start an origin, ``hubs`` hubs and ``nodes`` nodes; stop them all on exit.

    Node i listens on ``IP_PREFIX.(IP_BASE + i)``; ``hub_args``, ``node_args`` and
    ``origin_args`` are extra flags of the hubs, of every node and of the origin. Several
    hubs need a shared state in ``hub_args`` (``--state redis://...``); they are named
    ``hub``, ``hub2``, ... in ``procs`` and every node names them all (it moves to the next
    when one is gone).
    """
    python = [sys.executable, "-m"]
    token = secrets.token_urlsafe(16)
    origin_port = free_port("127.0.0.1")
    ports = [
        (free_port("127.0.0.1"), free_port("127.0.0.1"), free_port("127.0.0.1", udp=True))
        for _ in range(hubs)
    ]
    fleet = Fleet(
        workdir=workdir,
        token=token,
        origin_url=f"http://127.0.0.1:{origin_port}",
        hub_url=f"http://127.0.0.1:{ports[0][1]}",
        hub_urls=[f"http://127.0.0.1:{http_port}" for _, http_port, _ in ports],
        node_ips=[f"{ip_prefix}.{ip_base + 1 + i}" for i in range(nodes)],
        upload_limit=upload_limit,
        seed_upload_limit=upload_limit if seed_upload_limit is None else seed_upload_limit,
        download_limit=download_limit,
    )
    logs = workdir / "logs"
    procs = fleet.procs
    try:
        procs["origin"] = _start(
            [
                *python,
                "smartget.origin",
                "--root",
                str(workdir / "origin"),
                "--listen",
                f"127.0.0.1:{origin_port}",
                *origin_args,
            ],
            logs / "origin.log",
        )
        for index, (text_port, http_port, udp_port) in enumerate(ports):
            name = "hub" if index == 0 else f"hub{index + 1}"
            procs[name] = _start(
                [
                    *python,
                    "smartget",
                    "hub",
                    "--listen",
                    f"127.0.0.1:{text_port}",
                    "--http",
                    f"127.0.0.1:{http_port}",
                    "--data-dir",
                    str(workdir / name),
                    "--tracker-interval",
                    "5",
                    # Its own UDP ports (BEP 15 tracker; the DHT takes the text port's
                    # number), fixed so a restarted hub keeps them: two demos side by side.
                    "--udp-tracker",
                    f"127.0.0.1:{udp_port}",
                    "--log-level",
                    log_level,
                    *hub_args,
                ],
                logs / f"{name}.log",
                {"SMARTGET_HUB_TOKEN": token, "SMARTGET_NODE_TOKEN": token},
            )
        for url in fleet.hub_urls:
            _wait(
                "the hub", lambda url=url: httpx.get(f"{url}/healthz", timeout=1).is_success, procs
            )
        each_hub = [
            [*("--hub-http", url), *("--dht-bootstrap", f"127.0.0.1:{text_port}")]
            for url, (text_port, _, _) in zip(fleet.hub_urls, ports, strict=True)
        ]
        reports = [["--report-url", f"{url}/report_peerstatus"] for url in fleet.hub_urls]
        for i, ip in enumerate(fleet.node_ips):
            limit = fleet.seed_upload_limit if i == 0 else upload_limit
            argv = [
                *python,
                "smartget",
                "node",
                "--ip",
                ip,
                "--zone",
                ZONES[i % len(ZONES)],
                "--wwwroot",
                str(workdir / f"node{i + 1}" / "www"),
                "--data-dir",
                str(workdir / f"node{i + 1}" / "data"),
                "--api",
                f"{ip}:8090",
                "--files",
                f"{ip}:8080",
                "--bt-port",
                "6881",
                # each hub's API, its DHT (UDP on its text protocol's address), collector
                *(arg for flags in each_hub + reports for arg in flags),
                "--fetch-allow",
                "127.0.0.0/8",
                "--report-interval",
                "1",
                "--log-level",
                log_level,
            ]
            if limit:
                argv += ["--upload-limit", str(limit)]
            if download_limit:
                argv += ["--download-limit", str(download_limit)]
            argv += node_args
            procs[f"node{i + 1}"] = _start(
                argv, logs / f"node{i + 1}.log", {"SMARTGET_NODE_TOKEN": token}
            )
        auth = {"Authorization": f"Bearer {token}"}

        def all_registered() -> bool:
            listed = httpx.get(f"{fleet.hub_url}/api/nodes", headers=auth, timeout=2).json()
            return sum(1 for n in listed if n["api_url"]) >= nodes

        _wait(f"{nodes} nodes registered with the hub", all_registered, procs)
        _wait(
            "the origin",
            lambda: httpx.get(f"{fleet.origin_url}/__origin__/stats", timeout=1).is_success,
            procs,
        )
        yield fleet
    finally:
        _stop_all(procs)


@click.command("demo")
@click.option(
    "--nodes",
    type=click.IntRange(2, 100),
    default=4,
    show_default=True,
    help="How many nodes (each its own process and 127.0.0.x address).",
)
@click.option(
    "--size", type=SIZE, default="64MiB", show_default=True, help="Size of the generated file."
)
@click.option(
    "--upload-limit",
    type=RATE,
    default="20MiB/s",
    show_default=True,
    help="Each node's upload cap (0: none); holds between loopback peers too.",
)
@click.option("--keep", is_flag=True, help="Stay up after the push until Ctrl-C.")
@click.option(
    "--ip-base",
    type=click.IntRange(1, 253),
    default=NODE_IP_BASE,
    show_default=True,
    help="Node i listens on 127.0.0.(IP_BASE+i); change it to run two demos side by side.",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the fleet's files go [default: a temporary directory, removed].",
)
@click.option(
    "--log-level",
    default="warning",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="Log level of the started processes (their logs are in WORKDIR/logs).",
)
def demo(
    nodes: int,
    size: int,
    upload_limit: int,
    keep: bool,
    ip_base: int,
    workdir: Path | None,
    log_level: str,
) -> None:
    """Run an origin, a hub and N nodes on 127.0.0.x, push a file to all, show the table.

    The push is a job of the hub (`smartget jobs show ID` with --keep).
    """
    from smartget.jobs_cli import failure_message, run_job

    if ip_base + nodes > 254:
        raise click.BadParameter(
            f"{nodes} nodes from 127.0.0.{ip_base + 1} run past 127.0.0.254", param_hint="--ip-base"
        )

    temporary = workdir is None
    root = Path(tempfile.mkdtemp(prefix="smartget-demo-")) if workdir is None else workdir
    try:
        name = f"demo/file-{size}.bin"
        click.echo(f"demo: generating {size:,} bytes in {root / 'origin' / name}", err=True)
        make_file(root / "origin" / name, size)
        click.echo(
            f"demo: starting an origin, a hub and {nodes} nodes (logs in {root / 'logs'})", err=True
        )
        with local_fleet(
            root, nodes=nodes, upload_limit=upload_limit, ip_base=ip_base, log_level=log_level
        ) as fleet:
            view = run_job(
                (fleet.hub_url, fleet.token),
                body={"urls": [fleet.file_url(name)], "deadline": 300},
                within=420,
                caps=fleet.caps(),
            )
            if keep:
                click.echo(
                    f"\nhub: console {fleet.hub_url}/ (sign in with the token, or open "
                    f"{fleet.hub_url}/login#token={fleet.token}) and API "
                    f"{fleet.hub_url}/docs (token {fleet.token}); Ctrl-C stops everything",
                    err=True,
                )
                signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
                signal.sigwait({signal.SIGINT, signal.SIGTERM})
        if view["state"] != "done":
            raise click.ClickException(failure_message(view))
    finally:
        if temporary and not keep:
            shutil.rmtree(root, ignore_errors=True)
