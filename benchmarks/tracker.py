"""Benchmark the hub's tracker (HTTP and UDP, BEP 15) next to opentracker, same load.

Not a test. Starts, as separate processes on loopback, a hub (``--open-tracker``) and
opentracker (Debian's build, which needs a whitelist ``-w`` of the info-hashes), and
drives each with the same load generator, one after the other, ``--rounds`` times
(best of each kept: the machine is shared and noisy):

* HTTP announces/s: wrk, 1 thread, 32 connections, a Lua script announcing 1,000
  info-hashes from a population of 100,000 peers (each a (port, hash) pair), compact,
  numwant 50, half of them seeds. opentracker closes every connection after its reply,
  the hub keeps them open: each does what it does.
* UDP announces/s: a small C generator (compiled here with gcc into a temporary
  directory), sendmmsg/recvmmsg, a window of announces in flight, the same population.
  It drives opentracker many times harder than the hub, so it is not the limit.
* Announce p99 latency on a fresh hub: 100 swarms of 1,000 peers and one swarm of
  50,000 (filled over HTTP, peers named by the ``ip`` parameter), then announces one at
  a time on one keep-alive connection, numwant 50.

* ``--redis`` (instead of the above): HTTP announces/s of a hub on Redis (``--state
  redis://``, a redis-server of its own, AOF with ``appendfsync always``, and a second
  hub on it following the swarm log) next to the embedded hub, same wrk load, and the
  ratio. The load comes from one address, so it is 16 peers per swarm (the hub's
  ``--tracker-max-peers-per-ip``), 16,000 in all, and every announce is accepted (wrk
  counts failure replies afterwards: none is expected). Each round is printed: the first is cold
  (every peer new, so every announce is passed on to the other hub), the later ones
  warm (a peer re-announcing with nothing changed is passed on once per 30 s:
  hub/state/swarms.py).

Usage: python benchmarks/tracker.py [--seconds 5] [--rounds 2] [--skip-latency] [--redis]
Targets (issue 18): HTTP >= 0.5 x opentracker, UDP >= 0.3 x opentracker UDP,
p99 < 2 ms at 50,000 peers.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

HUB_HOST, OT_HOST, REDIS_HOST = "127.0.0.3", "127.0.0.4", "127.0.0.5"
HASHES = 1000
POPULATION = 100_000
UDP_WINDOW = 256
PER_ADDRESS = 16  # the hub's --tracker-max-peers-per-ip: peers of one address per swarm

LUA = """
math.randomseed(os.time())
hashes = {%s}
request = function()
  local idx = math.random(0, %d - 1)
  local path = "/announce?info_hash=" .. hashes[idx %% %d + 1] ..
    string.format("&peer_id=-WR0001-%%012d&port=%%d", idx, 1024 + math.floor(idx / %d)) ..
    "&uploaded=0&downloaded=0&left=" .. ((idx %% 2) * 1000) .. "&compact=1&numwant=50"
  return wrk.format("GET", path)
end
"""

# The same load, counting the replies that are failures (a refused announce is cheap);
# wrk reads each body into Lua then, six times slower: a check, not a measure.
COUNTING_LUA = (
    LUA
    + """
threads = {}
function setup(thread) table.insert(threads, thread) end
failures = 0
function response(status, headers, body)
  if string.find(body, "failure reason", 1, true) then failures = failures + 1 end
end
function done(summary, latency, requests)
  local n = 0
  for _, t in ipairs(threads) do n = n + t:get("failures") end
  io.write(string.format("Failures: %%d\n", n))
end
"""
)

UDPLOAD_C = r"""
/* BEP 15 load generator: connect once, then keep WINDOW announces in flight with
 * sendmmsg/recvmmsg. Usage: udpload HOST PORT SECONDS WINDOW HASHFILE POPULATION */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <endian.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#define BATCH 64
static double now(void) {
    struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9;
}
int main(int argc, char **argv) {
    if (argc < 7) return 2;
    struct sockaddr_in to = {0};
    to.sin_family = AF_INET; to.sin_port = htons(atoi(argv[2]));
    inet_pton(AF_INET, argv[1], &to.sin_addr);
    double seconds = atof(argv[3]); int window = atoi(argv[4]);
    uint32_t population = (uint32_t)atol(argv[6]);
    static unsigned char hashes[100000][20]; int nh = 0;
    FILE *f = fopen(argv[5], "rb"); if (!f) return 2;
    while (nh < 100000 && fread(hashes[nh], 20, 1, f) == 1) nh++;
    fclose(f);
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    int big = 8 << 20; setsockopt(s, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    connect(s, (struct sockaddr *)&to, sizeof to);
    uint64_t cid = 0; unsigned char buf[2048];
    for (int tries = 0; tries < 50 && !cid; tries++) {
        unsigned char req[16]; uint64_t pid = htobe64(0x41727101980ULL);
        uint32_t z = 0, tx = htonl(7);
        memcpy(req, &pid, 8); memcpy(req + 8, &z, 4); memcpy(req + 12, &tx, 4);
        send(s, req, 16, 0);
        struct pollfd p = {s, POLLIN, 0};
        if (poll(&p, 1, 200) > 0 && recv(s, buf, sizeof buf, 0) >= 16) memcpy(&cid, buf + 8, 8);
    }
    if (!cid) { fprintf(stderr, "no connect reply\n"); return 1; }
    static unsigned char reqs[BATCH][98], rbufs[BATCH][1500];
    struct mmsghdr out[BATCH], in[BATCH]; struct iovec oiov[BATCH], iiov[BATCH];
    memset(out, 0, sizeof out); memset(in, 0, sizeof in);
    for (int i = 0; i < BATCH; i++) {
        oiov[i].iov_base = reqs[i]; oiov[i].iov_len = 98;
        out[i].msg_hdr.msg_iov = &oiov[i]; out[i].msg_hdr.msg_iovlen = 1;
        iiov[i].iov_base = rbufs[i]; iiov[i].iov_len = 1500;
        in[i].msg_hdr.msg_iov = &iiov[i]; in[i].msg_hdr.msg_iovlen = 1;
    }
    uint32_t counter = 1; long replies = 0, errors = 0; int inflight = 0;
    double start = now(), end = start + seconds, last = start;
    while (now() < end) {
        int n = window - inflight; if (n > BATCH) n = BATCH;
        if (n > 0) {
            for (int i = 0; i < n; i++) {
                unsigned char *r = reqs[i]; uint32_t c = counter++, idx = c % population;
                uint32_t a = htonl(1), tx = htonl(c);
                memcpy(r, &cid, 8); memcpy(r + 8, &a, 4); memcpy(r + 12, &tx, 4);
                memcpy(r + 16, hashes[idx % nh], 20);
                char pid[21]; snprintf(pid, sizeof pid, "-UL0001-%012u", idx);
                memcpy(r + 36, pid, 20);
                uint64_t zero = 0, left = htobe64((idx & 1) ? 1000 : 0);
                memcpy(r + 56, &zero, 8); memcpy(r + 64, &left, 8); memcpy(r + 72, &zero, 8);
                uint32_t ev = 0, ip = 0, key = htonl(idx); int32_t nw = htonl(50);
                uint16_t port = htons(1024 + idx / nh);
                memcpy(r + 80, &ev, 4); memcpy(r + 84, &ip, 4); memcpy(r + 88, &key, 4);
                memcpy(r + 92, &nw, 4); memcpy(r + 96, &port, 2);
            }
            int sent = sendmmsg(s, out, n, 0); if (sent > 0) inflight += sent;
        }
        struct pollfd p = {s, POLLIN, 0};
        if (poll(&p, 1, 20) > 0) {
            int got = recvmmsg(s, in, BATCH, MSG_DONTWAIT, NULL);
            for (int i = 0; i < got; i++) {
                if (in[i].msg_len >= 4 && rbufs[i][3] == 3) errors++;
            }
            if (got > 0) {
                replies += got; inflight -= got; if (inflight < 0) inflight = 0; last = now();
            }
        } else if (now() - last > 0.05) { inflight = 0; last = now(); } /* lost ones: refill */
    }
    printf("%ld %ld %.3f\n", replies, errors, now() - start);
    return 0;
}
"""


def free_udp_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_tcp_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_port(host: str, port: int, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.1)
    raise SystemExit(f"nothing listens on {host}:{port} after {within:g} s")


@contextlib.contextmanager
def process(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextlib.contextmanager
def hub(work: Path, name: str, state: str = "sqlite") -> Iterator[tuple[int, int]]:
    """A hub tracking any info-hash; yields its HTTP and UDP ports."""
    http, udp = free_tcp_port(HUB_HOST), free_udp_port(HUB_HOST)
    argv = [sys.executable, "-m", "smartget", "hub", "--data-dir", str(work / name)]
    argv += ["--listen", f"{HUB_HOST}:0", "--http", f"{HUB_HOST}:{http}"]
    argv += ["--udp-tracker", f"{HUB_HOST}:{udp}", "--open-tracker", "--log-level", "warning"]
    argv += ["--state", state]
    with process(argv, work / f"{name}.log"):
        wait_port(HUB_HOST, http)
        yield http, udp


@contextlib.contextmanager
def opentracker(work: Path, hashes: list[bytes]) -> Iterator[tuple[int, int]]:
    whitelist = work / "whitelist"
    whitelist.write_text("".join(h.hex() + "\n" for h in hashes))
    port = free_tcp_port(OT_HOST)  # the same number for its UDP port
    argv = ["opentracker", "-i", OT_HOST, "-p", str(port), "-P", str(port)]
    with process([*argv, "-w", str(whitelist)], work / "opentracker.log"):
        wait_port(OT_HOST, port)
        yield port, port


@contextlib.contextmanager
def redis_server(work: Path) -> Iterator[str]:
    """A redis-server of its own (AOF, appendfsync always); yields its URL."""
    port = free_tcp_port(REDIS_HOST)
    (work / "redis").mkdir()
    argv = ["redis-server", "--bind", REDIS_HOST, "--port", str(port), "--save", ""]
    argv += ["--dir", str(work / "redis"), "--appendonly", "yes", "--appendfsync", "always"]
    with process(argv, work / "redis.log"):
        wait_port(REDIS_HOST, port)
        yield f"redis://{REDIS_HOST}:{port}/0"


def wrk_rate(url: str, script: Path, seconds: float) -> float:
    return wrk_run(url, script, seconds)[0]


def wrk_run(url: str, script: Path, seconds: float) -> tuple[float, int]:
    """Requests/s, and the failure replies if the script counts them (else 0)."""
    out = subprocess.run(
        ["wrk", "-t1", "-c32", f"-d{seconds:g}s", "-s", str(script), url],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=True,
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("Requests/sec:"))
    failures = [int(x.split()[1]) for x in out.splitlines() if x.startswith("Failures:")]
    return float(line.split()[1]), sum(failures)


def udp_rate(binary: Path, host: str, port: int, hashfile: Path, seconds: float) -> float:
    argv = [str(binary), host, str(port), f"{seconds:g}", str(UDP_WINDOW), str(hashfile)]
    out = subprocess.run(
        [*argv, str(POPULATION)],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=True,
    ).stdout
    replies, errors, elapsed = out.split()
    if int(errors) > int(replies) // 100:
        raise SystemExit(f"{host}:{port} answered {errors} of {replies} UDP announces with errors")
    return int(replies) / float(elapsed)


# -- latency --------------------------------------------------------------------------------


def _announce(info_hash: bytes, peer: int, numwant: int) -> bytes:
    quoted = "".join(f"%{b:02X}" for b in info_hash)
    ip = f"10.{peer >> 16 & 255}.{peer >> 8 & 255}.{peer & 255}"
    return (
        f"GET /announce?info_hash={quoted}&peer_id=-LT0001-{peer:012d}&port=6881&ip={ip}"
        f"&left={(peer % 2) * 1000}&compact=1&numwant={numwant} HTTP/1.1\r\nHost: x\r\n\r\n"
    ).encode()


def _read_replies(sock: socket.socket, count: int, buffer: bytearray) -> None:
    while count:
        end = buffer.find(b"\r\n\r\n")
        if end >= 0:
            head = bytes(buffer[:end]).lower()
            length = int(head.split(b"content-length:")[1].split(b"\r\n")[0])
            if len(buffer) >= end + 4 + length:
                del buffer[: end + 4 + length]
                count -= 1
                continue
        chunk = sock.recv(1 << 16)
        if not chunk:
            raise SystemExit("the hub closed the connection")
        buffer += chunk


def fill(port: int, swarms: list[tuple[bytes, int]]) -> None:
    """Announce every peer of every swarm, pipelined 500 at a time."""
    with socket.create_connection((HUB_HOST, port), timeout=30) as sock:
        buffer = bytearray()
        for info_hash, size in swarms:
            for start in range(0, size, 500):
                batch = range(start, min(size, start + 500))
                sock.sendall(b"".join(_announce(info_hash, p, 0) for p in batch))
                _read_replies(sock, len(batch), buffer)


def latencies(port: int, swarms: list[tuple[bytes, int]], samples: int) -> list[float]:
    """One announce at a time (a peer already in the swarm), seconds each."""
    times = []
    rng = random.Random(7)
    with socket.create_connection((HUB_HOST, port), timeout=30) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buffer = bytearray()
        for _ in range(samples):
            info_hash, size = rng.choice(swarms)
            request = _announce(info_hash, rng.randrange(size), 50)
            started = time.perf_counter()
            sock.sendall(request)
            _read_replies(sock, 1, buffer)
            times.append(time.perf_counter() - started)
    return times


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] * 1000


# -- main -------------------------------------------------------------------------------------


def on_redis(work: Path, hashes: list[bytes], seconds: float, rounds: int) -> None:
    """HTTP announces/s: the embedded hub, then a hub on Redis (with a second hub on the
    same Redis following its swarm log), round after round, two loads: peers announcing
    the same state (the steady case) and peers flipping between seed and leecher at
    random (half the announces change state: each of those is passed on)."""
    quoted = ",".join('"' + "".join(f"%{b:02X}" for b in h) + '"' for h in hashes)
    steady = LUA % (quoted, HASHES * PER_ADDRESS, HASHES, HASHES)
    scripts = {"steady": work / "steady.lua", "flipping": work / "flipping.lua"}
    scripts["steady"].write_text(steady)
    scripts["flipping"].write_text(
        steady.replace("((idx % 2) * 1000)", "(math.random(0, 1) * 1000)")
    )
    counting = work / "counting.lua"
    counting.write_text(COUNTING_LUA % (quoted, HASHES * PER_ADDRESS, HASHES, HASHES))
    rates: dict[tuple[str, str], list[float]] = {}
    failed = 0
    with (
        redis_server(work) as url,
        hub(work, "hub-embedded") as (embedded, _),
        hub(work, "hub-redis", url) as (shared, _),
        hub(work, "hub-redis-follower", url),
    ):
        for load, script in scripts.items():
            for _ in range(rounds):
                for name, port in (("embedded", embedded), ("redis", shared)):
                    rate = wrk_rate(f"http://{HUB_HOST}:{port}/", script, seconds)
                    rates.setdefault((load, name), []).append(rate)
        for port in (embedded, shared):  # not timed: counting replies slows wrk 6-fold
            failed += wrk_run(f"http://{HUB_HOST}:{port}/", counting, 1)[1]
    print(f"\nHTTP announces/s, embedded hub vs hub on Redis (+1 hub following), {seconds:g} s\n")
    print(f"{'load':10}{'round':>9}{'embedded':>12}{'redis':>12}{'ratio':>8}")
    for load in scripts:
        ref, mine = rates[load, "embedded"], rates[load, "redis"]
        for i, (r, m) in enumerate(zip(ref, mine, strict=True), 1):
            label = "1 (cold)" if i == 1 and load == "steady" else str(i)
            print(f"{load:10}{label:>9}{r:12,.0f}{m:12,.0f}{m / r:8.2f}")
        print(f"{load:10}{'best':>9}{max(ref):12,.0f}{max(mine):12,.0f}{max(mine) / max(ref):8.2f}")
    print(f"\n{HASHES * PER_ADDRESS:,} peers in {HASHES:,} swarms; failure replies: {failed}")


def main(seconds: float, rounds: int, skip_latency: bool, redis: bool = False) -> None:
    for tool in ("wrk", "redis-server") if redis else ("wrk", "opentracker", "gcc"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (scripts/bootstrap --test installs it)")
    rng = random.Random(18)
    hashes = [rng.randbytes(20) for _ in range(HASHES)]
    with tempfile.TemporaryDirectory(prefix="smartget-tracker-bench-") as tmp:
        work = Path(tmp)
        if redis:
            on_redis(work, hashes, seconds, rounds)
            return
        quoted = ",".join('"' + "".join(f"%{b:02X}" for b in h) + '"' for h in hashes)
        script = work / "announce.lua"
        script.write_text(LUA % (quoted, POPULATION, HASHES, HASHES))
        hashfile = work / "hashes.bin"
        hashfile.write_bytes(b"".join(hashes))
        (work / "udpload.c").write_text(UDPLOAD_C)
        binary = work / "udpload"
        subprocess.run(["gcc", "-O2", "-o", str(binary), str(work / "udpload.c")], check=True)
        best: dict[str, float] = {}
        loads: list[tuple[str, Callable[[], float]]]
        with hub(work, "hub") as (h_http, h_udp), opentracker(work, hashes) as (o_http, o_udp):
            loads = [
                ("http hub", lambda: wrk_rate(f"http://{HUB_HOST}:{h_http}/", script, seconds)),
                ("http ot", lambda: wrk_rate(f"http://{OT_HOST}:{o_http}/", script, seconds)),
                ("udp hub", lambda: udp_rate(binary, HUB_HOST, h_udp, hashfile, seconds)),
                ("udp ot", lambda: udp_rate(binary, OT_HOST, o_udp, hashfile, seconds)),
            ]
            for _ in range(rounds):
                for name, rate in loads:
                    best[name] = max(best.get(name, 0.0), rate())
        rows = [
            ("HTTP announces/s", best["http hub"], best["http ot"], 0.5),
            ("UDP announces/s", best["udp hub"], best["udp ot"], 0.3),
        ]
        print(f"\ntracker: hub vs opentracker, {os.cpu_count()} cores, best of {rounds}\n")
        print(f"{'':18}{'hub':>10}{'opentracker':>13}{'ratio':>8}{'target':>8}")
        for label, mine, ref, target in rows:
            print(f"{label:18}{mine:10,.0f}{ref:13,.0f}{mine / ref:8.2f}{target:>8}")
        if skip_latency:
            return
        big = [(rng.randbytes(20), 50_000)]
        small = [(rng.randbytes(20), 1000) for _ in range(100)]
        with hub(work, "hub-latency") as (h_http, _):
            started = time.perf_counter()
            fill(h_http, small + big)
            filled = time.perf_counter() - started
            print(f"\nannounce latency (ms), one at a time; 150,000 peers in {filled:.1f} s\n")
            print(f"{'swarms':28}{'p50':>8}{'p99':>8}{'max':>8}")
            for label, swarms in (("100 swarms of 1,000", small), ("1 swarm of 50,000", big)):
                times = latencies(h_http, swarms, 3000)
                print(
                    f"{label:28}{pct(times, 0.5):8.3f}{pct(times, 0.99):8.3f}"
                    f"{max(times) * 1000:8.3f}"
                )
                if label.startswith("1 swarm"):
                    mean = statistics.mean(times) * 1000
                    print(f"{'':28}mean {mean:.3f} ms; target p99 < 2 ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument(
        "--redis", action="store_true", help="only: a hub on Redis next to the embedded one"
    )
    args = parser.parse_args()
    main(args.seconds, args.rounds, args.skip_latency, args.redis)
