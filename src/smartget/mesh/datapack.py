"""MSW's Datapack (seed 001, "数据包Datapack"), as a sans-IO codec.

Theory of operation
-------------------
A Datapack on the wire looks like an HTTP request::

    post shell msw/0.1
    from: test
    id: hmsy
    to: miku
    flag: 1a2b3c4d
    length: 12

    shutdown now

The first line is ``<method> <app> <version>``; ``key: value`` header lines follow (split
on the first ``": "`` only, so a value may hold ``": "``); a blank line ends the head and
``length`` bytes of body follow. ``length`` frames the body exactly, so packets can be
pipelined on one connection. It is the codec's own header: :func:`encode` writes it and
:class:`DatapackDecoder` consumes it; it never shows in :attr:`Datapack.head`.

A :class:`Datapack` is immutable (its head is a read-only view of a private copy): a
router or node that changes ``to``, ``hops`` or ``id`` makes a new one with
:meth:`Datapack.with_head`, so a packet already queued on a link or handed to an app is
never changed under its holder. What only the receiving node knows (the proven sender,
where a received file was stored) travels beside it in :class:`Received`.

Method ``file`` streams a file: ``length`` is the file's size and ``sha256`` its digest.
The decoder does not hold a file in memory: it emits :class:`FileStarted`, then
:class:`FileChunk` events as bytes arrive, then :class:`FileFinished`. Every other method
is buffered whole (at most ``max_body`` bytes) and emitted as :class:`PacketReceived`.

Limits (DESIGN.md, "Bad input gets a clear error"): a head longer than ``max_head`` bytes
or with more than ``max_headers`` lines, a body over ``max_body``, a file over
``max_file``, an unknown method, a malformed name, CR or LF inside a header value, or
bytes that are not UTF-8 all raise :class:`~smartget.errors.DatapackError`. After an
error the decoder is closed: every later call raises the same error, and the driver
closes that one connection.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from smartget.errors import DatapackError

__all__ = [
    "MAX_BODY",
    "MAX_FILE",
    "MAX_HEAD",
    "MAX_HEADERS",
    "METHODS",
    "VERSION",
    "Datapack",
    "DatapackDecoder",
    "Event",
    "FileChunk",
    "FileFinished",
    "FileStarted",
    "PacketReceived",
    "Received",
    "encode",
    "encode_head",
    "new_flag",
]

VERSION = "msw/0.1"
# Seed 001: "Datapack.method有三种可能的值：post、reply、file"; the issue adds get.
METHODS = frozenset({"post", "get", "reply", "file"})
MAX_HEAD = 16 * 1024
MAX_HEADERS = 64
MAX_BODY = 16 * 1024 * 1024
MAX_FILE = 1 << 40

_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_KEY = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_VERSION = re.compile(r"msw/[0-9]{1,3}\.[0-9]{1,3}")
_LENGTH = re.compile(r"[0-9]{1,15}")


def new_flag() -> str:
    """A random packet flag (seed: "数据包识别码，由程序随机自动生成"), 16 hex digits.

    MSW's example has 8; flags also drop duplicates here, and 32 random bits collide
    within a few ten thousand packets (birthday bound), so use 64.
    """
    return secrets.token_hex(8)


_NO_HEAD: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Datapack:
    """One MSW packet: where it goes (``app``, ``head['to']``), what it says (``body``).

    Immutable: ``head`` is a read-only view of a copy made at construction; change a
    packet with :meth:`with_head` (or :func:`dataclasses.replace`). ``file`` is the local
    path of a file packet's content; it never goes on the wire (the file's bytes do).
    """

    method: str = "post"
    app: str = "all"
    head: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    version: str = VERSION
    file: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "head", MappingProxyType(dict(self.head)))

    @property
    def flag(self) -> str:
        return self.head.get("flag", "")

    def with_head(
        self, changes: Mapping[str, str] = _NO_HEAD, /, *, drop: Iterable[str] = ()
    ) -> Datapack:
        """A copy whose head has ``changes`` set and the keys in ``drop`` removed."""
        gone = frozenset(drop)
        head = {k: v for k, v in self.head.items() if k not in gone}
        head.update(changes)
        return Datapack(self.method, self.app, head, self.body, self.version, self.file)

    def with_defaults(self, defaults: Mapping[str, str]) -> Datapack:
        """A copy with the headers of ``defaults`` it lacks (``self`` if it lacks none)."""
        missing = {k: v for k, v in defaults.items() if k not in self.head}
        return self.with_head(missing) if missing else self

    def reply(self, body: bytes = b"", **head: str) -> Datapack:
        """A reply to this packet, as the seed's ``dp.reply()``.

        It goes to the sender's ``from`` app on the sender's node (``id``), comes from
        this packet's app, and carries ``re: <flag>`` so the sender can match it.
        """
        new_head = {"from": self.app, **head}
        if "id" in self.head:
            new_head["to"] = self.head["id"]
        if self.flag:
            new_head["re"] = self.flag
        return Datapack("reply", self.head.get("from", "all"), new_head, body)


@dataclass(frozen=True, slots=True)
class Received:
    """A packet as delivered to an app on this node, with what only this node knows.

    ``origin`` is the sender's node id when the node proved it (by TLS on a direct link,
    or by a signature), else None; ``via`` is the peer whose link it came in on (None:
    from a local app); ``file`` is where a received file was stored. The packet's own
    fields read through (``dp.head``, ``dp.body``, ``dp.reply()``...).
    """

    datapack: Datapack
    origin: str | None = None
    via: str | None = None
    file: str | None = None

    @property
    def method(self) -> str:
        return self.datapack.method

    @property
    def app(self) -> str:
        return self.datapack.app

    @property
    def head(self) -> Mapping[str, str]:
        return self.datapack.head

    @property
    def body(self) -> bytes:
        return self.datapack.body

    @property
    def version(self) -> str:
        return self.datapack.version

    @property
    def flag(self) -> str:
        return self.datapack.flag

    def reply(self, body: bytes = b"", **head: str) -> Datapack:
        return self.datapack.reply(body, **head)


def _check_value(key: str, value: str) -> None:
    if "\r" in value or "\n" in value:
        raise DatapackError(f"header {key!r} holds CR or LF: {value[:40]!r}", "bad header value")


def encode_head(dp: Datapack, length: int) -> bytes:
    """The first line and headers of ``dp`` with ``length: <length>``, ending in a blank line."""
    if dp.method not in METHODS:
        raise DatapackError(f"unknown method {dp.method!r}; expected one of {sorted(METHODS)}")
    if not _NAME.fullmatch(dp.app):
        raise DatapackError(f"app name {dp.app!r} is not 1-64 of A-Z a-z 0-9 _ . -")
    if not _VERSION.fullmatch(dp.version):
        raise DatapackError(f"version {dp.version!r} is not msw/N.N")
    parts = [f"{dp.method} {dp.app} {dp.version}\n"]
    for key, value in dp.head.items():
        if not _KEY.fullmatch(key) or key == "length":
            raise DatapackError(f"header name {key!r} is reserved or not 1-64 of A-Z a-z 0-9 _ . -")
        _check_value(key, value)
        parts.append(f"{key}: {value}\n")
    if len(dp.head) >= MAX_HEADERS:
        raise DatapackError(f"more than {MAX_HEADERS - 1} headers")
    parts.append(f"length: {length}\n\n")
    data = "".join(parts).encode("utf-8")
    if len(data) > MAX_HEAD:
        raise DatapackError(f"head is {len(data)} bytes, over the limit of {MAX_HEAD}")
    return data


def encode(dp: Datapack) -> bytes:
    """The wire form of a non-file packet (a file packet: :func:`encode_head` + the file)."""
    if dp.method == "file":
        raise DatapackError("a file packet is sent with encode_head() and the file's bytes")
    return encode_head(dp, len(dp.body)) + dp.body


@dataclass(frozen=True, slots=True)
class PacketReceived:
    """A whole non-file packet arrived."""

    datapack: Datapack


@dataclass(frozen=True, slots=True)
class FileStarted:
    """The head of a file packet arrived; ``size`` bytes of content follow as chunks."""

    datapack: Datapack
    size: int


@dataclass(frozen=True, slots=True)
class FileChunk:
    """The next piece of the current file's content."""

    data: bytes


@dataclass(frozen=True, slots=True)
class FileFinished:
    """The current file's content is complete."""


Event = PacketReceived | FileStarted | FileChunk | FileFinished


class DatapackDecoder:
    """Bytes in, :data:`Event` s out; handles every complete packet already buffered."""

    def __init__(
        self,
        *,
        max_head: int = MAX_HEAD,
        max_headers: int = MAX_HEADERS,
        max_body: int = MAX_BODY,
        max_file: int = MAX_FILE,
    ) -> None:
        self.max_head = max_head
        self.max_headers = max_headers
        self.max_body = max_body
        self.max_file = max_file
        self._buf = bytearray()
        self._pending: tuple[Datapack, int] | None = None  # a head whose body is not all here
        self._file_left = 0  # bytes of the current file still to come
        self._error: DatapackError | None = None
        self.packets = 0
        self.bytes = 0

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def receive_data(self, data: bytes) -> list[Event]:
        if self._error is not None:
            raise self._error
        self.bytes += len(data)
        events: list[Event] = []
        try:
            self._process(data, events)
        except DatapackError as exc:
            self._error = exc
            self._buf.clear()
            raise
        return events

    def _process(self, data: bytes, events: list[Event]) -> None:
        if self._file_left:
            data = self._file_bytes(data, events)
        buf = self._buf
        buf += data
        pos = 0
        while pos < len(buf):
            if self._pending is None:
                end = buf.find(b"\n\n", pos, pos + self.max_head)
                if end < 0:
                    if len(buf) - pos >= self.max_head:
                        raise DatapackError(
                            f"no end of head within {self.max_head} bytes: "
                            f"{bytes(buf[pos : pos + 24])!r}...",
                            "head too long",
                        )
                    break
                self._pending = self._parse_head(bytes(buf[pos:end]))
                pos = end + 2
            dp, length = self._pending
            if dp.method == "file":
                self._pending = None
                self.packets += 1
                events.append(FileStarted(dp, length))
                self._file_left = length
                rest = bytes(buf[pos:])
                pos = len(buf)
                if length == 0:
                    events.append(FileFinished())
                    rest_after = rest
                else:
                    rest_after = self._file_bytes(rest, events)
                if rest_after:
                    del buf[:]
                    buf += rest_after
                    pos = 0
                continue
            if len(buf) - pos < length:
                break
            dp = Datapack(dp.method, dp.app, dp.head, bytes(buf[pos : pos + length]), dp.version)
            pos += length
            self._pending = None
            self.packets += 1
            events.append(PacketReceived(dp))
        del buf[:pos]

    def _file_bytes(self, data: bytes, events: list[Event]) -> bytes:
        """Emit up to the rest of the current file from ``data``; return what follows it."""
        take = min(self._file_left, len(data))
        if take:
            events.append(FileChunk(data[:take]))
            self._file_left -= take
        if self._file_left == 0:
            events.append(FileFinished())
        return data[take:]

    def _parse_head(self, raw: bytes) -> tuple[Datapack, int]:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DatapackError(f"head is not UTF-8: {raw[:24]!r}", "head not UTF-8") from exc
        lines = text.split("\n")
        if len(lines) - 1 > self.max_headers:
            raise DatapackError(f"more than {self.max_headers} header lines", "too many headers")
        first = lines[0].split(" ")
        if len(first) != 3:
            raise DatapackError(
                f"first line must be '<method> <app> msw/0.1', got {lines[0][:40]!r}",
                "bad first line",
            )
        method, app, version = first
        if method not in METHODS:
            raise DatapackError(f"unknown method {method[:16]!r}", "unknown method")
        if not _NAME.fullmatch(app):
            raise DatapackError(f"bad app name {app[:16]!r}", "bad app name")
        if not _VERSION.fullmatch(version):
            raise DatapackError(f"bad version {version[:16]!r}", "bad version")
        head: dict[str, str] = {}
        length: int | None = None
        for line in lines[1:]:
            key, sep, value = line.partition(": ")
            if not sep or not _KEY.fullmatch(key):
                raise DatapackError(f"header line is not 'key: value': {line[:40]!r}", "bad header")
            if "\r" in value:
                raise DatapackError(f"header {key!r} holds CR", "bad header value")
            if key in head or (key == "length" and length is not None):
                raise DatapackError(f"header {key!r} given twice", "duplicate header")
            if key == "length":
                if not _LENGTH.fullmatch(value):
                    raise DatapackError(f"length is not a number: {value[:20]!r}", "bad length")
                length = int(value)
            else:
                head[key] = value
        if length is None:
            raise DatapackError("no length header", "no length")
        limit = self.max_file if method == "file" else self.max_body
        if length > limit:
            raise DatapackError(f"length {length} is over the limit of {limit}", "too long")
        return Datapack(method, app, head, b"", version), length
