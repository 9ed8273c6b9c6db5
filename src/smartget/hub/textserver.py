"""The asyncio driver of the text protocol: feed bytes, answer events, keep order.

A thin ``asyncio.Protocol`` (no task per connection): bytes go into a
:class:`~smartget.hub.textproto.TextConnection`; each event is executed against the
hub at once (the registry is only touched from the loop, so no lock is needed); the
replies wait, in order, for the store to commit the changes they acknowledge.

What waits for a commit (issue 2: registrations, ids and statuses are written before
the reply leaves): the replies of a read whose commands changed the registry
(``register``, ``deregister``, ``requestnodes`` that hands out nodes, since it lowers
their statuses, and ``setstatus`` with a new status or from a zombie), and every reply
queued behind them on the same connection, so the order holds. What does not: a read
that changed nothing, above all the heartbeat that repeats the node's status. Its only
effect is liveness (``last_seen``), which is not stored: a restart counts every node
as just seen, so a lost heartbeat time cannot matter after a crash. Such a reply leaves
at once, with one ``transport.write`` per read, and no future is made for it.

If a commit fails, every reply that waited for it becomes ``400 BAD REQUEST`` with
"could not save": one such line per command, so a pipelining client stays in step.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from smartget.errors import NodeExistsError, NodeNotFoundError, RegistryError
from smartget.hub import textproto as tp
from smartget.hub.registry import Registry

if TYPE_CHECKING:
    from smartget.hub.service import Hub

__all__ = ["TextProtocolServer", "execute"]

log = logging.getLogger(__name__)


OK = tp.ok()
NOT_FOUND = tp.not_found()
NODE_EXISTS = tp.bad_request("Node already exists!")
_NOT_SAVED = tp.bad_request("the hub could not save this change; try again")
_DONE = tp.Mode.DONE


def _register(registry: Registry, event: tp.Register, peer_ip: str, now: float) -> bytes:
    try:
        node = registry.register(peer_ip, event.port, now)
    except NodeExistsError:
        return NODE_EXISTS
    log.info("registered node %d at %s:%d", node.node_id, peer_ip, event.port)
    return tp.ok([str(node.node_id)])


def _deregister(registry: Registry, event: tp.Deregister, peer_ip: str, now: float) -> bytes:
    try:
        node = registry.rm_node(registry.get_node_id(peer_ip, event.port))
    except NodeNotFoundError:
        return NOT_FOUND
    log.info("deregistered node %d at %s:%d", node.node_id, peer_ip, event.port)
    return OK


def _request_nodes(registry: Registry, event: tp.RequestNodes, peer_ip: str, now: float) -> bytes:
    zone = registry.zone_of_addr(peer_ip)
    nodes = registry.request_nodes(event.n, zone=zone, exclude_addr=peer_ip)
    if not nodes:
        return NOT_FOUND
    return tp.ok(f"{node.addr} {node.port}" for node in nodes)


def _set_status(registry: Registry, event: tp.SetStatus, peer_ip: str, now: float) -> bytes:
    try:
        registry.set_node_status(event.node_id, event.status, now, addr=peer_ip)
    except RegistryError as exc:
        return tp.bad_request(str(exc))
    return OK


def _start_session(registry: Registry, event: tp.StartSession, peer_ip: str, now: float) -> bytes:
    return OK


def _bad_request(registry: Registry, event: tp.BadRequest, peer_ip: str, now: float) -> bytes:
    log.debug("bad request from %s: %s", peer_ip, event.reason)
    return tp.bad_request(event.reason)


# One handler per event type: a dict lookup, the hot path of every command.
_HANDLERS: dict[type, Callable[[Registry, Any, str, float], bytes]] = {
    tp.Register: _register,
    tp.Deregister: _deregister,
    tp.RequestNodes: _request_nodes,
    tp.SetStatus: _set_status,
    tp.StartSession: _start_session,
    tp.BadRequest: _bad_request,
}


def execute(registry: Registry, event: tp.Event, peer_ip: str, now: float) -> bytes:
    """Carry out one command for a client at ``peer_ip``; return the reply bytes."""
    return _HANDLERS[type(event)](registry, event, peer_ip, now)


class TextProtocolServer(asyncio.Protocol):
    """One client connection. Created by ``loop.create_server`` for each accept."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.peer_ip = "?"
        self._transport: asyncio.Transport | None = None
        self._conn: tp.TextConnection | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        # Replies in order, one entry per read: (the commit they wait for, if any;
        # the replies joined; how many).
        self._outbox: collections.deque[tuple[asyncio.Future[None] | None, bytes, int]] = (
            collections.deque()
        )
        # Looked up once, used on every read. The clock is hub.now's (the loop's time)
        # without the extra call.
        self._registry = hub.registry
        self._counts = hub.command_counts
        self._clock = asyncio.get_running_loop().time

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self.peer_ip = peer[0] if peer else "?"
        settings = self.hub.settings
        self._conn = tp.TextConnection(
            self._clock(),
            line_timeout=settings.line_timeout,
            idle_timeout=settings.idle_timeout,
        )
        self.hub.text_connections.add(self)
        self._arm_timer()

    def data_received(self, data: bytes) -> None:
        conn = self._conn
        assert conn is not None
        now = self._clock()
        events = conn.receive_data(data, now)
        if events:
            self._answer(events, now)
        elif conn.mode is _DONE:
            self._maybe_close()
        # Only a partial line can bring the deadline forward; otherwise the armed timer
        # is early or on time and _on_timer re-arms it for the later deadline.
        if conn.partial_since is not None:
            self._arm_timer()

    def eof_received(self) -> bool:
        assert self._conn is not None
        now = self._clock()
        self._handle(self._conn.receive_eof(now), now)
        return True  # keep the write side open until the replies are out

    def connection_lost(self, exc: Exception | None) -> None:
        self.hub.text_connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
        self._outbox.clear()
        self._transport = None

    def pause_writing(self) -> None:
        # A client that does not read its replies stops being read: bounded memory.
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def close(self) -> None:
        """Close now (the hub is stopping)."""
        if self._transport is not None:
            self._transport.close()

    def _handle(self, events: list[tp.Event], now: float) -> None:
        if events:
            self._answer(events, now)
        else:
            self._maybe_close()
        self._arm_timer()

    def _answer(self, events: list[tp.Event], now: float) -> None:
        """Execute the events of one read in order; write their replies in one go.

        The replies leave at once unless a change they acknowledge (or an earlier reply
        still waiting) needs a commit first: only then do they go through the outbox.
        """
        registry, peer_ip, counts, handlers = self._registry, self.peer_ip, self._counts, _HANDLERS
        changes_before = registry.change_count
        if len(events) == 1:  # one command per read: the request-response case
            event = events[0]
            kind = type(event)
            counts[kind] += 1
            reply = handlers[kind](registry, event, peer_ip, now)
        else:
            replies = []
            for event in events:
                kind = type(event)
                counts[kind] += 1
                replies.append(handlers[kind](registry, event, peer_ip, now))
            reply = b"".join(replies)
        changed = registry.change_count != changes_before
        transport = self._transport
        if not changed and not self._outbox and transport is not None:
            transport.write(reply)  # nothing to wait for
            if self._conn is not None and self._conn.mode is _DONE:
                transport.close()
            return
        # Only this read's own changes make its replies wait: another connection's
        # pending commit is no concern of theirs. A commit's future is never done when
        # hub.commit returns it (the store resolves it later, on the loop).
        committed = self.hub.commit() if changed else None
        outbox = self._outbox
        if committed is not None and (not outbox or outbox[-1][0] is not committed):
            committed.add_done_callback(self._committed)  # one per commit, not per read
        # One entry per read: its replies joined, and how many there are, so that a
        # failed commit can answer each command with its own error line.
        outbox.append((committed, reply, len(events)))
        if committed is None:
            self._pump()  # behind an earlier commit: writes only what is ready

    def _committed(self, _: asyncio.Future[None]) -> None:
        self._pump()

    def _pump(self) -> None:
        transport = self._transport
        if transport is None:
            return
        outbox = self._outbox
        chunks = []
        while outbox:
            committed, reply, count = outbox[0]
            if committed is not None:
                if not committed.done():
                    break
                if committed.exception() is not None:
                    reply = _NOT_SAVED * count
            outbox.popleft()
            chunks.append(reply)
        if chunks:
            transport.write(b"".join(chunks))
        self._maybe_close()

    def _maybe_close(self) -> None:
        if (
            self._conn is not None
            and self._conn.mode is _DONE
            and not self._outbox
            and self._transport is not None
        ):
            self._transport.close()

    def _arm_timer(self) -> None:
        assert self._conn is not None
        deadline = self._conn.deadline()
        if self._timer is not None and deadline is not None and deadline >= (self._timer_at or 0):
            return  # an earlier wake-up is armed; _on_timer re-arms for the later deadline
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            loop = asyncio.get_running_loop()
            # The protocol's clock is the loop's clock (hub.now), so deadlines compare.
            self._timer = loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._conn is None or self._transport is None:
            return
        now = self._clock()
        self._handle(self._conn.handle_timer(now), now)
