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

On Redis (``--state redis://``, hub/state/) the commands of a read are not executed
here: the whole read goes to the engine (``TextServerContext.remote``) as one
submission, executed by Redis in order, and its replies join the outbox as a future,
in the same order as everything else; :func:`remote_reply` maps each outcome.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from smartget.errors import NodeExistsError, NodeNotFoundError, RegistryError
from smartget.hub import textproto as tp
from smartget.hub.commands import FromNode, HubCommands
from smartget.hub.registry import MAX_STATUS, Node

if TYPE_CHECKING:
    from smartget.hub.state.api import Outcome

__all__ = ["TextProtocolServer", "TextServerContext", "execute", "remote_reply"]

log = logging.getLogger(__name__)


OK = tp.ok()
NOT_FOUND = tp.not_found()
NODE_EXISTS = tp.bad_request("Node already exists!")
_NOT_SAVED = tp.bad_request("the hub could not save this change; try again")
_TOO_MANY = tp.bad_request("too many connections; try again later")
REFUSED_LINGER = 0.5  # seconds a refused connection is read (and discarded) before close
_DONE = tp.Mode.DONE


# The text front end's one mapping from the command core's results and errors to
# replies: one handler per event type (a dict lookup, the hot path of every command).


def _register(core: HubCommands, event: tp.Register, caller: FromNode, now: float) -> bytes:
    try:
        node = core.register(caller, event.port, now)
    except NodeExistsError:
        return NODE_EXISTS
    except RegistryError as exc:
        return tp.bad_request(str(exc))
    log.info("registered node %d at %s:%d", node.node_id, caller.ip, event.port)
    return tp.ok([str(node.node_id)])


def _deregister(core: HubCommands, event: tp.Deregister, caller: FromNode, now: float) -> bytes:
    try:
        node = core.deregister_port(caller, event.port)
    except NodeNotFoundError:
        return NOT_FOUND
    log.info("deregistered node %d at %s:%d", node.node_id, caller.ip, event.port)
    return OK


def _request_nodes(
    core: HubCommands, event: tp.RequestNodes, caller: FromNode, now: float
) -> bytes:
    try:
        nodes = core.request_nodes(caller, event.n)
    except RegistryError as exc:
        return tp.bad_request(str(exc))
    if not nodes:
        return NOT_FOUND
    return tp.ok(f"{node.addr} {node.port}" for node in nodes)


def _set_status(core: HubCommands, event: tp.SetStatus, caller: FromNode, now: float) -> bytes:
    try:
        core.set_status(caller, event.node_id, event.status, now)
    except RegistryError as exc:
        return tp.bad_request(str(exc))
    return OK


def _start_session(
    core: HubCommands, event: tp.StartSession, caller: FromNode, now: float
) -> bytes:
    return OK


def _bad_request(core: HubCommands, event: tp.BadRequest, caller: FromNode, now: float) -> bytes:
    log.debug("bad request from %s: %s", caller.ip, event.reason)
    return tp.bad_request(event.reason)


_HANDLERS: dict[type, Callable[[HubCommands, Any, FromNode, float], bytes]] = {
    tp.Register: _register,
    tp.Deregister: _deregister,
    tp.RequestNodes: _request_nodes,
    tp.SetStatus: _set_status,
    tp.StartSession: _start_session,
    tp.BadRequest: _bad_request,
}


def execute(core: HubCommands, event: tp.Event, peer_ip: str, now: float) -> bytes:
    """Carry out one command for a client at ``peer_ip``; return the reply bytes."""
    return _HANDLERS[type(event)](core, event, FromNode(peer_ip), now)


def remote_reply(event: tp.Event, outcome: Outcome) -> bytes:
    """The reply to one command a remote engine carried out (the same bytes as above)."""
    if isinstance(event, tp.StartSession):
        return OK
    if isinstance(event, tp.BadRequest):
        return tp.bad_request(event.reason)
    if isinstance(outcome, NodeExistsError):
        return NODE_EXISTS
    if isinstance(outcome, NodeNotFoundError) and isinstance(event, tp.Deregister):
        return NOT_FOUND
    if isinstance(outcome, RegistryError):
        return tp.bad_request(str(outcome))
    if isinstance(event, tp.SetStatus):
        if outcome is None and not -1 <= event.status <= MAX_STATUS:
            return tp.bad_request(f"status must be from -1 to {MAX_STATUS}, got {event.status}")
        return OK
    if isinstance(event, tp.Register) and isinstance(outcome, Node):
        return tp.ok([str(outcome.node_id)])
    if isinstance(event, tp.RequestNodes) and isinstance(outcome, list):
        return tp.ok(f"{node.addr} {node.port}" for node in outcome) if outcome else NOT_FOUND
    return OK


def _remote_replies(events: Sequence[tp.Event], outcomes: list[Outcome]) -> bytes:
    return b"".join(map(remote_reply, events, outcomes))


@dataclass(eq=False)
class TextServerContext:
    """What every connection of the text server shares (built by the hub's app.py)."""

    commands: HubCommands
    # Sends the registry's changes to the store; the future resolves once durable
    # (None: nothing to save).
    commit: Callable[[], asyncio.Future[None] | None]
    line_timeout: float = tp.LINE_TIMEOUT
    idle_timeout: float = tp.IDLE_TIMEOUT
    # Caps on open connections, in all and from one address: past them a client gets
    # 400 "too many connections" and is closed (issue 12: no client holds them all).
    max_connections: int = 4096
    max_per_ip: int = 64
    connections: set[TextProtocolServer] = field(default_factory=set)
    per_ip: collections.Counter[str] = field(default_factory=collections.Counter)
    # Plain ints on the hot path; the hub's metrics turn them into a counter.
    command_counts: collections.Counter[type] = field(default_factory=collections.Counter)
    refused: int = 0
    # A remote engine (Redis) that executes whole reads: their outcomes, in order, once
    # durable. None: execute here against ``commands`` and wait for ``commit``.
    remote: Callable[[Sequence[tp.Event], str], asyncio.Future[list[Outcome]]] | None = None

    def admit(self, ip: str) -> bool:
        if len(self.connections) >= self.max_connections or self.per_ip[ip] >= self.max_per_ip:
            self.refused += 1
            return False
        self.per_ip[ip] += 1
        return True

    def leave(self, ip: str) -> None:
        self.per_ip[ip] -= 1
        if self.per_ip[ip] <= 0:
            del self.per_ip[ip]


class TextProtocolServer(asyncio.Protocol):
    """One client connection. Created by ``loop.create_server`` for each accept."""

    def __init__(self, context: TextServerContext) -> None:
        self.context = context
        self.peer_ip = "?"
        self._caller = FromNode("?")
        self._transport: asyncio.Transport | None = None
        self._conn: tp.TextConnection | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        # Replies in order, one entry per read: (the commit they wait for, if any;
        # the replies joined; how many).
        # A remote engine's entry has b"" as its replies: its future holds them.
        self._outbox: collections.deque[tuple[asyncio.Future[Any] | None, bytes, int]] = (
            collections.deque()
        )
        self._remote = context.remote
        # Looked up once, used on every read. The clock is the hub's (the loop's time).
        self._core = context.commands
        self._registry = context.commands.registry
        self._counts = context.command_counts
        self._clock = asyncio.get_running_loop().time

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a cast, not an isinstance check: uvloop's transports are no asyncio.Transport
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self.peer_ip = peer[0] if peer else "?"
        self._caller = FromNode(self.peer_ip)
        context = self.context
        if not context.admit(self.peer_ip):
            # Reply, send FIN, and read (discarding) until the client closes or a short
            # linger ends: closing with its command unread would send an RST that can
            # destroy the reply before the client reads it.
            transport.write(_TOO_MANY)
            if transport.can_write_eof():
                transport.write_eof()
            self._timer = asyncio.get_running_loop().call_later(REFUSED_LINGER, transport.close)
            self._transport = None
            return
        self._conn = tp.TextConnection(
            self._clock(),
            line_timeout=context.line_timeout,
            idle_timeout=context.idle_timeout,
        )
        context.connections.add(self)
        self._arm_timer()

    def data_received(self, data: bytes) -> None:
        conn = self._conn
        if conn is None:
            return  # refused
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
        if self._conn is None:
            return False  # refused: the client is done too; close
        now = self._clock()
        self._handle(self._conn.receive_eof(now), now)
        return True  # keep the write side open until the replies are out

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is None:  # refused at connection_made
            if self._timer is not None:
                self._timer.cancel()
            return
        self.context.connections.discard(self)
        self.context.leave(self.peer_ip)
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
        if self._remote is not None:
            self._answer_remote(events)
            return
        registry, core, caller, counts = self._registry, self._core, self._caller, self._counts
        handlers = _HANDLERS
        changes_before = registry.change_count
        if len(events) == 1:  # one command per read: the request-response case
            event = events[0]
            kind = type(event)
            counts[kind] += 1
            reply = handlers[kind](core, event, caller, now)
        else:
            replies = []
            for event in events:
                kind = type(event)
                counts[kind] += 1
                replies.append(handlers[kind](core, event, caller, now))
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
        # commit returns it (the store resolves it later, on the loop).
        committed = self.context.commit() if changed else None
        outbox = self._outbox
        if committed is not None and (not outbox or outbox[-1][0] is not committed):
            committed.add_done_callback(self._committed)  # one per commit, not per read
        # One entry per read: its replies joined, and how many there are, so that a
        # failed commit can answer each command with its own error line.
        outbox.append((committed, reply, len(events)))
        if committed is None:
            self._pump()  # behind an earlier commit: writes only what is ready

    def _answer_remote(self, events: list[tp.Event]) -> None:
        """Hand the read to the remote engine; its replies wait in the outbox, in order."""
        assert self._remote is not None
        counts = self._counts
        for event in events:
            counts[type(event)] += 1
        outcomes = self._remote(events, self.peer_ip)
        replies: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        def done(future: asyncio.Future[list[Outcome]]) -> None:
            if (exc := future.exception()) is not None:
                replies.set_exception(exc)
            else:
                replies.set_result(_remote_replies(events, future.result()))
            self._pump()

        outcomes.add_done_callback(done)
        self._outbox.append((replies, b"", len(events)))

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
                elif not reply:  # a remote engine's replies
                    reply = committed.result()
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
            # The protocol's clock is the loop's clock (the hub's), so deadlines compare.
            self._timer = loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._conn is None or self._transport is None:
            return
        now = self._clock()
        self._handle(self._conn.handle_timer(now), now)
