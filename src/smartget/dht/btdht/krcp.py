"""btdht.krcp: the message objects btdht hands to ``on_*`` hooks, and its errors.

:class:`BMessage` is a KRPC message with ``t``, ``y``, ``q``, ``v``, ``errno``,
``errmsg`` and ``addr`` as attributes, the ``a`` or ``r`` dict behind ``msg[key]`` and
``msg.get(key)``, and :meth:`BMessage.encode` / :meth:`BMessage.decode`. Decoding goes
through SmartGet's codec (:mod:`smartget.dht.krpc`), so hostile bytes raise only
:class:`~smartget.errors.KRPCError`.
"""

from __future__ import annotations

from typing import Any

from fastbencode import bencode

from smartget.dht import krpc
from smartget.dht.krpc import Addr

__all__ = [
    "BError",
    "BMessage",
    "GenericError",
    "MethodUnknownError",
    "ProtocolError",
    "ServerError",
    "error_for",
]


class BError(Exception):
    """A KRPC error message ``[code, message]`` for transaction ``t``."""

    y = b"e"

    def __init__(self, t: bytes, e: list[Any]) -> None:
        if t is None:
            raise ValueError("t should not be None")
        self.t = t
        self.e = e
        super().__init__(*e)

    def encode(self) -> bytes:
        return bytes(bencode({b"y": self.y, b"t": self.t, b"e": self.e}))

    def __repr__(self) -> str:
        return f"{type(self).__name__}: {self.e!r}"


class GenericError(BError):
    def __init__(self, t: bytes, msg: bytes = b"") -> None:
        super().__init__(t, [201, msg])


class ServerError(BError):
    def __init__(self, t: bytes, msg: bytes = b"Server Error") -> None:
        super().__init__(t, [202, msg])


class ProtocolError(BError):
    def __init__(self, t: bytes, msg: bytes = b"Protocol Error") -> None:
        super().__init__(t, [203, msg])


class MethodUnknownError(BError):
    def __init__(self, t: bytes, msg: bytes = b"Method Unknow") -> None:  # btdht's spelling
        super().__init__(t, [204, msg])


_ERRORS: dict[int, type[BError]] = {
    201: GenericError,
    202: ServerError,
    203: ProtocolError,
    204: MethodUnknownError,
}


def error_for(t: bytes, code: int, msg: bytes) -> BError:
    """The BError subclass of ``code`` (a plain :class:`BError` for other codes)."""
    cls = _ERRORS.get(code)
    if cls is None:
        return BError(t, [code, msg])
    return cls(t, msg)  # type: ignore[arg-type]


class BMessage:
    """A KRPC message (btdht's ``BMessage``)."""

    def __init__(self, addr: Addr | None = None, debug: bool = False) -> None:
        self.addr = addr
        self.debug = debug
        self.t: bytes | None = None
        self.y: bytes | None = None
        self.q: bytes | None = None
        self.v: bytes | None = None
        self.errno: int | None = None
        self.errmsg: bytes | None = None
        self._dict: dict[bytes, Any] = {}  # the ``a`` or ``r`` dict

    @classmethod
    def make(
        cls, y: bytes, t: bytes, values: dict[bytes, Any], addr: Addr | None, q: bytes | None
    ) -> BMessage:
        msg = cls(addr=addr)
        msg.y, msg.t, msg.q = y, t, q
        msg._dict = dict(values)
        return msg

    def set_a(self, value: bool) -> None:
        """btdht marks a query's ``a`` dict present; here the dict always is."""

    def set_r(self, value: bool) -> None:
        """As :meth:`set_a`, for a response's ``r``."""

    def decode(self, s: bytes, size: int | None = None) -> None:
        """Parse ``s`` (its first ``size`` bytes) into this message; KRPCError if bad."""
        message = krpc.decode(s[:size] if size is not None else s)
        self.t = message.tid
        if isinstance(message, krpc.Query):
            self.y, self.q, self._dict = b"q", message.method, dict(message.args)
        elif isinstance(message, krpc.Response):
            self.y, self._dict = b"r", dict(message.values)
        else:
            self.y, self.errno, self.errmsg = b"e", message.code, message.message.encode()

    def encode(self) -> bytes:
        msg: dict[bytes, Any] = {}
        if self.t is not None:
            msg[b"t"] = self.t
        if self.y is not None:
            msg[b"y"] = self.y
        if self.v is not None:
            msg[b"v"] = self.v
        if self.y == b"q":
            msg[b"q"] = self.q or b""
            msg[b"a"] = self._dict
        elif self.y == b"r":
            msg[b"r"] = self._dict
        elif self.y == b"e":
            msg[b"e"] = [self.errno or 201, self.errmsg or b""]
        return bytes(bencode(msg))

    def __getitem__(self, key: bytes) -> Any:
        if key == b"values":
            return list(self._dict[key])
        return self._dict[key]

    def __setitem__(self, key: bytes, value: Any) -> None:
        if key in (b"id", b"target", b"info_hash") and len(value) != 20:
            raise ValueError("Can only set strings of length 20B")
        self._dict[key] = value

    def __delitem__(self, key: bytes) -> None:
        del self._dict[key]

    def __contains__(self, key: object) -> bool:
        return key in self._dict

    def get(self, key: bytes, default: Any = None) -> Any:
        return self._dict.get(key, default)

    def __repr__(self) -> str:
        return repr(self.encode())
