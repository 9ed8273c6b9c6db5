"""The relay's tables: what is saved is what is loaded (real SQLite, no hub)."""

from __future__ import annotations

import sqlite3
import xmlrpc.client
from pathlib import Path

from smartget.hub.relay.core import SatelliteRegistry
from smartget.hub.relay.outbox import Outbox
from smartget.hub.relay.store import load_messages, load_satellites, save_changes, save_outbox

RECIPIENTS = ("10.0.0.1:7", "10.0.0.2:7", "10.0.0.3:7")


def test_save_and_load_roundtrip_keeps_order_and_statistics(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "s.sqlite3", isolation_level=None)
    assert load_satellites(db) == []  # creates the table
    reg = SatelliteRegistry()
    for n, ip in enumerate(("10.0.0.9", "10.0.0.1", "10.0.0.5")):
        reg.register(ip, 7000 + n, 100.0 + n, nick=f"n{n}", plugins=["a", "b"], notify_pass="p")
    reg.accept_relay("10.0.0.9:7000", "10.0.0.9", 200.0)
    reg.note_ping("10.0.0.1:7001", 3.5)
    reg.note_ping("10.0.0.5:7002", None)
    save_changes(reg.drain_changes())(db)
    # a later update keeps the row's place; a delete removes it
    reg.register("10.0.0.9", 7000, 300.0, nick="renamed")
    reg.deregister("10.0.0.5:7002", "10.0.0.5")
    save_changes(reg.drain_changes())(db)

    loaded = load_satellites(db)
    assert [s.host_id for s in loaded] == ["10.0.0.9:7000", "10.0.0.1:7001"]
    assert [s.raw() for s in loaded] == [s.raw() for s in reg.satellites()]
    assert (loaded[0].nick, loaded[0].notify_pass) == ("renamed", "")  # refreshed
    assert (loaded[1].notify_pass, loaded[1].plugins, loaded[1].ping_avg) == ("p", ["a", "b"], 3.5)
    db.close()


def test_messages_roundtrip_progress_and_the_sequence_survives_deletes(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "m.sqlite3", isolation_level=None)
    assert load_messages(db) == ([], 0)  # creates the table
    box = Outbox(10)
    when = xmlrpc.client.DateTime("20240102T03:04:05")
    data = {"text": "héllo", "when": when, "blob": xmlrpc.client.Binary(b"\0\1"), "n": None}
    first = box.accept("10.0.0.1:7", {"host_id": "10.0.0.1:7", "data": data}, RECIPIENTS, 5.5)
    second = box.accept("10.0.0.2:7", {"host_id": "10.0.0.2:7", "data": [1]}, RECIPIENTS, 6.0)
    third = box.accept("10.0.0.1:7", {"host_id": "10.0.0.1:7", "data": "x"}, RECIPIENTS, 6.5)
    save_outbox(box.drain_changes())(db)
    box.dispatched(first)
    box.done(first, "10.0.0.2:7")
    for msg in (second, third):
        box.dispatched(msg)
        for host in RECIPIENTS:
            box.done(msg, host)
    save_outbox(box.drain_changes())(db)

    loaded, last_seq = load_messages(db)
    assert last_seq == 3
    assert [m.seq for m in loaded] == [1]
    (msg,) = loaded
    assert (msg.sender, msg.accepted, msg.pending) == ("10.0.0.1:7", 5.5, {"10.0.0.3:7"})
    assert msg.params["data"]["text"] == "héllo"
    assert msg.params["data"]["when"] == when  # XML-RPC types come back as they went in
    assert msg.params["data"]["blob"].data == b"\0\1"
    assert msg.params["data"]["n"] is None

    box.done(first, "10.0.0.3:7")
    save_outbox(box.drain_changes())(db)
    assert load_messages(db) == ([], 3)  # numbers keep increasing once the rows are gone
    db.close()


def test_an_unreadable_message_row_is_deleted_not_fatal(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "m.sqlite3", isolation_level=None)
    load_messages(db)
    db.execute(
        "INSERT INTO relay_messages (seq, sender, accepted, params, pending) VALUES "
        "(1, 'a:1', 0, x'3c78', '[]'), (2, 'a:1', 0, ?, 'not json')",
        (xmlrpc.client.dumps(({"data": 1},), "relay.relay").encode(),),
    )
    assert load_messages(db) == ([], 2)
    assert db.execute("SELECT count(*) FROM relay_messages").fetchone() == (0,)
    db.close()
