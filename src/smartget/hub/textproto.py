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
import re
from collections.abc import Iterable
from dataclasses import dataclass

from smartget.errors import TextProtocolError

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
MAX_STATUS = 1_000_000


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


_NUMBER = re.compile(r"-?[0-9]{1,20}")
# name -> (argument names, how many of them are optional legacy arguments)
_SIGNATURES: dict[str, tuple[tuple[str, ...], int]] = {
    "register": (("PORT",), 0),
    "deregister": (("PORT",), 0),
    "requestnodes": (("N", "LEGACY"), 1),
    "setstatus": (("ID", "STATUS"), 0),
    "session": ((), 0),
}


def _preview(line: bytes, limit: int = 24) -> str:
    text = repr(line[:limit])
    return text + ("..." if len(line) > limit else "")


def _number(text: str, what: str, low: int, high: int) -> int:
    if not _NUMBER.fullmatch(text):
        raise TextProtocolError(f"{what} must be a whole number, got {text[:24]!r}")
    value = int(text)
    if not low <= value <= high:
        raise TextProtocolError(f"{what} must be from {low} to {high}, got {value}")
    return value


def parse_command(line: bytes) -> Command:
    """Parse one line (without its line end) into a command; TextProtocolError if bad."""
    if len(line) > MAX_LINE:
        raise TextProtocolError(f"line longer than {MAX_LINE} bytes: {_preview(line)}")
    try:
        text = line.decode("ascii").strip()
    except UnicodeDecodeError:
        raise TextProtocolError(f"only ASCII is allowed: {_preview(line)}") from None
    if not text:
        raise TextProtocolError("empty command; expected `register, `deregister, ...")
    if not text.startswith("`"):
        raise TextProtocolError(f"a command starts with a backtick (`), got {_preview(line)}")
    name, *args = text[1:].split() or [""]
    if name not in _SIGNATURES:
        known = ", ".join(f"`{n}" for n in _SIGNATURES)
        raise TextProtocolError(f"unknown command `{name[:24]}; known: {known}")
    params, optional = _SIGNATURES[name]
    if not len(params) - optional <= len(args) <= len(params):
        usage = " ".join([f"`{name}", *params[: len(params) - optional]])
        raise TextProtocolError(f"usage: {usage} (got {len(args)} arguments)")
    if name == "register":
        return Register(_number(args[0], "PORT", 1, 65535))
    if name == "deregister":
        return Deregister(_number(args[0], "PORT", 1, 65535))
    if name == "requestnodes":
        if len(args) > 1:
            _number(args[1], "LEGACY", -(2**63), 2**63)  # accepted, ignored (DESIGN.md)
        return RequestNodes(_number(args[0], "N", 1, MAX_REQUEST_NODES))
    if name == "setstatus":
        node_id = _number(args[0], "ID", 1, MAX_NODE_ID)
        return SetStatus(node_id, _number(args[1], "STATUS", 0, MAX_STATUS))
    return StartSession()


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
        self._buffer = bytearray()
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
        self._buffer += data
        events: list[Event] = []
        while not self.done:
            end = self._buffer.find(b"\n")
            if end < 0:
                break
            line = bytes(self._buffer[:end]).removesuffix(b"\r")
            del self._buffer[: end + 1]
            self._last_activity = now
            events.extend(self._line(line))
        if not self.done:
            if len(self._buffer) > self.max_line:
                preview = _preview(bytes(self._buffer))
                events.append(self._fatal(f"line longer than {self.max_line} bytes: {preview}"))
            elif self._buffer:
                if self._partial_since is None:
                    self._partial_since = now
            else:
                self._partial_since = None
        return events

    def receive_eof(self, now: float) -> list[Event]:
        """The peer will send nothing more: a last line without LF still counts."""
        if self.mode is Mode.DONE:
            return []
        events: list[Event] = []
        line = bytes(self._buffer).removesuffix(b"\r")
        self._buffer.clear()
        if line.strip() or (self.mode is Mode.SINGLE and self.commands_seen == 0):
            events.extend(self._line(line))
        self.mode = Mode.DONE
        return events

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

    def _line(self, line: bytes) -> list[Event]:
        if self.mode is Mode.SESSION and not line.strip():
            return []  # blank lines keep a session alive and mean nothing
        self.commands_seen += 1
        try:
            command = parse_command(line)
        except TextProtocolError as exc:
            if self.mode is Mode.SINGLE:
                self.mode = Mode.DONE
            return [BadRequest(exc.hint)]
        if isinstance(command, StartSession):
            if self.mode is Mode.SESSION:
                return [BadRequest("already in session mode")]
            self.mode = Mode.SESSION
            return [command]
        if self.mode is Mode.SINGLE:
            self.mode = Mode.DONE
        return [command]

    def _fatal(self, reason: str) -> BadRequest:
        self.mode = Mode.DONE
        self._buffer.clear()
        return BadRequest(reason)
