"""Striped pushes, the pure half (node/prefetch.py): stripes, arguments, what a prefetch
left; the torrent from digests (node/maker.py); Content-Range (node/fetcher.py)."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smartget.errors import TaskError, TorrentError
from smartget.node.fetcher import parse_content_range
from smartget.node.maker import PieceHasher, make_torrent, piece_length_for, torrent_from_digests
from smartget.node.prefetch import (
    MAX_PIECES,
    MAX_STRIPES,
    PieceFeeder,
    PieceMismatchError,
    Stripe,
    StripeTable,
    parse_digests,
    parse_have,
    parse_stripe,
    stripe_pieces,
    unsourced_runs,
)
from smartget.node.tasks import MAX_DIGESTS_TASK_BYTES, MAX_TASK_BYTES, parse_task

# ---- stripes ------------------------------------------------------------------------


@given(
    size=st.integers(1, 1 << 44),
    piece_length=st.sampled_from([1 << k for k in range(14, 25)]),
    stripes=st.integers(1, 300),
)
def test_stripes_tile_the_pieces_without_gap_or_overlap(
    size: int, piece_length: int, stripes: int
) -> None:
    count = -(-size // piece_length)
    runs = [stripe_pieces(size, piece_length, s, stripes) for s in range(stripes)]
    assert runs[0][0] == 0
    assert runs[-1][1] == count
    for (_, end), (first, _) in itertools.pairwise(runs):
        assert end == first  # each starts where the one before ended
    lengths = [end - first for first, end in runs]
    assert min(lengths) >= 0
    assert max(lengths) - min(lengths) <= 1  # as even as whole pieces allow


def test_fewer_pieces_than_stripes_gives_empty_stripes() -> None:
    runs = [stripe_pieces(3 * 16384, 16384, s, 5) for s in range(5)]
    assert runs == [(0, 0), (0, 1), (1, 1), (1, 2), (2, 3)]


@pytest.mark.parametrize(
    ("size", "piece_length", "stripe", "stripes"),
    [(-1, 16384, 0, 1), (10, 0, 0, 1), (10, 16384, 1, 1), (10, 16384, -1, 2), (10, 16384, 0, 0)],
)
def test_stripe_pieces_refuses_impossible_stripes(
    size: int, piece_length: int, stripe: int, stripes: int
) -> None:
    with pytest.raises(ValueError, match="no stripe"):
        stripe_pieces(size, piece_length, stripe, stripes)


# ---- arguments ----------------------------------------------------------------------


def test_stripe_args() -> None:
    assert parse_stripe({"stripe": 0, "stripes": 1}) == (0, 1)
    assert parse_stripe({"stripe": "2", "stripes": "3"}) == (2, 3)
    assert parse_stripe({"stripe": 99_999, "stripes": MAX_STRIPES}) == (99_999, MAX_STRIPES)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ({"stripes": 2}, "args.stripe must be a whole number from 0 to 100000, got missing"),
        ({"stripe": 0}, "args.stripes must be a whole number from 1 to 100000, got missing"),
        ({"stripe": 2, "stripes": 2}, r"args.stripe must be below args.stripes \(2\), got 2"),
        ({"stripe": 0, "stripes": 0}, "args.stripes must be from 1 to 100000, got 0"),
        ({"stripe": 0, "stripes": MAX_STRIPES + 1}, "from 1 to 100000, got 100001"),
        ({"stripe": True, "stripes": 2}, "args.stripe must be a whole number .* got bool"),
        ({"stripe": 1.0, "stripes": 2}, "got float"),
        ({"stripe": "-1", "stripes": 2}, "got str '-1'"),
        ({"stripe": 0, "stripes": "\u00b2"}, "got str '\u00b2'"),  # isdigit, not int()'s
    ],
)
def test_bad_stripe_args(args: dict[str, Any], match: str) -> None:
    with pytest.raises(TaskError, match=match):
        parse_stripe(args)


def test_have() -> None:
    assert parse_have(None) is None
    assert parse_have("") is None
    assert parse_have([2, 5], 5) == range(2, 5)
    assert parse_have(["0", "0"], 5) == range(0)
    for bad, match in [
        ([1], r"\[first, end\]"),
        ("1-2", r"\[first, end\]"),
        ([3, 2], "first <= end"),
        ([0, 6], "from 0 to 5, got 6"),
        ([0, None], "got missing"),
    ]:
        with pytest.raises(TaskError, match=match):
            parse_have(bad, 5)


def _digest_args(size: int, piece_length: int, **extra: Any) -> dict[str, Any]:
    count = -(-size // piece_length)
    pieces = "".join(hashlib.sha1(bytes([i % 256])).hexdigest() for i in range(count))
    return {"pieces": pieces, "filesize": size, "piece_length": piece_length} | extra


def test_digests() -> None:
    assert parse_digests({}) is None
    assert parse_digests({"pieces": ""}) is None
    got = parse_digests(_digest_args(100_000, 16384, have=[1, 3]))
    assert got is not None
    assert (got.size, got.piece_length, got.count, got.have) == (100_000, 16384, 7, range(1, 3))
    assert got.digests[:20] == hashlib.sha1(b"\x00").digest()
    assert parse_digests(_digest_args(1, 16384)) is not None  # have is optional


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (_digest_args(100_000, 16384) | {"pieces": 7}, "args.pieces must be a hex string"),
        (_digest_args(100_000, 16384) | {"filesize": 100_000 + 16384}, "must be 8 SHA-1"),
        (_digest_args(100_000, 16384) | {"filesize": 0}, "args.filesize must be from 1"),
        (_digest_args(100_000, 16384) | {"piece_length": None}, "args.piece_length must be"),
        (_digest_args(100_000, 16384) | {"pieces": "zz" * 140}, "hex digits only"),
        (_digest_args(100_000, 16384) | {"pieces": " " * 280}, "hex digits only"),
        (_digest_args(100_000, 16384, have=[0, 8]), "args.have must be from 0 to 7, got 8"),
        ({"pieces": "00", "filesize": (MAX_PIECES + 1) * 16384, "piece_length": 16384},
         "more than 1000000"),
    ],
)  # fmt: skip
def test_bad_digests(args: dict[str, Any], match: str) -> None:
    with pytest.raises(TaskError, match=match):
        parse_digests(args)


@settings(max_examples=300)
@given(
    args=st.dictionaries(
        st.sampled_from(["pieces", "filesize", "piece_length", "have", "stripe", "stripes"]),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(-5, 1 << 62),
            st.floats(allow_nan=True),
            st.text(max_size=50),
            st.text(alphabet="0123456789abcdef", min_size=40, max_size=120),
            st.lists(st.one_of(st.integers(-3, 10), st.text(max_size=3)), max_size=3),
        ),
    )
)
def test_arbitrary_args_raise_only_task_error(args: dict[str, Any]) -> None:
    for parse in (parse_digests, parse_stripe, lambda a: parse_have(a.get("have"), 10)):
        with contextlib.suppress(TaskError):
            parse(args)


def test_prefetch_is_an_event_and_maketorrent_may_be_larger() -> None:
    task = parse_task(
        json.dumps({"args": {"fileurl": "http://o/a", "stripe": 0, "stripes": 2}}),
        0.0,
        event="prefetch",
    )
    assert task.event == "prefetch"
    # 64 GiB in 4 MiB pieces: 16,384 digests fit the usual limit.
    big = json.dumps({"event": "maketorrent", "args": _digest_args(64 << 30, 4 << 20)})
    assert len(big) < MAX_TASK_BYTES
    assert parse_task(big, 0.0, event="maketorrent").args["filesize"] == 64 << 30
    # 512 GiB in 8 MiB pieces (65,536) do not; the /maketorrent route lets them through.
    bigger = json.dumps({"event": "maketorrent", "args": _digest_args(512 << 30, 8 << 20)})
    with pytest.raises(TaskError, match="larger than"):
        parse_task(bigger, 0.0, event="maketorrent")
    task = parse_task(bigger, 0.0, event="maketorrent", max_bytes=MAX_DIGESTS_TASK_BYTES)
    assert parse_digests(task.args) is not None
    # The largest digests allowed fit that route's limit.
    assert 40 * MAX_PIECES + 4096 < MAX_DIGESTS_TASK_BYTES


# ---- what a prefetch left -----------------------------------------------------------


def _stripe(first: int = 2, end: int = 5) -> Stripe:
    digests = b"".join(hashlib.sha1(bytes([i])).digest() for i in range(first, end))
    return Stripe("http://o/f", 100_000, 16384, first, end, digests)


def _hashes(index: int) -> bytes:
    return hashlib.sha1(bytes([index])).digest()


def test_a_stripe_covers_its_own_pieces_of_the_same_layout_only() -> None:
    stripe = _stripe()
    assert stripe.covers(range(2, 5), 100_000, 16384, _hashes)
    assert stripe.covers(range(3, 4), 100_000, 16384, _hashes)
    assert not stripe.covers(range(1, 5), 100_000, 16384, _hashes)  # outside it
    assert not stripe.covers(range(2, 6), 100_000, 16384, _hashes)
    assert not stripe.covers(range(2, 5), 100_001, 16384, _hashes)  # another size
    assert not stripe.covers(range(2, 5), 100_000, 32768, _hashes)  # other pieces
    assert not stripe.covers(range(2, 5), 100_000, 16384, lambda i: _hashes(i + 1))


def test_the_stripe_table_is_bounded_and_forgets_what_is_removed() -> None:
    table = StripeTable(limit=3)
    for name in ("a", "b", "c"):
        table.put(f"/w/{name}", _stripe())
    table.put("/w/a", _stripe())  # used again: now the newest
    table.put("/w/d/e", _stripe())
    assert len(table) == 3
    assert table.get("/w/b") is None  # the oldest went
    assert table.get("/w/a") is not None
    table.forget("/w/d")  # a directory, and what is below it
    assert table.get("/w/d/e") is None
    table.forget("/w/c")
    assert table.get("/w/c") is None
    assert len(table) == 1


# ---- the torrent from digests -------------------------------------------------------


@pytest.mark.parametrize("size", [1, 16384, 100_000, 5 << 20, (5 << 20) + 17])
def test_the_torrent_from_digests_is_the_torrent_of_the_file(tmp_path: Path, size: int) -> None:
    path = tmp_path / "file.bin"
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    path.write_bytes(data)
    piece_length = piece_length_for(path.name, size)
    hasher = PieceHasher(piece_length)
    hasher.update(data)
    trackers, seeds = ["http://t/announce"], ["http://o/file.bin"]
    made = make_torrent(path, trackers=trackers, web_seeds=seeds)
    joined = b"".join(hasher.digests())
    from_digests = torrent_from_digests(
        path.name, size, piece_length, joined, trackers=trackers, web_seeds=seeds
    )
    assert from_digests.sha1 == made.sha1
    assert from_digests.size == size
    assert b"url-list" in from_digests.data
    assert b"http://t/announce" in from_digests.data


def test_digests_of_another_layout_are_refused() -> None:
    size, piece_length = 100_000, piece_length_for("f", 100_000)
    digests = b"\x01" * 20 * 7
    with pytest.raises(TorrentError, match="pieces of 16384 bytes, not 32768"):
        torrent_from_digests("f", size, 32768, digests[:80])
    with pytest.raises(TorrentError, match="has 7 pieces; got 6 digests"):
        torrent_from_digests("f", size, piece_length, digests[:-20])
    with pytest.raises(TorrentError, match="from its digests"):  # libtorrent: "missing"
        torrent_from_digests("f", size, piece_length, bytes(20) * 7)
    assert torrent_from_digests("f", size, piece_length, digests).size == size


# ---- Content-Range ------------------------------------------------------------------


def test_content_range() -> None:
    assert parse_content_range("bytes 0-99/1000") == (0, 99, 1000)
    assert parse_content_range(" bytes 5-5/* ") == (5, 5, None)
    for bad in ("", "bytes 0-99", "bytes */1000", "bytes 9-3/10", "bytes 0-10/10", "items 0-1/2"):
        assert parse_content_range(bad) is None


@given(st.text(max_size=60))
def test_content_range_of_arbitrary_text_is_a_range_or_none(text: str) -> None:
    got = parse_content_range(text)
    assert got is None or got[0] <= got[1]


@given(first=st.integers(0, 1 << 50), length=st.integers(1, 1 << 30), extra=st.integers(0, 9))
def test_content_range_round_trips(first: int, length: int, extra: int) -> None:
    last, total = first + length - 1, first + length + extra
    assert parse_content_range(f"bytes {first}-{last}/{total}") == (first, last, total)


# ---- a pipelined push's stripe, cut into pieces as it arrives ---------------------------


@settings(max_examples=200)
@given(
    size=st.integers(1, 5000),
    piece_length=st.sampled_from([16, 64, 1000]),
    stripe=st.integers(0, 3),
    cuts=st.lists(st.integers(0, 5000), max_size=20),
)
def test_the_feeder_hands_on_each_piece_whole_and_checked_however_the_bytes_come(
    size: int, piece_length: int, stripe: int, cuts: list[int]
) -> None:
    data = bytes((i * 7 + 3) % 251 for i in range(size))
    hasher = PieceHasher(piece_length)
    hasher.update(data)
    digests = hasher.digests()
    first, end = stripe_pieces(size, piece_length, stripe, 4)
    start, stop = first * piece_length, min(end * piece_length, size)
    got: list[tuple[int, bytes]] = []
    feeder = PieceFeeder(
        first, end, piece_length, size, digests.__getitem__, lambda i, b: got.append((i, b))
    )
    body = data[start:stop]
    at = 0
    for cut in [*sorted(c % (len(body) + 1) for c in cuts), len(body)]:
        feeder.update(body[at:cut])
        at = cut
    assert got == [(i, data[i * piece_length : (i + 1) * piece_length]) for i in range(first, end)]
    assert feeder.done
    assert feeder.delivered == stop - start


def test_the_feeder_refuses_bytes_that_are_not_the_torrents() -> None:
    data = bytes(range(256)) * 4
    hasher = PieceHasher(256)
    hasher.update(data)
    got: list[int] = []
    feeder = PieceFeeder(0, 4, 256, 1024, hasher.digests().__getitem__, lambda i, b: got.append(i))
    spoiled = data[:300] + b"x" + data[301:]
    with pytest.raises(PieceMismatchError, match="piece 1 from the origin is not the torrent's"):
        feeder.update(spoiled)
    assert got == [0]  # nothing of the bad piece went on
    whole = PieceFeeder(0, 1, 256, 1024, hasher.digests().__getitem__, lambda i, b: None)
    with pytest.raises(TorrentError, match="more bytes than pieces 0 to 0 hold"):
        whole.update(data[:257])
    with pytest.raises(ValueError, match="no pieces"):
        PieceFeeder(0, 5, 256, 1024, hasher.digests().__getitem__, lambda i, b: None)


def test_unsourced_runs_are_the_pieces_nobody_has_yet() -> None:
    have = [True, False, False, False, True, False, False, False]
    peers = [0, 0, 2, 0, 0, 0, 0, 0]
    assert unsourced_runs(have, peers) == [range(1, 2), range(3, 4), range(5, 8)]
    assert unsourced_runs([True] * 3, [0] * 3) == []
    assert unsourced_runs([False] * 3, [0] * 3) == [range(3)]
    assert unsourced_runs([], []) == []


@given(have=st.lists(st.booleans(), max_size=60), seed=st.integers(0, 5))
def test_unsourced_runs_cover_exactly_the_unsourced_pieces(have: list[bool], seed: int) -> None:
    peers = [(i * 7 + seed) % 3 for i in range(len(have))]
    runs = unsourced_runs(have, peers)
    covered = [i for r in runs for i in r]
    assert covered == [i for i, h in enumerate(have) if not h and peers[i] == 0]
    assert all(len(r) > 0 for r in runs)
    assert all(a.stop < b.start for a, b in itertools.pairwise(runs))  # apart, in order
