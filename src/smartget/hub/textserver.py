"""The asyncio driver of the text protocol: feed bytes, answer events, keep order.

A thin ``asyncio.Protocol`` (no task per connection): bytes go into a
:class:`~smartget.hub.textproto.TextConnection`; each event is executed against the
hub at once (the registry is only touched from the loop, so no lock is needed); the
replies wait, in order, for the store to commit the changes they acknowledge.
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
        registry.check_owner(event.node_id, peer_ip)
        registry.set_node_status(event.node_id, event.status, now)
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
        # Replies in order, each waiting for the commit (if any) that it acknowledges.
        self._outbox: collections.deque[tuple[asyncio.Future[None] | None, bytes]] = (
            collections.deque()
        )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self.peer_ip = peer[0] if peer else "?"
        settings = self.hub.settings
        self._conn = tp.TextConnection(
            self.hub.now(),
            line_timeout=settings.line_timeout,
            idle_timeout=settings.idle_timeout,
        )
        self.hub.text_connections.add(self)
        self._arm_timer()

    def data_received(self, data: bytes) -> None:
        assert self._conn is not None
        now = self.hub.now()
        self._handle(self._conn.receive_data(data, now), now)

    def eof_received(self) -> bool:
        assert self._conn is not None
        now = self.hub.now()
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
        if not events:
            self._maybe_close()
            self._arm_timer()
            return
        hub, peer_ip = self.hub, self.peer_ip
        registry = hub.registry
        if len(events) == 1:  # one command per read: the common case, kept short
            replies = [execute(registry, events[0], peer_ip, now)]
        else:
            replies = [execute(registry, event, peer_ip, now) for event in events]
        hub.count_commands(events)
        committed = hub.commit()
        if committed is None and not self._outbox and self._transport is not None:
            # Nothing to wait for: write at once.
            self._transport.write(replies[0] if len(replies) == 1 else b"".join(replies))
            self._maybe_close()
        else:
            self._outbox.extend((committed, reply) for reply in replies)
            if committed is not None and not committed.done():
                committed.add_done_callback(lambda _: self._pump())
            self._pump()
        self._arm_timer()

    def _pump(self) -> None:
        transport = self._transport
        if transport is None:
            return
        chunks = []
        while self._outbox:
            committed, reply = self._outbox[0]
            if committed is not None:
                if not committed.done():
                    break
                if committed.exception() is not None:
                    reply = tp.bad_request("the hub could not save this change; try again")
            self._outbox.popleft()
            chunks.append(reply)
        if chunks:
            transport.write(b"".join(chunks))
        self._maybe_close()

    def _maybe_close(self) -> None:
        if (
            self._conn is not None
            and self._conn.done
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
        now = self.hub.now()
        self._handle(self._conn.handle_timer(now), now)
        if not self._conn.done:
            self._arm_timer()
