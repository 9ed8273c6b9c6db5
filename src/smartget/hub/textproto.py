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
SINGLE        the original's way: one command per connection, reply, close. The command
              ends at LF (CRLF accepted), at EOF, or when the bytes so far parse as a
              whole command and the client then stays quiet for ``quiet`` seconds
              (50 ms): the original clients send `` `register 4321`` with no line end,
              keep their side open and wait for one reply. A command whose bytes arrive
              further apart than that is cut there (``register 43`` + ``21`` 50 ms
              later registers port 43); a line end never waits.
SESSION       after `` `session`` (answered ``200 OK``): one command per line, answered
              in order; pipelining allowed; blank lines are ignored.
DONE          nothing more is read; close once the replies are out.
============  ==========================================================================

Limits: a line longer than ``max_line`` bytes, or a line not complete within
``line_timeout`` seconds, gets ``400 BAD REQUEST`` and the connection closes. An idle
session closes after ``idle_timeout``.

Speed (benchmarks/hub.py): a session read that holds only whole lines, which is what
clients send, takes a short path in :meth:`TextConnection.receive_data`: one split of
the read, then per line one ``split()`` and one dict lookup on the first word, backtick
included, straight to the command's parser. Anything that path does not know (a blank
after the backtick, an unknown command, non-ASCII, a line over the limit, a partial
line) goes through the general path and :func:`parse_command`, so both give the same
events and the same errors (a hypothesis test compares them).

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
    "QUIET",
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
QUIET = 0.05  # seconds of silence after a whole command without line end (SINGLE mode)
MAX_REQUEST_NODES = 1000
MAX_NODE_ID = 2**63 - 1


@dataclass(slots=True)
class Register:
    """`` `register PORT``: add the caller's IP with this port."""

    port: int


@dataclass(slots=True)
class Deregister:
    """`` `deregister PORT``: remove the caller's node at this port."""

    port: int


@dataclass(slots=True)
class RequestNodes:
    """`` `requestnodes N [legacy]``: hand out up to N free nodes."""

    n: int


@dataclass(slots=True)
class SetStatus:
    """`` `setstatus ID STATUS``: the heartbeat, with the node's free capacity."""

    node_id: int
    status: int


@dataclass(slots=True)
class StartSession:
    """`` `session``: keep the connection open for many commands."""


@dataclass(slots=True)
class BadRequest:
    """The peer sent something we cannot accept; answer ``400`` with ``reason``."""

    reason: str


# Events are plain slotted records, not frozen ones: a frozen dataclass costs 2.5x as much
# to build (object.__setattr__ per field), and one is built per command line. Treat them
# as read-only.
Command = Register | Deregister | RequestNodes | SetStatus | StartSession
Event = Command | BadRequest


class Mode(enum.Enum):
    SINGLE = "single"  # one command, then close (the original clients)
    SESSION = "session"  # many commands, one per line, until EOF or idle
    DONE = "done"  # read nothing more; close once replies are written


# Module-level names for the hot path: ``Mode.SESSION`` is a lookup through the enum's
# metaclass, about three times the cost of a global.
_SINGLE, _SESSION, _DONE = Mode.SINGLE, Mode.SESSION, Mode.DONE


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


# Each parser takes the line's words, the command itself first (arguments from [1]).


def _register(words: list[bytes]) -> Command:
    if len(words) != 2:
        raise _usage("register", " PORT", len(words) - 1)
    return Register(_number(words[1], "PORT", 1, 65535))


def _deregister(words: list[bytes]) -> Command:
    if len(words) != 2:
        raise _usage("deregister", " PORT", len(words) - 1)
    return Deregister(_number(words[1], "PORT", 1, 65535))


def _requestnodes(words: list[bytes]) -> Command:
    if not 2 <= len(words) <= 3:
        raise _usage("requestnodes", " N", len(words) - 1)
    if len(words) == 3:
        _number(words[2], "LEGACY", -(2**63), 2**63)  # accepted, ignored (DESIGN.md)
    return RequestNodes(_number(words[1], "N", 1, MAX_REQUEST_NODES))


def _setstatus(words: list[bytes]) -> Command:
    if len(words) != 3:
        raise _usage("setstatus", " ID STATUS", len(words) - 1)
    _, raw_id, raw_status = words
    # The heartbeat is the hot path: plain numbers in range skip the general checks. No
    # length check first: the line limit keeps int() of a long digit string cheap.
    if raw_id.isdigit() and raw_status.isdigit():
        node_id, status = int(raw_id), int(raw_status)
        if 0 < node_id <= MAX_NODE_ID and status <= MAX_STATUS:
            return SetStatus(node_id, status)
    node_id = _number(raw_id, "ID", 1, MAX_NODE_ID)
    # -1: the node declares itself a zombie (seed 000's status list; the original took it)
    return SetStatus(node_id, _number(raw_status, "STATUS", -1, MAX_STATUS))


def _session(words: list[bytes]) -> Command:
    if len(words) != 1:
        raise _usage("session", "", len(words) - 1)
    return StartSession()


def _session_again(words: list[bytes]) -> Command:
    _session(words)  # the usage error first, as parse_command would give it
    raise TextProtocolError("already in session mode")


_PARSERS = {
    b"register": _register,
    b"deregister": _deregister,
    b"requestnodes": _requestnodes,
    b"setstatus": _setstatus,
    b"session": _session,
}
# Keyed by the first word itself (backtick included), so the session loop needs no
# slicing; a line whose first word is not a key takes the general path (parse_command),
# which gives the same events and errors.
_SESSION_PARSERS = {b"`" + name: parse for name, parse in _PARSERS.items()}
_SESSION_PARSERS[b"`session"] = _session_again


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
        name = head[1:]
    else:  # "` register 1": blanks after the backtick
        words = words[1:] or [b""]
        name = words[0]
    parser = _PARSERS.get(name)
    if parser is None:
        raise TextProtocolError(f"unknown command `{name[:24].decode()}; known: {_KNOWN}")
    return parser(words)


def _parses(line: bytes) -> bool:
    try:
        parse_command(line)
    except TextProtocolError:
        return False
    return True


class TextConnection:
    """One client connection of the text protocol, without I/O.

    After a :class:`BadRequest` in SINGLE mode, or a limit hit in any mode, the object is
    DONE: it reads nothing more and the driver closes once the reply is written. After a
    BadRequest in SESSION mode it stays usable.
    """

    __slots__ = (
        "_buffer",
        "_fast_limit",
        "_last_activity",
        "_opened",
        "_whole_since",
        "idle_timeout",
        "line_timeout",
        "max_line",
        "mode",
        "partial_since",
        "quiet",
    )

    def __init__(
        self,
        now: float,
        *,
        max_line: int = MAX_LINE,
        line_timeout: float = LINE_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
        quiet: float = QUIET,
    ) -> None:
        self.mode = Mode.SINGLE
        self.quiet = quiet
        #: SINGLE mode: since when the buffer (no line end yet) parses as a whole
        #: command, or None. It is answered once the client stays quiet for ``quiet``.
        self._whole_since: float | None = None
        self.max_line = max_line
        self.line_timeout = line_timeout
        self.idle_timeout = idle_timeout
        #: When the incomplete line in the buffer began, or None (no partial line). Only
        #: a partial line can bring :meth:`deadline` forward; a driver may skip
        #: re-arming its timer while this is None.
        self.partial_since: float | None = None
        self._buffer = b""  # empty exactly when partial_since is None (until DONE)
        self._opened = now
        self._last_activity = now
        # Lines up to this long may skip parse_command's own length check.
        self._fast_limit = min(max_line, MAX_LINE)

    @property
    def done(self) -> bool:
        """True once nothing more will be read: close after writing the replies."""
        return self.mode is _DONE

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        if self.mode is _SESSION and not self._buffer and data and data[-1] == 10:  # LF
            # The session hot path: whole lines only, which is what a client writes per
            # command or per pipelined batch. One C-level split for the read, one split
            # and one dict lookup per line, no per-line method calls; any line the table
            # does not know takes _line (the general path), so events and errors are the
            # same either way.
            lines = data.split(b"\n")
            lines.pop()  # the empty rest after the last LF
            limit = self._fast_limit
            if len(data) <= limit or max(map(len, lines)) <= limit:
                self._last_activity = now
                events: list[Event] = []
                parsers = _SESSION_PARSERS
                all_ascii = data.isascii()  # one check for the read; per line only if not
                for line in lines:
                    words = line.split()  # also drops the CR of a CRLF
                    if not words:
                        continue  # blank lines keep a session alive and mean nothing
                    parse = parsers.get(words[0])
                    if parse is not None and (all_ascii or line.isascii()):
                        try:
                            events.append(parse(words))
                        except TextProtocolError as exc:
                            events.append(BadRequest(exc.hint))
                    else:
                        event = self._line(line[:-1] if line[-1:] == b"\r" else line)
                        if event is not None:
                            events.append(event)
                return events  # a BadRequest never ends a session: no DONE check needed
        if self.mode is _DONE or not data:
            return []
        if self._buffer:
            data = self._buffer + data
        *lines, rest = data.split(b"\n")  # one C-level split per read, not one per line
        events = []
        if lines:
            self._last_activity = now
            for line in lines:
                if len(line) > self.max_line:
                    events.append(self._fatal(self._too_long(line)))
                    return events
                event = self._line(line[:-1] if line.endswith(b"\r") else line)
                if event is not None:
                    events.append(event)
                if self.mode is _DONE:
                    self._buffer = b""
                    return events
        self._buffer = rest
        if self.mode is _SINGLE:  # still no line: is what came so far a whole command?
            self._whole_since = now if rest and _parses(rest.removesuffix(b"\r")) else None
        if len(rest) > self.max_line:
            events.append(self._fatal(self._too_long(rest)))
        elif not rest:
            self.partial_since = None
        elif self.partial_since is None or lines:
            self.partial_since = now
        return events

    def receive_eof(self, now: float) -> list[Event]:
        """The peer will send nothing more: a last line without LF still counts."""
        if self.mode is _DONE:
            return []
        line = self._buffer.removesuffix(b"\r")
        self._buffer = b""
        self.partial_since = None
        event = None
        # SINGLE mode has seen no line yet (any line leaves it): even an empty
        # connection gets its answer.
        if line.strip() or self.mode is _SINGLE:
            event = self._line(line)
        self.mode = _DONE
        return [] if event is None else [event]

    def deadline(self) -> float | None:
        """When :meth:`handle_timer` must run, or None once DONE."""
        if self.mode is _DONE:
            return None
        if self.mode is _SINGLE:
            if self._whole_since is not None:
                return min(self._opened + self.line_timeout, self._whole_since + self.quiet)
            return self._opened + self.line_timeout
        if self.partial_since is not None:
            return self.partial_since + self.line_timeout
        return self._last_activity + self.idle_timeout

    def handle_timer(self, now: float) -> list[Event]:
        deadline = self.deadline()
        if deadline is None or now < deadline:
            return []
        if self._whole_since is not None and now >= self._whole_since + self.quiet:
            # A whole command without line end, and the client went quiet: answer it.
            line = self._buffer.removesuffix(b"\r")
            self._buffer = b""
            self.partial_since = self._whole_since = None
            event = self._line(line)
            return [] if event is None else [event]
        if self.mode is _SESSION and self.partial_since is None:
            return [self._fatal(f"session idle for {self.idle_timeout:g} s; closing")]
        return [self._fatal(f"no complete line within {self.line_timeout:g} s")]

    def _line(self, line: bytes) -> Event | None:
        if self.mode is _SESSION and (not line or line.isspace()):
            return None  # blank lines keep a session alive and mean nothing
        try:
            command = parse_command(line)
        except TextProtocolError as exc:
            if self.mode is _SINGLE:
                self.mode = _DONE
            return BadRequest(exc.hint)
        if isinstance(command, StartSession):
            if self.mode is _SESSION:
                return BadRequest("already in session mode")
            self.mode = _SESSION
        elif self.mode is _SINGLE:
            self.mode = _DONE
        return command

    def _too_long(self, line: bytes) -> str:
        return f"line longer than {self.max_line} bytes: {_preview(line)}"

    def _fatal(self, reason: str) -> BadRequest:
        self.mode = _DONE
        self._buffer = b""
        self._whole_since = None
        return BadRequest(reason)
