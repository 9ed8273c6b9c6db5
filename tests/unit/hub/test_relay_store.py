"""The relay's table: what is saved is what is loaded (real SQLite, no hub)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from smartget.hub.relay.core import SatelliteRegistry
from smartget.hub.relay.store import load_satellites, save_changes


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
