"""btdht.utils: ``ID`` and the helpers btdht's users import from it."""

from __future__ import annotations

import binascii
import contextlib
import ipaddress
import os
import queue
import socket
from collections.abc import Iterable
from functools import total_ordering
from typing import Any

from fastbencode import bdecode as _bdecode
from fastbencode import bencode as _bencode

from smartget.dht.btdht.exceptions import BcodeError

__all__ = [
    "ID",
    "PollableQueue",
    "bdecode",
    "bencode",
    "enumerate_ids",
    "id_to_longid",
    "ip_in_nets",
    "nbit",
    "nflip",
    "nset",
]


@total_ordering
class ID:
    """A 160-bit (20-byte) id with the XOR distance; random when no value is given."""

    value: bytes

    def __init__(self, id: ID | bytes | None = None) -> None:
        self.value = os.urandom(20) if id is None else self.to_bytes(id)

    @classmethod
    def to_bytes(cls, id: ID | bytes) -> bytes:
        return id.value if isinstance(id, ID) else id

    def startswith(self, s: bytes) -> bool:
        return self.value.startswith(s)

    def __getitem__(self, i: Any) -> Any:
        return self.value[i]

    def __str__(self) -> str:
        raise NotImplementedError  # as btdht: use .value or repr()

    def __repr__(self) -> str:
        return binascii.b2a_hex(self.value).decode()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ID):
            return self.value == other.value
        return isinstance(other, bytes) and self.value == other

    def __lt__(self, other: ID | bytes) -> bool:
        if isinstance(other, ID | bytes):
            return self.value < self.to_bytes(other)
        raise TypeError(f"'<' not supported between 'ID' and '{type(other).__name__}'")

    def __len__(self) -> int:
        return len(self.value)

    def __xor__(self, other: ID | bytes) -> bytes:
        if not isinstance(other, ID | bytes):
            raise TypeError(f"unsupported operand type(s) for ^: 'ID' and {type(other).__name__}")
        return bytes(a ^ b for a, b in zip(self.value, self.to_bytes(other), strict=False))

    __rxor__ = __xor__

    def __hash__(self) -> int:
        return hash(self.value)


def bencode(obj: Any) -> bytes:
    try:
        return bytes(_bencode(obj.value if isinstance(obj, ID) else obj))
    except (TypeError, ValueError) as exc:
        raise BcodeError(f"cannot bencode {type(obj).__name__}: {exc}") from exc


def bdecode(s: bytes) -> Any:
    try:
        return _bdecode(s)
    except (TypeError, ValueError, RecursionError) as exc:
        raise BcodeError(f"not bencoded: {exc}") from exc


def id_to_longid(id: bytes, l: int = 20) -> str:  # noqa: E741 - btdht's name
    """``b"\\0"`` -> ``"00000000"``: the bits of ``id`` as a string."""
    return "".join(format(b, "08b") for b in id[:l])


def nbit(s: bytes, n: int) -> int:
    return (s[n // 8] >> (7 - n % 8)) & 1


def nflip(s: bytes, n: int) -> bytes:
    return s[: n // 8] + bytes([s[n // 8] ^ (0x80 >> (n % 8))]) + s[n // 8 + 1 :]


def nset(s: bytes, n: int, i: int) -> bytes:
    if i not in (0, 1):
        raise ValueError("i must be 0 or 1")
    return nflip(s, n) if nbit(s, n) != i else bytes(s)


def enumerate_ids(size: int, id: bytes) -> list[bytes]:
    """``id`` and 2**size - 1 ids as far from each other as can be (first bits set)."""
    ids = [id]
    for lvl in range(size - 1, -1, -1):
        ids = [x for i in ids for x in (nset(i, lvl, 0), nset(i, lvl, 1))]
    return ids


def ip_in_nets(ip: str, nets: Iterable[Any]) -> bool:
    """Is ``ip`` in one of ``nets`` (networks or CIDR strings)?"""
    address = ipaddress.ip_address(ip)
    return any(address in ipaddress.ip_network(str(net), strict=False) for net in nets)


class PollableQueue(queue.Queue[Any]):
    """A queue whose ``sock`` is readable while something is in it (for ``select``)."""

    def __init__(self, maxsize: int = 0) -> None:
        super().__init__(maxsize=maxsize)
        self._putsocket, self._getsocket = socket.socketpair()
        self._getsocket.setblocking(False)
        self._putsocket.setblocking(False)
        self.sock = self._getsocket

    def __del__(self) -> None:
        self._putsocket.close()
        self._getsocket.close()

    def _put(self, item: Any) -> None:
        super()._put(item)
        with contextlib.suppress(BlockingIOError):
            self._putsocket.send(b"x")

    def _get(self) -> Any:
        with contextlib.suppress(BlockingIOError):
            self._getsocket.recv(1)
        return super()._get()
