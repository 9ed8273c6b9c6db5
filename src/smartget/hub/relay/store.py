"""The relay's table in the hub's SQLite store (seed: ``_serialize_sat_data``).

co2 dumped an XML file of its satellites so that "satellites don't have to register
again themselves" after a restart; here each registration is a row in the hub's store,
committed before ``relay.register`` answers, so it survives ``kill -9`` too. Statistics
are written along, in the store's grouped transactions.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from smartget.hub.relay.core import RelayChanges, Satellite

__all__ = ["RELAY_SCHEMA", "load_satellites", "save_changes"]

RELAY_SCHEMA = """
CREATE TABLE IF NOT EXISTS relay_satellites (
    host_id TEXT PRIMARY KEY,
    ip TEXT NOT NULL,
    port INTEGER NOT NULL,
    nick TEXT NOT NULL DEFAULT '',
    plugins TEXT NOT NULL DEFAULT '[]',
    notify_pass TEXT NOT NULL DEFAULT '',
    ctime REAL NOT NULL,
    ping_current REAL NOT NULL DEFAULT -1,
    ping_count INTEGER NOT NULL DEFAULT 0,
    ping_min REAL NOT NULL DEFAULT -1,
    ping_max REAL NOT NULL DEFAULT -1,
    ping_total REAL NOT NULL DEFAULT 0,
    ping_answered INTEGER NOT NULL DEFAULT 0,
    ping_fails INTEGER NOT NULL DEFAULT 0,
    ping_fails_in_row INTEGER NOT NULL DEFAULT 0,
    send_count INTEGER NOT NULL DEFAULT 0,
    send_time REAL NOT NULL DEFAULT 0,
    recv_count INTEGER NOT NULL DEFAULT 0,
    recv_time REAL NOT NULL DEFAULT 0,
    notify_fails INTEGER NOT NULL DEFAULT 0,
    seq INTEGER NOT NULL DEFAULT 0
);
"""
# Satellite's fields, in its constructor's order, after ip and port.
_FIELDS = (
    "ip",
    "port",
    "nick",
    "plugins",
    "notify_pass",
    "ctime",
    "ping_current",
    "ping_count",
    "ping_min",
    "ping_max",
    "ping_total",
    "ping_answered",
    "ping_fails",
    "ping_fails_in_row",
    "send_count",
    "send_time",
    "recv_count",
    "recv_time",
    "notify_fails",
)
_COLUMNS = ("host_id", *_FIELDS)


def _row(sat: Satellite) -> tuple[Any, ...]:
    values = [getattr(sat, name) for name in _FIELDS]
    values[_FIELDS.index("plugins")] = json.dumps(sat.plugins)
    return (sat.host_id, *values)


def save_changes(changes: RelayChanges) -> Any:
    """A write for :meth:`Store.submit` (the rows are copied now, not when it runs)."""
    rows = [_row(sat) for sat in changes.upserts]
    deletes = [(host_id,) for host_id in changes.deletes]

    def write(db: sqlite3.Connection) -> None:
        if deletes:
            db.executemany("DELETE FROM relay_satellites WHERE host_id = ?", deletes)
        if rows:
            # seq keeps registration order; an update keeps the row's first seq.
            db.executemany(
                f"INSERT INTO relay_satellites ({', '.join(_COLUMNS)}, seq) "
                f"VALUES ({', '.join('?' * len(_COLUMNS))}, "
                "(SELECT coalesce(max(seq), 0) + 1 FROM relay_satellites)) "
                "ON CONFLICT (host_id) DO UPDATE SET "
                + ", ".join(f"{c} = excluded.{c}" for c in _FIELDS),
                rows,
            )

    return write


def load_satellites(db: sqlite3.Connection) -> list[Satellite]:
    """Create the table if needed and read every satellite, in registration order."""
    db.executescript(RELAY_SCHEMA)
    sats = []
    for row in db.execute(f"SELECT {', '.join(_FIELDS)} FROM relay_satellites ORDER BY seq"):
        values = list(row)
        plugins = json.loads(values[_FIELDS.index("plugins")])
        values[_FIELDS.index("plugins")] = [p for p in plugins if isinstance(p, str)]
        sats.append(Satellite(*values))
    return sats
