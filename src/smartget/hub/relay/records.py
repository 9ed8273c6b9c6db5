"""The relay's satellites and messages as the fleet's Redis holds them (sans-IO).

With ``--state redis://`` (:mod:`smartget.hub.state.relay`) a satellite is a Redis hash
of strings, one field per :class:`~smartget.hub.relay.core.Satellite` field, and a
message a hash of its sender, acceptance time and ``relay.relay`` dict (as XML-RPC, so
dates, binaries and nil come back as they went in, as in the SQLite store), with its
recipients in a set. This module turns those strings into satellites and messages and
back, and says which statistics each hub may write:

* the hub that **delivers** (the lease holder) owns the notify and ping statistics
  (:data:`DELIVERER_FIELDS`): it alone notifies and pings, and writes them;
* the hub that **accepts** a message counts it (``send_count``, ``send_time``) in the
  same atomic step that stores it;
* a **registration** through any hub writes nick, plugins, notify_pass and resets
  ``ping_fails_in_row`` (the deliverer takes the lower of its count and Redis's).

So no two hubs write the same field, and a hub that reads a satellite back
(:func:`merge_record`) takes from Redis what others own and keeps what it owns.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from smartget.hub.relay.core import SATELLITE_FIELDS, Satellite
from smartget.hub.relay.outbox import Message
from smartget.hub.relay.xmlrpc import XmlRpcError, dump_request, parse_request

__all__ = [
    "DELIVERER_FIELDS",
    "SATELLITE_FIELDS",
    "RecordError",
    "deliverer_record",
    "merge_record",
    "message_from_record",
    "message_params",
    "satellite_from_record",
    "satellite_record",
]

# Written by the delivering hub only (its notifies and pings).
DELIVERER_FIELDS = (
    "ping_current",
    "ping_count",
    "ping_min",
    "ping_max",
    "ping_total",
    "ping_answered",
    "ping_fails",
    "ping_fails_in_row",
    "recv_count",
    "recv_time",
    "notify_fails",
)
_INTS = frozenset(
    {"port", "ping_count", "ping_answered", "ping_fails", "ping_fails_in_row", "send_count"}
    | {"recv_count", "notify_fails"}
)
_TEXTS = frozenset({"ip", "nick", "notify_pass"})


class RecordError(ValueError):
    """A record in Redis that is not a satellite or a message (logged and skipped)."""


def _text(sat: Satellite, name: str) -> str:
    value = getattr(sat, name)
    if name == "plugins":
        return json.dumps(value)
    return value if isinstance(value, str) else repr(value)


def satellite_record(sat: Satellite) -> dict[str, str]:
    """Every field as a string (floats by ``repr``: they come back exactly)."""
    return {name: _text(sat, name) for name in SATELLITE_FIELDS}


def deliverer_record(sat: Satellite) -> dict[str, str]:
    """The fields the delivering hub writes."""
    return {name: _text(sat, name) for name in DELIVERER_FIELDS}


def _value(name: str, text: str) -> Any:
    if name in _TEXTS:
        return text
    if name == "plugins":
        plugins = json.loads(text)
        if not isinstance(plugins, list):
            raise RecordError("plugins is not a list")
        return [p for p in plugins if isinstance(p, str)]
    return int(text) if name in _INTS else float(text)


def satellite_from_record(record: Mapping[str, str]) -> Satellite:
    """A satellite from its hash; RecordError if a field is missing or malformed
    (statistics missing are taken as a new satellite's)."""
    fresh = Satellite("", 0, "", [], "", 0.0)
    values: dict[str, Any] = {}
    try:
        for name in SATELLITE_FIELDS:
            text = record.get(name)
            if text is None:
                if name in ("ip", "port"):
                    raise RecordError(f"no {name}")
                values[name] = getattr(fresh, name)
            else:
                values[name] = _value(name, text)
    except (ValueError, TypeError) as exc:
        raise RecordError(f"satellite record: {exc}") from None
    if not 0 < values["port"] <= 65535:
        raise RecordError(f"satellite record: port {values['port']}")
    return Satellite(**values)


def merge_record(sat: Satellite, record: Mapping[str, str], *, delivering: bool) -> None:
    """Bring ``sat`` up to date from its hash; a delivering hub keeps its own
    statistics (:data:`DELIVERER_FIELDS`: newer in memory than in Redis)."""
    fresh = satellite_from_record(record)
    for name in SATELLITE_FIELDS:
        if delivering and name in DELIVERER_FIELDS:
            continue
        setattr(sat, name, getattr(fresh, name))
    if delivering:  # a registration through any hub resets it to 0 in Redis
        sat.ping_fails_in_row = min(sat.ping_fails_in_row, fresh.ping_fails_in_row)


def message_params(params: dict[str, Any]) -> str:
    """A message's ``relay.relay`` dict as stored: an XML-RPC call (text)."""
    return dump_request("relay.relay", params).decode("utf-8")


def message_from_record(
    seq: int, record: Mapping[str, str], pending: set[str], *, max_bytes: int
) -> Message:
    """A stored message; RecordError if it cannot be read."""
    try:
        call = parse_request(record["x"].encode("utf-8"), max_bytes=max_bytes)
        if len(call.params) != 1 or not isinstance(call.params[0], dict):
            raise RecordError("expected one struct")
        return Message(seq, record["s"], call.params[0], float(record["a"]), set(pending))
    except (KeyError, ValueError, XmlRpcError) as exc:
        raise RecordError(f"message {seq}: {exc}") from None
