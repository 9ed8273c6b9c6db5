"""The hub's store: grouped commits, and writes collected when the transaction starts."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from pathlib import Path

import pytest

from smartget.hub.registry import Changes, Node
from smartget.hub.store import (
    NODES_SCHEMA,
    Store,
    Write,
    load_nodes,
    load_swarms,
    save_changes,
    save_swarms,
)
from smartget.hub.tracker import SavedPeer, SwarmChanges
from tests.helpers import wait_until

pytestmark = pytest.mark.asyncio


def put(key: str) -> Write:
    def write(db: sqlite3.Connection) -> None:
        db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, 'v')", (key,))

    return write


def keys(path: Path) -> list[str]:
    """What another connection sees: only what is committed."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        return [k for (k,) in db.execute("SELECT key FROM meta ORDER BY key")]


async def test_submit_later_is_called_once_when_the_transaction_starts(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite3")
    writer = asyncio.create_task(store.run())
    calls: list[str] = []
    state = {"key": "a"}

    def make() -> Write | None:
        calls.append(state["key"])
        return put(state["key"])

    first = store.submit_later(make)
    assert store.submit_later(make) is first  # the same transaction, and one call
    state["key"] = "b"  # changed after queueing: the write sees the state at its start
    await asyncio.wait_for(first, 5)
    assert calls == ["b"]
    assert keys(store.path) == ["b"]
    # A maker with nothing to write still resolves its future.
    await asyncio.wait_for(store.submit_later(lambda: None), 5)
    await store.aclose()
    await writer


async def test_changes_during_a_commit_go_into_the_next_one(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite3")
    writer = asyncio.create_task(store.run())
    started, release = threading.Event(), threading.Event()

    def slow(db: sqlite3.Connection) -> None:
        put("slow")(db)
        started.set()
        release.wait(5)

    calls: list[int] = []

    def make() -> Write | None:
        calls.append(1)
        return put("later")

    in_flight = store.submit(slow)
    loop = asyncio.get_running_loop()
    assert await loop.run_in_executor(None, started.wait, 5)
    later = store.submit_later(make)
    assert later is not in_flight
    assert calls == []  # not collected while the other transaction runs
    release.set()
    await asyncio.wait_for(asyncio.gather(in_flight, later), 5)
    assert calls == [1]
    assert keys(store.path) == ["later", "slow"]
    assert store.commits == 2
    await store.aclose()
    await writer


async def test_close_flushes_what_is_queued_later(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite3")
    writer = asyncio.create_task(store.run())
    store.submit_later(lambda: put("queued"))
    await asyncio.wait_for(store.aclose(), 5)
    await writer
    assert keys(store.path) == ["queued"]


async def test_a_cancelled_shared_commit_does_not_stop_the_writer(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite3")
    writer = asyncio.create_task(store.run())
    try:
        first = store.submit(lambda db: None)
        first.cancel()  # a caller went away without shielding the shared future
        await wait_until(lambda: store.commits >= 1 or writer.done(), 5, "the first commit")
        second = store.submit(lambda db: None)  # the next group's future
        async with asyncio.timeout(5):
            await second
        assert not writer.done()
    finally:
        await store.aclose()
        await writer


async def test_a_burst_of_joins_is_saved_whole_in_a_few_statements(tmp_path: Path) -> None:
    """2,500 peers: three INSERTs (not one per row, each of which handed the GIL to the
    event loop and back), and every peer loads back with its age."""
    peers = [
        SavedPeer(bytes([i % 7]) * 20, f"10.0.{i // 250}.{i % 250}", 6881, b"p" * 20, i, 100.0 + i)
        for i in range(2500)
    ]
    with contextlib.closing(sqlite3.connect(tmp_path / "hub.db")) as db:
        assert load_swarms(db) == ([], {})  # makes the tables
        statements: list[str] = []
        db.set_trace_callback(statements.append)
        save_swarms(SwarmChanges(peers, [], {b"\x01" * 20: 4}), 1000.0, 0.0)(db)
        db.set_trace_callback(None)
        assert sum(s.startswith("INSERT OR REPLACE INTO tracker_peers") for s in statements) == 3
        loaded, counts = load_swarms(db)
    assert counts == {b"\x01" * 20: 4}
    assert sorted(loaded, key=lambda p: p.left) == [
        SavedPeer(p.info_hash, p.ip, p.port, p.peer_id, p.left, p.last_seen + 1000.0) for p in peers
    ]


async def test_registry_changes_are_saved_in_a_few_statements(tmp_path: Path) -> None:
    """2,500 node rows (the registry's drained upserts): three INSERTs, and a later
    change of some replaces their rows."""
    nodes = [Node(i, f"10.1.{i // 250}.{i % 250}", 9000, f"n{i}", 1) for i in range(1, 2501)]
    with contextlib.closing(sqlite3.connect(tmp_path / "hub.db")) as db:
        db.executescript(NODES_SCHEMA)
        statements: list[str] = []
        db.set_trace_callback(statements.append)
        save_changes(Changes(nodes, [], 2501))(db)
        db.set_trace_callback(None)
        assert sum(s.startswith("INSERT OR REPLACE INTO nodes") for s in statements) == 3
        save_changes(Changes([Node(7, "10.9.9.9", 9001, "moved", 2)], [8], 2501))(db)
        loaded, next_id = load_nodes(db)
    assert next_id == 2501
    assert len(loaded) == 2499
    assert loaded[6] == Node(7, "10.9.9.9", 9001, "moved", 2)
    assert loaded[7] == nodes[8]
