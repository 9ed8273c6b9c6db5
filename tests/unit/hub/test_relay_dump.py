"""co2 satellite dumps: round trip, the shapes co2-style writers use, hostile bytes."""

from __future__ import annotations

import contextlib
import xmlrpc.client

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smartget.errors import RelayError
from smartget.hub.relay.core import Satellite
from smartget.hub.relay.dump import dump_satellites, load_satellites_dump


def _sat(port: int) -> Satellite:
    sat = Satellite("10.0.0.7", port, f"nick{port}", ["chat"], f"pass{port}", 1_700_000_000.0)
    sat.send_count = 3
    return sat


def test_a_dump_round_trips_what_re_registration_needs() -> None:
    loaded = load_satellites_dump(dump_satellites([_sat(9001), _sat(9002)]))
    assert [(s.ip, s.port, s.nick, s.plugins, s.notify_pass) for s in loaded] == [
        ("10.0.0.7", 9001, "nick9001", ["chat"], "pass9001"),
        ("10.0.0.7", 9002, "nick9002", ["chat"], "pass9002"),
    ]
    assert loaded[0].ctime == 1_700_000_000.0
    assert loaded[0].send_count == 3


def test_co2_style_dumps_are_read() -> None:
    """xmlrpclib.dumps of a struct keyed by host_id, without a method name."""
    text = xmlrpc.client.dumps(
        ({"10.0.0.8:7000": {"nick": "a", "plugins": [], "notify_pass": "s"}},)
    )
    (sat,) = load_satellites_dump(text.encode())
    assert (sat.ip, sat.port, sat.nick, sat.notify_pass) == ("10.0.0.8", 7000, "a", "s")
    response = xmlrpc.client.dumps(([{"addr": ["10.0.0.9", 7001]}],), methodresponse=True)
    (sat,) = load_satellites_dump(response.encode())
    assert (sat.host_id, sat.nick) == ("10.0.0.9:7001", "10.0.0.9:7001")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ([{"nick": "no address"}], "satellite #1: no addr"),
        ([{"addr": ["10.0.0.1", 0]}], "port must be from 1 to 65535"),
        ([{"addr": ["10.0.0.1", 80], "plugins": "x"}], "plugins must be a list"),
        ("text", "must be a list or a struct"),
    ],
)
def test_a_bad_dump_says_what_and_where(value: object, reason: str) -> None:
    with pytest.raises(RelayError, match=reason):
        load_satellites_dump(xmlrpc.client.dumps((value,), "x").encode())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_relay_errors(data: bytes) -> None:
    with contextlib.suppress(RelayError):
        load_satellites_dump(data)


_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**31), 2**31 - 1) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(_values)
def test_any_xmlrpc_value_gives_satellites_or_a_relay_error(value: object) -> None:
    data = xmlrpc.client.dumps((value,), "x", allow_none=True).encode()
    with contextlib.suppress(RelayError):
        for sat in load_satellites_dump(data):
            assert 0 < sat.port <= 65535
