"""The protocol state of one link, sans-IO: framing, "up", file ordering, the outbox.

Theory of operation
-------------------
Bytes from the peer go into :meth:`LinkSession.receive_data`, which runs them through
the Datapack decoder and returns :data:`SessionEvent` s for the driver (link.py) to act
on, in order:

- :class:`LinkUp` once, with the peer's first packet. In TLS 1.3 a client learns that
  the server refused its certificate only on its first read, so a link counts as up
  only when a packet came back.
- :class:`Packet` for every whole packet; :class:`PeerRetired` for the peer's "bye" on a
  duplicate link (:data:`BYE_APP`).
- :class:`FileBegun`, :class:`FileData` ..., :class:`FileEnded` for a file packet that
  names a confined ``filename`` and a ``sha256``; :class:`FileRefused` (its bytes are
  skipped) for one that does not, or that the driver's ``screen`` refuses when its head
  arrives (the node: a file for an app here that would refuse it; issue 12, item 7).
  After :class:`FileEnded` the session holds every later event until the driver has
  checked the file and calls :meth:`LinkSession.file_checked`: "file, then post about
  it" keeps its order.

Packets to send wait in the outbox: :meth:`LinkSession.next_batch` joins the small ones
into one write, :meth:`LinkSession.next_file` hands out a file packet to stream.
"""

from __future__ import annotations

import collections
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

from smartget.errors import AuthError, DatapackError
from smartget.mesh import datapack as dpk
from smartget.mesh.datapack import Datapack
from smartget.mesh.policy import safe_relpath

__all__ = [
    "BATCH_BYTES",
    "BYE_APP",
    "FileBegun",
    "FileData",
    "FileEnded",
    "FileRefused",
    "LinkSession",
    "LinkUp",
    "Packet",
    "PeerRetired",
    "SessionEvent",
    "check_peer",
]

log = logging.getLogger(__name__)

BYE_APP = "net-bye"  # control packet on a duplicate link: "stop using this one" (retire)
BATCH_BYTES = 256 * 1024  # small packets joined into one write (one TLS record a batch)
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class LinkUp:
    """The peer's first packet arrived: the link is up."""


@dataclass(frozen=True, slots=True)
class PeerRetired:
    """The peer said "bye": it stops using this duplicate link."""


@dataclass(frozen=True, slots=True)
class Packet:
    """A whole packet for the node to route."""

    datapack: Datapack


@dataclass(frozen=True, slots=True)
class FileBegun:
    """Write the :class:`FileData` that follow to a new temporary file."""

    datapack: Datapack


@dataclass(frozen=True, slots=True)
class FileData:
    data: bytes


@dataclass(frozen=True, slots=True)
class FileEnded:
    """The file is complete: check it, then call :meth:`LinkSession.file_checked`."""

    datapack: Datapack


@dataclass(frozen=True, slots=True)
class FileRefused:
    """A file packet refused at its head (no confined filename or sha256, or screened
    out); its bytes are skipped, never stored."""

    datapack: Datapack
    reason: str


SessionEvent = LinkUp | PeerRetired | Packet | FileBegun | FileData | FileEnded | FileRefused


def check_peer(peer_id: str, own_id: str, expected_id: str | None) -> None:
    """Refuse (:class:`AuthError`) a peer presenting our own id, or not the one dialed."""
    if peer_id == own_id:
        raise AuthError("peer presents our own node id")
    if expected_id and peer_id != expected_id:
        raise AuthError(f"expected node {expected_id!r}, the certificate says {peer_id!r}")


def _file_problem(dp: Datapack) -> str | None:
    if safe_relpath(dp.head.get("filename", "")) is None or not _SHA256.fullmatch(
        dp.head.get("sha256", "")
    ):
        return "needs a filename inside the receive root and sha256"
    return None


class LinkSession:
    """Everything about one link that is not I/O."""

    def __init__(
        self,
        *,
        max_file: int = dpk.MAX_FILE,
        screen: Callable[[Datapack], str | None] | None = None,
    ) -> None:
        """``screen(dp)`` is asked about each file's head: a reason refuses it, None keeps it."""
        self.decoder = dpk.DatapackDecoder(max_file=max_file)
        self._screen = screen
        self.up = False
        self._receiving: Datapack | None = None  # the file whose bytes are being kept
        # Decoder events that wait while a received file is checked; None when not stalled.
        self._backlog: collections.deque[dpk.Event] | None = None
        self._outbox: collections.deque[Datapack] = collections.deque()

    # -- receiving -------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[SessionEvent]:
        """Feed bytes; :class:`DatapackError` on a malformed frame (then close the link)."""
        events = self.decoder.receive_data(data)
        if self._backlog is not None:
            self._backlog.extend(events)
            return []
        return self._run(collections.deque(events))

    def file_checked(self) -> list[SessionEvent]:
        """The file of the last :class:`FileEnded` is dealt with: the events held since."""
        events = self._backlog or collections.deque()
        self._backlog = None
        return self._run(events)

    def _run(self, events: collections.deque[dpk.Event]) -> list[SessionEvent]:
        out: list[SessionEvent] = []
        while events:
            match events.popleft():
                case dpk.PacketReceived(dp):
                    if not self.up:
                        self.up = True
                        out.append(LinkUp())
                    out.append(PeerRetired() if dp.app == BYE_APP else Packet(dp))
                case dpk.FileStarted(dp, _):
                    problem = _file_problem(dp)
                    if problem is None and self._screen is not None:
                        problem = self._screen(dp)
                    self._receiving = None if problem else dp
                    out.append(FileRefused(dp, problem) if problem else FileBegun(dp))
                case dpk.FileChunk(data):
                    if self._receiving is not None:
                        out.append(FileData(data))
                case dpk.FileFinished():
                    if self._receiving is not None:
                        out.append(FileEnded(self._receiving))
                        self._receiving = None
                        self._backlog = events  # later packets wait for the check
                        return out
        return out

    # -- sending ---------------------------------------------------------------------

    def queue(self, dp: Datapack) -> None:
        self._outbox.append(dp)

    def queue_first(self, dp: Datapack) -> None:
        """Put back a packet that was taken but not written (a file cut short)."""
        self._outbox.appendleft(dp)

    def bye(self) -> None:
        """Queue the "bye" that retires this link (after anything already queued)."""
        self._outbox.append(Datapack("post", BYE_APP, {}, b""))

    @property
    def queued(self) -> int:
        return len(self._outbox)

    def next_batch(self, limit: int = BATCH_BYTES) -> tuple[bytes, int]:
        """The encoded non-file packets at the head of the outbox, up to ``limit`` bytes."""
        outbox = self._outbox
        parts: list[bytes] = []
        size = 0
        while outbox and size < limit and outbox[0].method != "file":
            dp = outbox.popleft()
            try:
                data = dpk.encode(dp)
            except DatapackError as exc:  # an app built a bad packet: drop it, not the link
                log.warning("not sending a malformed %s packet: %s", dp.app, exc)
                data = b""
            parts.append(data)
            size += len(data)
        return b"".join(parts), len(parts)

    def next_file(self) -> Datapack | None:
        """The file packet at the head of the outbox, taken out, or None."""
        if self._outbox and self._outbox[0].method == "file":
            return self._outbox.popleft()
        return None

    def take_outbox(self) -> list[Datapack]:
        """Empty the outbox and return what was in it (the link is gone: route it again)."""
        pending = list(self._outbox)
        self._outbox.clear()
        return pending
