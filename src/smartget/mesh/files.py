"""A node's received files on disk: DATA_DIR/tmp while in flight, DATA_DIR/recv when kept.

A file arriving on a link is written to ``tmp`` (link.py). If it is for another node it
is relayed from there: it has one reference per link outbox holding it (the retry queue
holds it with none) and is removed when the last send ends or it is dropped. If it is
for an app here it is moved to ``recv/FILENAME``, never outside that root.
"""

from __future__ import annotations

import collections
import contextlib
import os
from pathlib import Path

from smartget.errors import AuthError
from smartget.mesh.datapack import Datapack
from smartget.mesh.policy import safe_relpath

__all__ = ["FileStore"]


class FileStore:
    """The ``tmp`` and ``recv`` directories of one node, and who still needs each tmp file."""

    def __init__(self, data_dir: Path) -> None:
        # Absolute: temporary files are named by absolute paths (mkstemp), and a relative
        # --data-dir made every one look not ours, so none was ever removed (issue 12, 8).
        data_dir = data_dir.absolute()
        self.recv_root = data_dir / "recv"
        self.tmp_dir = data_dir / "tmp"
        self._refs: collections.Counter[str] = collections.Counter()

    def prepare(self) -> None:
        """Make both directories; remove half-received files of an earlier run."""
        for directory in (self.recv_root, self.tmp_dir):
            directory.mkdir(parents=True, exist_ok=True)
        for stale in self.tmp_dir.glob("rx-*"):
            stale.unlink(missing_ok=True)

    def _in_flight(self, path: str | None) -> bool:
        return path is not None and os.path.dirname(os.path.abspath(path)) == str(self.tmp_dir)

    def queued(self, dp: Datapack) -> None:
        """``dp`` was queued on a link: its tmp file has one more holder."""
        if dp.file is not None and self._in_flight(dp.file):
            self._refs[dp.file] += 1

    def release(self, dp: Datapack) -> bool:
        """Release one reference (the packet left an outbox); True when that was the last."""
        path = dp.file
        if path is None or path not in self._refs:
            return False
        self._refs[path] -= 1
        if self._refs[path] > 0:
            return False
        del self._refs[path]
        return True

    def sent(self, dp: Datapack) -> None:
        """A link finished sending ``dp``: remove its tmp file if nobody else holds it."""
        if self.release(dp) and dp.file is not None:
            with contextlib.suppress(OSError):
                os.unlink(dp.file)

    def dropped(self, dp: Datapack) -> None:
        """``dp`` was given up: remove its tmp file unless an outbox still holds it."""
        path = dp.file
        if path is not None and self._in_flight(path) and not self._refs[path]:
            with contextlib.suppress(OSError):
                os.unlink(path)

    def store(self, dp: Datapack) -> str:
        """Move a verified received file to RECV_ROOT/filename; return where it is now."""
        name = dp.head.get("filename", "")
        rel = safe_relpath(name)
        root = self.recv_root.resolve()
        dest = (root / rel).resolve() if rel is not None else None
        if dest is None or not dest.is_relative_to(root) or dest == root:
            raise AuthError(f"filename {name[:80]!r} leads outside {root}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        assert dp.file is not None
        os.replace(dp.file, dest)
        return str(dest)
