"""load_torrent is the node's parser of .torrent files fetched from anywhere: any bytes
give a torrent or TorrentError, never another exception (and never a crash in C++)."""

from __future__ import annotations

import pytest
from fastbencode import bencode
from hypothesis import given, settings
from hypothesis import strategies as st

from smartget.errors import TorrentError
from smartget.node.engine import MAX_TORRENT_BYTES, load_torrent

BENCODABLE = st.recursive(
    st.integers(-(2**40), 2**40) | st.binary(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from([b"info", b"name", b"length", b"piece length", b"pieces", b"files"])
            | st.binary(max_size=8),
            inner,
            max_size=5,
        )
    ),
    max_leaves=12,
)


def _check(data: bytes) -> None:
    try:
        ti = load_torrent(data)
    except TorrentError:
        return
    assert ti.num_pieces() >= 1
    assert len(ti.info_hashes().v1.to_bytes()) == 20


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes(data: bytes) -> None:
    _check(data)


@settings(max_examples=300, deadline=None)
@given(BENCODABLE)
def test_well_formed_bencode_of_any_shape(value: object) -> None:
    _check(bencode(value))


@settings(max_examples=100, deadline=None)
@given(
    name=st.binary(min_size=1, max_size=30),
    length=st.integers(-5, 2**45),
    piece_length=st.integers(-5, 2**25),
    pieces=st.binary(max_size=200),
)
def test_info_dicts_with_hostile_values(
    name: bytes, length: int, piece_length: int, pieces: bytes
) -> None:
    info = {b"name": name, b"length": length, b"piece length": piece_length, b"pieces": pieces}
    _check(bencode({b"info": info}))


def test_oversized_is_refused_before_parsing() -> None:
    with pytest.raises(TorrentError, match="larger than"):
        load_torrent(b"d" + b" " * MAX_TORRENT_BYTES)
