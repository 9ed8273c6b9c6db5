"""XML-RPC on the wire, safely: parse requests and responses, write responses and faults.

Theory of operation
-------------------
Pure functions over bytes (no I/O). The stdlib's ``xmlrpc.client`` does the
(un)marshalling; what it lacks is added here:

* the XML goes through defusedxml's ``DefusedExpatParser`` with DTDs forbidden, so
  entity expansion ("billion laughs"), external entities and DTD tricks are refused;
* a size limit before parsing and a nesting limit after, so that a reply never
  recurses deeply in the marshaller and a relayed message can always be sent on;
* one error type: whatever the stdlib raises on hostile bytes (``ExpatError``,
  ``ValueError``, ``TypeError``, ``IndexError``, ``ResponseError``, ...) becomes an
  :class:`XmlRpcError` carrying the fault code to answer with.

Fault codes follow the "Specification for Fault Code Interoperability" (xmlrpc-epi,
2001), which most XML-RPC libraries use: -32700 parse error, -32600 not XML-RPC,
-32601 no such method, -32602 bad parameters, -32603 internal error, -32500
application error, -32400 system error (here: the relay is busy), -32300 transport
error (here: the body is too large).
"""

from __future__ import annotations

import xmlrpc.client
from dataclasses import dataclass
from typing import Any

from defusedxml.common import DefusedXmlException
from defusedxml.xmlrpc import DefusedExpatParser

from smartget.errors import XmlRpcError

__all__ = [
    "APPLICATION_ERROR",
    "BUSY",
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "MAX_DEPTH",
    "MAX_REQUEST_BYTES",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "TRANSPORT_ERROR",
    "Call",
    "XmlRpcError",
    "dump_fault",
    "dump_request",
    "dump_response",
    "parse_request",
    "parse_response",
]

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
APPLICATION_ERROR = -32500
BUSY = -32400
TRANSPORT_ERROR = -32300

MAX_REQUEST_BYTES = 256 * 1024
MAX_DEPTH = 32
MAX_METHOD_NAME = 128
MAX_FAULT_TEXT = 1000
INT_MAX = 2**31 - 1  # XML-RPC's <int> is 32 bits


@dataclass(frozen=True, slots=True)
class Call:
    """A parsed ``<methodCall>``."""

    method: str
    params: tuple[Any, ...]


def _unmarshal(body: bytes, max_bytes: int, what: str) -> tuple[tuple[Any, ...], str | None]:
    if len(body) > max_bytes:
        raise XmlRpcError(
            f"{what} of {len(body)} bytes is larger than the limit of {max_bytes} bytes",
            TRANSPORT_ERROR,
        )
    unmarshaller = xmlrpc.client.Unmarshaller()
    parser = DefusedExpatParser(unmarshaller, forbid_dtd=True)
    try:
        parser.feed(body)
        parser.close()
        values = unmarshaller.close()
    except xmlrpc.client.Fault:
        raise
    except DefusedXmlException as exc:
        raise XmlRpcError(f"{what} refused: DTDs and entities are not allowed ({exc})") from None
    except xmlrpc.client.ResponseError:  # no <params>/<methodName>, or an unclosed array
        raise XmlRpcError(
            f"{what} is not XML-RPC: expected <methodCall> (or <methodResponse>) with its "
            "parts complete",
            INVALID_REQUEST,
        ) from None
    except IndexError:  # Unmarshaller.end_struct on a <member> without <name> or <value>
        raise XmlRpcError(
            f"{what} has a malformed <struct>: each <member> needs a <name> and a <value>",
            INVALID_REQUEST,
        ) from None
    except Exception as exc:  # the stdlib raises many types on hostile bytes
        detail = str(exc) or type(exc).__name__
        raise XmlRpcError(f"{what} is not valid XML-RPC: {detail[:200]}") from None
    return values, unmarshaller.getmethodname()


def check_value(value: Any, depth: int = 0) -> None:
    """Raise XmlRpcError unless ``value`` is an XML-RPC value nested at most MAX_DEPTH deep
    with string keys (what the stdlib marshaller can write back)."""
    if depth > MAX_DEPTH:
        raise XmlRpcError(f"values nested deeper than {MAX_DEPTH} levels", INVALID_PARAMS)
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise XmlRpcError(
                    f"struct member names must be strings, got {type(key).__name__}",
                    INVALID_REQUEST,
                )
            check_value(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            check_value(item, depth + 1)
    elif isinstance(value, int) and not isinstance(value, bool):
        if not -INT_MAX - 1 <= value <= INT_MAX:
            raise XmlRpcError(f"integer {value} does not fit in 32 bits", INVALID_PARAMS)
    elif not isinstance(
        value, str | bool | float | xmlrpc.client.DateTime | xmlrpc.client.Binary | None
    ):
        raise XmlRpcError(f"unexpected value of type {type(value).__name__}", INVALID_REQUEST)


def parse_request(body: bytes, *, max_bytes: int = MAX_REQUEST_BYTES) -> Call:
    """A ``<methodCall>`` -> :class:`Call`; anything else raises :class:`XmlRpcError`."""
    try:
        params, method = _unmarshal(body, max_bytes, "request")
    except xmlrpc.client.Fault:
        raise XmlRpcError("expected a <methodCall>, got a <fault>", INVALID_REQUEST) from None
    if not isinstance(method, str) or not method:
        raise XmlRpcError("expected a <methodCall> with a <methodName>", INVALID_REQUEST)
    if len(method) > MAX_METHOD_NAME:
        raise XmlRpcError(
            f"method name longer than {MAX_METHOD_NAME} characters: {method[:40]!r}...",
            INVALID_REQUEST,
        )
    check_value(list(params), -1)
    return Call(method, params)


def parse_response(body: bytes, *, max_bytes: int = MAX_REQUEST_BYTES) -> Any:
    """A ``<methodResponse>`` -> its value; raises ``xmlrpc.client.Fault`` for a fault
    and :class:`XmlRpcError` for anything malformed."""
    try:
        values, method = _unmarshal(body, max_bytes, "response")
    except xmlrpc.client.Fault as fault:
        if not isinstance(fault.faultCode, int) or not isinstance(fault.faultString, str):
            raise XmlRpcError("malformed <fault>: needs faultCode and faultString") from None
        raise
    if method is not None or len(values) != 1:
        raise XmlRpcError("expected a <methodResponse> with exactly one value", INVALID_REQUEST)
    check_value(values[0])
    return values[0]


def dump_response(value: Any) -> bytes:
    """A ``<methodResponse>`` holding ``value``."""
    text = xmlrpc.client.dumps((value,), methodresponse=True, encoding="utf-8", allow_none=True)
    return text.encode("utf-8")


def dump_fault(code: int, message: str) -> bytes:
    """A ``<methodResponse>`` holding a ``<fault>``; long messages are cut."""
    if len(message) > MAX_FAULT_TEXT:
        message = message[: MAX_FAULT_TEXT - 3] + "..."
    fault = xmlrpc.client.Fault(code, message)
    return xmlrpc.client.dumps(fault, methodresponse=True, encoding="utf-8").encode("utf-8")


def dump_request(method: str, *params: Any) -> bytes:
    """A ``<methodCall>`` (what the relay sends to satellites: ``notify``, ``ping``)."""
    text = xmlrpc.client.dumps(params, method, encoding="utf-8", allow_none=True)
    return text.encode("utf-8")
