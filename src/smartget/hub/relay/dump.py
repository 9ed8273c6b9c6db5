"""co2's satellite dump: the XML a relay writes so another can re-register its satellites.

co2 (seed 004, ``_serialize_sat_data``) writes, on exit, "an xml file containing all
data needed for the relay to re-register the satellites automatically on restart". Its
exact schema is not in the seed, so SmartGet reads any XML-RPC document (a
``<methodCall>``, a ``<methodResponse>`` or a bare ``<params>``, as ``xmlrpclib.dumps``
writes them) whose first value holds the satellites, either as a list of structs or as
a struct keyed by host_id, each with::

    addr [ip, port] (or host_id "ip:port"), nick, plugins [..], notify_pass, ctime

and writes a ``<methodCall>`` of ``relay.import_satellites`` with the list form (every
satellite statistic included, times as ``dateTime.iso8601``). Unknown keys are ignored;
a satellite without an address is refused with its position. The dump holds each
satellite's ``notify_pass``: keep the file private (SmartGet writes it 0600).

Sans-IO: bytes in, satellites out, and back.
"""

from __future__ import annotations

import datetime
import xmlrpc.client
from collections.abc import Iterable
from typing import Any

from smartget.errors import RelayError, XmlRpcError
from smartget.hub.relay.core import Satellite, split_host_id
from smartget.hub.relay.xmlrpc import parse_request, parse_response

__all__ = ["MAX_DUMP_BYTES", "dump_satellites", "load_satellites_dump"]

MAX_DUMP_BYTES = 16 << 20
DUMP_METHOD = "relay.import_satellites"


def _epoch(value: Any) -> float:
    if isinstance(value, xmlrpc.client.DateTime):
        stamp = datetime.datetime.strptime(value.value, "%Y%m%dT%H:%M:%S")
        return stamp.replace(tzinfo=datetime.UTC).timestamp()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return 0.0


def _datetime(epoch: float) -> xmlrpc.client.DateTime:
    return xmlrpc.client.DateTime(datetime.datetime.fromtimestamp(epoch, datetime.UTC))


def _satellite(record: Any, where: str) -> Satellite:
    if not isinstance(record, dict):
        raise RelayError(f"{where}: a satellite is a struct, got {type(record).__name__}")
    addr = record.get("addr")
    if isinstance(addr, list) and len(addr) == 2:
        ip, port = str(addr[0]), addr[1]
    elif isinstance(record.get("host_id"), str):
        ip, port = split_host_id(record["host_id"])
    else:
        raise RelayError(f"{where}: no addr [ip, port] and no host_id 'ip:port'")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port <= 65535:
        raise RelayError(f"{where}: port must be from 1 to 65535, got {port!r}")
    plugins = record.get("plugins", [])
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        raise RelayError(f"{where}: plugins must be a list of strings")
    nick, notify_pass = record.get("nick", ""), record.get("notify_pass", "")
    if not isinstance(nick, str) or not isinstance(notify_pass, str):
        raise RelayError(f"{where}: nick and notify_pass must be strings")
    sat = Satellite(
        ip, port, nick or f"{ip}:{port}", plugins, notify_pass, _epoch(record.get("ctime"))
    )
    for key in ("send_count", "recv_count", "ping_count", "ping_fails"):
        value = record.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            setattr(sat, key, value)
    return sat


def load_satellites_dump(data: bytes) -> list[Satellite]:
    """The satellites of a dump; RelayError (or XmlRpcError) says what is wrong and where."""
    body = data.strip()
    if body.startswith(b"<?xml"):
        body = body[body.find(b"?>") + 2 :].strip()
    try:
        if body.startswith(b"<params>"):  # xmlrpclib.dumps(values) without a method name
            body = b"<methodCall><methodName>dump</methodName>" + body + b"</methodCall>"
        if body.startswith(b"<methodResponse>"):
            value = parse_response(body, max_bytes=MAX_DUMP_BYTES)
        else:
            params = parse_request(body, max_bytes=MAX_DUMP_BYTES).params
            if not params:
                raise RelayError("the dump holds no value")
            value = params[0]
    except XmlRpcError as exc:
        raise RelayError(f"not a satellite dump: {exc}") from None
    except xmlrpc.client.Fault as fault:
        raise RelayError(f"not a satellite dump: a fault ({fault.faultString[:80]})") from None
    if isinstance(value, dict):
        records = [
            {"host_id": key, **rec} if isinstance(rec, dict) else rec for key, rec in value.items()
        ]
    elif isinstance(value, list):
        records = value
    else:
        raise RelayError(f"the dump's value must be a list or a struct, got {type(value).__name__}")
    return [_satellite(rec, f"satellite #{i + 1}") for i, rec in enumerate(records)]


def dump_satellites(satellites: Iterable[Satellite]) -> bytes:
    """A dump of ``satellites`` (with their notify_pass) that :func:`load_satellites_dump`
    and co2-style readers take."""
    records = []
    for sat in satellites:
        record: dict[str, Any] = {
            k: v for k, v in sat.raw().items() if k not in ("ctime", "send_time", "recv_time")
        }
        record["ctime"] = _datetime(sat.ctime)
        record["send_time"] = _datetime(sat.send_time)
        record["recv_time"] = _datetime(sat.recv_time)
        record["notify_pass"] = sat.notify_pass
        records.append(record)
    text = xmlrpc.client.dumps((records,), DUMP_METHOD, encoding="utf-8", allow_none=False)
    return text.encode("utf-8")
