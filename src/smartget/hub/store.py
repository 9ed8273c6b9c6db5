"""The hub's SQLite store: durable before the reply leaves, without blocking the loop.

One connection, used only from one worker thread. Writes are grouped: everything
submitted while the previous transaction is being committed goes into the next one,
so a burst of commands costs one commit, and each caller waits only for the commit
that holds its change ("nothing acknowledged is lost", DESIGN.md). WAL with
``synchronous=NORMAL`` survives ``kill -9`` of the hub: a committed transaction is in
the WAL file as soon as the commit returns.

A hot producer of changes (the node registry: one change per status-changing command)
uses :meth:`Store.submit_later` instead: it hands over a function, not a write, and the
function runs on the loop once, when the next transaction starts. Everything changed
until then is collected into one write (one row per changed node, however often it
changed), instead of one write built per command.

Other parts of the hub keep their own tables in the same file, created and loaded at
start-up with :meth:`Store.read_now` and written with :meth:`Store.submit`: the relay
registry (hub/relay/store.py), and the fleet's tracked torrents and finished downloads
and the tracker's swarms (``load_fleet_state``, ``save_torrent``, ``save_done``,
``forget_done``, ``load_swarms``, ``save_swarms`` below), and the push jobs and their
events (``load_jobs``, ``save_jobs``). Every
SQL statement of the hub is in one of those two files.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import itertools
import json
import logging
import os
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from smartget.errors import StoreError
from smartget.hub.collector import Report
from smartget.hub.registry import Changes, Node
from smartget.hub.tracker import SavedPeer, SwarmChanges

__all__ = [
    "FLEET_SCHEMA",
    "NODE_COLUMNS",
    "Store",
    "forget_done",
    "load_fleet_state",
    "load_jobs",
    "load_nodes",
    "load_swarms",
    "save_changes",
    "save_done",
    "save_jobs",
    "save_swarms",
    "save_torrent",
]

log = logging.getLogger(__name__)
T = TypeVar("T")
Write = Callable[[sqlite3.Connection], None]

NODES_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (
    id INTEGER PRIMARY KEY,
    ip TEXT NOT NULL,
    port INTEGER NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    status INTEGER NOT NULL DEFAULT 0,
    zone TEXT NOT NULL DEFAULT '',
    bt_port INTEGER NOT NULL DEFAULT 0,
    api_url TEXT NOT NULL DEFAULT '',
    files_url TEXT NOT NULL DEFAULT '',
    UNIQUE (ip, port)
);
"""
NODE_COLUMNS = ("id", "ip", "port", "name", "status", "zone", "bt_port", "api_url", "files_url")


class Store:
    """A SQLite file with grouped, durable writes from one worker thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="store")
        self._pending: list[Write] = []
        self._later: dict[Callable[[], Write | None], None] = {}  # ordered, no repeats
        self._pending_done: asyncio.Future[None] | None = None
        self._wakeup = asyncio.Event()
        self._closed = False
        self.commits = 0
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = self._executor.submit(self._open).result()
        except (OSError, sqlite3.Error) as exc:
            self._executor.shutdown()
            raise StoreError(f"cannot open the store {path}: {exc}") from exc

    def _open(self) -> sqlite3.Connection:
        # Owner only: the file holds satellites' notify_pass and the fleet's state. SQLite
        # gives its -wal and -shm files the database file's mode.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        os.chmod(self.path, 0o600)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        db.executescript(NODES_SCHEMA)
        return db

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, self._db)

    def read_now(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a read synchronously (start-up only: it blocks the caller)."""
        return self._executor.submit(fn, self._db).result()

    def submit(self, write: Write) -> asyncio.Future[None]:
        """Queue a write; the future resolves once it is committed (or fails with StoreError)."""
        if self._closed:
            raise StoreError("the store is closed")
        self._pending.append(write)
        if self._pending_done is None:
            self._pending_done = asyncio.get_running_loop().create_future()
        self._wakeup.set()
        return self._pending_done

    def submit_later(self, make: Callable[[], Write | None]) -> asyncio.Future[None]:
        """Queue ``make``: it is called on the loop when the next transaction starts (once,
        however often it was queued) and its write, if any, goes into that transaction.
        The future resolves once that transaction is committed, as with :meth:`submit`.
        """
        if self._closed:
            raise StoreError("the store is closed")
        self._later[make] = None
        if self._pending_done is None:
            self._pending_done = asyncio.get_running_loop().create_future()
        self._wakeup.set()
        return self._pending_done

    async def run(self) -> None:
        """The writer: commit whatever is queued, as one transaction, until closed."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if not self._pending and not self._later:
                if self._closed:
                    return
                continue
            batch, later, done = self._pending, self._later, self._pending_done
            self._pending, self._later, self._pending_done = [], {}, None
            assert done is not None
            batch.extend(write for make in later if (write := make()) is not None)
            # The future is shared by every writer of the group: one that was cancelled
            # (a caller that awaited it unshielded and went away) must not crash the
            # writer, which would stop the hub.
            if not batch:
                if not done.done():
                    done.set_result(None)
                continue
            try:
                await self._call(functools.partial(self._commit, batch=batch))
            except (sqlite3.Error, OSError) as exc:
                log.error("store %s: commit of %d writes failed: %s", self.path, len(batch), exc)
                if not done.done():
                    done.set_exception(StoreError(f"could not save to {self.path}: {exc}"))
                    done.exception()  # nobody may await it: logged above, not again by asyncio
            else:
                if not done.done():
                    done.set_result(None)

    def _commit(self, db: sqlite3.Connection, batch: list[Write]) -> None:
        db.execute("BEGIN IMMEDIATE")
        try:
            for write in batch:
                write(db)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        self.commits += 1

    async def aclose(self) -> None:
        """Commit what is queued, stop the writer, close the file."""
        self._closed = True
        self._wakeup.set()
        if self._pending_done is not None:
            await asyncio.shield(self._pending_done)
        await self._call(lambda db: db.close())
        self._executor.shutdown()

    def close_now(self) -> None:
        """Close without flushing (used when start-up fails)."""
        self._closed = True
        self._executor.submit(self._db.close).result()
        self._executor.shutdown()


def node_rows(nodes: Iterable[Node]) -> list[tuple[Any, ...]]:
    return [
        (n.node_id, n.addr, n.port, n.name, n.status, n.zone, n.bt_port, n.api_url, n.files_url)
        for n in nodes
    ]


def save_changes(changes: Changes) -> Write:
    """A write that persists a registry's drained changes (rows are copied now)."""
    rows = node_rows(changes.upserts)
    deletes = [(node_id,) for node_id in changes.deletes]
    next_id = str(changes.next_id)

    def write(db: sqlite3.Connection) -> None:
        if deletes:
            db.executemany("DELETE FROM nodes WHERE id = ?", deletes)
        insert_rows(db, f"INSERT OR REPLACE INTO nodes ({', '.join(NODE_COLUMNS)})", rows)
        db.execute(
            "INSERT INTO meta (key, value) VALUES ('next_node_id', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = max(CAST(value AS INTEGER), "
            "CAST(excluded.value AS INTEGER))",
            (next_id,),
        )

    return write


def load_nodes(db: sqlite3.Connection) -> tuple[list[Node], int]:
    """Every persisted node and the next id to hand out."""
    nodes = [
        Node(node_id, ip, port, name, status, zone, bt_port, api_url, files_url)
        for node_id, ip, port, name, status, zone, bt_port, api_url, files_url in db.execute(
            f"SELECT {', '.join(NODE_COLUMNS)} FROM nodes ORDER BY id"
        )
    ]
    row = db.execute("SELECT value FROM meta WHERE key = 'next_node_id'").fetchone()
    next_id = int(row[0]) if row else 1
    if nodes:
        next_id = max(next_id, nodes[-1].node_id + 1)
    return nodes, next_id


FLEET_SCHEMA = """
CREATE TABLE IF NOT EXISTS tracker_torrents (info_hash TEXT PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS collector_done (
    nodeid TEXT NOT NULL, sha1 TEXT NOT NULL, report TEXT NOT NULL,
    PRIMARY KEY (nodeid, sha1)
);
CREATE TABLE IF NOT EXISTS tracker_peers (
    info_hash BLOB NOT NULL, ip TEXT NOT NULL, port INTEGER NOT NULL,
    peer_id BLOB NOT NULL, bytes_left INTEGER NOT NULL,
    seen_at REAL NOT NULL,  -- wall clock (Unix time) of its last announce
    PRIMARY KEY (info_hash, ip, port)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tracker_peers_seen ON tracker_peers (seen_at);
CREATE TABLE IF NOT EXISTS tracker_downloaded (
    info_hash BLOB PRIMARY KEY, downloaded INTEGER NOT NULL
);
"""


def load_fleet_state(db: sqlite3.Connection) -> tuple[list[bytes], list[Report]]:
    """Tracked info-hashes and finished downloads, as saved."""
    db.executescript(FLEET_SCHEMA)
    hashes = [bytes.fromhex(h) for (h,) in db.execute("SELECT info_hash FROM tracker_torrents")]
    reports = [Report(**json.loads(r)) for (r,) in db.execute("SELECT report FROM collector_done")]
    return hashes, reports


def save_torrent(info_hash: str, name: str) -> Write:
    """A write that remembers a tracked torrent (hex info-hash)."""

    def write(db: sqlite3.Connection) -> None:
        db.execute("INSERT OR IGNORE INTO tracker_torrents VALUES (?, ?)", (info_hash, name))

    return write


def save_done(report: Report) -> Write:
    """A write that remembers a finished download the collector answered ``success`` to."""
    row = (
        report.nodeid,
        report.sha1,
        json.dumps({k: v for k, v in report.as_dict().items() if k != "done"}),
    )

    def write(db: sqlite3.Connection) -> None:
        db.execute("INSERT OR REPLACE INTO collector_done VALUES (?, ?, ?)", row)

    return write


def forget_done(sha1: str) -> Write:
    """A write that forgets every finished download of one torrent."""

    def write(db: sqlite3.Connection) -> None:
        db.execute("DELETE FROM collector_done WHERE sha1 = ?", (sha1,))

    return write


def load_swarms(db: sqlite3.Connection) -> tuple[list[SavedPeer], dict[bytes, int]]:
    """The tracker's saved peers (``last_seen`` in wall-clock seconds) and counts."""
    db.executescript(FLEET_SCHEMA)
    peers = [
        SavedPeer(bytes(h), ip, port, bytes(peer_id), left, seen_at)
        for h, ip, port, peer_id, left, seen_at in db.execute(
            "SELECT info_hash, ip, port, peer_id, bytes_left, seen_at FROM tracker_peers"
        )
    ]
    counts = {bytes(h): n for h, n in db.execute("SELECT * FROM tracker_downloaded")}
    return peers, counts


# Rows per INSERT statement (SQLite allows 32,766 variables since 3.32). One statement
# steps once: executemany binds and steps per row, and each step hands the GIL to the
# event loop and back, which halved the UDP tracker's announces/s while the store saved
# a burst of joins (benchmarks/tracker.py).
ROWS_PER_INSERT = 1000


def insert_rows(db: sqlite3.Connection, insert: str, rows: list[tuple[Any, ...]]) -> None:
    """``insert`` ("INSERT ... INTO t (columns)", no VALUES) for every row, in a few
    statements of :data:`ROWS_PER_INSERT` rows (all rows as wide as the first)."""
    if not rows:
        return
    one = "(" + ", ".join("?" * len(rows[0])) + ")"
    for start in range(0, len(rows), ROWS_PER_INSERT):
        part = rows[start : start + ROWS_PER_INSERT]
        values = ",".join([one] * len(part))
        db.execute(f"{insert} VALUES {values}", list(itertools.chain.from_iterable(part)))


def save_swarms(changes: SwarmChanges, to_wall: float, forget_before: float) -> Write:
    """A write of the tracker's drained changes; ``last_seen + to_wall`` is wall time.

    Rows older than ``forget_before`` (wall clock: beyond the peer lifetime) go too, so
    the tracker needs to name only the peers that stopped.
    """
    rows = [
        (p.info_hash, p.ip, p.port, p.peer_id, p.left, p.last_seen + to_wall) for p in changes.peers
    ]
    gone = changes.gone
    counts = list(changes.downloaded.items())

    def write(db: sqlite3.Connection) -> None:
        insert_rows(db, "INSERT OR REPLACE INTO tracker_peers", rows)
        if gone:
            db.executemany(
                "DELETE FROM tracker_peers WHERE info_hash = ? AND ip = ? AND port = ?", gone
            )
        if counts:
            db.executemany("INSERT OR REPLACE INTO tracker_downloaded VALUES (?, ?)", counts)
        db.execute("DELETE FROM tracker_peers WHERE seen_at < ?", (forget_before,))

    return write


# -- push jobs (hub/jobs/) ---------------------------------------------------------------

JOBS_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    ord INTEGER NOT NULL,  -- submission order
    state TEXT NOT NULL,
    body TEXT NOT NULL     -- the job's whole record (hub/jobs/model.py, Job.to_dict)
);
CREATE TABLE IF NOT EXISTS job_events (
    job_id TEXT NOT NULL, seq INTEGER NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
"""


def load_jobs(
    db: sqlite3.Connection, max_events: int
) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """Every saved job (as stored) and the last ``max_events`` events of each."""
    db.executescript(JOBS_SCHEMA)
    jobs = [json.loads(body) for (body,) in db.execute("SELECT body FROM jobs ORDER BY ord")]
    events: dict[str, list[dict[str, Any]]] = {}
    for job_id, body in db.execute(
        "SELECT job_id, body FROM job_events e WHERE seq > "
        "(SELECT coalesce(max(seq), 0) FROM job_events WHERE job_id = e.job_id) - ? "
        "ORDER BY job_id, seq",
        (max_events,),
    ):
        events.setdefault(job_id, []).append(json.loads(body))
    return jobs, events


def save_jobs(
    jobs: list[dict[str, Any]],
    events: list[tuple[str, int, dict[str, Any]]],
    forgotten: list[str],
    max_events: int,
) -> Write:
    """A write of changed jobs (their whole record), new events and forgotten jobs.

    Each job keeps its last ``max_events`` events.
    """
    rows = [(j["id"], j["order"], j["state"], json.dumps(j)) for j in jobs]
    event_rows = [(job_id, seq, json.dumps(body)) for job_id, seq, body in events]
    trims = {(job_id, seq - max_events) for job_id, seq, _ in events if seq > max_events}
    gone = [(job_id,) for job_id in forgotten]

    def write(db: sqlite3.Connection) -> None:
        if rows:
            db.executemany("INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, ?)", rows)
        if event_rows:
            db.executemany("INSERT OR REPLACE INTO job_events VALUES (?, ?, ?)", event_rows)
        if trims:
            db.executemany("DELETE FROM job_events WHERE job_id = ? AND seq <= ?", sorted(trims))
        if gone:
            db.executemany("DELETE FROM jobs WHERE id = ?", gone)
            db.executemany("DELETE FROM job_events WHERE job_id = ?", gone)

    return write
