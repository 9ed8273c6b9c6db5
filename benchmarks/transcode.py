"""Transcode benchmark: the farm with 1, 2 and 3 workers against one plain ffmpeg run.

Not a test. Makes a test video (lavfi testsrc2 + sine, H.264/AAC), times one plain local
``ffmpeg -i INPUT ... OUTPUT`` with the job's parameters, then ``smartget transcode
serve`` with 1, 2 and 3 ``smartget transcode work`` processes on 127.0.5.x (this
service's loopback range), and prints a table::

    .venv/bin/python benchmarks/transcode.py [--seconds 60] [--size 1280x720]
        [--scale 960:540] [--preset fast] [--segment-seconds 10]

A farm's time is the ``serve`` process's wall time, start to exit: Python start-up,
probing, the parameter check, splitting, transfers, the join and the output checks
(probe and a full decode) included; the workers are already running. On a 2-core
machine more workers cannot go faster than one ffmpeg that already uses both cores;
the point is the farm's overhead. Target (issue 8): 1 worker within 15% of plain ffmpeg.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from smartget.mesh.ca import init_ca, issue_node
from smartget.net import free_port
from smartget.transcode.ffmpeg import parse_probe, probe_argv
from smartget.transcode.runner import default_ffmpeg

FFMPEG = default_ffmpeg()
SMARTGET = [sys.executable, "-m", "smartget", "transcode"]


def make_input(path: Path, seconds: int, size: str) -> None:
    subprocess.run(
        [FFMPEG, "-hide_banner", "-nostdin", "-v", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=duration={seconds}:size={size}:rate=25",
         "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
         "-c:v", "libx264", "-preset", "ultrafast", "-g", "50", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-shortest", str(path)],
        check=True,
    )  # fmt: skip


def frames(path: Path) -> tuple[float, int]:
    result = subprocess.run(probe_argv(FFMPEG, path), capture_output=True, text=True, check=True)
    probe = parse_probe(result.stderr, result.stdout)
    return probe.duration, probe.frames


def plain(source: Path, out: Path, scale: str, preset: str) -> float:
    start = time.perf_counter()
    subprocess.run(
        [FFMPEG, "-hide_banner", "-nostdin", "-v", "error", "-y", "-i", str(source),
         "-c:v", "libx264", "-vf", f"scale={scale}", "-c:a", "aac", "-preset", preset, str(out)],
        check=True,
    )  # fmt: skip
    return time.perf_counter() - start


def farm(root: Path, source: Path, out: Path, workers: int, args: argparse.Namespace) -> float:
    """Wall time of `transcode serve` with ``workers`` worker processes already up."""
    run = root / f"run{workers}"
    run.mkdir()
    host = "127.0.5.100"
    addr = f"{host}:{free_port(host)}"
    peers = run / "address.txt"
    peers.write_text(f"{addr}\n")
    concurrency = "2" if workers == 1 else "1"  # 2 cores in all
    procs = []
    try:
        for i in range(workers):
            tls = issue_node(root / "ca", f"w{i}", root / "nodes" / f"w{i}").parent
            log = open(run / f"w{i}.log", "wb")  # noqa: SIM115 - the child owns it
            procs.append(subprocess.Popen(
                [*SMARTGET, "work", "--server", "server", "--tls-dir", str(tls),
                 "--listen", f"127.0.5.{101 + i}:0", "--peers", str(peers),
                 "--concurrency", concurrency, "--heartbeat", "0.3",
                 "--data-dir", str(run / f"w{i}")],
                stdout=log, stderr=log, start_new_session=True,
            ))  # fmt: skip
            log.close()
        tls = issue_node(root / "ca", "server", root / "nodes" / "server").parent
        time.sleep(1.0)  # let the workers start; not part of the measure
        start = time.perf_counter()
        result = subprocess.run(
            [*SMARTGET, "serve", str(source), str(out), "--tls-dir", str(tls), "--listen", addr,
             "--segment-seconds", str(args.segment_seconds), "--scale", args.scale,
             "--extra-args", f"-preset {args.preset}", "--heartbeat", "0.3", "--no-progress",
             "--log-level", "warning", "--data-dir", str(run / "server")],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        elapsed = time.perf_counter() - start
        if result.returncode != 0:
            raise SystemExit(f"serve failed with {workers} workers: {result.stderr[-2000:]}")
        return elapsed
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--scale", default="960:540")
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--segment-seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="smartget-bench-transcode-") as tmp:
        root = Path(tmp)
        init_ca(root / "ca")
        source = root / "in.mp4"
        make_input(source, args.seconds, args.size)
        in_duration, in_frames = frames(source)
        rows = []
        base = plain(source, root / "plain.mp4", args.scale, args.preset)
        rows.append(("plain ffmpeg", base, "", frames(root / "plain.mp4")))
        for n in args.workers:
            out = root / f"farm{n}.mp4"
            elapsed = farm(root, source, out, n, args)
            target = "<= 1.15" if n == 1 else ""
            rows.append((f"farm, {n} worker{'s' if n > 1 else ''}", elapsed, target, frames(out)))
    print(
        f"input: {args.seconds} s {args.size} H.264/AAC ({in_frames} frames, {in_duration:.2f} s)"
        f" -> libx264 -preset {args.preset} scale {args.scale}, {args.segment_seconds:g} s "
        f"segments; {os.cpu_count()} cores"
    )
    print(f"{'run':<18} {'wall s':>8} {'ratio':>7}  {'frames':>7} {'duration':>9}  target")
    print(f"{'-' * 18} {'-' * 8} {'-' * 7}  {'-' * 7} {'-' * 9}  ------")
    for name, elapsed, target, (duration, count) in rows:
        met = "" if not target else (" met" if elapsed / base <= 1.15 else " MISSED")
        print(
            f"{name:<18} {elapsed:>8.2f} {elapsed / base:>7.3f}  {count:>7} {duration:>9.2f}"
            f"  {target}{met}"
        )


if __name__ == "__main__":
    main()
