"""The node's durable state: which torrents it runs and how far their reporting got.

One SQLite file (WAL) in the data dir. A row is written before the task's answer
leaves, so a ``kill -9`` at any moment loses nothing that was acknowledged
(DESIGN.md, "Nothing acknowledged is lost"). The rows are small and rare (one per task),
so writes run in the loop; ``synchronous=NORMAL`` survives a killed process.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, fields
from pathlib import Path

from smartget.errors import StoreError

__all__ = ["NodeState", "TorrentRecord"]

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

    def delete(self, sha1: str) -> None:
        self.db.execute("DELETE FROM torrents WHERE sha1 = ?", (sha1,))

    @staticmethod
    def _record(row: tuple[object, ...]) -> TorrentRecord:
        record = TorrentRecord(*row)  # type: ignore[arg-type]
        record.seed_mode = bool(record.seed_mode)
        record.report_done = bool(record.report_done)
        return record
