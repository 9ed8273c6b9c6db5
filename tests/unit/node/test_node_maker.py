"""Pieces hashed as a file arrives (maker.PieceHasher): the same torrent as hashing after."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smartget.node.maker import PieceHasher, make_torrent, piece_length_for


@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(max_size=5000),
    piece_length=st.integers(1, 700),
    cuts=st.lists(st.integers(0, 5000), max_size=20),
)
def test_pieces_do_not_depend_on_how_the_stream_is_cut(
    data: bytes, piece_length: int, cuts: list[int]
) -> None:
    hasher = PieceHasher(piece_length)
    start = 0
    for cut in [*sorted(c for c in cuts if c <= len(data)), len(data)]:
        hasher.update(data[start:cut])
        start = max(start, cut)
    expected = [
        hashlib.sha1(data[i : i + piece_length]).digest() for i in range(0, len(data), piece_length)
    ]
    assert hasher.digests() == expected
    assert hasher.size == len(data)


def test_a_piece_length_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        PieceHasher(0)


@pytest.mark.parametrize("size", [1, 16383, 16384, 5 << 20, (5 << 20) + 17])
def test_a_torrent_from_pieces_hashed_on_arrival_is_the_torrent_hashed_after(
    tmp_path: Path, size: int
) -> None:
    path = tmp_path / "file.bin"
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    path.write_bytes(data)
    hasher = PieceHasher(piece_length_for(path.name, size))
    for i in range(0, size, 65536 + 7):  # arbitrary chunks, as a fetch gives them
        hasher.update(data[i : i + 65536 + 7])
    on_arrival = make_torrent(path, trackers=["http://t/announce"], hashed=hasher)
    after = make_torrent(path, trackers=["http://t/announce"])
    assert on_arrival.sha1 == after.sha1
    assert on_arrival.data == after.data
    # and they are what was used: pieces of other bytes of the same size make another
    liar = PieceHasher(hasher.piece_length)
    liar.update(b"\x01" * size)
    assert make_torrent(path, hashed=liar).sha1 != after.sha1


def test_pieces_that_do_not_fit_the_file_are_not_used(tmp_path: Path) -> None:
    """A hasher of other bytes (another try, a changed file) is ignored: hashed here."""
    path = tmp_path / "file.bin"
    path.write_bytes(b"a" * 100_000)
    wrong = PieceHasher(piece_length_for(path.name, 100_000))
    wrong.update(b"b" * 99_999)
    assert make_torrent(path, hashed=wrong).sha1 == make_torrent(path).sha1
