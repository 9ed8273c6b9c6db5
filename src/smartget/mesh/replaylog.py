"""DATA_DIR/replay.log: the replay cache (replay.py) on disk, so it survives a restart.

One line per delivered signed packet, ``<expires> <signer> <flag>``, appended with one
``write`` to an ``O_APPEND`` file before the packet reaches its app: a ``kill -9``
right after loses nothing (the line is in the kernel). It is not fsynced: after a power
loss the last lines may be gone, and with them protection for packets of the last
seconds. At start the file is read (at most ``MAX_BYTES``), expired lines dropped, and
rewritten; it is rewritten again whenever it holds twice the live entries, so its size
follows the cache's bound (about 100 bytes an entry).
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from smartget.mesh.replay import ReplayCache, format_record, parse_record

__all__ = ["MAX_BYTES", "ReplayLog"]

log = logging.getLogger(__name__)

MAX_BYTES = 64 << 20


class ReplayLog:
    """The append-only file behind one node's :class:`ReplayCache`."""

    def __init__(self, path: Path, cache: ReplayCache) -> None:
        self.path = path
        self.cache = cache
        self._fd: int | None = None
        self._lines = 0

    def open(self, now: float) -> None:
        """Load what an earlier run recorded, compact the file and keep it open."""
        records = []
        with contextlib.suppress(FileNotFoundError), self.path.open("rb") as file:
            data = file.read(MAX_BYTES)
            if len(data) == MAX_BYTES:
                log.warning("%s is over %d bytes; reading only the start", self.path, MAX_BYTES)
            for raw in data.decode("ascii", "replace").splitlines():
                record = parse_record(raw)
                if record is not None:
                    records.append(record)
        self.cache.load(records, now)
        self._rewrite(now)

    def append(self, line: str) -> None:
        if self._fd is None:
            raise OSError(f"{self.path} is not open")
        os.write(self._fd, line.encode("ascii"))
        self._lines += 1
        if self._lines > 2 * len(self.cache) + 1000:
            self._rewrite(None)  # admit() has just expired what is old

    def _rewrite(self, now: float | None) -> None:
        if now is not None:
            self.cache.expire(now)
        records = self.cache.records()
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, "".join(format_record(*r) for r in records).encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        self.close()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._lines = len(records)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
