"""Safe XML-RPC parsing: hostile bytes raise only XmlRpcError, with the right fault code."""

from __future__ import annotations

import contextlib
import xmlrpc.client

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smartget.hub.relay import xmlrpc as x


def call(method: str, *params: object) -> bytes:
    return xmlrpc.client.dumps(params, method, allow_none=True).encode()


def test_parses_a_method_call() -> None:
    parsed = x.parse_request(call("relay.relay", {"host_id": "1.2.3.4:5", "data": [1, "a"]}))
    assert parsed == x.Call("relay.relay", ({"host_id": "1.2.3.4:5", "data": [1, "a"]},))


@pytest.mark.parametrize(
    ("body", "code", "words"),
    [
        (b"", x.PARSE_ERROR, "not valid XML-RPC"),
        (b"<methodCall><methodName>a</methodName>", x.PARSE_ERROR, "not valid"),
        (b"\xff\xfe garbage", x.PARSE_ERROR, "not valid"),
        (b"<methodCall></methodCall>", x.INVALID_REQUEST, "expected <methodCall>"),
        (
            b"<methodCall><methodName>m</methodName><params><param><value><int>x</int>"
            b"</value></param></params></methodCall>",
            x.PARSE_ERROR,
            "invalid literal",
        ),
        (
            b"<methodCall><methodName>m</methodName><params><param><value><int>99999999999"
            b"</int></value></param></params></methodCall>",
            x.INVALID_PARAMS,
            "32 bits",
        ),
        (xmlrpc.client.dumps(xmlrpc.client.Fault(1, "x")).encode(), x.INVALID_REQUEST, "fault"),
        (b"<methodCall><methodName>" + b"m" * 200 + b"</methodName></methodCall>", -32600, "long"),
    ],
)
def test_malformed_requests(body: bytes, code: int, words: str) -> None:
    with pytest.raises(x.XmlRpcError, match=words) as info:
        x.parse_request(body)
    assert info.value.code == code


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<methodCall><methodName>test</methodName><params><param><value><string>&lol3;</string>
</value></param></params></methodCall>"""

EXTERNAL = b"""<?xml version="1.0"?>
<!DOCTYPE x [<!ENTITY ext SYSTEM "file:///etc/passwd">]>
<methodCall><methodName>test</methodName><params><param><value><string>&ext;</string>
</value></param></params></methodCall>"""

DTD_ONLY = b"""<?xml version="1.0"?><!DOCTYPE methodCall SYSTEM "http://127.0.4.9/x.dtd">
<methodCall><methodName>test</methodName></methodCall>"""


@pytest.mark.parametrize("body", [BILLION_LAUGHS, EXTERNAL, DTD_ONLY])
def test_entity_and_dtd_tricks_are_refused(body: bytes) -> None:
    with pytest.raises(x.XmlRpcError, match="DTDs and entities are not allowed"):
        x.parse_request(body)


def test_size_limit_comes_before_parsing() -> None:
    with pytest.raises(x.XmlRpcError, match="larger than the limit of 100 bytes") as info:
        x.parse_request(call("test", "a" * 200), max_bytes=100)
    assert info.value.code == x.TRANSPORT_ERROR


def test_nesting_limit() -> None:
    value: object = 1
    for _ in range(x.MAX_DEPTH + 2):
        value = [value]
    with pytest.raises(x.XmlRpcError, match="nested deeper") as info:
        x.parse_request(call("test", value))
    assert info.value.code == x.INVALID_PARAMS


def test_struct_without_names_is_refused() -> None:
    body = (
        b"<methodCall><methodName>m</methodName><params><param><value><struct><member>"
        b"<value><int>1</int></value></member></struct></value></param></params></methodCall>"
    )
    with pytest.raises(x.XmlRpcError, match="malformed <struct>"):
        x.parse_request(body)


def test_responses_and_faults_roundtrip() -> None:
    assert x.parse_response(x.dump_response({"a": [1, 2.5, None]})) == {"a": [1, 2.5, None]}
    with pytest.raises(xmlrpc.client.Fault) as info:
        x.parse_response(x.dump_fault(x.BUSY, "busy " * 1000))
    assert info.value.faultCode == x.BUSY
    assert len(info.value.faultString) <= 1000
    with pytest.raises(x.XmlRpcError):
        x.parse_response(call("m", 1))


def test_request_is_readable_by_the_stdlib() -> None:
    params, method = xmlrpc.client.loads(x.dump_request("notify", {"data": "d"}))
    assert (method, params) == ("notify", ({"data": "d"},))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_raise_only_the_protocol_error(data: bytes) -> None:
    with contextlib.suppress(x.XmlRpcError):
        x.parse_request(data)


_tag = st.sampled_from(
    [
        b"<methodCall>",
        b"</methodCall>",
        b"<methodName>m</methodName>",
        b"<params>",
        b"</params>",
        b"<param>",
        b"</param>",
        b"<value>",
        b"</value>",
        b"<struct>",
        b"</struct>",
        b"<member>",
        b"</member>",
        b"<name>k</name>",
        b"<array>",
        b"</array>",
        b"<data>",
        b"</data>",
        b"<int>1</int>",
        b"<i4>x</i4>",
        b"<boolean>2</boolean>",
        b"<double>z</double>",
        b"<base64>!!</base64>",
        b"<dateTime.iso8601>1</dateTime.iso8601>",
        b"<nil/>",
        b"<string>s</string>",
        b"<fault>",
        b"</fault>",
        b"&amp;",
        b"<!DOCTYPE a>",
        b"<bogus>",
    ]
)


@settings(max_examples=500, deadline=None)
@given(st.lists(_tag, max_size=40))
def test_arbitrary_tag_soup_raises_only_the_protocol_error(tags: list[bytes]) -> None:
    for parse in (x.parse_request, x.parse_response):
        with contextlib.suppress(x.XmlRpcError, xmlrpc.client.Fault):
            parse(b"".join(tags))


_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]))
_leaf = (
    st.integers(-(2**31), 2**31 - 1)
    | st.booleans()
    | _text
    | st.floats(allow_nan=False)
    | st.none()
)
_value = st.recursive(
    _leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="abcdefghij._", min_size=1, max_size=20), st.lists(_value, max_size=3))
def test_roundtrip(method: str, params: list[object]) -> None:
    parsed = x.parse_request(x.dump_request(method, *params))
    assert parsed == x.Call(method, tuple(params))
