"""The relay's durable queue, as pure logic: accepted messages until every recipient is done.

Theory of operation
-------------------
``relay.relay`` answers 'OK' only once its message is committed in the hub's store
(DESIGN.md: "nothing acknowledged is lost"). The :class:`Outbox` is the in-memory
mirror of that table (``relay_messages``, :mod:`smartget.hub.relay.store`); it does no
I/O and reads no clock. The driver (:mod:`smartget.hub.relay.service`) tells it what
happened and hands :meth:`Outbox.drain_changes` to the store's group commit, so a flood
of messages and notifies costs one transaction per batch, not one per message.

A message's life::

    accept ──> (committed) ──> dispatched ──> done for each recipient ──> finished (deleted)

* :meth:`~Outbox.accept` gives it the next sequence number (increasing, never reused:
  the table keeps the high-water mark) and its recipients: every satellite registered
  at that moment but the sender. A satellite that registers later does not get it.
* The driver dispatches messages in sequence order at the limiter's rate, posting each
  to its recipients' mailboxes (one per satellite, delivered in order).
* A message is **done for a recipient** once its ``notify`` returned, or failed for good:

  - the notify failed (refused, timed out, a fault): co2 logs and ignores a failed
    notify (seed 004, ``_relay_real``: "exceptions thrown when making the call to a
    satellite are logged and ignored"), so it is not retried;
  - the recipient's mailbox was full (a satellite that does not keep up loses
    messages, as before; counted as a failed notify);
  - the recipient left: deregistered, or dropped by the pinger (:meth:`~Outbox.forget`).

  A notify cut short by the hub's own death is *not* done: after a restart the message
  goes to that recipient again. Delivery is therefore **at least once**: a notify that
  succeeded just before ``kill -9``, before its progress was committed, is sent again.
* A message that is dispatched and done for every recipient is **finished**: it leaves
  the outbox at once and its row is deleted in the next commit.

The limiter's bound (``--relay-queue``) counts every message in the outbox, dispatched
or not, so the table never holds more than that many live messages and the busy fault
still protects the hub. A satellite that hangs holds at most its mailbox's worth of them
(further messages to it are dropped, so done); keep ``--relay-mailbox`` well below
``--relay-queue``.

At start-up :meth:`~Outbox.restore` takes the rows back, keeps as recipients only the
satellites still registered, and the driver dispatches them, in order, before anything
accepted after the restart.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Message", "Outbox", "OutboxChanges"]


@dataclass(slots=True, eq=False)
class Message:
    """One accepted message (seed: the dict given to ``relay.relay``, sent on as is)."""

    seq: int
    sender: str  # the sender's host_id
    params: dict[str, Any]  # the relay.relay dict: host_id, data (and any other key)
    accepted: float  # seconds since the epoch
    pending: set[str]  # recipients (host_ids) it is not done for yet
    dispatched: bool = False  # handed to the recipients' mailboxes (since this start)

    @property
    def finished(self) -> bool:
        return self.dispatched and not self.pending


@dataclass(slots=True)
class OutboxChanges:
    """What to write since the last drain: new rows, new pending sets, rows to delete."""

    inserts: list[Message] = field(default_factory=list)
    updates: list[tuple[int, list[str]]] = field(default_factory=list)  # (seq, pending)
    deletes: list[int] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.inserts or self.updates or self.deletes)


class Outbox:
    """Accepted, unfinished messages by sequence number (in order)."""

    def __init__(self, limit: int, *, last_seq: int = 0) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.limit = limit
        self.last_seq = last_seq
        self._live: dict[int, Message] = {}  # insertion order is seq order
        self._new: dict[int, Message] = {}  # accepted, row not yet handed to the store
        self._dirty: dict[int, Message] = {}  # pending changed since the last drain
        self._gone: list[int] = []  # finished, row to delete
        self.accepted = 0
        self.finished = 0
        self.restored = 0

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, seq: object) -> bool:
        return seq in self._live

    @property
    def full(self) -> bool:
        """True when ``limit`` messages are live: relay.relay must answer busy."""
        return len(self._live) >= self.limit

    def holds(self, msg: Message) -> bool:
        """Whether ``msg`` is this outbox's live message (not one of a former outbox)."""
        return self._live.get(msg.seq) is msg

    def messages(self) -> list[Message]:
        """Live messages in sequence order."""
        return list(self._live.values())

    # -- the life of a message ------------------------------------------------------

    def accept(
        self, sender: str, params: dict[str, Any], recipients: Iterable[str], now: float
    ) -> Message:
        """Take a message (the caller checked :attr:`full`); its row goes out with the
        next :meth:`drain_changes`."""
        self.last_seq += 1
        msg = Message(self.last_seq, sender, params, now, set(recipients) - {sender})
        self._live[msg.seq] = msg
        self._new[msg.seq] = msg
        self.accepted += 1
        return msg

    def dispatched(self, msg: Message) -> None:
        """The message was handed to its recipients' mailboxes."""
        msg.dispatched = True
        self._settle(msg)

    def done(self, msg: Message, host_id: str) -> None:
        """``host_id`` is done with the message (notified, failed for good, or left)."""
        if host_id not in msg.pending:
            return
        msg.pending.discard(host_id)
        if msg.seq in self._live and msg.seq not in self._new:
            self._dirty[msg.seq] = msg
        self._settle(msg)

    def discard(self, msg: Message) -> None:
        """Drop a message whose row could not be committed (its sender got a fault)."""
        msg.pending.clear()
        self.dispatched(msg)

    def forget(self, host_id: str) -> None:
        """A satellite left: it is done with every message."""
        for msg in list(self._live.values()):
            self.done(msg, host_id)

    def _settle(self, msg: Message) -> None:
        if not msg.finished or msg.seq not in self._live:
            return
        del self._live[msg.seq]
        self._dirty.pop(msg.seq, None)
        if self._new.pop(msg.seq, None) is None:
            self._gone.append(msg.seq)
        self.finished += 1

    # -- persistence ----------------------------------------------------------------

    def restore(self, messages: Iterable[Message], registered: Iterable[str]) -> list[Message]:
        """Take back the rows of a previous run (start-up): recipients that left since are
        done. Returns the live ones, in order, to dispatch before anything new."""
        alive = set(registered)
        restored = []
        for msg in sorted(messages, key=lambda m: m.seq):
            self.last_seq = max(self.last_seq, msg.seq)
            msg.dispatched = False
            left = msg.pending - alive
            msg.pending &= alive
            self._live[msg.seq] = msg
            if left:
                self._dirty[msg.seq] = msg
            if msg.pending:
                restored.append(msg)
                self.restored += 1
            else:  # nobody left to deliver it to
                self.dispatched(msg)
        return restored

    def drain_changes(self) -> OutboxChanges:
        """Rows to insert, pending sets to update and rows to delete since the last drain."""
        changes = OutboxChanges(
            inserts=list(self._new.values()),
            updates=[(seq, sorted(msg.pending)) for seq, msg in self._dirty.items()],
            deletes=self._gone,
        )
        self._new, self._dirty, self._gone = {}, {}, []
        return changes

    def statistics(self) -> dict[str, int]:
        return {
            "outbox": len(self._live),
            "outbox_limit": self.limit,
            "accepted": self.accepted,
            "finished": self.finished,
            "restored": self.restored,
            "last_seq": self.last_seq,
        }
