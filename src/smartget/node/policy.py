"""The engine's swarm policy, sans-IO: what to do, decided from state and ``now``.

Theory of operation
-------------------
:class:`~smartget.node.engine.Engine` is the driver: it reads libtorrent (peers,
progress, alerts), feeds what it read and the time into the objects here, and applies
their decisions with libtorrent calls. Nothing here imports libtorrent, asyncio or
time, so each rule is tested by feeding figures and a ``now``.

* :class:`Completion` (issue 4): a torrent counts as complete only after
  ``torrent_finished_alert`` *and then* ``cache_flushed_alert`` for it: a file hashed
  right at the finished alert can still be incomplete on disk. Torrents this node made
  itself (seed mode) are complete from the start.
* :class:`WebSeedHolds`: a download's web seeds (the origin) are taken away while its
  peers make progress and given back after ``webseed_fallback`` seconds without any, so
  the fleet fetches from each other and the origin sends each byte about once.
* :class:`Striping` and :func:`stripe_priorities` (issue 6): each download is split
  into stripes so that peers fetch different pieces from the capped seed and the rest
  from each other; re-split whenever its set of downloading peers changes.
* :class:`TickSchedule`: the engine ticks every :data:`YOUNG_CHECK` s. Young downloads
  (added less than :data:`YOUNG_FOR` s ago, their peers still connecting) have their
  stripes checked at every tick, the others once a second (checking only once a second,
  a seed at 20 MiB/s sent 1.13-1.15 F at N = 8, against 1.10-1.11 F); web seeds are
  checked once a second, resume data asked for every ``resume_interval`` s.
* :func:`swarm_tuning` and :func:`request_queue_for`: the libtorrent settings that were
  measured to matter under upload caps, and the reqq to advertise (why, in their
  docstrings).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from smartget.node.settings import EngineSettings

__all__ = [
    "BLOCK",
    "REQUEST_QUEUE",
    "UNCAPPED_REQUEST_QUEUE",
    "Completion",
    "Fallback",
    "Striping",
    "Tick",
    "TickSchedule",
    "WebSeedHolds",
    "own_stripe",
    "request_queue_for",
    "stripe_only",
    "stripe_priorities",
    "swarm_tuning",
]

BLOCK = 16 << 10  # bytes a peer requests at a time (BEP 3's usual 2^14)
REQUEST_QUEUE = 8  # least block requests a peer may queue at this node (see swarm_tuning)
UNCAPPED_REQUEST_QUEUE = 500  # ... without an upload cap (see request_queue_for)
TICK_MS = 5  # libtorrent's tick, when its rate limiter hands out quota (see swarm_tuning)
QUEUE_TICKS = 5  # the requests a peer may queue cover this many ticks of the upload cap
# A new download's peers connect within a few tenths of a second of each other; its
# stripes are checked this often while it is young, then once a second.
YOUNG_CHECK = 0.1
YOUNG_FOR = 3.0
SWARM_UNCHOKE_SLOTS = 32  # peers a node uploads to at once, at least
# Peers a node keeps connected for one torrent. With no limit every node of a 32-node
# push connected to the 31 others: 496 connections, each piece announced (HAVE) to 31
# peers. 16 keeps any two nodes within two hops and cut the fleet lab's node CPU by a
# fifth at N = 32 (efficiency 0.57-0.62 -> 0.66-0.67; benchmarks/fleet.py).
SWARM_CONNECTIONS = 16
DEFAULT_PRIORITY = 4  # libtorrent's default piece priority; a stripe's pieces get one more


class Completion:
    """Which torrents are complete: finished, then flushed (issue 4)."""

    def __init__(self) -> None:
        self.complete: set[str] = set()
        self._flushing: set[str] = set()

    def __contains__(self, sha1: object) -> bool:
        return sha1 in self.complete

    def __len__(self) -> int:
        return len(self.complete)

    def seeded(self, sha1: str) -> None:
        """A torrent this node made (seed mode): complete from the start."""
        self.complete.add(sha1)

    def finished(self, sha1: str) -> bool:
        """libtorrent says finished or seeding; True: ask it to flush the cache now."""
        if sha1 in self.complete or sha1 in self._flushing:
            return False
        self._flushing.add(sha1)
        return True

    def flushed(self, sha1: str) -> bool:
        """The cache of ``sha1`` is flushed; True if that made it complete."""
        if sha1 not in self._flushing:
            return False
        self._flushing.discard(sha1)
        self.complete.add(sha1)
        return True

    def forget(self, sha1: str) -> None:
        self.complete.discard(sha1)
        self._flushing.discard(sha1)


@dataclass
class _Held:
    urls: list[str]
    progress: int  # bytes wanted and done at the last check that saw progress
    since: float  # when that progress was seen
    striped: bool = False  # its one striped fallback was given (the next is whole)


@dataclass(frozen=True)
class Fallback:
    """Give a download its web seeds back: its peers made no progress for ``idle`` s.

    ``striped``: for the node's own stripe (only, see :func:`stripe_only`); once it
    has its stripe the web seeds are held again and the rest comes from the peers,
    which fetched theirs. Without it, for the whole file.
    """

    urls: list[str]
    idle: float
    striped: bool = False


class WebSeedHolds:
    """Web seeds taken off downloads until their peers stop making progress.

    When the peers stop (a seed died, a partition), every receiver falling back to the
    origin for the whole rest would have the origin send the rest once per receiver.
    So the first fallback of a striped download (:class:`Striping`) is *striped*: each
    receiver fetches its own stripe from the origin, the web seeds are held again, and
    the receivers trade stripes; the origin sends the missing part about once. If the
    peers stall again, the second fallback is whole.
    """

    def __init__(self, fallback: float) -> None:
        self.fallback = fallback  # seconds without progress; 0: never hold
        self._held: dict[str, _Held] = {}
        self._striping: dict[str, _Held] = {}  # in their striped fallback

    def __contains__(self, sha1: object) -> bool:
        return sha1 in self._held or sha1 in self._striping

    @property
    def enabled(self) -> bool:
        """Whether downloads' web seeds are held at all (no need to read them if not)."""
        return self.fallback > 0

    def hold(self, sha1: str, urls: Iterable[str], now: float) -> list[str]:
        """A new download with these web seeds: the ones to take off it now."""
        held = sorted(set(urls))
        if self.fallback <= 0 or not held:
            return []
        self._held[sha1] = _Held(held, 0, now)
        return held

    def check(
        self, sha1: str, done: int, now: float, *, can_stripe: bool = False
    ) -> Fallback | None:
        """``done`` bytes of the download are here at ``now``: give its seeds back?

        ``can_stripe``: the download has a stripe of its own (two members or more).
        """
        held = self._held.get(sha1)
        if held is None:
            return None
        if done > held.progress:
            held.progress, held.since = done, now
            return None
        if now - held.since < self.fallback:
            return None
        del self._held[sha1]
        if can_stripe and not held.striped:
            held.striped = True
            self._striping[sha1] = held
            return Fallback(held.urls, now - held.since, striped=True)
        return Fallback(held.urls, now - held.since)

    def striping(self, sha1: str) -> bool:
        """Is the download fetching its own stripe from its web seeds?"""
        return sha1 in self._striping

    def stripe_done(self, sha1: str, done: int, now: float) -> list[str]:
        """The download has its stripe: hold its web seeds again; the ones to take off."""
        held = self._striping.pop(sha1, None)
        if held is None:
            return []
        held.progress, held.since = done, now
        self._held[sha1] = held
        return held.urls

    def forget(self, sha1: str) -> None:
        self._held.pop(sha1, None)
        self._striping.pop(sha1, None)

    def held(self) -> list[str]:
        return list(self._held)

    def fetching_stripes(self) -> list[str]:
        """The downloads in their striped fallback (to see whether they have it)."""
        return list(self._striping)


def stripe_only(priorities: list[int]) -> list[int]:
    """The node's own stripe (the raised priority) and nothing else (0: not wanted).

    Priority 1 for the rest instead was measured worse: once the stripe's pieces are
    all on order, the web seed goes on to the others until the stripe is seen complete
    (origin 2.9 F against 2.2-2.5 F in the seed-kill lab test). With 0, the download
    turns "finished" at its stripe, and finished peers that are upload-only on both
    sides hang up on each other unless ``close_redundant_connections`` is off
    (:func:`swarm_tuning`).
    """
    return [p if p > DEFAULT_PRIORITY else 0 for p in priorities]


def own_stripe(priorities: list[int]) -> list[int]:
    """The pieces of the node's own stripe (those with the raised priority)."""
    return [i for i, p in enumerate(priorities) if p > DEFAULT_PRIORITY]


class Striping:
    """The stripe each download was last given, keyed by its set of downloading peers."""

    def __init__(self) -> None:
        self._keys: dict[str, tuple[str, ...]] = {}
        self.restripes = 0

    def changed(self, sha1: str, own: str, members: Iterable[str]) -> tuple[str, ...] | None:
        """The new set of downloading peers (``own`` included), or None if unchanged."""
        key = tuple(sorted({own, *members}))
        return None if self._keys.get(sha1) == key else key

    def assign(self, sha1: str, key: tuple[str, ...], own: str, num_pieces: int) -> list[int]:
        """Record ``key`` for ``sha1``; the piece priorities to set."""
        self._keys[sha1] = key
        self.restripes += 1
        return stripe_priorities(num_pieces, own, list(key)) or [DEFAULT_PRIORITY] * num_pieces

    def members(self, sha1: str) -> int:
        """How many downloading peers (itself included) its stripes were split among."""
        return len(self._keys.get(sha1, ()))

    def current(self, sha1: str, own: str, num_pieces: int) -> list[int] | None:
        """The priorities of the stripe last assigned (None: none assigned)."""
        key = self._keys.get(sha1)
        if key is None:
            return None
        return stripe_priorities(num_pieces, own, list(key)) or [DEFAULT_PRIORITY] * num_pieces

    def forget(self, sha1: str) -> None:
        self._keys.pop(sha1, None)


@dataclass(frozen=True)
class Tick:
    """What one engine tick does."""

    young_after: float | None  # restripe only downloads added after this; None: all
    release_web_seeds: bool
    save_resume: bool


class TickSchedule:
    """Which checks are due at each tick (see the module docstring)."""

    def __init__(self, resume_interval: float, now: float) -> None:
        self.resume_interval = resume_interval
        self._last_resume = self._last_second = now

    def tick(self, now: float) -> Tick:
        if now - self._last_second < 1.0:
            # Between seconds, only young downloads: at 20 MiB/s a seed sends a third
            # of a 64 MiB file in the first second, unstriped (issue 6).
            return Tick(young_after=now - YOUNG_FOR, release_web_seeds=False, save_resume=False)
        self._last_second = now
        save = now - self._last_resume >= self.resume_interval
        if save:
            self._last_resume = now
        return Tick(young_after=None, release_web_seeds=True, save_resume=save)


def request_queue_for(upload_limit: int) -> int:
    """The reqq to advertise by default: 500 without an upload cap, else 8 or more.

    Under a cap, enough requests that what one peer has queued here covers
    ``QUEUE_TICKS`` ticks of the cap (see :func:`swarm_tuning`): 8 up to 5 MiB/s, 32
    at 20 MiB/s. That small queue stops peers hoarding the capped seed's upload, which
    only a cap makes the bottleneck on loopback.

    Without a cap the queue must cover the path's bandwidth-delay product instead: one
    connection carries at most reqq x 16 KiB per round trip. Measured with
    ``benchmarks/wan.py`` (64 MiB, one connection through a delay proxy): reqq 8 gave
    4.8 / 2.5 / 1.1 MB/s at 20 / 50 / 100 ms RTT, 128 gave 67 / 31 / 16 MB/s and 500
    gave 127 / 68 / 36 MB/s (and 3 connections 3 x that); at RTT 0 reqq 8 held a
    connection to 83-99 MB/s against 290-345 for 32 and more, and a 4-node loopback
    ``smartget demo --upload-limit 0`` (64 MiB) took 0.64-0.67 s at 500 against
    0.82-0.91 s at 8, origin 1.00 F both. 500 is also libtorrent 2.1's default
    ``max_out_request_queue``: what it queues at peers that advertise no reqq.
    """
    if upload_limit <= 0:
        return UNCAPPED_REQUEST_QUEUE
    ticks_worth = upload_limit * TICK_MS * QUEUE_TICKS // 1000
    return max(REQUEST_QUEUE, -(-ticks_worth // BLOCK))


def swarm_tuning(settings: EngineSettings) -> dict[str, int | bool]:
    """libtorrent settings for a fleet swarm under upload caps (issue 6, measured).

    How libtorrent 2.x enforces an upload cap (``bandwidth_manager.cpp``,
    ``bandwidth_limit.hpp``) explains most of them. The cap is a bucket of quota that
    grows by cap x tick only on a tick when some connection waits for quota. A
    connection gets quota at once only while the bucket holds more than a second of
    quota; otherwise it waits for the next tick, and then gets at most what it asked
    for: the bytes in its send buffer (what its peer requested and the disk has read).
    So a fresh node's first second under a cap is paced by ticks: each tick, each
    connection sends what its peer had on order. A second of quota, saved up while the
    node sends less than the cap, is what ends that phase; until then every byte a
    connection could not send at its tick is lost for good (up to one second of the
    cap per node, measured: a 2-node 8 MiB push at 20 MiB/s took 2.2 s for 0.4 s).

    Each setting removed a cost measured with ``benchmarks/distribution.py``,
    ``smartget demo`` and two engines in one process:

    * ``tick_interval`` 5 ms (default 500): a connection waiting for quota waits a
      tick, the handshake's messages included, and each tick hands a connection what
      it had on order: at most reqq blocks. 20 ms held one connection at 20 MiB/s to
      ~8 MiB/s and the 4-node demo at 0.55-0.62 efficiency; 5 ms with the reqq
      below sends 32 MiB at 20 MiB/s in 1.8 s (bound 1.6) and the demo reaches 0.84.
      At reqq 8, 2 ms did as well for one connection and no better in the demo
      (0.66-0.77 against 0.70-0.82 at 5 ms); 3-4 ms and 10 ms did worse.
      Shorter ticks cost CPU: an idle session uses 0.4 % of a core at 5 ms, 1 % at 2.
    * ``send_buffer_low_watermark`` reqq blocks (default 10 KiB): a node reads ahead
      from disk what it uploads in half a second, *as measured*, so a fresh connection
      had one block in its send buffer at a time, one block per two ticks
      (400 KiB/s for the first second). The node now reads every request it accepted
      (up to 1 MiB a connection).
    * ``whole_pieces_threshold`` 0 (default 20 s): peers that can fetch a piece in 20 s
      ask for runs of up to 8 MiB of *contiguous* pieces; two peers in the same run
      then fetch the same pieces from the seed one after the other.
    * ``max_allowed_in_request_queue`` (what we advertise as ``reqq``; the remote's
      ``reqq`` overrides ``max_out_request_queue``, which only counts for peers that
      advertise none) 2000 -> 500 without an upload cap, for real networks' round
      trips (figures in :func:`request_queue_for`); under a cap, 8 blocks, or what the
      cap sends in 5 ticks if more (32 at 20 MiB/s). With deep queues every peer had
      a quarter of the file requested from the rate-limited seed, so whatever another
      peer could have given it was already on order from the seed; the seed sent the
      file twice. 8 blocks per connection was the best of 4, 8, 16, 32 at 8 and 16
      peers and 4 MiB/s; but a tick hands a connection at most what it has on order,
      so under a higher cap 8 blocks cannot fill the ticks (one connection, 20 MiB/s,
      5 ms: 32 MiB in 4.3-5.0 s at 8 blocks, 1.8-2.2 s at 16, 1.8 s at 32).
      The price of the small queue under a cap is paid at WAN round trips
      (``benchmarks/wan.py``, 4 MiB/s cap, 16 MiB a downloader): one connection got
      1.7 MB/s at 50 ms and 1.0 at 100 ms (3.5-3.7 at reqq 32-128); three connections
      together still filled the cap at 50 ms (3.8 MB/s at reqq 8) but not at 100 ms
      (2.6). Covering 100 ms of the cap instead (26 blocks at 4 MiB/s, 128 at 20)
      cost the loopback fleet: demo 0.84 -> 0.78, distribution N = 8 0.88 ->
      0.84-0.86 with the seed sending 1.08-1.11 F; so the cap's rule stays, and a
      capped fleet on long paths sets ``--peer-request-queue`` (32-64).
      Transmission 3.00 clients pay too: Transmission sends one batch of at most
      ``reqq`` requests a second to a peer, so it downloads reqq x 16 KiB/s from each
      node (``benchmarks/transmission_interop.py``): 128 KiB/s from a capped node,
      more from an uncapped one (reqq 500). Under a cap, a reqq of 64 / 500 gives it
      1 / 4 MB/s but at N = 8 the seed sent 1.16 F instead of 1.06 F (efficiency
      0.79 against 0.86); 16 was within noise of 8 (0.85-0.86) and 32 cost 0.83.
      ``smartget node --peer-request-queue`` sets it for fleets that serve Transmission.
    * ``request_queue_time`` 1 s (default 3): a downloader queues a second of its
      measured rate, capped by the reqq above.
    """
    reqq = settings.peer_request_queue or request_queue_for(settings.upload_limit)
    read_ahead = min(reqq * BLOCK, 1 << 20)  # per connection; reqq may be 2000 (the CLI's)
    return {
        "tick_interval": TICK_MS,
        "send_buffer_low_watermark": read_ahead,
        "send_buffer_watermark": max(500 << 10, read_ahead),
        "whole_pieces_threshold": 0,
        "max_allowed_in_request_queue": reqq,
        "max_out_request_queue": reqq,
        "request_queue_time": 1,
        # Receivers that each have their stripe only (a striped fallback) are
        # "upload-only" for a moment: keep their connections to trade the stripes.
        "close_redundant_connections": False,
    }


def stripe_priorities(num_pieces: int, own: str, members: list[str]) -> list[int] | None:
    """Piece priorities that give each downloading peer its own stripe of the file.

    Rarest-first alone has every peer pick among the same pieces that only the seed
    holds, so two peers often fetch the same piece from the seed at the same time
    and the seed (the bottleneck under upload caps) sends it twice. Every fleet peer
    sees the same set of downloading peers (``members``, by address, itself
    included), so the one at rank ``r`` of ``M`` favours pieces ``i % M == r``: one
    priority step (5 over the default 4). libtorrent picks the lowest
    (availability + 1) x (8 - priority); one step reorders pieces of the same
    availability only, so rarest-first stays: a piece only the seed has still comes
    before one that another peer could give. None when there is nothing to split
    (fewer than two members, or not a member).
    """
    ranked = sorted(set(members))
    if len(ranked) < 2 or own not in ranked:
        return None
    rank, count = ranked.index(own), len(ranked)
    return [5 if index % count == rank else 4 for index in range(num_pieces)]
