"""Benchmark the hub's tracker (HTTP and UDP, BEP 15) next to opentracker, same load.

Not a test. Starts, as separate processes on loopback, a hub (``--open-tracker``) and
opentracker (Debian's build, which needs a whitelist ``-w`` of the info-hashes), and
drives each with the same load, one after the other, ``--rounds`` times (best of each
kept: the machine is shared and noisy).

The load is a fleet's: many source addresses, each within the hub's per-address caps
(``--tracker-max-peers-per-ip`` 16 peers per swarm, 20,000 in all), every peer
re-announcing from the address that listed it. Loopback makes that free: all of
127.0.0.0/8 is local on Linux, so a client socket may be bound to any 127.A.B.C (no
``ip=``, no trusted network: the hub's caps count the *source* address, so a proxy
announcing for many peers is refused past them like anyone). A load generator in C
(compiled here with gcc into a temporary directory) sends it and counts every failure
reply (a ``failure reason``, a non-200 status, a BEP 15 error); a run with more than
:data:`MAX_FAILURES` of them fails loudly (:class:`LoadFailed`, exit 1), for the hub
and opentracker alike, since a refusal is cheap and would pass for speed. (Before,
wrk and the UDP generator sent everything from one address: the hub refused most of
it, so the figures measured its error path.) The population is 100,000 peers over
1,000 info-hashes (100 per swarm, half of each seeds), compact, numwant 50:

* HTTP announces/s: 32 connections, each from its own address (3,125 peers, at most 4
  per swarm), one request in flight each. opentracker closes every connection after
  its reply, the hub keeps them open: each does what it does.
* UDP announces/s: one socket sending from 1,024 addresses (``IP_PKTINFO``; about 100
  peers each, one per swarm), a BEP 15 connect per address, then a window of 256
  announces in flight, sendmmsg/recvmmsg; when fewer than 32 replies came at once it
  naps 200 us so they gather (woken for each reply, the generator took so much of a
  2-core machine's CPU that it, not opentracker, was the limit: 57,000/s instead of
  150,000/s; the hub gains a little too). Real clients are other machines.
* Announce p99 latency on a fresh hub: 100 swarms of 1,000 peers and one swarm of
  50,000, 16 peers per source address (3,125 addresses; one connection each, its
  announces pipelined), then announces one at a time on keep-alive connections of 64
  of those addresses, numwant 50; "seen" is the largest swarm size a reply told.

* ``--redis`` (instead of the above): HTTP announces/s of a hub on Redis (``--state
  redis://``, a redis-server of its own, AOF with ``appendfsync always``, and a second
  hub on it following the swarm log) next to the embedded hub, same wrk load, and the
  ratio. The load comes from one address, so it is 16 peers per swarm (the hub's
  ``--tracker-max-peers-per-ip``), 16,000 in all, and every announce is accepted (wrk
  counts failure replies afterwards: none is expected). Each round is printed: the first is cold
  (every peer new, so every announce is passed on to the other hub), the later ones
  warm (a peer re-announcing with nothing changed is passed on once per 30 s:
  hub/state/swarms.py). This mode still drives wrk, which cannot bind source
  addresses; its failure count is checked like the others.

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
UDP_WINDOW = 256  # UDP announces in flight
UDP_ADDRESSES = 1024  # source addresses of the UDP load (about 100 peers each, 1 per swarm)
HTTP_CONNECTIONS = 32  # HTTP connections, each from a source address of its own
PER_ADDRESS = 16  # the hub's --tracker-max-peers-per-ip: peers of one address per swarm
LATENCY_ADDRESSES = 64  # source addresses (keep-alive connections) the latency samples use
MAX_FAILURES = 0.01  # failure replies past which a figure is refused (LoadFailed)

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

LOADGEN_C = r"""
/* Tracker load generator, from many source addresses (127.A.B.C: all of 127/8 is
 * local on Linux), counting failure replies. Peer idx of the population announces
 * info-hash idx % H at port 1024 + idx / H from address (idx / H + idx % H) % ADDRESSES.
 *   udp:  one socket, the source of each datagram set with IP_PKTINFO; a BEP 15
 *         connect per address, then CONCURRENCY announces in flight (sendmmsg/recvmmsg).
 *   http: CONCURRENCY connections, connection c from address c (ADDRESSES = CONCURRENCY),
 *         one GET /announce in flight each, kept alive unless the server closes.
 * Usage: trackerload udp|http HOST PORT SECONDS CONCURRENCY HASHFILE POPULATION ADDRESSES
 * Prints: replies failures seconds sent */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#define BATCH 64
#define MAXH 100000
static unsigned char hashes[MAXH][20];
static char escaped[MAXH][61];
static uint32_t nh, population, naddr, *first, *members;
static uint64_t seed = 88172645463325252ULL;
static struct sockaddr_in to;
static long replies, failures, sent, closed;
static double now(void) {
    struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9;
}
static uint32_t rnd(void) {
    seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17; return (uint32_t)(seed >> 16);
}
static uint32_t address_of(uint32_t idx) { return (idx / nh + idx % nh) % naddr; }
static uint32_t source_ip(uint32_t a) {
    return (127u << 24) | ((16 + a / 62500) << 16) | ((1 + a / 250 % 250) << 8) | (1 + a % 250);
}
static uint32_t pick(uint32_t a) { return members[first[a] + rnd() % (first[a + 1] - first[a])]; }

/* -- udp ---------------------------------------------------------------------------- */
static unsigned char reqs[BATCH][98], rbufs[BATCH][1500];
static union { char buf[CMSG_SPACE(sizeof(struct in_pktinfo))]; struct cmsghdr align; } ctl[BATCH];
static struct mmsghdr out[BATCH], in[BATCH];
static struct iovec oiov[BATCH], iiov[BATCH];
static void from(int i, uint32_t a) {
    struct in_pktinfo *pi = (struct in_pktinfo *)CMSG_DATA(&ctl[i].align);
    memset(pi, 0, sizeof *pi); pi->ipi_spec_dst.s_addr = htonl(source_ip(a));
}
static int udp(double seconds, int window) {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    int big = 8 << 20; setsockopt(s, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    setsockopt(s, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    struct sockaddr_in any = {0}; any.sin_family = AF_INET;
    if (bind(s, (struct sockaddr *)&any, sizeof any)) { perror("bind"); return 1; }
    for (int i = 0; i < BATCH; i++) {
        oiov[i].iov_base = reqs[i];
        out[i].msg_hdr.msg_iov = &oiov[i]; out[i].msg_hdr.msg_iovlen = 1;
        out[i].msg_hdr.msg_name = &to; out[i].msg_hdr.msg_namelen = sizeof to;
        out[i].msg_hdr.msg_control = ctl[i].buf; out[i].msg_hdr.msg_controllen = sizeof ctl[i].buf;
        struct cmsghdr *c = &ctl[i].align;
        c->cmsg_level = IPPROTO_IP; c->cmsg_type = IP_PKTINFO;
        c->cmsg_len = CMSG_LEN(sizeof(struct in_pktinfo));
        iiov[i].iov_base = rbufs[i]; iiov[i].iov_len = 1500;
        in[i].msg_hdr.msg_iov = &iiov[i]; in[i].msg_hdr.msg_iovlen = 1;
    }
    /* a connection id per source address */
    uint64_t *cid = calloc(naddr, 8); uint32_t missing = naddr;
    for (int round = 0; round < 50 && missing; round++) {
        for (uint32_t a = 0; a < naddr;) {
            int n = 0;
            for (; a < naddr && n < BATCH; a++) {
                if (cid[a]) continue;
                uint64_t pid = htobe64(0x41727101980ULL); uint32_t z = 0, tx = htonl(a);
                memcpy(reqs[n], &pid, 8); memcpy(reqs[n] + 8, &z, 4); memcpy(reqs[n] + 12, &tx, 4);
                oiov[n].iov_len = 16; from(n, a); n++;
            }
            if (n) sendmmsg(s, out, n, 0);
            struct pollfd p = {s, POLLIN, 0};
            while (poll(&p, 1, 50) > 0) {
                int got = recvmmsg(s, in, BATCH, MSG_DONTWAIT, NULL);
                for (int i = 0; i < got; i++) {
                    uint32_t tx; memcpy(&tx, rbufs[i] + 4, 4); tx = ntohl(tx);
                    if (in[i].msg_len >= 16 && rbufs[i][3] == 0 && tx < naddr && !cid[tx]) {
                        memcpy(&cid[tx], rbufs[i] + 8, 8); missing--;
                    }
                }
                if (got <= 0) break;
            }
        }
    }
    for (struct pollfd p = {s, POLLIN, 0}; poll(&p, 1, 200) > 0;) /* late connect replies */
        if (recvmmsg(s, in, BATCH, MSG_DONTWAIT, NULL) <= 0) break;
    if (missing) {
        fprintf(stderr, "no connect reply for %u of %u addresses\n", missing, naddr);
        return 1;
    }
    for (int i = 0; i < BATCH; i++) oiov[i].iov_len = 98;
    uint32_t counter = 1; int inflight = 0;
    double start = now(), end = start + seconds, last = start;
    while (now() < end) {
        int n = window - inflight; if (n > BATCH) n = BATCH;
        if (n > 0) {
            for (int i = 0; i < n; i++) {
                unsigned char *r = reqs[i]; uint32_t idx = rnd() % population, a = address_of(idx);
                uint32_t act = htonl(1), tx = htonl(counter++);
                memcpy(r, &cid[a], 8); memcpy(r + 8, &act, 4); memcpy(r + 12, &tx, 4);
                memcpy(r + 16, hashes[idx % nh], 20);
                char pid[21]; snprintf(pid, sizeof pid, "-TL0001-%012u", idx);
                memcpy(r + 36, pid, 20);
                uint64_t zero = 0, left = htobe64((idx / nh) & 1 ? 1000 : 0);
                memcpy(r + 56, &zero, 8); memcpy(r + 64, &left, 8); memcpy(r + 72, &zero, 8);
                uint32_t ev = 0, ip = 0, key = htonl(idx); int32_t nw = htonl(50);
                uint16_t port = htons(1024 + idx / nh);
                memcpy(r + 80, &ev, 4); memcpy(r + 84, &ip, 4); memcpy(r + 88, &key, 4);
                memcpy(r + 92, &nw, 4); memcpy(r + 96, &port, 2);
                from(i, a);
            }
            int done = sendmmsg(s, out, n, 0); if (done > 0) { inflight += done; sent += done; }
        }
        struct pollfd p = {s, POLLIN, 0};
        if (poll(&p, 1, 20) > 0) {
            int got = recvmmsg(s, in, BATCH, MSG_DONTWAIT, NULL), late = 0;
            for (int i = 0; i < got; i++)
                if (in[i].msg_len >= 16 && rbufs[i][3] == 0) late++; /* a late connect reply */
                else if (in[i].msg_len < 8 || rbufs[i][3] != 1) {
                    if (!failures++) /* the first one, for the report */
                        fprintf(stderr, "first failure: action %d: %.*s\n", rbufs[i][3],
                                in[i].msg_len > 8 ? (int)in[i].msg_len - 8 : 0,
                                (char *)rbufs[i] + 8);
                }
            got -= late;
            if (got < BATCH / 2) { /* let replies gather: a wake-up per reply steals the */
                struct timespec nap = {0, 200000}; /* server's CPU on a small machine */
                nanosleep(&nap, NULL);
            }
            if (got > 0) {
                replies += got; inflight -= got; if (inflight < 0) inflight = 0; last = now();
            }
        } else if (now() - last > 0.05) { inflight = 0; last = now(); } /* lost ones: refill */
    }
    printf("%ld %ld %.3f %ld\n", replies, failures, now() - start, sent);
    return 0;
}

/* -- http --------------------------------------------------------------------------- */
struct conn { int fd, connected, len; uint32_t a; char buf[16384]; };
static int ep;
static void http_open(struct conn *c) {
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in src = {0};
    src.sin_family = AF_INET; src.sin_addr.s_addr = htonl(source_ip(c->a));
    if (bind(c->fd, (struct sockaddr *)&src, sizeof src)) { perror("bind"); exit(1); }
    if (connect(c->fd, (struct sockaddr *)&to, sizeof to) && errno != EINPROGRESS) {
        perror("connect"); exit(1);
    }
    c->connected = 0; c->len = 0;
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
}
static void http_reopen(struct conn *c) { close(c->fd); http_open(c); }
static void http_send(struct conn *c) {
    char req[512]; uint32_t idx = pick(c->a);
    int n = snprintf(req, sizeof req,
        "GET /announce?info_hash=%s&peer_id=-TL0001-%012u&port=%u&uploaded=0&downloaded=0"
        "&left=%d&compact=1&numwant=50 HTTP/1.1\r\nHost: %s:%d\r\n\r\n",
        escaped[idx % nh], idx, 1024 + idx / nh, (idx / nh) & 1 ? 1000 : 0,
        inet_ntoa(to.sin_addr), ntohs(to.sin_port));
    c->len = 0;
    if (write(c->fd, req, n) != n) { failures++; http_reopen(c); return; }
    sent++;
}
/* read; once a whole reply is in, count it and reopen or send the next request */
static void http_read(struct conn *c) {
    for (;;) {
        int n = read(c->fd, c->buf + c->len, sizeof c->buf - 1 - c->len);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
        int eof = n <= 0;
        if (n > 0) c->len += n;
        c->buf[c->len] = 0;
        char *end = strstr(c->buf, "\r\n\r\n");
        if (!end) {
            if (eof || c->len >= (int)sizeof c->buf - 1) {
                if (c->len) { replies++; failures++; } else closed++;
                http_reopen(c); return;
            }
            continue;
        }
        *end = 0;
        int status = c->len > 12 ? atoi(c->buf + 9) : 0;
        char *cl = strcasestr(c->buf, "\ncontent-length:");
        int closing = strcasestr(c->buf, "\nconnection: close") != NULL
            || (strncmp(c->buf, "HTTP/1.0", 8) == 0 && !strcasestr(c->buf, "keep-alive"));
        *end = '\r';
        int head = end + 4 - c->buf;
        int body = cl ? atoi(cl + 16) : (eof ? c->len - head : -1);
        if (body < 0 || c->len < head + body) {
            if (eof) { replies++; failures++; http_reopen(c); return; }
            continue;
        }
        replies++;
        if (status != 200 || memmem(c->buf + head, body, "failure reason", 14)) {
            if (!failures++) /* the first one, for the report */
                fprintf(stderr, "first failure: status %d: %.*s\n", status, body < 200 ? body : 200,
                        c->buf + head);
        }
        /* a server that closes after each reply (opentracker: without saying so) */
        if (!closing && !eof && read(c->fd, c->buf, 1) == 0) closing = 1;
        if (closing || eof) http_reopen(c); else http_send(c);
        return;
    }
}
static int http(double seconds, int nconn) {
    ep = epoll_create1(0);
    struct conn *conns = calloc(nconn, sizeof *conns);
    for (int i = 0; i < nconn; i++) { conns[i].a = i % naddr; http_open(&conns[i]); }
    struct epoll_event evs[256];
    double start = now(), end = start + seconds;
    while (now() < end) {
        int n = epoll_wait(ep, evs, 256, 50);
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (!c->connected) {
                int err = 0; socklen_t len = sizeof err;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err || (evs[i].events & (EPOLLERR | EPOLLHUP))) {
                    failures++; http_reopen(c); continue;
                }
                c->connected = 1;
                struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                http_send(c);
            } else {
                http_read(c);
            }
        }
    }
    printf("%ld %ld %.3f %ld\n", replies, failures, now() - start, sent);
    fprintf(stderr, "closed without a reply: %ld\n", closed);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 9) return 2;
    to.sin_family = AF_INET; to.sin_port = htons(atoi(argv[3]));
    inet_pton(AF_INET, argv[2], &to.sin_addr);
    double seconds = atof(argv[4]); int concurrency = atoi(argv[5]);
    population = (uint32_t)atol(argv[7]); naddr = (uint32_t)atol(argv[8]);
    FILE *f = fopen(argv[6], "rb"); if (!f) return 2;
    while (nh < MAXH && fread(hashes[nh], 20, 1, f) == 1) nh++;
    fclose(f);
    if (!nh || !naddr || naddr > population) return 2;
    for (uint32_t h = 0; h < nh; h++)
        for (int i = 0; i < 20; i++) sprintf(escaped[h] + 3 * i, "%%%02X", hashes[h][i]);
    first = calloc(naddr + 1, 4); members = malloc(population * 4);
    for (uint32_t i = 0; i < population; i++) first[address_of(i) + 1]++;
    for (uint32_t a = 0; a < naddr; a++) first[a + 1] += first[a];
    uint32_t *fill = calloc(naddr, 4);
    for (uint32_t i = 0; i < population; i++) {
        uint32_t a = address_of(i); members[first[a] + fill[a]++] = i;
    }
    for (uint32_t a = 0; a < naddr; a++) if (first[a + 1] == first[a]) return 2;
    return strcmp(argv[1], "udp") == 0 ? udp(seconds, concurrency) : http(seconds, concurrency);
}
"""


def tracker_core() -> str:
    """Which tracker the hub subprocesses run: compiled with mypyc, or pure Python."""
    from smartget import native

    if native.usable():
        return "compiled with mypyc"
    return "pure Python (SMARTGET_NATIVE=0, or no fresh build: run scripts/bootstrap)"


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
    # Started as root, opentracker reads it as nobody: a 0700 temporary directory would
    # hide it, and then it refuses every announce ("not authorized").
    work.chmod(0o755)
    whitelist.chmod(0o644)
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


class LoadFailed(SystemExit):
    """A load the tracker refused: what was measured is its error path, not announces."""


def check_replies(who: str, replies: int, failures: int, detail: str = "") -> None:
    """Fail loudly when more than :data:`MAX_FAILURES` of the replies are failures."""
    if replies == 0:
        raise LoadFailed(f"{who}: no reply at all{detail}")
    if failures > replies * MAX_FAILURES:
        raise LoadFailed(
            f"{who}: {failures:,} of {replies:,} replies were failures "
            f"({failures / replies:.1%}, more than {MAX_FAILURES:.0%}): the figure would "
            f"measure refusals, not announces{detail}"
        )


def load_rate(
    binary: Path, hashfile: Path, mode: str, target: tuple[str, int], seconds: float
) -> float:
    """Announces/s from the C generator (``mode`` udp or http); fails loudly on failures."""
    host, port = target
    concurrency, addresses = (UDP_WINDOW, UDP_ADDRESSES)
    if mode == "http":
        concurrency = addresses = HTTP_CONNECTIONS
    argv = [str(binary), mode, host, str(port), f"{seconds:g}", str(concurrency), str(hashfile)]
    done = subprocess.run(
        [*argv, str(POPULATION), str(addresses)],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )
    if done.returncode != 0:
        raise LoadFailed(f"{mode} load on {host}:{port} failed: {done.stderr.strip()}")
    replies, failures, elapsed, sent = done.stdout.split()
    first = [x for x in done.stderr.splitlines() if x.startswith("first failure")]
    check_replies(
        f"{mode.upper()} announces to {host}:{port}",
        int(replies),
        int(failures),
        f" ({first[0]})" if first else "",
    )
    if mode == "udp" and int(replies) < int(sent) * (1 - MAX_FAILURES * 5):
        raise LoadFailed(f"UDP announces to {host}:{port}: {replies} replies to {sent} sent")
    return int(replies) / float(elapsed)


# -- latency --------------------------------------------------------------------------------


def source_address(index: int) -> str:
    """The ``index``-th source address of the latency section (the C generator's scheme)."""
    return f"127.{16 + index // 62500}.{1 + index // 250 % 250}.{1 + index % 250}"


def _announce(info_hash: bytes, peer: int, numwant: int) -> bytes:
    """Peer ``peer`` of a swarm: from source address peer // PER_ADDRESS, at a port of its own."""
    quoted = "".join(f"%{b:02X}" for b in info_hash)
    return (
        f"GET /announce?info_hash={quoted}&peer_id=-LT0001-{peer:012d}"
        f"&port={6881 + peer % PER_ADDRESS}&left={(peer // PER_ADDRESS % 2) * 1000}"
        f"&compact=1&numwant={numwant} HTTP/1.1\r\nHost: x\r\n\r\n"
    ).encode()


def _read_replies(sock: socket.socket, count: int, buffer: bytearray) -> list[bytes]:
    """The bodies of the next ``count`` replies (a failure or an error status: b"")."""
    bodies = []
    while count:
        end = buffer.find(b"\r\n\r\n")
        if end >= 0:
            head = bytes(buffer[:end]).lower()
            length = int(head.split(b"content-length:")[1].split(b"\r\n")[0])
            if len(buffer) >= end + 4 + length:
                body = bytes(buffer[end + 4 : end + 4 + length])
                ok = head.startswith(b"http/1.1 200") and b"failure reason" not in body
                bodies.append(body if ok else b"")
                del buffer[: end + 4 + length]
                count -= 1
                continue
        chunk = sock.recv(1 << 16)
        if not chunk:
            raise SystemExit("the hub closed the connection")
        buffer += chunk
    return bodies


def _connect(port: int, address: int) -> socket.socket:
    return socket.create_connection(
        (HUB_HOST, port), timeout=30, source_address=(source_address(address), 0)
    )


def fill(port: int, swarms: list[tuple[bytes, int]]) -> None:
    """Announce every peer of every swarm, each from its own source address (one
    connection per address, its announces pipelined); fails loudly if refused."""
    by_address: dict[int, list[bytes]] = {}
    for info_hash, size in swarms:
        for peer in range(size):
            by_address.setdefault(peer // PER_ADDRESS, []).append(_announce(info_hash, peer, 0))
    replies = failures = 0
    for address, requests in by_address.items():
        with _connect(port, address) as sock:
            buffer = bytearray()
            for start in range(0, len(requests), 500):
                batch = requests[start : start + 500]
                sock.sendall(b"".join(batch))
                bodies = _read_replies(sock, len(batch), buffer)
                replies += len(bodies)
                failures += bodies.count(b"")
    check_replies("the latency fill", replies, failures)


def latencies(port: int, swarms: list[tuple[bytes, int]], samples: int) -> tuple[list[float], int]:
    """One announce at a time (a peer already in the swarm, from its own address, on a
    keep-alive connection of that address: the first :data:`LATENCY_ADDRESSES`), seconds
    each; and the largest swarm size the replies told."""
    times = []
    largest = 0
    rng = random.Random(7)
    conns: dict[int, socket.socket] = {}
    buffer = bytearray()
    failures = 0
    try:
        for _ in range(samples):
            info_hash, size = rng.choice(swarms)
            address = rng.randrange(min(LATENCY_ADDRESSES, size // PER_ADDRESS))
            peer = address * PER_ADDRESS + rng.randrange(PER_ADDRESS)
            sock = conns.get(address)
            if sock is None:
                sock = conns[address] = _connect(port, address)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            request = _announce(info_hash, peer, 50)
            started = time.perf_counter()
            sock.sendall(request)
            (body,) = _read_replies(sock, 1, buffer)
            times.append(time.perf_counter() - started)
            failures += not body
            if body:
                complete = int(body.split(b"8:completei", 1)[1].split(b"e", 1)[0])
                incomplete = int(body.split(b"10:incompletei", 1)[1].split(b"e", 1)[0])
                largest = max(largest, complete + incomplete)
    finally:
        for sock in conns.values():
            sock.close()
    check_replies("the latency announces", samples, failures)
    return times, largest


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
            rate, failures = wrk_run(f"http://{HUB_HOST}:{port}/", counting, 1)
            check_replies(f"HTTP announces to {HUB_HOST}:{port} (wrk)", round(rate), failures)
            failed += failures
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
    load = os.getloadavg()[0]
    rng = random.Random(18)
    hashes = [rng.randbytes(20) for _ in range(HASHES)]
    with tempfile.TemporaryDirectory(prefix="smartget-tracker-bench-") as tmp:
        work = Path(tmp)
        if redis:
            on_redis(work, hashes, seconds, rounds)
            return
        hashfile = work / "hashes.bin"
        hashfile.write_bytes(b"".join(hashes))
        (work / "trackerload.c").write_text(LOADGEN_C)
        binary = work / "trackerload"
        subprocess.run(["gcc", "-O2", "-o", str(binary), str(work / "trackerload.c")], check=True)
        best: dict[str, float] = {}
        loads: list[tuple[str, Callable[[], float]]]
        with hub(work, "hub") as (h_http, h_udp), opentracker(work, hashes) as (o_http, o_udp):
            loads = [
                (
                    "http hub",
                    lambda: load_rate(binary, hashfile, "http", (HUB_HOST, h_http), seconds),
                ),
                (
                    "http ot",
                    lambda: load_rate(binary, hashfile, "http", (OT_HOST, o_http), seconds),
                ),
                ("udp hub", lambda: load_rate(binary, hashfile, "udp", (HUB_HOST, h_udp), seconds)),
                ("udp ot", lambda: load_rate(binary, hashfile, "udp", (OT_HOST, o_udp), seconds)),
            ]
            for i in range(rounds):
                for name, rate in loads:
                    measured = rate()
                    best[name] = max(best.get(name, 0.0), measured)
                    print(f"round {i + 1}: {name:9}{measured:10,.0f}", file=sys.stderr)
        rows = [
            ("HTTP announces/s", best["http hub"], best["http ot"], 0.5),
            ("UDP announces/s", best["udp hub"], best["udp ot"], 0.3),
        ]
        print(
            f"\ntracker: hub vs opentracker, {os.cpu_count()} cores, best of {rounds}; "
            f"1-minute load at start {load:.2f}; failure replies under {MAX_FAILURES:.0%} "
            f"in every run; the hub's tracker core: {tracker_core()}\n"
        )
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
            print(
                f"\nannounce latency (ms), one at a time; 150,000 peers from "
                f"{50_000 // PER_ADDRESS:,} addresses in {filled:.1f} s\n"
            )
            print(f"{'swarms':28}{'p50':>8}{'p99':>8}{'max':>8}{'seen':>8}")
            for label, swarms in (("100 swarms of 1,000", small), ("1 swarm of 50,000", big)):
                times, seen = latencies(h_http, swarms, 3000)
                print(
                    f"{label:28}{pct(times, 0.5):8.3f}{pct(times, 0.99):8.3f}"
                    f"{max(times) * 1000:8.3f}{seen:8,}"
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
