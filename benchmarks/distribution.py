"""Benchmark the main job: one file from the origin onto N nodes, against its lower bound.

Not a test. For each N (2, 4, 8, 16 receiving nodes) it starts, as separate processes
on 127.0.0.x (``smartget.demo.local_fleet``), an origin, a hub and N + 1 nodes, each
node's upload capped at u and the seed's at u_s (caps that hold between loopback peers
too), pushes a file of F bytes as a job of the hub (``POST /api/jobs``, followed as
``smartget push`` follows it) and reports:

* the makespan: job start to the last node complete (the seed's fetch from the origin
  and the making of the torrent included), as the hub recorded it;
* the P2P lower bound max(F/u_s, F/d_min, N*F/(u_s + sum u_i)) from the nodes' caps
  (``PushResult.lower_bound``; downloads are not capped, so F/d_min drops out) and the
  efficiency, bound / makespan;
* the origin's bytes / F (the web seed is held back while peers make progress);
* ``direct``: the efficiency of the same push driven by this process
  (``smartget.push.push``, what ``smartget push`` did before jobs), of a second file in
  the same fleet right after the job (``--no-direct`` skips it);
* in the same run, after the fleet is gone: N plain HTTP downloads at once from an
  origin whose upload is capped at u_s, the seed's cap (``smartget.origin
  --upload-limit``), and how many times faster the push was.

The defaults (F = 32 MiB, u = u_s = 4 MiB/s) keep the swarm at N = 16 (about 70 MB/s of
loopback traffic plus hashing) well within 2 cores; the run takes about 6 minutes, 4 of
them the HTTP downloads (N*F/u_s each); ``--no-http`` skips those.

Usage: python benchmarks/distribution.py [--size 32MiB] [--upload-limit 4MiB/s]
    [--seed-upload-limit RATE] [--nodes 2,4,8,16] [--no-http] [--ip-base 150]
At the demo's rate (libtorrent's rate limiter behaves differently there, see
``node.engine._swarm_tuning``): ``--upload-limit 20MiB/s --size 64MiB --nodes 2,4,8``.
Targets (issue 6): efficiency >= 0.8 at N = 8; origin bytes <= 1.1 F; the push at
least N/2 times faster than N plain HTTP downloads from the origin under the same cap.
Issue 15: a job's efficiency within 0.05 of the direct push's at N = 8.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from smartget.config import parse_size
from smartget.demo import free_port, local_fleet, make_file
from smartget.jobs_cli import follow_job, job_results
from smartget.push import FleetClient, PushResult, push, render

NAME = "dist.bin"
DIRECT = "direct.bin"
MiB = 1 << 20


@dataclass
class Row:
    n: int
    result: PushResult
    bound: float | None
    seed_uploaded: int | None = None
    http: float | None = None
    direct: float | None = None  # efficiency of the direct push

    @property
    def efficiency(self) -> float | None:
        if self.bound is None or not self.result.makespan:
            return None
        return self.bound / self.result.makespan

    @property
    def origin_ratio(self) -> float | None:
        if self.result.origin_bytes is None or not self.result.filesize:
            return None
        return self.result.origin_bytes / self.result.filesize

    @property
    def speedup(self) -> float | None:
        if self.http is None or not self.result.makespan:
            return None
        return self.http / self.result.makespan


def run_push(root: Path, n: int, args: argparse.Namespace) -> Row:
    """One fleet of n + 1 nodes; push the file; the fleet is stopped on return."""
    with local_fleet(
        root,
        nodes=n + 1,
        upload_limit=args.upload_limit,
        seed_upload_limit=args.seed_upload_limit,
        ip_base=args.ip_base,
        ip_prefix=args.ip_prefix,
        log_level="warning",
    ) as fleet:
        result = asyncio.run(run_job(fleet.hub_url, fleet.token, fleet.file_url(NAME), args))
        assert result.outcomes[0].node.ip == fleet.node_ips[0], "the seed is not the capped one"
        bound = result.lower_bound(fleet.caps())
        direct = None
        if not args.no_direct:
            reference = asyncio.run(
                push(
                    fleet.file_url(DIRECT),
                    hub_url=fleet.hub_url,
                    token=fleet.token,
                    give_up_after=args.timeout,
                    seed_node=fleet.node_ips[0],
                )
            )
            direct_bound = reference.lower_bound(fleet.caps())
            if reference.ok and direct_bound and reference.makespan:
                direct = direct_bound / reference.makespan
        seed_uploaded = None
        if result.outcomes:
            with contextlib.suppress(httpx.HTTPError, KeyError, ValueError, StopIteration):
                status = httpx.get(
                    f"http://{fleet.node_ips[0]}:8090/status",
                    headers={"Authorization": f"Bearer {fleet.token}"},
                    timeout=10,
                ).json()
                seed_uploaded = next(
                    int(t["uptotal"]) for t in status["torrents"] if t["sha1"] == result.sha1
                )
    if not result.ok:
        from rich.console import Console

        Console(stderr=True).print(render(result, fleet.caps()))
        raise SystemExit(f"N = {n}: the push failed")
    return Row(n, result, bound, seed_uploaded, direct=direct)


async def run_job(hub_url: str, token: str, url: str, args: argparse.Namespace) -> PushResult:
    """Push ``url`` as a job of the hub (seed: the node with the seed's cap); its result."""
    client = FleetClient(hub_url, token, token, 60)
    try:
        body = {"urls": [url], "deadline": args.timeout, "seed": args.seed_ip}
        job = await client.hub("POST", "/api/jobs", json=body)
        view = await follow_job(client, job["id"], within=args.timeout + 120)
    finally:
        await client.aclose()
    return job_results(view)[0]


@contextlib.contextmanager
def capped_origin(root: Path, rate: int) -> Iterator[str]:
    """An origin process serving ``root`` with its upload capped at ``rate`` bytes/s."""
    port = free_port("127.0.0.1")
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "smartget.origin", "--root", str(root)]
    argv += ["--listen", f"127.0.0.1:{port}", "--upload-limit", str(rate)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/__origin__/stats", timeout=1).is_success:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the capped origin did not start (exit {proc.poll()})")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def http_downloads(url: str, n: int, size: int, within: float) -> float:
    """Seconds for n concurrent plain GETs of ``url`` to complete (each checked for size)."""

    async def one(client: httpx.AsyncClient) -> None:
        got = 0
        async with client.stream("GET", url) as reply:
            reply.raise_for_status()
            async for chunk in reply.aiter_bytes(1 << 16):
                got += len(chunk)
        if got != size:
            raise SystemExit(f"plain HTTP download got {got} bytes, expected {size}")

    limits = httpx.Limits(max_connections=n)
    async with httpx.AsyncClient(timeout=within, limits=limits) as client:
        started = time.monotonic()
        async with asyncio.timeout(within):
            await asyncio.gather(*(one(client) for _ in range(n)))
        return time.monotonic() - started


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(rows: list[Row], args: argparse.Namespace) -> None:
    size, up, seed_up = args.size, args.upload_limit, args.seed_upload_limit
    print(
        f"\ndistribution of F = {size / MiB:g} MiB, node upload u = {up / MiB:g} MiB/s, "
        f"seed upload u_s = {seed_up / MiB:g} MiB/s, downloads uncapped (127.0.0.x, 2 cores)\n"
    )
    header = (
        "N",
        "makespan s",
        "bound s",
        "efficiency",
        "origin/F",
        "seed up/F",
        "HTTP s",
        "speedup",
        "N/2",
        "direct eff",
    )
    lines = [header]
    for row in rows:
        seed_up_ratio = None if row.seed_uploaded is None else row.seed_uploaded / size
        lines.append(
            (
                str(row.n),
                f"{row.result.makespan:.2f}",
                fmt(row.bound, ".2f"),
                fmt(row.efficiency, ".2f"),
                fmt(row.origin_ratio, ".2f"),
                fmt(seed_up_ratio, ".2f"),
                fmt(row.http, ".1f"),
                fmt(row.speedup, ".1f") + ("x" if row.speedup is not None else ""),
                f"{row.n / 2:g}x",
                fmt(row.direct, ".2f"),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)))
    print(
        "\ntargets: efficiency >= 0.8 at N = 8; origin/F <= 1.1; speedup >= N/2; the job's "
        "efficiency within 0.05 of the direct push's (direct eff)"
        "\nbound = max(F/u_s, N*F/(u_s + N*u)); HTTP = N plain downloads at once from an "
        "origin capped at u_s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="32MiB", type=parse_size, help="file size F")
    parser.add_argument(
        "--upload-limit", default="4MiB", type=parse_size, help="u, each node's upload cap (/s)"
    )
    parser.add_argument(
        "--seed-upload-limit", default=None, type=parse_size, help="u_s (/s) [default: u]"
    )
    parser.add_argument("--nodes", default="2,4,8,16", help="receiving nodes N, comma-separated")
    parser.add_argument("--no-http", action="store_true", help="skip the plain HTTP timing")
    parser.add_argument("--no-direct", action="store_true", help="skip the direct push")
    parser.add_argument("--ip-base", type=int, default=150, help="nodes on PREFIX.(BASE+1)...")
    parser.add_argument("--ip-prefix", default="127.0.0", help="the nodes' first three octets")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per push")
    for action in parser._actions:  # accept "4MiB/s" as well as "4MiB"
        if action.type is parse_size:
            action.type = lambda text: parse_size(str(text).removesuffix("/s"))
    args = parser.parse_args()
    if args.seed_upload_limit is None:
        args.seed_upload_limit = args.upload_limit
    counts = [int(n) for n in args.nodes.split(",")]

    base = Path(tempfile.mkdtemp(prefix="smartget-dist-"))
    rows: list[Row] = []
    try:
        master = base / "master" / NAME
        make_file(master, args.size)
        make_file(base / "master" / DIRECT, args.size)
        for n in counts:
            root = base / f"n{n}"
            (root / "origin").mkdir(parents=True)
            os.link(master, root / "origin" / NAME)
            os.link(base / "master" / DIRECT, root / "origin" / DIRECT)
            args.seed_ip = f"{args.ip_prefix}.{args.ip_base + 1}"
            print(f"N = {n}: starting {n + 1} nodes and pushing ...", file=sys.stderr)
            row = run_push(root, n, args)
            if not args.no_http:
                expected = n * args.size / args.seed_upload_limit
                print(f"N = {n}: {n} plain HTTP downloads (~{expected:.0f} s) ...", file=sys.stderr)
                with capped_origin(root / "origin", args.seed_upload_limit) as url:
                    row.http = asyncio.run(
                        http_downloads(f"{url}/{NAME}", n, args.size, 3 * expected + 60)
                    )
            rows.append(row)
            shutil.rmtree(root, ignore_errors=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print_table(rows, args)


if __name__ == "__main__":
    main()
