from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smartget.dht import krpc
from smartget.errors import KRPCError

NID = b"\x01" * 20


def test_query_roundtrip() -> None:
    data = krpc.encode_query(b"aa", b"get_peers", {b"id": NID, b"info_hash": b"\x02" * 20})
    msg = krpc.decode(data)
    assert isinstance(msg, krpc.Query)
    assert (msg.tid, msg.method, msg.sender) == (b"aa", b"get_peers", NID)
    assert not msg.read_only


def test_read_only_flag_and_extra_keys_ignored() -> None:
    raw = b"d1:ad2:id20:" + NID + b"e1:q4:ping2:roi1e1:t2:xx1:v4:LT\x01\x021:y1:qe"
    msg = krpc.decode(raw)
    assert isinstance(msg, krpc.Query)
    assert msg.read_only


def test_response_carries_requester_ip() -> None:
    data = krpc.encode_response(b"t1", {b"id": NID}, ("127.0.1.5", 6881))
    msg = krpc.decode(data)
    assert isinstance(msg, krpc.Response)
    assert msg.requester_ip == ("127.0.1.5", 6881)


def test_error_roundtrip_with_extra_r() -> None:
    raw = b"d1:eli203e9:bad tokene1:rd2:id20:" + NID + b"e1:t1:x1:y1:ee"
    msg = krpc.decode(raw)
    assert isinstance(msg, krpc.Error)
    assert (msg.code, msg.message) == (203, "bad token")
    assert krpc.decode(krpc.encode_error(b"x", 204, "Method Unknown")) == krpc.Error(
        b"x", 204, "Method Unknown"
    )


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b"i01e", "not canonical"),
        (b"d1:ti1e1:y1:qe", "'t'"),
        (b"d1:t1:x1:y1:ze", "'y'"),
        (b"d1:ad2:id3:abce1:q4:ping1:t1:x1:y1:qe", "20-byte"),
        (b"d1:t1:x1:y1:qe", "method"),
        (b"le", "dict"),
        (b"d1:t1:x1:y1:qed", "not canonical"),
        (b"x" * (krpc.MAX_DATAGRAM + 1), "limit"),
    ],
)
def test_bad_messages_raise_krpc_error(raw: bytes, needle: str) -> None:
    with pytest.raises(KRPCError, match=needle) as info:
        krpc.decode(raw)
    assert info.value.code == 203


def test_compact_nodes_and_peers() -> None:
    record = NID + bytes([127, 0, 1, 9]) + (6881).to_bytes(2, "big")
    assert krpc.decode_nodes(record) == [(NID, ("127.0.1.9", 6881))]
    assert krpc.decode_peers([b"\x7f\x00\x01\x09\x1a\xe1", b"short"]) == [("127.0.1.9", 6881)]
    assert krpc.compact_addr(("127.0.1.9", 6881)) == b"\x7f\x00\x01\x09\x1a\xe1"
    with pytest.raises(KRPCError):
        krpc.decode_nodes(record[:-1])


@given(st.binary(max_size=3000))
def test_arbitrary_bytes_raise_only_krpc_error(data: bytes) -> None:
    with contextlib.suppress(KRPCError):
        krpc.decode(data)


_bvalue = st.recursive(
    st.integers() | st.binary(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.binary(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


_KEYS = st.sampled_from([b"t", b"y", b"q", b"a", b"r", b"e", b"ip", b"ro"])


@given(st.dictionaries(_KEYS, _bvalue))
def test_well_formed_bencode_of_any_shape_raises_only_krpc_error(msg: dict[bytes, object]) -> None:
    from fastbencode import bencode

    with contextlib.suppress(KRPCError):
        krpc.decode(bencode(msg))


_ID = st.binary(min_size=20, max_size=20)


@given(
    st.binary(min_size=1, max_size=64),
    _ID,
    st.binary(max_size=26 * 8),
    st.binary(max_size=20),
    st.lists(st.binary(min_size=6, max_size=6), max_size=5),
    st.none() | st.binary(min_size=6, max_size=6),
)
def test_reply_written_as_bytes_is_what_bencode_writes(
    tid: bytes, myid: bytes, nodes: bytes, token: bytes, values: list[bytes], ip: bytes | None
) -> None:
    from fastbencode import bencode

    body = krpc.get_peers_body(myid, nodes, token, values)
    r: dict[bytes, object] = {b"id": myid, b"nodes": nodes, b"token": token}
    if values:
        r[b"values"] = values
    assert body == bencode(r)
    msg: dict[bytes, object] = {b"t": tid, b"y": b"r", b"r": r}
    if ip is not None:
        msg[b"ip"] = ip
    assert krpc.encode_reply(tid, body, ip) == bencode(msg)


def test_decode_and_the_hot_path_helpers_agree() -> None:
    data = krpc.encode_query(b"q1", b"get_peers", {b"id": NID, b"info_hash": NID}, read_only=True)
    msg = krpc.bdecode(data)
    assert krpc.envelope(msg) == (b"q1", b"q")
    assert krpc.Query(b"q1", *krpc.query_fields(msg)) == krpc.decode(data)
    with pytest.raises(KRPCError, match="'y'"):
        krpc.envelope({b"t": b"x", b"y": b"z"})
    with pytest.raises(KRPCError, match="id must be"):
        krpc.query_fields({b"q": b"ping", b"a": {b"id": b"short"}})
