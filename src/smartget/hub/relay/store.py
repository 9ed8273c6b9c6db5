"""The relay's tables in the hub's SQLite store (seed: ``_serialize_sat_data``).

co2 dumped an XML file of its satellites so that "satellites don't have to register
again themselves" after a restart; here each registration is a row in the hub's store,
committed before ``relay.register`` answers, so it survives ``kill -9`` too. Statistics
are written along, in the store's grouped transactions.

Accepted messages (:mod:`smartget.hub.relay.outbox`) are rows of ``relay_messages``,
committed before ``relay.relay`` answers 'OK': the relay.relay dict as XML-RPC (so
dates, binaries and nil come back as they went in), its sender, when it was accepted,
and the recipients it is not done for yet (a JSON list). ``AUTOINCREMENT`` keeps the
highest sequence number ever used, so numbers keep increasing after the rows are gone.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from typing import Any

from smartget.hub.relay.core import SATELLITE_FIELDS, RelayChanges, Satellite
from smartget.hub.relay.outbox import Message, OutboxChanges
from smartget.hub.relay.xmlrpc import XmlRpcError, dump_request, parse_request

__all__ = [
    "MESSAGES_SCHEMA",
    "RELAY_SCHEMA",
    "load_messages",
    "load_satellites",
    "save_changes",
    "save_outbox",
]

log = logging.getLogger(__name__)

MESSAGES_SCHEMA = """
CREATE TABLE IF NOT EXISTS relay_messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    sender TEXT NOT NULL,
    accepted REAL NOT NULL,
    params BLOB NOT NULL,
    pending TEXT NOT NULL
);
"""
# Our own rows: far above any request we accept (--relay-max-request), still a limit.
MAX_STORED_MESSAGE = 64 * 1024 * 1024

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
_COLUMNS = ("host_id", *SATELLITE_FIELDS)


def _row(sat: Satellite) -> tuple[Any, ...]:
    values = [getattr(sat, name) for name in SATELLITE_FIELDS]
    values[SATELLITE_FIELDS.index("plugins")] = json.dumps(sat.plugins)
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
                + ", ".join(f"{c} = excluded.{c}" for c in SATELLITE_FIELDS),
                rows,
            )

    return write


def load_satellites(db: sqlite3.Connection) -> list[Satellite]:
    """Create the table if needed and read every satellite, in registration order."""
    db.executescript(RELAY_SCHEMA)
    sats = []
    columns = ", ".join(SATELLITE_FIELDS)
    for row in db.execute(f"SELECT {columns} FROM relay_satellites ORDER BY seq"):
        values = list(row)
        plugins = json.loads(values[SATELLITE_FIELDS.index("plugins")])
        values[SATELLITE_FIELDS.index("plugins")] = [p for p in plugins if isinstance(p, str)]
        sats.append(Satellite(*values))
    return sats


def _message_row(msg: Message) -> tuple[Any, ...]:
    params = dump_request("relay.relay", msg.params)
    return (msg.seq, msg.sender, msg.accepted, params, json.dumps(sorted(msg.pending)))


def save_outbox(changes: OutboxChanges) -> Any:
    """A write for the store: new messages, their progress, finished ones deleted (the
    rows are made now, on the loop, not when the write runs)."""
    inserts = [_message_row(msg) for msg in changes.inserts]
    updates = [(json.dumps(pending), seq) for seq, pending in changes.updates]
    deletes = [(seq,) for seq in changes.deletes]

    def write(db: sqlite3.Connection) -> None:
        if inserts:
            db.executemany(
                "INSERT OR REPLACE INTO relay_messages (seq, sender, accepted, params, pending) "
                "VALUES (?, ?, ?, ?, ?)",
                inserts,
            )
        if updates:
            db.executemany("UPDATE relay_messages SET pending = ? WHERE seq = ?", updates)
        if deletes:
            db.executemany("DELETE FROM relay_messages WHERE seq = ?", deletes)

    return write


def load_messages(db: sqlite3.Connection) -> tuple[list[Message], int]:
    """Create the table if needed; every stored message in order, and the highest
    sequence number ever used. A row that cannot be read is logged and deleted."""
    db.executescript(MESSAGES_SCHEMA)
    messages, bad = [], []
    for seq, sender, accepted, params, pending in db.execute(
        "SELECT seq, sender, accepted, params, pending FROM relay_messages ORDER BY seq"
    ):
        try:
            call = parse_request(bytes(params), max_bytes=MAX_STORED_MESSAGE)
            recipients = json.loads(pending)
            if len(call.params) != 1 or not isinstance(call.params[0], dict):
                raise XmlRpcError("expected one struct")
            if not isinstance(recipients, list) or not all(isinstance(r, str) for r in recipients):
                raise ValueError("pending is not a list of host_ids")
        except (XmlRpcError, ValueError, TypeError) as exc:
            log.error("relay: stored message %s cannot be read, deleting it: %s", seq, exc)
            bad.append((seq,))
            continue
        messages.append(Message(seq, sender, call.params[0], accepted, set(recipients)))
    if bad:
        db.executemany("DELETE FROM relay_messages WHERE seq = ?", bad)
    row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'relay_messages'").fetchone()
    last_seq = max([row[0] if row else 0, *(m.seq for m in messages)])
    return messages, last_seq
