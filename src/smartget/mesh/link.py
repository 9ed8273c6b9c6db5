"""One authenticated TLS link to a peer node: a thin asyncio driver of the Datapack codec.

The TLS handshake (mutual, 1.3, our CA; ca.py) is over before :meth:`connection_made`
runs, so a peer without a valid certificate never gets a byte read. The peer's id is its
certificate's common name. The link counts as *up* only once the peer's first packet
(its heartbeat) arrived: in TLS 1.3 a client learns that the server refused its
certificate only on its first read.

Reading: bytes go into a :class:`~smartget.mesh.datapack.DatapackDecoder`; whole
packets go to the owner; file content is written to a temporary file under
``tmp_dir`` and hashed on the way by a worker thread (_rxfile.py), and handed over only
when its size and sha256 match; packets behind it wait, so order is kept. A malformed
frame closes this link and nothing else.

Writing: packets wait in an outbox drained by one writer task, which joins small
packets into one TLS write (one record per batch, not per packet), streams files in
chunks, and respects the transport's flow control. A relay whose outbox grows past
``OUTBOX_HIGH`` stops reading the links feeding it (:meth:`Link.hold`) until it drains
to half; with the apps' queues (apps/__init__.py) this carries backpressure hop by hop.
If the link dies, whatever is still in the outbox goes back to the router.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from smartget.errors import AuthError, DatapackError
from smartget.mesh import datapack as dpk
from smartget.mesh._rxfile import IncomingFile
from smartget.mesh.ca import peer_id_from_ssl

BYE_APP = "net-bye"  # control packet on a duplicate link: "stop using this one" (retire)
RETIRE_GRACE = 10.0  # seconds a retiring link waits for the peer to close it

if TYPE_CHECKING:
    from smartget.mesh.node import Node

__all__ = ["Link", "safe_relpath"]

log = logging.getLogger(__name__)

DISK_BACKLOG = 64  # chunks received but not yet written before reading pauses
OUTBOX_HIGH = 10_000  # packets waiting here before the links feeding us stop being read
BATCH_BYTES = 256 * 1024
FILE_CHUNK = 256 * 1024
_SHA256 = re.compile(r"[0-9a-f]{64}")


def safe_relpath(name: str) -> Path | None:
    """``name`` as a relative path that stays inside its root, or None (issue 7, "Files")."""
    if not name or "\x00" in name or name.startswith(("/", "\\")) or len(name) > 1024:
        return None
    parts = [p for p in re.split(r"[/\\]+", name) if p not in ("", ".")]
    if not parts or any(p == ".." or ":" in p for p in parts):
        return None
    return Path(*parts)


class Link(asyncio.Protocol):
    """A TLS connection to one peer; created by the node for each accept or dial."""

    def __init__(self, node: Node, *, dialed: bool, expected_id: str | None = None) -> None:
        self.node = node
        self.dialed = dialed
        self.expected_id = expected_id
        self.peer_id = ""
        self.peer_host = ""
        self.up = False  # the peer's first packet arrived
        self.retiring = False  # a duplicate link, told "bye": read on until the peer closes
        self.closed = asyncio.get_running_loop().create_future()
        self.stats: collections.Counter[str] = collections.Counter()
        self._transport: asyncio.Transport | None = None
        self._decoder = dpk.DatapackDecoder(max_file=node.settings.max_file)
        self._outbox: collections.deque[dpk.Datapack] = collections.deque()
        self._wake = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._writer: asyncio.Task[None] | None = None
        self._current_file: dpk.Datapack | None = None  # the file being streamed
        self._pausers: set[str] = set()
        self._feeders: set[Link] = set()  # links paused because our outbox is long
        self._last_rx = 0.0
        self._idle: asyncio.TimerHandle | None = None
        # The file being received (None while none is, or while refused ones are skipped).
        self._rx_file: IncomingFile | None = None
        self._rx_dp: dpk.Datapack | None = None
        # Events that wait while a received file is checked; None when not stalled.
        self._backlog: collections.deque[dpk.Event] | None = None

    # -- asyncio.Protocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self.peer_host = peer[0] if peer else ""
        try:
            self.peer_id = peer_id_from_ssl(transport.get_extra_info("ssl_object"))
            if self.peer_id == self.node.node_id:
                raise AuthError("peer presents our own node id")
            if self.expected_id and self.peer_id != self.expected_id:
                raise AuthError(
                    f"expected node {self.expected_id!r}, the certificate says {self.peer_id!r}"
                )
        except AuthError as exc:
            log.warning("refusing link from %s: %s", self.peer_host, exc)
            transport.abort()
            return
        self._last_rx = self.node.now()
        self._writer = self.node.spawn(self._write_loop())
        self._arm_idle()
        self.node.link_made(self)

    def data_received(self, data: bytes) -> None:
        self._last_rx = self.node.now()
        try:
            events = self._decoder.receive_data(data)
        except DatapackError as exc:
            log.warning("closing link to %s: malformed frame: %s", self.peer_id, exc)
            self.stats["malformed"] += 1
            self.abort()
            return
        if self._backlog is not None:
            self._backlog.extend(events)
        else:
            self._run(collections.deque(events))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.up and self.peer_id:
            self.node.last_error = str(exc or "the peer closed the link before its first packet")
            self.node.link_failed()
        if self._idle is not None:
            self._idle.cancel()
        if self._writer is not None:
            self._writer.cancel()
        if self._rx_file is not None:
            self._rx_file.abort()
            self._rx_file = None
        self._transport = None
        self._writable.set()
        self._release_feeders()
        if self._current_file is not None:  # cut short: route it again with the rest
            self._outbox.appendleft(self._current_file)
            self._current_file = None
        if not self.closed.done():
            self.closed.set_result(None)
        if self.peer_id:
            self.node.link_lost(self)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # -- reading -------------------------------------------------------------------

    def _run(self, events: collections.deque[dpk.Event]) -> None:
        """Handle events in order; stop after a file's end until its content is checked."""
        while events:
            event = events.popleft()
            match event:
                case dpk.PacketReceived(dp):
                    self.stats["packets_in"] += 1
                    if not self.up:
                        self.up = True
                        self.node.link_up(self)
                    if dp.app == BYE_APP:
                        self.node.peer_retired(self)
                        continue
                    self.node.packet_from(self, dp)
                case dpk.FileStarted(dp, _):
                    self._start_rx(dp)
                case dpk.FileChunk(data):
                    if self._rx_file is not None:
                        self._rx_file.write(data)
                case dpk.FileFinished():
                    incoming, rx_dp = self._rx_file, self._rx_dp
                    self._rx_file = self._rx_dp = None
                    if incoming is not None and rx_dp is not None:
                        # Later packets wait for the file, so the order on the wire holds.
                        self._backlog = events
                        self.pause("file")
                        self.node.spawn(self._finish_rx(incoming, rx_dp))
                        return
        self._backlog = None

    def _start_rx(self, dp: dpk.Datapack) -> None:
        digest = dp.head.get("sha256", "")
        name = safe_relpath(dp.head.get("filename", ""))
        if name is None or not _SHA256.fullmatch(digest):
            log.warning(
                "refusing file %r from %s: needs a filename inside the receive root and sha256",
                dp.head.get("filename", "")[:80],
                self.peer_id,
            )
            self.stats["files_refused"] += 1
            return  # its chunks are read and dropped
        self._rx_file = IncomingFile(self.node.tmp_dir, digest, self._disk_backlog)
        self._rx_dp = dp
        dp.file = self._rx_file.path

    def _disk_backlog(self, pending: int) -> None:
        # The disk is slower than the network: stop reading until it catches up.
        if pending > DISK_BACKLOG:
            self.pause("disk")
        elif pending <= DISK_BACKLOG // 4:
            self.resume("disk")

    async def _finish_rx(self, incoming: IncomingFile, dp: dpk.Datapack) -> None:
        try:
            if await incoming.finish():
                self.stats["files_in"] += 1
                self.node.packet_from(self, dp)
            else:
                log.warning(
                    "dropping file %r from %s: sha256 mismatch", dp.head["filename"], self.peer_id
                )
                self.stats["files_refused"] += 1
        finally:
            events = self._backlog or collections.deque()
            self._backlog = None
            self.resume("file")
            self._run(events)

    # -- writing -------------------------------------------------------------------

    def send(self, dp: dpk.Datapack) -> None:
        """Queue ``dp``; never blocks. If the link dies first, the node routes it again."""
        self._outbox.append(dp)
        if not self._wake.is_set():
            self._wake.set()

    def hold(self, feeder: Link) -> None:
        """Backpressure for relays: stop reading ``feeder`` until our outbox drains."""
        if feeder is not self and feeder not in self._feeders:
            self._feeders.add(feeder)
            feeder.pause(f"out:{self.peer_id}")

    def _release_feeders(self) -> None:
        for feeder in self._feeders:
            feeder.resume(f"out:{self.peer_id}")
        self._feeders.clear()

    def take_outbox(self) -> list[dpk.Datapack]:
        """Empty the outbox and return what was in it (the link is gone: route it again)."""
        pending = list(self._outbox)
        self._outbox.clear()
        return pending

    @property
    def sending_file(self) -> bool:
        return self._current_file is not None

    @property
    def queued(self) -> int:
        return len(self._outbox)

    async def wait_flushed(self) -> None:
        """Wait until everything queued is written to the socket (or the link is gone).

        No deadline of its own: callers wrap it in ``asyncio.timeout``.
        """
        # The transport has no "buffer empty" event below its high-water mark: poll.
        while self._transport is not None and (  # noqa: ASYNC110
            self._outbox
            or self._current_file is not None
            or self._transport.get_write_buffer_size()
        ):
            await asyncio.sleep(0.01)

    async def _write_loop(self) -> None:
        outbox = self._outbox
        try:
            while True:
                if not outbox:
                    self._wake.clear()
                    await self._wake.wait()
                transport = self._transport
                if transport is None:
                    return
                batch: list[bytes] = []
                size = 0
                while outbox and size < BATCH_BYTES and outbox[0].method != "file":
                    data = self._encode(outbox.popleft())
                    batch.append(data)
                    size += len(data)
                if batch:
                    transport.write(b"".join(batch))
                    self.stats["packets_out"] += len(batch)
                    self.stats["bytes_out"] += size
                elif outbox:
                    self._current_file = outbox.popleft()
                    try:
                        await self._send_file(self._current_file)
                    finally:
                        self._current_file = None
                await self._writable.wait()
                if self._feeders and len(outbox) <= OUTBOX_HIGH // 2:
                    self._release_feeders()
                await asyncio.sleep(0)  # let readers and other links run between batches
        finally:
            self._writable.set()

    def _encode(self, dp: dpk.Datapack) -> bytes:
        try:
            return dpk.encode(dp)
        except DatapackError as exc:  # an app built a bad packet: drop it, not the link
            log.warning("not sending a malformed packet to %s: %s", self.peer_id, exc)
            return b""

    async def _send_file(self, dp: dpk.Datapack) -> None:
        transport = self._transport
        path = dp.file
        try:
            if path is None:
                raise OSError("file packet without a local file")
            # Local disk reads of FILE_CHUNK bytes, interleaved with the socket's drain.
            with open(path, "rb") as file:  # noqa: ASYNC230
                size = os.fstat(file.fileno()).st_size
                if transport is None:
                    return
                transport.write(dpk.encode_head(dp, size))
                left = size
                while left > 0:
                    chunk = file.read(min(FILE_CHUNK, left))
                    if not chunk:
                        # The file shrank under us: the frame cannot be finished; close.
                        raise OSError(f"{path} shrank while being sent")
                    transport.write(chunk)
                    left -= len(chunk)
                    self.stats["bytes_out"] += len(chunk)
                    await self._writable.wait()
                    if self._transport is None:
                        return
            self.stats["files_out"] += 1
        except (OSError, DatapackError) as exc:
            log.warning("cannot send file %r to %s: %s", path, self.peer_id, exc)
            if transport is not None and "shrank" in str(exc):
                transport.abort()
        finally:
            if self._current_file is dp:  # else the node took it back to route again
                self.node.file_sent(dp)

    # -- lifetime ------------------------------------------------------------------

    def _arm_idle(self) -> None:
        timeout = self.node.settings.idle_timeout
        if timeout:
            loop = asyncio.get_running_loop()
            self._idle = loop.call_at(self._last_rx + timeout, self._check_idle)

    def _check_idle(self) -> None:
        self._idle = None
        if self._transport is None:
            return
        if self._pausers:  # we stopped reading; the peer is not to blame
            self._last_rx = self.node.now()
        if self.node.now() - self._last_rx >= self.node.settings.idle_timeout:
            log.info(
                "closing link to %s: silent for %.0f s",
                self.peer_id,
                self.node.settings.idle_timeout,
            )
            self.abort()
        else:
            self._arm_idle()

    def pause(self, reason: str) -> None:
        """Stop reading until every ``reason`` (an app name) is resumed: backpressure."""
        self._pausers.add(reason)
        if self._transport is not None and len(self._pausers) == 1:
            self._transport.pause_reading()
            self.stats["paused"] += 1

    def resume(self, reason: str) -> None:
        self._pausers.discard(reason)
        if self._transport is not None and not self._pausers and not self._transport.is_closing():
            self._transport.resume_reading()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def retire(self) -> None:
        """This link duplicates another to the same peer: end it without losing packets.

        Closing at once would drop what the peer already wrote to it. Instead the peer is
        told "bye" (after anything still queued here); it stops using the link, sends
        what it still holds for us over the other one, and closes; until then this side
        goes on reading, so every packet on the wire arrives (TCP keeps the order).
        """
        if self.retiring:
            return
        self.retiring = True
        self.send(dpk.Datapack("post", BYE_APP, {}, b""))
        # A peer that never answers "bye" is closed on anyway.
        asyncio.get_running_loop().call_later(RETIRE_GRACE, self.close)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def statistics(self) -> dict[str, object]:
        return {
            "peer": self.peer_id,
            "dialed": self.dialed,
            "up": self.up,
            "queued": len(self._outbox),
            "packets_in_decoder": self._decoder.packets,
            **self.stats,
        }
