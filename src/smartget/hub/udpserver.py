"""The UDP tracker's asyncio driver: read datagrams in batches, feed the core, send.

asyncio's datagram transport wakes the loop once per datagram; under load that
wake-up costs more than the announce. This driver owns a non-blocking socket and, each
time it is readable, reads up to :data:`BATCH` datagrams, answering each at once (a
reply that cannot be sent now is dropped: UDP, and the client retries). Replies that
acknowledge a newly tracked torrent wait for the store in a task of their own.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Awaitable, Callable

from smartget.hub.udptracker import MAX_DATAGRAM, UdpTracker

__all__ = ["BATCH", "UdpTrackerServer"]

log = logging.getLogger(__name__)

BATCH = 256  # datagrams read per wake-up
MAX_PENDING = 1024  # replies waiting for the store at once; more are dropped


class UdpTrackerServer:
    """Serve ``core`` on ``sock`` (bound, any family) in the running loop."""

    def __init__(
        self,
        core: UdpTracker,
        sock: socket.socket,
        *,
        now: Callable[[], float],
        save_tracked: Callable[[bytes], Awaitable[None]],
    ) -> None:
        self.core = core
        self.sock = sock
        self.now = now
        self.save_tracked = save_tracked
        self.address: tuple[str, int] = sock.getsockname()[:2]
        self.send_failures = 0
        self._pending: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self.sock.setblocking(False)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), self._readable)

    def _readable(self) -> None:
        sock, core, now = self.sock, self.core, self.now()
        recvfrom, sendto = sock.recvfrom, sock.sendto
        for _ in range(BATCH):
            try:
                data, addr = recvfrom(MAX_DATAGRAM + 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # ICMP errors surface here on Linux: not ours to fix
                if exc.errno not in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                    log.warning("UDP tracker: %s", exc)
                continue
            reply = core.receive(data, addr[0], addr[1], now)
            if reply.data is None:
                continue
            if reply.newly_tracked is not None:
                self._later(reply.newly_tracked, reply.data, addr)
                continue
            try:
                sendto(reply.data, addr)
            except OSError:
                self.send_failures += 1

    def _later(self, info_hash: bytes, data: bytes, addr: tuple[str, int]) -> None:
        if len(self._pending) >= MAX_PENDING:
            self.send_failures += 1
            return
        task = asyncio.ensure_future(self._send_when_saved(info_hash, data, addr))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _send_when_saved(self, info_hash: bytes, data: bytes, addr: tuple[str, int]) -> None:
        try:
            # shielded: the store's commit future is shared by every write of its group
            await asyncio.shield(self.save_tracked(info_hash))
            self.sock.sendto(data, addr)
        except Exception as exc:  # the client retries; the hub goes on
            self.send_failures += 1
            log.warning("UDP tracker: reply to %s:%d not sent: %s", addr[0], addr[1], exc)

    async def aclose(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
        for task in list(self._pending):
            task.cancel()
        if self._pending:
            await asyncio.wait(self._pending, timeout=5)
        self.sock.close()

    def statistics(self) -> dict[str, int]:
        return self.core.statistics() | {"send_failures": self.send_failures}
