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
from typing import TYPE_CHECKING

from smartget.errors import NodeExistsError, NodeNotFoundError, RegistryError
from smartget.hub import textproto as tp

if TYPE_CHECKING:
    from smartget.hub.service import Hub

__all__ = ["TextProtocolServer", "execute"]

log = logging.getLogger(__name__)


def execute(hub: Hub, event: tp.Event, peer_ip: str) -> bytes:
    """Carry out one command for a client at ``peer_ip``; return the reply bytes."""
    registry = hub.registry
    now = hub.now()
    match event:
        case tp.Register(port):
            try:
                node = registry.register(peer_ip, port, now)
            except NodeExistsError:
                return tp.bad_request("Node already exists!")
            log.info("registered node %d at %s:%d", node.node_id, peer_ip, port)
            return tp.ok([str(node.node_id)])
        case tp.Deregister(port):
            try:
                node = registry.rm_node(registry.get_node_id(peer_ip, port))
            except NodeNotFoundError:
                return tp.not_found()
            log.info("deregistered node %d at %s:%d", node.node_id, peer_ip, port)
            return tp.ok()
        case tp.RequestNodes(n):
            zone = registry.zone_of_addr(peer_ip)
            nodes = registry.request_nodes(n, zone=zone, exclude_addr=peer_ip)
            if not nodes:
                return tp.not_found()
            return tp.ok(f"{node.addr} {node.port}" for node in nodes)
        case tp.SetStatus(node_id, status):
            try:
                registry.check_owner(node_id, peer_ip)
                registry.set_node_status(node_id, status, now)
            except RegistryError as exc:
                return tp.bad_request(str(exc))
            return tp.ok()
        case tp.StartSession():
            return tp.ok()
        case tp.BadRequest(reason):
            log.debug("bad request from %s: %s", peer_ip, reason)
            return tp.bad_request(reason)
    raise AssertionError(f"unhandled event {event!r}")  # pragma: no cover


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
        self._handle(self._conn.receive_data(data, self.hub.now()))

    def eof_received(self) -> bool:
        assert self._conn is not None
        self._handle(self._conn.receive_eof(self.hub.now()))
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

    def _handle(self, events: list[tp.Event]) -> None:
        if not events:
            self._maybe_close()
            self._arm_timer()
            return
        replies = [execute(self.hub, event, self.peer_ip) for event in events]
        self.hub.count_commands(events)
        committed = self.hub.commit()
        for reply in replies:
            self._outbox.append((committed, reply))
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
        self._handle(self._conn.handle_timer(self.hub.now()))
        if not self._conn.done:
            self._arm_timer()
