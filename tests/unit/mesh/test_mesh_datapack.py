"""The Datapack codec: framing, limits, file streaming, and property tests."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smartget.errors import DatapackError
from smartget.mesh.datapack import (
    Datapack,
    DatapackDecoder,
    FileChunk,
    FileFinished,
    FileStarted,
    PacketReceived,
    encode,
    encode_head,
)

SEED_EXAMPLE = (
    b"post shell msw/0.1\nfrom: test\nid: hmsy\nto: miku\nflag: 1a2b3c4d\nlength: 12\n\n"
    b"shutdown now"
)


def packets(events: list) -> list[Datapack]:
    return [e.datapack for e in events if isinstance(e, PacketReceived)]


def test_seed_example_decodes() -> None:
    [dp] = packets(DatapackDecoder().receive_data(SEED_EXAMPLE))
    assert (dp.method, dp.app, dp.version) == ("post", "shell", "msw/0.1")
    assert dp.head == {"from": "test", "id": "hmsy", "to": "miku", "flag": "1a2b3c4d"}
    assert dp.body == b"shutdown now"


def test_value_split_on_first_colon_space_only() -> None:
    dp = Datapack("post", "logger", {"note": "a: b: c", "empty": ""}, b"x")
    [back] = packets(DatapackDecoder().receive_data(encode(dp)))
    assert back.head == {"note": "a: b: c", "empty": ""}


def test_every_complete_packet_in_one_buffer_and_split_anywhere() -> None:
    dps = [Datapack("post", "a", {"flag": str(i)}, b"\n\n" * i) for i in range(5)]
    wire = b"".join(encode(dp) for dp in dps)
    assert [p.head["flag"] for p in packets(DatapackDecoder().receive_data(wire))] == list("01234")
    decoder = DatapackDecoder()
    got = []
    for byte in wire:
        got += packets(decoder.receive_data(bytes([byte])))
    assert [p.body for p in got] == [dp.body for dp in dps]
    assert decoder.buffered == 0


def test_file_is_streamed_not_buffered() -> None:
    head = Datapack("file", "logger", {"filename": "a.bin", "sha256": "0" * 64})
    wire = encode_head(head, 10) + b"0123456789" + encode(Datapack("post", "x", {}, b"after"))
    decoder = DatapackDecoder()
    events = decoder.receive_data(wire[:40]) + decoder.receive_data(wire[40:])
    assert isinstance(events[0], FileStarted)
    assert events[0].size == 10
    content = b"".join(e.data for e in events if isinstance(e, FileChunk))
    assert content == b"0123456789"
    kinds = [type(e) for e in events]
    assert kinds.index(FileFinished) < kinds.index(PacketReceived)
    assert packets(events)[0].body == b"after"


def test_empty_file() -> None:
    wire = encode_head(Datapack("file", "a", {}), 0) + encode(Datapack("post", "b"))
    kinds = [type(e) for e in DatapackDecoder().receive_data(wire)]
    assert kinds == [FileStarted, FileFinished, PacketReceived]


@pytest.mark.parametrize(
    "wire",
    [
        b"put a msw/0.1\nlength: 0\n\n",  # unknown method
        b"post a/b msw/0.1\nlength: 0\n\n",  # bad app name
        b"post a http/1.1\nlength: 0\n\n",  # bad version
        b"post a msw/0.1\n\n",  # no length
        b"post a msw/0.1\nlength: -1\n\n",
        b"post a msw/0.1\nlength: 1\nlength: 1\n\nx",
        b"post a msw/0.1\nto:miku\nlength: 0\n\n",  # no ": "
        b"post a msw/0.1\nto: mi\rku\nlength: 0\n\n",  # CR in a value
        b"post a msw/0.1\nto: \xff\nlength: 0\n\n",  # not UTF-8
        b"post a msw/0.1 extra\nlength: 0\n\n",
    ],
)
def test_malformed_raises_and_closes(wire: bytes) -> None:
    decoder = DatapackDecoder()
    with pytest.raises(DatapackError):
        decoder.receive_data(wire)
    with pytest.raises(DatapackError):  # closed: the same error again
        decoder.receive_data(b"post a msw/0.1\nlength: 0\n\n")


def test_limits() -> None:
    with pytest.raises(DatapackError, match="no end of head"):
        DatapackDecoder(max_head=64).receive_data(b"post a msw/0.1\nk: " + b"v" * 100)
    many = b"post a msw/0.1\n" + b"".join(b"k%d: v\n" % i for i in range(10)) + b"length: 0\n\n"
    with pytest.raises(DatapackError, match="header lines"):
        DatapackDecoder(max_headers=5).receive_data(many)
    with pytest.raises(DatapackError, match="over the limit"):
        DatapackDecoder(max_body=4).receive_data(b"post a msw/0.1\nlength: 5\n\n")
    with pytest.raises(DatapackError, match="over the limit"):
        DatapackDecoder(max_file=4).receive_data(b"file a msw/0.1\nlength: 5\n\n")


def test_encode_refuses_what_decode_would() -> None:
    with pytest.raises(DatapackError, match="CR or LF"):
        encode(Datapack("post", "a", {"to": "x\ny"}))
    with pytest.raises(DatapackError, match="reserved"):
        encode(Datapack("post", "a", {"length": "3"}))
    with pytest.raises(DatapackError, match="unknown method"):
        encode(Datapack("delete", "a"))
    with pytest.raises(DatapackError, match="encode_head"):
        encode(Datapack("file", "a"))


def test_reply_goes_back_to_sender_app_and_node() -> None:
    dp = Datapack("post", "shell", {"from": "test", "id": "hmsy", "flag": "1a2b3c4d"}, b"ls")
    reply = dp.reply(b"done", exit="0")
    assert (reply.method, reply.app) == ("reply", "test")
    assert reply.head == {"from": "shell", "exit": "0", "to": "hmsy", "re": "1a2b3c4d"}


_name = st.from_regex(r"[A-Za-z0-9_.\-]{1,20}", fullmatch=True)
_value = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=40
)
_packets = st.builds(
    Datapack,
    method=st.sampled_from(["post", "get", "reply"]),
    app=_name,
    head=st.dictionaries(_name.filter(lambda k: k != "length"), _value, max_size=8),
    body=st.binary(max_size=200),
)


@given(st.lists(_packets, max_size=5), st.integers(min_value=1, max_value=50))
def test_round_trip(dps: list[Datapack], chunk: int) -> None:
    wire = b"".join(encode(dp) for dp in dps)
    decoder = DatapackDecoder()
    got = []
    for i in range(0, len(wire), chunk):
        got += packets(decoder.receive_data(wire[i : i + chunk]))
    assert got == dps


@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_datapack_error(data: bytes) -> None:
    decoder = DatapackDecoder(max_head=128, max_body=64, max_file=64)
    with contextlib.suppress(DatapackError):
        decoder.receive_data(data)


@given(st.lists(st.binary(max_size=60), max_size=8))
def test_arbitrary_chunks_after_a_valid_head(chunks: list[bytes]) -> None:
    decoder = DatapackDecoder(max_head=128, max_body=64, max_file=64)
    try:
        decoder.receive_data(b"file a msw/0.1\nlength: 20\n\n")
        for chunk in chunks:
            decoder.receive_data(chunk)
    except DatapackError:
        pass
