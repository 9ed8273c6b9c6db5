"""KRPC, the DHT's message layer (BEP 5 "KRPC Protocol"): bencoded dicts over UDP.

Theory of operation
-------------------
Sans-IO and stateless: :func:`decode` turns one datagram into a :class:`Query`,
:class:`Response` or :class:`Error`; the ``encode_*`` functions do the reverse. Every
check a peer can fail raises :class:`~smartget.errors.KRPCError` carrying the BEP 5
error code to answer with (203 "Protocol Error" for anything malformed, 204 "Method
Unknown"). fastbencode is strict (canonical integers, sorted keys, no junk after the
value), and its ``ValueError``/``TypeError`` become ``KRPCError`` at one seam,
:func:`bdecode`.

Real clients add keys of their own (``v``, ``ip``, ``ro``, ``bs``, ``seed``, ...): what
we do not use is ignored; what we use is type-checked here, once, so the core can trust
the fields of a decoded message. The checks live in :func:`envelope`,
:func:`query_fields`, :func:`response_of` and :func:`error_of`, which :func:`decode`
strings together and the core calls directly on its hot path (no dataclass per query);
:func:`encode_reply` and :func:`get_peers_body` write a reply as bytes, identical to
bencoding the dicts (a property test holds them to that).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from typing import Any, Final, NewType

from fastbencode import bdecode as _fb_decode
from fastbencode import bencode as _fb_encode

from smartget.errors import KRPCError

__all__ = [
    "ERROR_GENERIC",
    "ERROR_METHOD_UNKNOWN",
    "ERROR_PROTOCOL",
    "ERROR_SERVER",
    "MAX_DATAGRAM",
    "Addr",
    "Error",
    "InfoHash",
    "Message",
    "NodeId",
    "Query",
    "Response",
    "bdecode",
    "compact_addr",
    "decode",
    "decode_compact_addr",
    "decode_nodes",
    "decode_peers",
    "encode_error",
    "encode_query",
    "encode_reply",
    "encode_response",
    "envelope",
    "error_of",
    "format_ipv4",
    "get_peers_body",
    "is_ipv4",
    "node_id",
    "pack_ipv4",
    "query_fields",
    "response_of",
    "tid_of",
]

NodeId = NewType("NodeId", bytes)
InfoHash = NewType("InfoHash", bytes)
Addr = tuple[str, int]

# BEP 5 "Errors": the codes we send and understand.
ERROR_GENERIC: Final = 201
ERROR_SERVER: Final = 202
ERROR_PROTOCOL: Final = 203
ERROR_METHOD_UNKNOWN: Final = 204

# A KRPC message fits one Ethernet frame in practice; anything much larger is hostile.
MAX_DATAGRAM: Final = 2048
MAX_TID: Final = 64
ID_LEN: Final = 20
COMPACT_NODE_LEN: Final = 26  # 20-byte id + 4-byte IPv4 + 2-byte port (BEP 5 "Contact Encoding")

_PORT = struct.Struct("!H")


@dataclass(frozen=True, slots=True)
class Query:
    """``y = q``: a method call. ``args`` is the raw ``a`` dict (keys checked by the core)."""

    tid: bytes
    method: bytes
    sender: NodeId
    args: dict[bytes, Any]
    read_only: bool = False  # BEP 43 ``ro: 1``


@dataclass(frozen=True, slots=True)
class Response:
    """``y = r``: a reply to one of our queries, matched by ``tid``."""

    tid: bytes
    sender: NodeId
    values: dict[bytes, Any]
    requester_ip: Addr | None = None  # BEP 42 ``ip``: how the remote sees us


@dataclass(frozen=True, slots=True)
class Error:
    """``y = e``: an error reply, ``[code, message]``."""

    tid: bytes
    code: int
    message: str
    extra: dict[bytes, Any] = field(default_factory=dict)


Message = Query | Response | Error


def bdecode(data: bytes) -> Any:
    """fastbencode's decoder behind the one seam that turns its errors into ``KRPCError``."""
    if len(data) > MAX_DATAGRAM:
        raise KRPCError(f"datagram of {len(data)} bytes is over the {MAX_DATAGRAM}-byte limit")
    try:
        return _fb_decode(data)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise KRPCError(f"not canonical bencode: {exc}", hint="invalid bencoding") from exc


def node_id(value: Any, what: str = "id") -> NodeId:
    """Check a 20-byte id (node id, target, info-hash)."""
    if not isinstance(value, bytes) or len(value) != ID_LEN:
        raise KRPCError(f"{what} must be a {ID_LEN}-byte string, got {_short(value)}")
    return NodeId(value)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def decode(data: bytes) -> Message:
    """Parse one datagram. Raises ``KRPCError`` (its ``code`` is the reply to send)."""
    msg = bdecode(data)
    tid, kind = envelope(msg)
    if kind == b"q":
        return Query(tid, *query_fields(msg))
    if kind == b"r":
        return response_of(msg, tid)
    return error_of(msg, tid)


def envelope(msg: Any) -> tuple[bytes, bytes]:
    """``(t, y)`` of a decoded message; ``y`` is q, r or e. The core's hot path starts
    here and, for queries, goes on with :func:`query_fields` without building a
    :class:`Query` (the checks are the same ones :func:`decode` makes)."""
    if type(msg) is not dict:
        raise KRPCError(f"a KRPC message is a dict, got {type(msg).__name__}")
    tid = msg.get(b"t")
    if type(tid) is not bytes or not tid or len(tid) > MAX_TID:
        raise KRPCError(f"'t' must be 1 to {MAX_TID} bytes, got {_short(tid)}")
    kind = msg.get(b"y")
    if kind != b"q" and kind != b"r" and kind != b"e":
        raise KRPCError(f"'y' must be q, r or e, got {_short(kind)}")
    return tid, kind


def query_fields(msg: dict[bytes, Any]) -> tuple[bytes, NodeId, dict[bytes, Any], bool]:
    """``(method, sender, args, read_only)`` of a query (``y = q``)."""
    method, args = msg.get(b"q"), msg.get(b"a")
    if type(method) is not bytes:
        raise KRPCError(f"'q' must be a method name, got {_short(method)}")
    if type(args) is not dict:
        raise KRPCError(f"'a' must be a dict, got {_short(args)}")
    sender = args.get(b"id")
    if type(sender) is not bytes or len(sender) != ID_LEN:
        raise KRPCError(f"id must be a {ID_LEN}-byte string, got {_short(sender)}")
    return method, NodeId(sender), args, msg.get(b"ro") == 1


def response_of(msg: dict[bytes, Any], tid: bytes) -> Response:
    values = msg.get(b"r")
    if not isinstance(values, dict):
        raise KRPCError(f"'r' must be a dict, got {_short(values)}")
    ip = msg.get(b"ip")
    requester = decode_compact_addr(ip) if isinstance(ip, bytes) and len(ip) == 6 else None
    return Response(tid, node_id(values.get(b"id")), values, requester)


def error_of(msg: dict[bytes, Any], tid: bytes) -> Error:
    err = msg.get(b"e")
    if (
        not isinstance(err, list)
        or len(err) < 2
        or not isinstance(err[0], int)
        or not isinstance(err[1], bytes)
    ):
        raise KRPCError(f"'e' must be [code, message], got {_short(err)}")
    extra = {k: v for k, v in msg.items() if k not in (b"t", b"y", b"e")}
    return Error(tid, err[0], err[1].decode("utf-8", "replace"), extra)


def tid_of(data: bytes) -> bytes | None:
    """Best effort: the transaction id of a datagram we could not decode, to answer it."""
    try:
        msg = _fb_decode(data) if len(data) <= MAX_DATAGRAM else None
    except (ValueError, TypeError, OverflowError, RecursionError):
        return None
    if isinstance(msg, dict):
        tid = msg.get(b"t")
        if isinstance(tid, bytes) and 0 < len(tid) <= MAX_TID:
            return tid
    return None


def encode_query(
    tid: bytes, method: bytes, args: dict[bytes, Any], *, read_only: bool = False
) -> bytes:
    msg: dict[bytes, Any] = {b"t": tid, b"y": b"q", b"q": method, b"a": args}
    if read_only:
        msg[b"ro"] = 1
    return bytes(_fb_encode(msg))


def encode_response(tid: bytes, values: dict[bytes, Any], requester: Addr | None = None) -> bytes:
    ip = compact_addr(requester) if requester is not None else None  # BEP 42 echo
    return encode_reply(tid, bytes(_fb_encode(values)), ip)


def encode_reply(tid: bytes, body: bytes, ip: bytes | None = None) -> bytes:
    """A response around an already bencoded ``r`` dict, as bytes: the same output as
    bencoding ``{ip, r, t, y}`` (keys in sorted order), without building the dicts.
    ``ip`` is the requester's 6-byte compact address (BEP 42)."""
    return b"".join(
        (
            b"d2:ip6:" + ip + b"1:r" if ip is not None else b"d1:r",
            body,
            b"1:t%d:" % len(tid),
            tid,
            b"1:y1:re",
        )
    )


def get_peers_body(
    myid: bytes, nodes: bytes, token: bytes, values: list[bytes] | None = None
) -> bytes:
    """The bencoded ``r`` of a get_peers reply, ``{id, nodes, token[, values]}`` (keys
    sorted, as bencode wants): the hot path of a node under load, so built from bytes."""
    return b"".join(
        (
            b"d2:id20:",
            myid,
            b"5:nodes%d:" % len(nodes),
            nodes,
            b"5:token%d:" % len(token),
            token,
            b"6:valuesl" + b"".join(b"%d:%b" % (len(v), v) for v in values) + b"e"
            if values
            else b"",
            b"e",
        )
    )


def encode_error(tid: bytes, code: int, message: str) -> bytes:
    msg = {b"t": tid, b"y": b"e", b"e": [code, message.encode("utf-8", "replace")]}
    return bytes(_fb_encode(msg))


# -- compact encodings (BEP 5 "Contact Encoding") ---------------------------------------


def pack_ipv4(ip: str) -> bytes:
    """``"1.2.3.4"`` -> 4 bytes (a dotted quad only); :class:`KRPCError` otherwise.

    Written out rather than ``socket.inet_aton`` so that the codec imports no socket.
    """
    parts = ip.split(".")
    if len(parts) == 4 and all(p.isascii() and p.isdigit() and len(p) <= 3 for p in parts):
        octets = [int(p) for p in parts]
        if max(octets) < 256:
            return bytes(octets)
    raise KRPCError(f"expected a dotted-quad IPv4 address, got {ip[:64]!r}")


def format_ipv4(packed: bytes) -> str:
    """4 bytes -> ``"1.2.3.4"``."""
    return f"{packed[0]}.{packed[1]}.{packed[2]}.{packed[3]}"


def compact_addr(addr: Addr) -> bytes:
    """``("1.2.3.4", 6881)`` -> 6 bytes. IPv4 only, as BEP 5's compact format."""
    try:
        return pack_ipv4(addr[0]) + _PORT.pack(addr[1])
    except (KRPCError, struct.error) as exc:
        raise KRPCError(f"cannot encode {addr!r} as a compact IPv4 address") from exc


def decode_compact_addr(data: bytes) -> Addr:
    if len(data) != 6:
        raise KRPCError(f"compact address is 6 bytes, got {len(data)}")
    return format_ipv4(data), _PORT.unpack(data[4:])[0]


def decode_nodes(data: Any) -> list[tuple[NodeId, Addr]]:
    """The ``nodes`` value: concatenated 26-byte records; port 0 records are dropped."""
    if not isinstance(data, bytes) or len(data) % COMPACT_NODE_LEN:
        raise KRPCError(f"'nodes' must be a multiple of {COMPACT_NODE_LEN} bytes")
    out = []
    for i in range(0, len(data), COMPACT_NODE_LEN):
        addr = decode_compact_addr(data[i + ID_LEN : i + COMPACT_NODE_LEN])
        if addr[1]:
            out.append((NodeId(data[i : i + ID_LEN]), addr))
    return out


def decode_peers(data: Any) -> list[Addr]:
    """The ``values`` value: a list of 6-byte compact peers; others (IPv6) are skipped."""
    if not isinstance(data, list):
        raise KRPCError("'values' must be a list of compact peers")
    return [decode_compact_addr(v) for v in data if isinstance(v, bytes) and len(v) == 6]


def is_ipv4(host: str) -> bool:
    parts = host.split(".")
    if len(parts) == 4 and all(p.isdigit() and len(p) <= 3 and int(p) < 256 for p in parts):
        return True  # the common case, without ipaddress's parser
    try:
        return isinstance(ipaddress.ip_address(host), ipaddress.IPv4Address)
    except ValueError:
        return False
