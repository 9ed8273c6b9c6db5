"""The text protocol over real sockets: every reply byte for byte, sessions, bad clients."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading

import pytest

from smartget.hub.app import Hub
from tests.helpers import wait_until

from .conftest import send

pytestmark = pytest.mark.asyncio


async def test_register_and_duplicate(hub: Hub) -> None:
    assert await send(hub, b"`register 1234\r\n") == b"200 OK\r\n1\r\n"
    assert await send(hub, b"`register 1234\n") == b"400 BAD REQUEST\r\nNode already exists!\r\n"
    # Same port from another IP is another node.
    assert await send(hub, b"`register 1234\n", src="127.0.0.3") == b"200 OK\r\n2\r\n"


async def test_deregister(hub: Hub) -> None:
    await send(hub, b"`register 80\n")
    assert await send(hub, b"`deregister 80\n", src="127.0.0.3") == b"404 NOT FOUND\r\n"
    assert await send(hub, b"`deregister 80\n") == b"200 OK\r\n"
    assert await send(hub, b"`deregister 80\n") == b"404 NOT FOUND\r\n"


async def test_setstatus_and_requestnodes(hub: Hub) -> None:
    assert await send(hub, b"`requestnodes 5\n") == b"404 NOT FOUND\r\n"
    await send(hub, b"`register 1000\n", src="127.0.0.2")
    await send(hub, b"`register 2000\n", src="127.0.0.3")
    assert await send(hub, b"`setstatus 1 2\n", src="127.0.0.2") == b"200 OK\r\n"
    assert await send(hub, b"`setstatus 2 1\n", src="127.0.0.3") == b"200 OK\r\n"
    # Only the node's own IP may set its status.
    assert await send(hub, b"`setstatus 1 9\n", src="127.0.0.3") == (
        b"400 BAD REQUEST\r\nnode 1 belongs to 127.0.0.2, not to 127.0.0.3\r\n"
    )
    assert await send(hub, b"`setstatus 99 1\n") == b"400 BAD REQUEST\r\nno node has id 99\r\n"
    # The requester never gets itself; most free capacity first; each lowered by one.
    assert await send(hub, b"`requestnodes 5 1\n", src="127.0.0.3") == (
        b"200 OK\r\n127.0.0.2 1000\r\n"
    )
    # Now both have 1 slot: the one handed out last goes last (ties take turns).
    assert await send(hub, b"`requestnodes 5\n", src="127.0.0.4") == (
        b"200 OK\r\n127.0.0.3 2000\r\n127.0.0.2 1000\r\n"
    )
    assert await send(hub, b"`requestnodes 5\n", src="127.0.0.4") == b"404 NOT FOUND\r\n"
    assert hub.registry.get_node_status(1) == 0


@pytest.mark.parametrize(
    ("request_bytes", "reply"),
    [
        (
            b"register 1\n",
            b"400 BAD REQUEST\r\na command starts with a backtick (`), got b'register 1'\r\n",
        ),
        (
            b"`fly\n",
            b"400 BAD REQUEST\r\nunknown command `fly; known: `register, `deregister, "
            b"`requestnodes, `setstatus, `session\r\n",
        ),
        (b"`register\n", b"400 BAD REQUEST\r\nusage: `register PORT (got 0 arguments)\r\n"),
        (b"`register 70000\n", b"400 BAD REQUEST\r\nPORT must be from 1 to 65535, got 70000\r\n"),
        (b"`requestnodes -3\n", b"400 BAD REQUEST\r\nN must be from 1 to 1000, got -3\r\n"),
        (b"`setstatus 1 x\n", b"400 BAD REQUEST\r\nSTATUS must be a whole number, got 'x'\r\n"),
        (b"\n", b"400 BAD REQUEST\r\nempty command; expected `register, `deregister, ...\r\n"),
        (b"", b"400 BAD REQUEST\r\nempty command; expected `register, `deregister, ...\r\n"),
    ],
)
async def test_malformed_requests(hub: Hub, request_bytes: bytes, reply: bytes) -> None:
    assert await send(hub, request_bytes, eof=True) == reply


async def test_command_without_line_end_is_answered_at_eof(hub: Hub) -> None:
    assert await send(hub, b"`register 5", eof=True) == b"200 OK\r\n1\r\n"


async def test_long_line_is_refused_and_closed(hub: Hub) -> None:
    reply = await send(hub, b"`register " + b"1" * 4000)
    assert reply.startswith(b"400 BAD REQUEST\r\nline longer than 1024 bytes: b'`register 111")
    assert reply.endswith(b"\r\n")


async def test_slow_client_times_out_without_disturbing_others(hub: Hub) -> None:
    host, port = hub.text_address
    reader, writer = await asyncio.open_connection(host, port, local_addr=("127.0.0.5", 0))
    writer.write(b"`regis")  # and never finishes the line
    await writer.drain()
    # Meanwhile others are served at once.
    assert await send(hub, b"`register 1\n") == b"200 OK\r\n1\r\n"
    reply = await asyncio.wait_for(reader.read(), timeout=5)
    assert reply == b"400 BAD REQUEST\r\nno complete line within 0.5 s\r\n"
    writer.close()


async def test_silent_client_gets_a_reply_and_is_closed(hub: Hub) -> None:
    host, port = hub.text_address
    reader, writer = await asyncio.open_connection(host, port, local_addr=("127.0.0.6", 0))
    reply = await asyncio.wait_for(reader.read(), timeout=5)
    assert reply == b"400 BAD REQUEST\r\nno complete line within 0.5 s\r\n"
    writer.close()


async def test_session_mode_pipelined(hub: Hub) -> None:
    host, port = hub.text_address
    reader, writer = await asyncio.open_connection(host, port, local_addr=("127.0.0.2", 0))
    writer.write(b"`session\r\n`register 10\n`register 10\n`setstatus 1 3\r\n`bogus\n")
    await writer.drain()
    expected = (
        b"200 OK\r\n"
        b"200 OK\r\n1\r\n"
        b"400 BAD REQUEST\r\nNode already exists!\r\n"
        b"200 OK\r\n"
        b"400 BAD REQUEST\r\nunknown command `bogus; known: `register, `deregister, "
        b"`requestnodes, `setstatus, `session\r\n"
    )
    got = await asyncio.wait_for(reader.readexactly(len(expected)), timeout=5)
    assert got == expected
    # Still open: one more command, then a clean close at EOF.
    writer.write(b"`deregister 10\n")
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(), timeout=5) == b"200 OK\r\n"
    writer.close()


async def test_many_concurrent_clients(hub: Hub) -> None:
    async def one(i: int) -> bytes:
        return await send(hub, b"`register %d\n" % (1000 + i), src=f"127.0.0.{2 + i % 50}")

    replies = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(300))), timeout=30)
    ids = sorted(int(r.split(b"\r\n")[1]) for r in replies)
    assert ids == list(range(1, 301))
    assert len(hub.registry) == 300


async def test_client_that_does_not_read_does_not_block_others(hub: Hub) -> None:
    host, port = hub.text_address
    _, writer = await asyncio.open_connection(host, port, local_addr=("127.0.0.7", 0))
    writer.write(b"`session\n" + b"`requestnodes 1\n" * 20_000)
    await asyncio.wait_for(writer.drain(), timeout=10)
    assert await send(hub, b"`register 9\n") == b"200 OK\r\n1\r\n"
    writer.close()


async def test_zombie_and_revival(tmp_path: object) -> None:
    from pathlib import Path

    from smartget.hub.app import HubSettings, running

    assert isinstance(tmp_path, Path)
    settings = HubSettings(
        data_dir=tmp_path / "z",
        listen=("127.0.0.1", 0),
        http=None,
        token="t",
        node_ttl=0.3,
        zombie_grace=60,
        allow_net=("127.0.0.0/8",),
    )
    async with running(settings) as hub:
        await send(hub, b"`register 1\n")
        await send(hub, b"`setstatus 1 5\n")
        assert (
            await send(hub, b"`requestnodes 1\n", src="127.0.0.9") == b"200 OK\r\n127.0.0.2 1\r\n"
        )
        await wait_until(lambda: hub.registry.get_node_status(1) == -1, 5, "zombie")
        assert await send(hub, b"`requestnodes 1\n", src="127.0.0.9") == b"404 NOT FOUND\r\n"
        assert await send(hub, b"`setstatus 1 2\n") == b"200 OK\r\n"
        assert (
            await send(hub, b"`requestnodes 1\n", src="127.0.0.9") == b"200 OK\r\n127.0.0.2 1\r\n"
        )


def saved_status(hub: Hub, node_id: int) -> int | None:
    """The status in the SQLite file, as another process (or a restart) would see it."""
    with contextlib.closing(sqlite3.connect(hub.store.path)) as db:
        row = db.execute("SELECT status FROM nodes WHERE id = ?", (node_id,)).fetchone()
    return None if row is None else int(row[0])


async def open_session(hub: Hub, src: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = hub.text_address
    reader, writer = await asyncio.open_connection(host, port, local_addr=(src, 0))
    writer.write(b"`session\n")
    assert await asyncio.wait_for(reader.readexactly(8), 5) == b"200 OK\r\n"
    return reader, writer


async def test_a_change_is_acknowledged_only_once_it_is_durable(hub: Hub) -> None:
    await send(hub, b"`register 10\n", src="127.0.0.2")  # node 1
    await send(hub, b"`register 20\n", src="127.0.0.3")  # node 2
    # Hold the store's writer in a transaction of its own.
    started, release = threading.Event(), threading.Event()

    def hold(db: sqlite3.Connection) -> None:
        started.set()
        release.wait(5)

    held = hub.store.submit(hold)
    loop = asyncio.get_running_loop()
    assert await loop.run_in_executor(None, started.wait, 5)
    try:
        reader, writer = await open_session(hub, "127.0.0.2")
        # A change, then a heartbeat repeating it: both wait (in order) for the commit.
        writer.write(b"`setstatus 1 5\n`setstatus 1 5\n")
        await wait_until(lambda: hub.registry.get_node_status(1) == 5, 5, "status applied")
        # Another connection's heartbeat changes nothing: answered at once, commit or not.
        assert await send(hub, b"`setstatus 2 0\n", src="127.0.0.3") == b"200 OK\r\n"
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.readexactly(1), 0.3)
        assert saved_status(hub, 1) == 0
    finally:
        release.set()
    await asyncio.wait_for(held, 5)
    assert await asyncio.wait_for(reader.readexactly(16), 5) == b"200 OK\r\n" * 2
    assert saved_status(hub, 1) == 5
    writer.close()


async def test_a_heartbeat_that_changes_nothing_costs_no_commit(hub: Hub) -> None:
    reader, writer = await open_session(hub, "127.0.0.2")
    writer.write(b"`register 10\n`setstatus 1 4\n")
    assert await asyncio.wait_for(reader.readexactly(19), 5) == b"200 OK\r\n1\r\n200 OK\r\n"
    commits = hub.store.commits
    writer.write(b"`setstatus 1 4\n" * 50)
    assert await asyncio.wait_for(reader.readexactly(8 * 50), 5) == b"200 OK\r\n" * 50
    assert hub.store.commits == commits
    writer.write(b"`setstatus 1 3\n")
    assert await asyncio.wait_for(reader.readexactly(8), 5) == b"200 OK\r\n"
    assert hub.store.commits == commits + 1
    assert saved_status(hub, 1) == 3
    writer.close()


async def test_a_failed_commit_answers_every_command_that_waited_for_it(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader, writer = await open_session(hub, "127.0.0.2")
    writer.write(b"`register 10\n")
    assert await asyncio.wait_for(reader.readexactly(11), 5) == b"200 OK\r\n1\r\n"
    commit = hub.store._commit

    def fail_once(db: sqlite3.Connection, batch: list[object]) -> None:
        monkeypatch.setattr(hub.store, "_commit", commit)
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(hub.store, "_commit", fail_once)
    # One read: a change, a heartbeat repeating it, a bad command. All three waited for
    # the commit that failed, so none of them can stand: each gets the error line.
    writer.write(b"`setstatus 1 5\n`setstatus 1 5\n`bogus\n")
    not_saved = b"400 BAD REQUEST\r\nthe hub could not save this change; try again\r\n"
    got = await asyncio.wait_for(reader.readexactly(3 * len(not_saved)), 5)
    assert got == not_saved * 3
    # The session goes on, and the next change is saved.
    writer.write(b"`setstatus 1 6\n")
    assert await asyncio.wait_for(reader.readexactly(8), 5) == b"200 OK\r\n"
    assert saved_status(hub, 1) == 6
    writer.close()


async def test_a_partial_line_in_a_session_times_out(hub: Hub) -> None:
    """The idle timer (minutes) is armed; a partial line must bring it forward (0.5 s)."""
    reader, writer = await open_session(hub, "127.0.0.8")
    writer.write(b"`register 10\n`setstatus 1 2\n")
    assert await asyncio.wait_for(reader.readexactly(19), 5) == b"200 OK\r\n1\r\n200 OK\r\n"
    # Once the first wake-up (the 0.5 s of single mode) has passed, only the idle
    # deadline is armed: from here on, nothing else would wake the connection early.
    (conn,) = hub.text_connections
    await wait_until(lambda: (conn._timer_at or 0) > hub.now() + 60, 5, "idle timer armed")
    writer.write(b"`setstatus 1 3\n`setst")  # a whole line, then half of one
    assert await asyncio.wait_for(reader.readexactly(8), 5) == b"200 OK\r\n"
    reply = await asyncio.wait_for(reader.read(), 5)
    assert reply == b"400 BAD REQUEST\r\nno complete line within 0.5 s\r\n"
    writer.close()
