"""The datahub's backtick text protocol (seed 000), as a sans-IO state machine.

Theory of operation
-------------------
A client connects, sends `` `command args`` and a line end, reads the reply. Bytes go in
with :meth:`TextConnection.receive_data` (and :meth:`receive_eof`), events come out:
one of the command dataclasses below, or :class:`BadRequest` when the peer sent
garbage. The driver answers each event in order with the bytes from :func:`ok`,
:func:`not_found` or :func:`bad_request`, and closes the connection once
:attr:`TextConnection.done` is true and the replies are written. Time comes in as
``now``; :meth:`deadline` says when :meth:`handle_timer` must be called.

Modes (DESIGN.md, "SmartGet text protocol"):

============  ==========================================================================
SINGLE        the original's way: one command per connection, read to LF or EOF
              (CRLF accepted), reply, close.
SESSION       after `` `session`` (answered ``200 OK``): one command per line, answered
              in order; pipelining allowed; blank lines are ignored.
DONE          nothing more is read; close once the replies are out.
============  ==========================================================================

Limits: a line longer than ``max_line`` bytes, or a line not complete within
``line_timeout`` seconds, gets ``400 BAD REQUEST`` and the connection closes. An idle
session closes after ``idle_timeout``.

Replies (seed 000, with DESIGN.md's decisions): every reply ends with CRLF.
``register`` -> ``200 OK\\r\\n<id>\\r\\n``; ``requestnodes`` -> ``200 OK\\r\\n`` then
``ip port\\r\\n`` per node, or ``404 NOT FOUND\\r\\n``; errors ->
``400 BAD REQUEST\\r\\n<reason>\\r\\n``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from smartget.errors import TextProtocolError
from smartget.hub.registry import MAX_STATUS  # one limit for both front ends

__all__ = [
    "MAX_LINE",
    "MAX_REQUEST_NODES",
    "BadRequest",
    "Command",
    "Deregister",
    "Mode",
    "Register",
    "RequestNodes",
    "SetStatus",
    "StartSession",
    "TextConnection",
    "bad_request",
    "not_found",
    "ok",
    "parse_command",
]

MAX_LINE = 1024
LINE_TIMEOUT = 5.0
IDLE_TIMEOUT = 300.0
MAX_REQUEST_NODES = 1000
MAX_NODE_ID = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Register:
    """`` `register PORT``: add the caller's IP with this port."""

    port: int


@dataclass(frozen=True, slots=True)
class Deregister:
    """`` `deregister PORT``: remove the caller's node at this port."""

    port: int


@dataclass(frozen=True, slots=True)
class RequestNodes:
    """`` `requestnodes N [legacy]``: hand out up to N free nodes."""

    n: int


@dataclass(frozen=True, slots=True)
class SetStatus:
    """`` `setstatus ID STATUS``: the heartbeat, with the node's free capacity."""

    node_id: int
    status: int


@dataclass(frozen=True, slots=True)
class StartSession:
    """`` `session``: keep the connection open for many commands."""


@dataclass(frozen=True, slots=True)
class BadRequest:
    """The peer sent something we cannot accept; answer ``400`` with ``reason``."""

    reason: str


Command = Register | Deregister | RequestNodes | SetStatus | StartSession
Event = Command | BadRequest


class Mode(enum.Enum):
    SINGLE = "single"  # one command, then close (the original clients)
    SESSION = "session"  # many commands, one per line, until EOF or idle
    DONE = "done"  # read nothing more; close once replies are written


def ok(lines: Iterable[str] = ()) -> bytes:
    return ("200 OK\r\n" + "".join(f"{line}\r\n" for line in lines)).encode("ascii")


def not_found() -> bytes:
    return b"404 NOT FOUND\r\n"


def bad_request(reason: str) -> bytes:
    # A reason never contains a line end, so a client can read exactly two lines.
    clean = reason.replace("\r", " ").replace("\n", " ")
    return f"400 BAD REQUEST\r\n{clean}\r\n".encode("ascii", "backslashreplace")


_EMPTY = "empty command; expected `register, `deregister, ..."
_KNOWN = "`register, `deregister, `requestnodes, `setstatus, `session"


def _preview(line: bytes, limit: int = 24) -> str:
    text = repr(bytes(line[:limit]))
    return text + ("..." if len(line) > limit else "")


def _number(raw: bytes, what: str, low: int, high: int) -> int:
    # bytes.isdigit() is ASCII-only; at most 20 digits keeps int() cheap and bounded.
    digits = raw[1:] if raw[:1] == b"-" else raw
    if not (digits.isdigit() and len(digits) <= 20):
        raise TextProtocolError(f"{what} must be a whole number, got {raw[:24].decode()!r}")
    value = int(raw)
    if not low <= value <= high:
        raise TextProtocolError(f"{what} must be from {low} to {high}, got {value}")
    return value


def _usage(name: str, params: str, got: int) -> TextProtocolError:
    return TextProtocolError(f"usage: `{name}{params} (got {got} arguments)")


def _register(args: list[bytes]) -> Command:
    if len(args) != 1:
        raise _usage("register", " PORT", len(args))
    return Register(_number(args[0], "PORT", 1, 65535))


def _deregister(args: list[bytes]) -> Command:
    if len(args) != 1:
        raise _usage("deregister", " PORT", len(args))
    return Deregister(_number(args[0], "PORT", 1, 65535))


def _requestnodes(args: list[bytes]) -> Command:
    if not 1 <= len(args) <= 2:
        raise _usage("requestnodes", " N", len(args))
    if len(args) == 2:
        _number(args[1], "LEGACY", -(2**63), 2**63)  # accepted, ignored (DESIGN.md)
    return RequestNodes(_number(args[0], "N", 1, MAX_REQUEST_NODES))


def _setstatus(args: list[bytes]) -> Command:
    if len(args) != 2:
        raise _usage("setstatus", " ID STATUS", len(args))
    raw_id, raw_status = args
    # The heartbeat is the hot path: plain small numbers skip the general checks.
    if raw_id.isdigit() and raw_status.isdigit() and len(raw_id) < 19 and len(raw_status) < 7:
        node_id, status = int(raw_id), int(raw_status)
        if node_id >= 1 and status <= MAX_STATUS:
            return SetStatus(node_id, status)
    node_id = _number(raw_id, "ID", 1, MAX_NODE_ID)
    return SetStatus(node_id, _number(raw_status, "STATUS", 0, MAX_STATUS))


def _session(args: list[bytes]) -> Command:
    if args:
        raise _usage("session", "", len(args))
    return StartSession()


_PARSERS = {
    b"register": _register,
    b"deregister": _deregister,
    b"requestnodes": _requestnodes,
    b"setstatus": _setstatus,
    b"session": _session,
}


def parse_command(line: bytes) -> Command:
    """Parse one line (without its line end) into a command; TextProtocolError if bad."""
    if len(line) > MAX_LINE:
        raise TextProtocolError(f"line longer than {MAX_LINE} bytes: {_preview(line)}")
    if not line.isascii():
        raise TextProtocolError(f"only ASCII is allowed: {_preview(line)}")
    words = line.split()  # one pass: strips and splits on ASCII whitespace
    if not words:
        raise TextProtocolError(_EMPTY)
    head = words[0]
    if head[:1] != b"`":
        raise TextProtocolError(f"a command starts with a backtick (`), got {_preview(line)}")
    if len(head) > 1:
        name, args = head[1:], words[1:]
    else:  # "` register 1": blanks after the backtick
        name, args = (words[1], words[2:]) if len(words) > 1 else (b"", [])
    parser = _PARSERS.get(name)
    if parser is None:
        raise TextProtocolError(f"unknown command `{name[:24].decode()}; known: {_KNOWN}")
    return parser(args)


class TextConnection:
    """One client connection of the text protocol, without I/O.

    After a :class:`BadRequest` in SINGLE mode, or a limit hit in any mode, the object is
    DONE: it reads nothing more and the driver closes once the reply is written. After a
    BadRequest in SESSION mode it stays usable.
    """

    def __init__(
        self,
        now: float,
        *,
        max_line: int = MAX_LINE,
        line_timeout: float = LINE_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self.mode = Mode.SINGLE
        self.max_line = max_line
        self.line_timeout = line_timeout
        self.idle_timeout = idle_timeout
        self._buffer = b""
        self._opened = now
        self._partial_since: float | None = None
        self._last_activity = now
        self.commands_seen = 0

    @property
    def done(self) -> bool:
        """True once nothing more will be read: close after writing the replies."""
        return self.mode is Mode.DONE

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        if self.mode is Mode.DONE or not data:
            return []
        if self._buffer:
            data = self._buffer + data
        elif self.mode is Mode.SESSION and data.find(b"\n") == len(data) - 1 <= self.max_line:
            # Exactly one whole line, the request-response case: no split needed.
            self._last_activity = now
            self._partial_since = None
            event = self._line(data[:-2] if data.endswith(b"\r\n") else data[:-1])
            return [] if event is None else [event]
        *lines, rest = data.split(b"\n")  # one C-level split per read, not one per line
        events: list[Event] = []
        if lines:
            self._last_activity = now
            for line in lines:
                if len(line) > self.max_line:
                    events.append(self._fatal(self._too_long(line)))
                    return events
                event = self._line(line[:-1] if line.endswith(b"\r") else line)
                if event is not None:
                    events.append(event)
                if self.done:
                    self._buffer = b""
                    return events
        self._buffer = rest
        if len(rest) > self.max_line:
            events.append(self._fatal(self._too_long(rest)))
        elif not rest:
            self._partial_since = None
        elif self._partial_since is None or lines:
            self._partial_since = now
        return events

    def receive_eof(self, now: float) -> list[Event]:
        """The peer will send nothing more: a last line without LF still counts."""
        if self.mode is Mode.DONE:
            return []
        line = self._buffer.removesuffix(b"\r")
        self._buffer = b""
        event = None
        if line.strip() or (self.mode is Mode.SINGLE and self.commands_seen == 0):
            event = self._line(line)
        self.mode = Mode.DONE
        return [] if event is None else [event]

    def deadline(self) -> float | None:
        """When :meth:`handle_timer` must run, or None once DONE."""
        if self.mode is Mode.DONE:
            return None
        if self.mode is Mode.SINGLE:
            return self._opened + self.line_timeout
        if self._partial_since is not None:
            return self._partial_since + self.line_timeout
        return self._last_activity + self.idle_timeout

    def handle_timer(self, now: float) -> list[Event]:
        deadline = self.deadline()
        if deadline is None or now < deadline:
            return []
        if self.mode is Mode.SESSION and self._partial_since is None:
            return [self._fatal(f"session idle for {self.idle_timeout:g} s; closing")]
        return [self._fatal(f"no complete line within {self.line_timeout:g} s")]

    def _line(self, line: bytes) -> Event | None:
        if self.mode is Mode.SESSION and (not line or line.isspace()):
            return None  # blank lines keep a session alive and mean nothing
        self.commands_seen += 1
        try:
            command = parse_command(line)
        except TextProtocolError as exc:
            if self.mode is Mode.SINGLE:
                self.mode = Mode.DONE
            return BadRequest(exc.hint)
        if isinstance(command, StartSession):
            if self.mode is Mode.SESSION:
                return BadRequest("already in session mode")
            self.mode = Mode.SESSION
        elif self.mode is Mode.SINGLE:
            self.mode = Mode.DONE
        return command

    def _too_long(self, line: bytes) -> str:
        return f"line longer than {self.max_line} bytes: {_preview(line)}"

    def _fatal(self, reason: str) -> BadRequest:
        self.mode = Mode.DONE
        self._buffer = b""
        return BadRequest(reason)
