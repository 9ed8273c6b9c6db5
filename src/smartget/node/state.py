"""The node's durable state: which torrents it runs and how far their reporting got.

One SQLite file (WAL) in the data dir. A row is written before the task's answer
leaves, so a ``kill -9`` at any moment loses nothing that was acknowledged
(DESIGN.md, "Nothing acknowledged is lost"). The rows are small and rare (one per task),
so writes run in the loop; ``synchronous=NORMAL`` survives a killed process.

Schema versions (``PRAGMA user_version``): :data:`SCHEMA` is version 0, the table as the
first nodes wrote it; each entry of :data:`MIGRATIONS` takes it one version up, in one
transaction, so a data dir of any earlier version opens (new columns get their defaults)
and a half-applied migration cannot be left behind by a killed process. A data dir from
a newer SmartGet is refused rather than misread.

* 1 (issue 4, "expire"): ``expire_at``, the download task's deadline (UNIX time, NULL:
  none); ``expired``, set when the node stopped the torrent at that deadline: JSON of the
  figures it had then (percent, downtotal, uptotal), for its last status report.
* 2 (issue 15, caches; issue 14, magnets): ``magnet``, the magnet a download by
  info-hash was asked with (to add it again after a restart before its metadata came);
  ``size`` (bytes, once complete), ``used_at`` (last use, UNIX time) and ``pin_until``
  (UNIX time, NULL: no pin) for the cache (:mod:`smartget.node.cache`); ``evicted``,
  set when the node removed the torrent for the cache: JSON of its last figures, kept
  until its last status report is delivered.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, fields
from pathlib import Path

from smartget.errors import StoreError

__all__ = ["SCHEMA_VERSION", "NodeState", "TorrentRecord"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS torrents (
    sha1 TEXT PRIMARY KEY,
    torrentfile TEXT NOT NULL,
    save_path TEXT NOT NULL,
    data_path TEXT NOT NULL,
    rename_to TEXT NOT NULL DEFAULT '',
    torrentfileurl TEXT NOT NULL DEFAULT '',
    fileurl TEXT NOT NULL DEFAULT '',
    taskid TEXT NOT NULL DEFAULT '',
    seed_mode INTEGER NOT NULL DEFAULT 0,
    report_done INTEGER NOT NULL DEFAULT 0,
    report_retries INTEGER NOT NULL DEFAULT 0
);
"""

# MIGRATIONS[n] takes the schema from version n to n + 1 (see the module docstring).
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        "ALTER TABLE torrents ADD COLUMN expire_at REAL",
        "ALTER TABLE torrents ADD COLUMN expired TEXT NOT NULL DEFAULT ''",
    ),
    (
        "ALTER TABLE torrents ADD COLUMN magnet TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE torrents ADD COLUMN size INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE torrents ADD COLUMN used_at REAL",
        "ALTER TABLE torrents ADD COLUMN pin_until REAL",
        "ALTER TABLE torrents ADD COLUMN evicted TEXT NOT NULL DEFAULT ''",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass
class TorrentRecord:
    sha1: str
    torrentfile: str
    save_path: str
    data_path: str
    rename_to: str = ""
    torrentfileurl: str = ""
    fileurl: str = ""
    taskid: str = ""
    seed_mode: bool = False
    report_done: bool = False
    report_retries: int = 0
    expire_at: float | None = None  # the download task's deadline, UNIX time
    expired: str = ""  # JSON of its last figures once stopped at that deadline
    magnet: str = ""  # a download by magnet or info-hash: the magnet, checked
    size: int = 0  # bytes, once complete (the cache's count)
    used_at: float | None = None  # the last use (UNIX time), for the cache
    pin_until: float | None = None  # kept from cache eviction until then (UNIX time)
    evicted: str = ""  # JSON of its last figures once removed for the cache

    def expired_figures(self) -> dict[str, float]:
        """The figures kept when the torrent expired ({} if it did not, or unreadable)."""
        return _figures(self.expired)

    def evicted_figures(self) -> dict[str, float]:
        """The figures kept when the torrent was evicted ({} if it was not)."""
        return _figures(self.evicted)


def _figures(text: str) -> dict[str, float]:
    """Figures kept as JSON ({} when none, or unreadable)."""
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {
        k: float(v)
        for k, v in data.items()
        if isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool)
    }


_COLUMNS = [f.name for f in fields(TorrentRecord)]


class NodeState:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the node's state {path}: {exc}") from exc
        try:
            self._migrate()
        except sqlite3.Error as exc:
            self.db.close()
            raise StoreError(f"cannot migrate the node's state {path}: {exc}") from exc
        except StoreError:
            self.db.close()
            raise

    def _migrate(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")  # one writer; a second process waits here
        try:
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"the node's state {self.path} has schema version {version}; this "
                    f"SmartGet knows versions up to {SCHEMA_VERSION}: use a newer SmartGet "
                    "or another --data-dir"
                )
            for statements in MIGRATIONS[version:]:
                for statement in statements:
                    self.db.execute(statement)
            # PRAGMA takes no parameters; SCHEMA_VERSION is our own int.
            self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()

    def torrents(self) -> list[TorrentRecord]:
        rows = self.db.execute(f"SELECT {', '.join(_COLUMNS)} FROM torrents ORDER BY rowid")
        return [self._record(row) for row in rows]

    def get(self, sha1: str) -> TorrentRecord | None:
        row = self.db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM torrents WHERE sha1 = ?", (sha1,)
        ).fetchone()
        return self._record(row) if row else None

    def find(self, *, torrentfile: str = "", data_path: str = "") -> TorrentRecord | None:
        row = self.db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM torrents "
            "WHERE (? != '' AND torrentfile = ?) OR (? != '' AND data_path = ?)",
            (torrentfile, torrentfile, data_path, data_path),
        ).fetchone()
        return self._record(row) if row else None

    def put(self, record: TorrentRecord) -> None:
        values = [getattr(record, name) for name in _COLUMNS]
        try:
            self.db.execute(
                f"INSERT OR REPLACE INTO torrents ({', '.join(_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(_COLUMNS))})",
                values,
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot save torrent {record.sha1}: {exc}") from exc

    def update_report(self, sha1: str, *, done: bool, retries: int) -> None:
        self.db.execute(
            "UPDATE torrents SET report_done = ?, report_retries = ? WHERE sha1 = ?",
            (int(done), retries, sha1),
        )

    def set_expire(self, sha1: str, at: float | None) -> None:
        """Set (or, with None, clear) a torrent's deadline."""
        self._write("UPDATE torrents SET expire_at = ? WHERE sha1 = ?", (at, sha1))

    def mark_expired(self, sha1: str, figures: dict[str, float]) -> None:
        """The torrent was stopped at its deadline; keep the figures it had then."""
        self._write(
            "UPDATE torrents SET expired = ? WHERE sha1 = ?",
            (json.dumps(figures, sort_keys=True), sha1),
        )

    def mark_evicted(self, sha1: str, figures: dict[str, float]) -> None:
        """The torrent was removed for the cache; keep its figures for its last report."""
        self._write(
            "UPDATE torrents SET evicted = ? WHERE sha1 = ?",
            (json.dumps(figures, sort_keys=True), sha1),
        )

    def set_cache(
        self, sha1: str, *, size: int, used_at: float | None, pin_until: float | None
    ) -> None:
        """Save what the cache knows of a torrent (size, last use, pin)."""
        self._write(
            "UPDATE torrents SET size = ?, used_at = ?, pin_until = ? WHERE sha1 = ?",
            (size, used_at, pin_until, sha1),
        )

    def _write(self, sql: str, values: tuple[object, ...]) -> None:
        try:
            self.db.execute(sql, values)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot update the node's state {self.path}: {exc}") from exc

    def delete(self, sha1: str) -> None:
        self.db.execute("DELETE FROM torrents WHERE sha1 = ?", (sha1,))

    @staticmethod
    def _record(row: tuple[object, ...]) -> TorrentRecord:
        record = TorrentRecord(*row)  # type: ignore[arg-type]
        record.seed_mode = bool(record.seed_mode)
        record.report_done = bool(record.report_done)
        return record
