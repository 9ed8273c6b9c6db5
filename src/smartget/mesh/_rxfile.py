"""A file arriving on a link: written and hashed in a worker thread, in order.

hashlib and file writes release the GIL on large buffers, so moving them off the event
loop lets TLS decryption (loop thread) and SHA-256 plus disk (worker) use two cores.
Chunks are submitted in order to a one-thread executor; :meth:`IncomingFile.finish`
waits for the last one and says whether the content matches the announced sha256.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

__all__ = ["IncomingFile"]


class IncomingFile:
    """The content of one file Datapack, written to a temporary file under ``tmp_dir``."""

    def __init__(
        self, tmp_dir: Path, expected_sha256: str, on_backlog: Callable[[int], None]
    ) -> None:
        fd, self.path = tempfile.mkstemp(dir=tmp_dir, prefix="rx-")
        self._file = os.fdopen(fd, "wb")
        self._hasher = hashlib.sha256()
        self._expected = expected_sha256
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="mesh-rx")
        self._loop = asyncio.get_running_loop()
        self._on_backlog = on_backlog  # called in the loop with the chunks not yet written
        self.pending = 0

    def _write(self, chunk: bytes) -> None:
        self._file.write(chunk)
        self._hasher.update(chunk)

    def write(self, chunk: bytes) -> None:
        self.pending += 1
        future = self._executor.submit(self._write, chunk)
        future.add_done_callback(self._written)

    def _written(self, future: Future[None]) -> None:  # in the worker thread
        with contextlib.suppress(RuntimeError):  # the loop closed under us
            self._loop.call_soon_threadsafe(self._count_down)

    def _count_down(self) -> None:
        self.pending -= 1
        self._on_backlog(self.pending)

    def _close(self) -> str:
        self._file.close()
        return self._hasher.hexdigest()

    async def finish(self) -> bool:
        """Close the file; True when its sha256 matches (else the file is removed)."""
        closing = self._executor.submit(self._close)
        self._executor.shutdown(wait=False)
        try:
            # Shielded: if the node stops meanwhile, the worker still closes the file
            # (after the writes queued before it) and the partial file is removed.
            digest = await asyncio.shield(asyncio.wrap_future(closing))
        except asyncio.CancelledError:
            closing.add_done_callback(lambda _: self.remove())
            raise
        except OSError:
            digest = ""
        if digest != self._expected:
            self.remove()
            return False
        return True

    def abort(self) -> None:
        """Give up: close and remove the file (the link is gone)."""
        self._executor.submit(self._close)
        self._executor.shutdown(wait=False)
        self.remove()

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.path)
