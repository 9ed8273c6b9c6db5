"""One authenticated TLS link to a peer node: the asyncio driver of a LinkSession.

The TLS handshake (mutual, 1.3, our CA; ca.py) is over before :meth:`connection_made`
runs, so a peer without a valid certificate never gets a byte read. The peer's id is its
certificate's common name. The protocol state (framing, "up", the order of packets
around files, the outbox) is the sans-IO :class:`~smartget.mesh.session.LinkSession`;
this module does the I/O around it and reports to its :class:`LinkOwner` (the node).

Reading: bytes go into the session; whole packets go to the owner; file content is
written to a temporary file under ``tmp_dir`` and hashed on the way by a worker thread
(_rxfile.py), and handed over only when its size and sha256 match; packets behind it
wait, so order is kept. A malformed frame closes this link and nothing else.

Writing: one writer task drains the session's outbox: small packets joined into one
TLS write (one record per batch, not per packet), files streamed in chunks, within the
transport's flow control. A relay whose outbox grows past ``OUTBOX_HIGH`` stops reading
the links feeding it (:meth:`Link.hold`) until it drains to half; with the apps' queues
(apps/__init__.py) this carries backpressure hop by hop. If the link dies, whatever is
still in the outbox goes back to the owner to be routed again.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import os
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

from smartget.errors import AuthError, DatapackError
from smartget.mesh import datapack as dpk
from smartget.mesh import session as ss
from smartget.mesh._rxfile import IncomingFile
from smartget.mesh.ca import peer_id_from_ssl

__all__ = ["OUTBOX_HIGH", "Link", "LinkLimits", "LinkOwner"]

log = logging.getLogger(__name__)

RETIRE_GRACE = 10.0  # seconds a retiring link waits for the peer to close it
DISK_BACKLOG = 64  # chunks received but not yet written before reading pauses
OUTBOX_HIGH = 10_000  # packets waiting here before the links feeding us stop being read
FILE_CHUNK = 256 * 1024


@dataclass(frozen=True)
class LinkLimits:
    """What every link of a node is given: where files land, size and silence limits."""

    tmp_dir: Path
    max_file: int = dpk.MAX_FILE
    idle_timeout: float = 0.0  # seconds without a byte before closing (0: never)


class LinkOwner(Protocol):
    """What a link needs from the node that made it."""

    @property
    def node_id(self) -> str: ...
    def now(self) -> float: ...
    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]: ...
    def link_made(self, link: Link) -> None: ...
    def link_up(self, link: Link) -> None: ...
    def link_failed(self, link: Link, reason: str) -> None: ...
    def link_lost(self, link: Link) -> None: ...
    def peer_retired(self, link: Link) -> None: ...
    def packet_from(self, link: Link, dp: dpk.Datapack) -> None: ...
    def screen_file(self, link: Link, dp: dpk.Datapack) -> str | None: ...
    def file_sent(self, dp: dpk.Datapack) -> None: ...


class Link(asyncio.Protocol):
    """A TLS connection to one peer; created by the node for each accept or dial."""

    def __init__(
        self,
        owner: LinkOwner,
        limits: LinkLimits,
        *,
        dialed: bool,
        expected_id: str | None = None,
    ) -> None:
        self.owner = owner
        self.limits = limits
        self.dialed = dialed
        self.expected_id = expected_id
        self.peer_id = ""
        self.peer_host = ""
        self.retiring = False  # a duplicate link, told "bye": read on until the peer closes
        self.closed = asyncio.get_running_loop().create_future()
        self.stats: collections.Counter[str] = collections.Counter()
        self.session = ss.LinkSession(
            max_file=limits.max_file, screen=lambda dp: owner.screen_file(self, dp)
        )
        self._transport: asyncio.Transport | None = None
        self._wake = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._writer: asyncio.Task[None] | None = None
        self._current_file: dpk.Datapack | None = None  # the file being streamed
        self._pausers: set[str] = set()
        self._feeders: set[Link] = set()  # links paused because our outbox is long
        self._last_rx = 0.0
        self._idle: asyncio.TimerHandle | None = None
        self._rx_file: IncomingFile | None = None  # the file being received
        self._rx_dp: dpk.Datapack | None = None

    @property
    def up(self) -> bool:
        """The peer's first packet arrived."""
        return self.session.up

    # -- asyncio.Protocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a cast, not an isinstance check: uvloop's transports are no asyncio.Transport
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self.peer_host = peer[0] if peer else ""
        try:
            self.peer_id = peer_id_from_ssl(transport.get_extra_info("ssl_object"))
            ss.check_peer(self.peer_id, self.owner.node_id, self.expected_id)
        except AuthError as exc:
            log.warning("refusing link from %s: %s", self.peer_host, exc)
            transport.abort()
            return
        self._last_rx = self.owner.now()
        self._writer = self.owner.spawn(self._write_loop())
        self._arm_idle()
        self.owner.link_made(self)

    def data_received(self, data: bytes) -> None:
        self._last_rx = self.owner.now()
        try:
            events = self.session.receive_data(data)
        except DatapackError as exc:
            log.warning("closing link to %s: malformed frame: %s", self.peer_id, exc)
            self.stats["malformed"] += 1
            self.abort()
            return
        self._handle(events)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.up and self.peer_id:
            reason = str(exc or "the peer closed the link before its first packet")
            self.owner.link_failed(self, reason)
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
            self.session.queue_first(self._current_file)
            self._current_file = None
        if not self.closed.done():
            self.closed.set_result(None)
        if self.peer_id:
            self.owner.link_lost(self)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # -- reading -------------------------------------------------------------------

    def _handle(self, events: list[ss.SessionEvent]) -> None:
        for event in events:
            match event:
                case ss.Packet(dp):
                    self.stats["packets_in"] += 1
                    self.owner.packet_from(self, dp)
                case ss.LinkUp():
                    self.owner.link_up(self)
                case ss.PeerRetired():
                    self.stats["packets_in"] += 1
                    self.owner.peer_retired(self)
                case ss.FileBegun(dp):
                    self._rx_file = IncomingFile(
                        self.limits.tmp_dir, dp.head["sha256"], self._disk_backlog
                    )
                    self._rx_dp = dataclasses.replace(dp, file=self._rx_file.path)
                case ss.FileData(data):
                    if self._rx_file is not None:
                        self._rx_file.write(data)
                case ss.FileEnded():
                    incoming, rx_dp = self._rx_file, self._rx_dp
                    self._rx_file = self._rx_dp = None
                    assert incoming is not None
                    assert rx_dp is not None
                    self.pause("file")  # later packets wait in the session for the file
                    self.owner.spawn(self._finish_rx(incoming, rx_dp))
                case ss.FileRefused(dp, reason):
                    log.warning(
                        "refusing file %r from %s: %s",
                        dp.head.get("filename", "")[:80],
                        self.peer_id,
                        reason,
                    )
                    self.stats["files_refused"] += 1

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
                self.owner.packet_from(self, dp)
            else:
                log.warning(
                    "dropping file %r from %s: sha256 mismatch", dp.head["filename"], self.peer_id
                )
                self.stats["files_refused"] += 1
        finally:
            self.resume("file")
            self._handle(self.session.file_checked())

    # -- writing -------------------------------------------------------------------

    def send(self, dp: dpk.Datapack) -> None:
        """Queue ``dp``; never blocks. If the link dies first, the node routes it again."""
        self.session.queue(dp)
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
        return self.session.take_outbox()

    @property
    def sending_file(self) -> bool:
        return self._current_file is not None

    @property
    def queued(self) -> int:
        return self.session.queued

    async def wait_flushed(self) -> None:
        """Wait until everything queued is written to the socket (or the link is gone).

        No deadline of its own: callers wrap it in ``asyncio.timeout``.
        """
        # The transport has no "buffer empty" event below its high-water mark: poll.
        while self._transport is not None and (  # noqa: ASYNC110
            self.session.queued
            or self._current_file is not None
            or self._transport.get_write_buffer_size()
        ):
            await asyncio.sleep(0.01)

    async def _write_loop(self) -> None:
        session = self.session
        try:
            while True:
                if not session.queued:
                    self._wake.clear()
                    await self._wake.wait()
                transport = self._transport
                if transport is None:
                    return
                data, count = session.next_batch()
                if count:
                    transport.write(data)
                    self.stats["packets_out"] += count
                    self.stats["bytes_out"] += len(data)
                elif (file_dp := session.next_file()) is not None:
                    self._current_file = file_dp
                    try:
                        await self._send_file(file_dp)
                    finally:
                        self._current_file = None
                await self._writable.wait()
                if self._feeders and session.queued <= OUTBOX_HIGH // 2:
                    self._release_feeders()
                await asyncio.sleep(0)  # let readers and other links run between batches
        finally:
            self._writable.set()

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
                self.owner.file_sent(dp)

    # -- lifetime ------------------------------------------------------------------

    def _arm_idle(self) -> None:
        timeout = self.limits.idle_timeout
        if timeout:
            loop = asyncio.get_running_loop()
            self._idle = loop.call_at(self._last_rx + timeout, self._check_idle)

    def _check_idle(self) -> None:
        self._idle = None
        if self._transport is None:
            return
        if self._pausers:  # we stopped reading; the peer is not to blame
            self._last_rx = self.owner.now()
        if self.owner.now() - self._last_rx >= self.limits.idle_timeout:
            log.info(
                "closing link to %s: silent for %.0f s", self.peer_id, self.limits.idle_timeout
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
        self.session.bye()
        self._wake.set()
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
            "queued": self.session.queued,
            "packets_in_decoder": self.session.decoder.packets,
            **self.stats,
        }
