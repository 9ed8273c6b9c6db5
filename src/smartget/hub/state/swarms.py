"""The tracker's swarms on Redis: every hub's tracker in memory, kept the fleet's.

::

    /announce, UDP ─> Tracker (in memory, as with one hub) ─> outbox (Tracker.share)
    flush (50 ms) ──> drain_shared ─> swarmlog.encode_changes ─> XADD P tlog (MAXLEN ~)
    follow ─────────> XREAD BLOCK P tlog ─> other hubs' batches ─> Tracker.merge_shared
    snapshot (5 s) ─> this hub's own peers, per swarm ─> HSET P ts:<hub> (PEXPIRE)
    start ──────────> P tt (tracked torrents), every live snapshot, the retained log

Why replicate rather than keep swarms in Redis: an announce is answered from memory,
O(numwant), with no round trip (issue 18's rates stay); what travels is what changed,
batched: one XADD per hub every 50 ms at most, whatever the announce rate. A peer that
re-announces with nothing changed is told to the others only once per ``refresh``
(30 s, at most a quarter of the peer lifetime): a fleet's nodes announce every 300 s,
so each of their announces travels; a client announcing every few seconds costs the
log nothing more. Its age on the other hubs then lags by ``refresh`` at most, well
within the lifetime's grace (two announce rounds and a minute). Each hub expires peers
itself, on its own clock, from the age the entry carried. Another hub's peers count in
announce replies, scrapes and ``/api/torrents`` within the lag of one flush and one
blocking read (well under a second).

Why a snapshot per hub as well as the log: the log is capped by entries (a flood fills
it in seconds), while a swarm's peers live 11 minutes; so each hub keeps in ``P
ts:<hub>`` the peers it took itself (at most :data:`SNAPSHOT_PEERS` newest per swarm,
:data:`SNAPSHOT_MAX_PEERS` in all), rewriting only the swarms that changed, and every
swarm at least once per half lifetime (peers that expired there leave it). The key
expires a lifetime after the hub's last write (a dead hub's peers have gone by then).
A hub that starts reads the log's last id L, then every live snapshot, then replays
the log up to L and follows it from L: applying a snapshot then a suffix of the log
that begins before it gives the fleet's swarms, at most :data:`LOAD_MAX_PEERS` peers
(a peer missed re-announces within the interval).

Keys (in the ``{fleet}`` slot of hub/state/keys.py, ``P`` = ``sg:{fleet}:``):

==================  ========  ========================================================
key                 type      what
==================  ========  ========================================================
``P tlog``          stream    h (hub id), b (a swarmlog batch, base64): capped at
                              about :data:`LOG_LENGTH` entries (MAXLEN ~)
``P tt``            hash      info-hash (hex) -> name: the torrents the fleet tracks
``P ts:<hub>``      hash      info-hash (hex) -> a batch of that hub's own peers there
``P tsi``           zset      hub id -> when its snapshot expires (ms): who to read
==================  ========  ========================================================

Bounds on what another hub (or a client through it) can make this hub hold: a batch
is decoded within swarmlog's bounds (2,000 peers, 450 KB) or skipped; merged peers
obey this tracker's caps (per swarm, per address, in all, swarms); the log is capped
by entries; a flush sends at most :data:`BATCHES_PER_FLUSH` batches and an outbox past
:data:`MAX_PENDING` entries (Redis away) is dropped, not kept.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from smartget.hub.state.api import StateUnavailable
from smartget.hub.state.redisengine import (
    TIMEOUT,
    RedisState,
    stream_id_before,
)
from smartget.hub.state.swarmlog import (
    MAX_PEERS,
    BatchError,
    decode_changes,
    encode_changes,
)
from smartget.hub.tracker import SharedChanges, SharedPeer, Tracker

__all__ = ["SharedSwarms"]

log = logging.getLogger(__name__)

FLUSH_EVERY = 0.05  # seconds between flushes of the tracker's outbox
REFRESH = 30.0  # seconds before an unchanged peer is shared again (<= lifetime / 4)
LOG_LENGTH = 1000  # log entries kept (about); each at most one batch
BATCHES_PER_FLUSH = 4  # the rest of a burst waits for the next flush
MAX_PENDING = 100_000  # outbox entries; past it (Redis away) the outbox is dropped
FOLLOW_BATCH = 100  # log entries per read
REPLAY_MAX = 2 * LOG_LENGTH  # log entries replayed at start
SNAPSHOT_EVERY = 5.0  # seconds between snapshot writes
SNAPSHOT_PEERS = 1000  # own peers per swarm in this hub's snapshot (newest)
SNAPSHOT_MAX_PEERS = 200_000  # own peers in this hub's snapshot in all
SNAPSHOT_SWARMS = 2000  # swarms rewritten per snapshot write (the rest wait)
LOAD_MAX_PEERS = 500_000  # peers read from the snapshots at start
TRACKED_LOAD_MAX = 1_000_000  # tracked torrents read at start
SCAN_COUNT = 200


class SharedSwarms:
    """One hub's side of the fleet's swarms: flush, follow, snapshot."""

    def __init__(
        self,
        engine: RedisState,
        tracker: Tracker,
        clock: Callable[[], float],
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.tracker = tracker
        self.clock = clock
        self.wall = wall
        self.hub_id = engine.hub_id
        prefix = engine.keys.prefix
        self.log_key = prefix + "tlog"
        self.tracked_key = prefix + "tt"
        self.index_key = prefix + "tsi"
        self.snapshot_key = f"{prefix}ts:{self.hub_id}"
        self._last = "0-0"  # the last log entry applied
        self._dirty: set[bytes] = set()  # swarms whose snapshot is to be rewritten
        self._written: dict[bytes, tuple[float, int]] = {}  # swarm -> (when, peers) written
        self._snapshot_peers = 0
        self.sent = 0  # batches sent
        self.applied = 0  # other hubs' batches applied
        self.bad = 0  # entries that were no batch
        self.dropped = 0  # outbox entries dropped (Redis away)

    @property
    def refresh(self) -> float:
        return min(REFRESH, self.tracker.peer_ttl / 4)

    @property
    def max_lag(self) -> float:
        return self.tracker.peer_ttl + 1

    # -- start --------------------------------------------------------------------------

    async def start(self, local_tracked: Iterable[bytes] = ()) -> tuple[int, int]:
        """Load the fleet's tracked torrents and swarms, then share what this tracker
        accepts; torrents this hub tracked alone (its SQLite store) become the fleet's.
        Returns (tracked torrents, peers) loaded."""
        tracked = await self._load_tracked()
        mine = [h for h in local_tracked if h.hex() not in tracked]
        peers = await self.load()
        self.tracker.share(self.refresh)
        if mine:
            client = self.engine.client
            pipe = client.pipeline(transaction=False)
            for at in range(0, len(mine), 1000):
                pipe.hset(self.tracked_key, mapping={h.hex(): "" for h in mine[at : at + 1000]})
            await self.engine.read(pipe.execute())
            await self._send(SharedChanges(mine, [], {}))
            log.info("swarms: %d torrents this hub tracked are now the fleet's", len(mine))
        return len(tracked), peers

    async def _load_tracked(self) -> set[str]:
        found: set[str] = set()
        cursor: Any = 0
        client, read = self.engine.client, self.engine.read
        while len(found) < TRACKED_LOAD_MAX:
            cursor, page = await read(client.hscan(self.tracked_key, cursor, count=1000))
            found.update(h for h in page if len(h) == 40)
            if not int(cursor):
                break
        hashes = []
        for h in found:
            try:
                hashes.append(bytes.fromhex(h))
            except ValueError:
                continue
        self.tracker.merge_shared(SharedChanges(hashes, [], {}), self.clock())
        return found

    async def load(self) -> int:
        """Every live snapshot, then the retained log; follow from its end. How many
        peers the snapshots gave."""
        client, read = self.engine.client, self.engine.read
        last = await read(client.xrevrange(self.log_key, count=1))
        end = last[0][0] if last else "0-0"
        wall_ms = int(self.wall() * 1000)
        hubs = await read(client.zrangebyscore(self.index_key, wall_ms, "+inf"))
        await read(client.zremrangebyscore(self.index_key, "-inf", wall_ms))
        loaded = 0
        for hub in hubs:
            if hub == self.hub_id:
                continue
            key = f"{self.engine.keys.prefix}ts:{hub}"
            cursor: Any = 0
            while loaded < LOAD_MAX_PEERS:
                cursor, page = await read(client.hscan(key, cursor, count=SCAN_COUNT))
                for text in page.values():
                    loaded += self._apply(text, snapshot=True)
                if not int(cursor):
                    break
        start, replayed = "-", 0
        while end != "0-0" and replayed < REPLAY_MAX:
            entries = await read(client.xrange(self.log_key, start, end, count=FOLLOW_BATCH))
            for _, fields in entries:
                if fields.get("h") != self.hub_id:
                    self._apply(fields.get("b", ""))
            replayed += len(entries)
            if len(entries) < FOLLOW_BATCH:
                break
            start = "(" + entries[-1][0]
        self._last = end
        log.info("swarms: %d peers from snapshots, %d log entries replayed", loaded, replayed)
        return loaded

    def _apply(self, text: str, *, snapshot: bool = False) -> int:
        """Merge one batch into the tracker; how many peers it carried."""
        tracker = self.tracker
        try:
            changes, _ = decode_changes(text, self.clock(), self.wall(), self.max_lag)
        except BatchError as exc:
            self.bad += 1
            log.warning("swarms: skipped a log entry that is no batch: %s", exc)
            return 0
        if snapshot:  # totals, not deltas: keep the larger count
            downloaded = {h: n - tracker.downloads(h) for h, n in changes.downloaded.items()}
            changes = SharedChanges(changes.tracked, changes.peers, downloaded)
        self._dirty |= tracker.merge_shared(changes, self.clock())
        self.applied += 1
        return len(changes.peers)

    # -- this hub's changes to the others -----------------------------------------------

    async def flush_forever(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_EVERY)
            await self.flush()

    async def flush(self) -> None:
        """Send what the tracker accepted since the last flush (a few batches at most)."""
        tracker = self.tracker
        pending = tracker.pending_shared
        if not pending:
            return
        if pending > MAX_PENDING:
            self.dropped += tracker.drop_shared()
            log.warning("swarms: %d changes could not reach the fleet's Redis: dropped", pending)
            return
        changes = tracker.drain_shared(MAX_PEERS * BATCHES_PER_FLUSH)
        self._dirty.update(p.info_hash for p in changes.peers)
        try:
            await self._send(changes)
        except StateUnavailable as exc:
            self.dropped += len(changes.peers)
            log.warning("swarms: cannot tell the other hubs: %s", exc)

    async def _send(self, changes: SharedChanges) -> None:
        texts = encode_changes(changes, self.clock(), self.wall())
        pipe = self.engine.client.pipeline(transaction=False)
        for text in texts:
            pipe.xadd(
                self.log_key,
                {"h": self.hub_id, "b": text},
                maxlen=LOG_LENGTH,
                approximate=True,
            )
        await self.engine.read(pipe.execute())
        self.sent += len(texts)

    def save_tracked(self, info_hash: str, name: str = "") -> asyncio.Future[Any]:
        """Make a torrent the fleet's for good (the log told the hubs already)."""
        client = self.engine.client
        return asyncio.ensure_future(
            self.engine.read(client.hsetnx(self.tracked_key, info_hash, name))
        )

    # -- the other hubs' changes --------------------------------------------------------

    async def follow(self) -> None:
        """Apply the other hubs' batches as the log grows, until cancelled."""
        await self.engine.follow_stream(
            self.follow_once, "swarms: cannot follow the fleet's swarm log"
        )

    async def follow_once(self, reader: Any) -> None:
        got: Any
        info: Any
        async with asyncio.timeout(TIMEOUT + 1):
            got = await reader.xread(
                {self.log_key: self._last}, count=FOLLOW_BATCH, block=int(TIMEOUT * 1000 / 2)
            )
            info = await reader.xinfo_stream(self.log_key) if got else None
        if not got:
            return
        entries = got[0][1]
        trimmed = info.get("max-deleted-entry-id", "0-0") if info else "0-0"
        if stream_id_before(self._last, trimmed):
            log.warning("swarms: this hub fell behind the fleet's swarm log; reloading")
            await self.load()
            return
        self._last = entries[-1][0]
        for _, fields in entries:
            if fields.get("h") != self.hub_id:
                self._apply(fields.get("b", ""))

    # -- the snapshot: this hub's own peers, for hubs that start later -------------------

    async def snapshot_forever(self) -> None:
        while True:
            await asyncio.sleep(SNAPSHOT_EVERY)
            try:
                await self.snapshot()
            except StateUnavailable as exc:
                log.warning("swarms: cannot write this hub's snapshot: %s", exc)

    async def snapshot(self) -> int:
        """Rewrite the swarms that changed (and those written half a lifetime ago);
        renew the key's lifetime. How many swarms were written."""
        tracker = self.tracker
        now, wall = self.clock(), self.wall()
        stale = now - tracker.peer_ttl / 2
        self._dirty.update(h for h, (when, _) in self._written.items() if when < stale)
        todo = [self._dirty.pop() for _ in range(min(len(self._dirty), SNAPSHOT_SWARMS))]
        pipe = self.engine.client.pipeline(transaction=False)
        for done, info_hash in enumerate(todo, 1):
            _, before = self._written.pop(info_hash, (0.0, 0))
            self._snapshot_peers -= before
            room = min(SNAPSHOT_PEERS, SNAPSHOT_MAX_PEERS - self._snapshot_peers)
            peers: list[SharedPeer] = tracker.own_peers(info_hash, room)
            if peers:
                changes = SharedChanges([], peers, {info_hash: tracker.downloads(info_hash)})
                (text,) = encode_changes(changes, now, wall)
                pipe.hset(self.snapshot_key, info_hash.hex(), text)
                self._written[info_hash] = (now, len(peers))
                self._snapshot_peers += len(peers)
            else:
                pipe.hdel(self.snapshot_key, info_hash.hex())
            if done % 100 == 0:
                await asyncio.sleep(0)  # let announces in between
        ttl_ms = int(tracker.peer_ttl * 1000)
        pipe.pexpire(self.snapshot_key, ttl_ms)
        pipe.zadd(self.index_key, {self.hub_id: int(wall * 1000) + ttl_ms})
        try:
            await self.engine.read(pipe.execute())
        except StateUnavailable:
            self._dirty.update(todo)  # written next time
            raise
        return len(todo)

    def statistics(self) -> dict[str, int]:
        return {
            "sent": self.sent,
            "applied": self.applied,
            "bad": self.bad,
            "dropped": self.dropped,
            "snapshot_peers": self._snapshot_peers,
        }
