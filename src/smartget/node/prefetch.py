"""Striped pushes, the node's pure half: stripes, their arguments, what a prefetch left.

Theory of operation
-------------------
In a striped push every node of the job fetches its own *stripe* of the file from the
origin at once (task ``prefetch``): a contiguous run of pieces, ``first`` to ``end - 1``
of the ``P`` pieces libtorrent would lay the file out in. Stripe ``s`` of ``n`` is
pieces ``s * P // n`` up to ``(s + 1) * P // n``, so the ``n`` stripes tile ``[0, P)``
with no gap and no overlap, and each starts on a piece boundary (its pieces are hashed
as they arrive). The node answers the SHA-1 of each piece; the hub joins every node's
digests and asks one node to make the torrent from them (``maketorrent`` with
``args.pieces``: no fetch, no hashing); then every node downloads that torrent with its
stripe marked as had (``args.have``), and the nodes trade the rest. The origin sends
each byte once.

A node marks pieces as had only if it fetched them itself and they are the torrent's:
:class:`StripeTable` remembers the last prefetches (data path -> :class:`Stripe`), and
:meth:`Stripe.covers` checks a torrent's layout and piece hashes against it. Anything
else is added plainly, and libtorrent checks whatever is on disk.

Pipelined pushes: where the origin publishes the file's torrent (``<file>.torrent``, as
``smartget.origin`` does), the digests are known before any data moves. The seed makes
the torrent from them at once (``maketorrent`` with ``args.origin_torrent``), and every
node downloads it while it fetches its own stripe (``args.stripe`` of ``args.stripes``)
from the origin: :class:`PieceFeeder` cuts the bytes of that one ranged GET into pieces
as they arrive, checks each against the torrent's SHA-1 and hands it to libtorrent,
which offers it to the peers at once. So trading overlaps the origin's sending, rather
than waiting for every stripe. Stripes do not arrive evenly (a node whose download is
busy with peers gets its stripe slower), so a node done with its stripe helps: it
fetches the second part of the longest run of pieces that neither it nor any of its
peers has (:func:`unsourced_runs`), from a random point in it. Stripes are fetched in
segments of a few pieces, one ranged GET each, and whoever comes to a segment that is
had or that a peer has stops there: the origin's link stays busy to the end, and sends
little twice (at most a segment where two fetches meet; a long GET abandoned midway
would waste what the origin's socket buffers already held).

No I/O here: the agent (:mod:`smartget.node.agent`) fetches, writes and adds.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from smartget.errors import TaskError, TorrentError

__all__ = [
    "DIGEST_SIZE",
    "MAX_PIECES",
    "MAX_STRIPES",
    "Digests",
    "PieceFeeder",
    "PieceMismatchError",
    "Stripe",
    "StripeTable",
    "parse_digests",
    "parse_have",
    "parse_stripe",
    "stripe_pieces",
    "unsourced_runs",
]

DIGEST_SIZE = 20  # SHA-1, BEP 3's pieces
MAX_STRIPES = 100_000
# args.pieces of a maketorrent: 15 TiB in libtorrent's largest pieces (16 MiB), 40 MB of hex.
MAX_PIECES = 1_000_000
MAX_PIECE_LENGTH = 1 << 30
MAX_FILE_SIZE = 1 << 60
STRIPES_KEPT = 256  # prefetches a node remembers (the oldest is forgotten)


def stripe_pieces(size: int, piece_length: int, stripe: int, stripes: int) -> tuple[int, int]:
    """Pieces ``[first, end)`` of stripe ``stripe`` of ``stripes`` of a ``size``-byte file.

    Empty when the file has fewer pieces than there are stripes and this one gets none.
    """
    if size < 0 or piece_length <= 0 or not 0 <= stripe < stripes:
        raise ValueError(f"no stripe {stripe} of {stripes} of {size} bytes in {piece_length}")
    count = -(-size // piece_length)
    return stripe * count // stripes, (stripe + 1) * count // stripes


def _whole(args: Mapping[str, Any], name: str, low: int, high: int) -> int:
    """``args[name]``: a whole number (or its decimal string) from ``low`` to ``high``."""
    value = args.get(name)
    if isinstance(value, str) and value.isascii() and value.strip().isdigit() and len(value) < 20:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        shown = "missing" if value is None else f"{type(value).__name__} {str(value)[:32]!r}"
        raise TaskError(f"args.{name} must be a whole number from {low} to {high}, got {shown}")
    if not low <= value <= high:
        raise TaskError(f"args.{name} must be from {low} to {high}, got {value}")
    return value


def parse_stripe(args: Mapping[str, Any]) -> tuple[int, int]:
    """A prefetch's ``(stripe, stripes)``: 0 <= stripe < stripes <= :data:`MAX_STRIPES`."""
    stripes = _whole(args, "stripes", 1, MAX_STRIPES)
    stripe = _whole(args, "stripe", 0, MAX_STRIPES)
    if stripe >= stripes:
        raise TaskError(f"args.stripe must be below args.stripes ({stripes}), got {stripe}")
    return stripe, stripes


def parse_have(value: Any, count: int = MAX_PIECES) -> range | None:
    """``args.have``: ``[first, end]``, pieces first..end-1 (of ``count``); None if absent."""
    if value is None or value == "":
        return None
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise TaskError(f"args.have must be [first, end] (piece indexes), got {str(value)[:64]}")
    first = _whole({"have": value[0]}, "have", 0, count)
    end = _whole({"have": value[1]}, "have", 0, count)
    if first > end:
        raise TaskError(f"args.have is [first, end] with first <= end, got [{first}, {end}]")
    return range(first, end)


@dataclass(frozen=True)
class Digests:
    """A maketorrent's pieces, from the stripes of a striped push."""

    size: int  # args.filesize
    piece_length: int  # args.piece_length
    digests: bytes  # args.pieces: DIGEST_SIZE bytes per piece, every piece in order
    have: range | None  # args.have: the pieces this node fetched itself

    @property
    def count(self) -> int:
        return len(self.digests) // DIGEST_SIZE


def parse_digests(args: Mapping[str, Any]) -> Digests | None:
    """``args.pieces`` (hex), ``piece_length``, ``filesize``, ``have`` of a maketorrent;
    None without ``args.pieces`` (a maketorrent that fetches and hashes)."""
    text = args.get("pieces")
    if text is None or text == "":
        return None
    if not isinstance(text, str):
        raise TaskError(f"args.pieces must be a hex string, got {type(text).__name__}")
    size = _whole(args, "filesize", 1, MAX_FILE_SIZE)
    piece_length = _whole(args, "piece_length", 1, MAX_PIECE_LENGTH)
    count = -(-size // piece_length)
    if count > MAX_PIECES:
        raise TaskError(f"{size} bytes in pieces of {piece_length} is more than {MAX_PIECES}")
    if len(text) != 2 * DIGEST_SIZE * count:
        raise TaskError(
            f"args.pieces must be {count} SHA-1 digests ({2 * DIGEST_SIZE * count} hex "
            f"characters) for {size} bytes in pieces of {piece_length}, got {len(text)} characters"
        )
    try:
        digests = bytes.fromhex(text)
    except ValueError:
        raise TaskError("args.pieces must hold hex digits only") from None
    if len(digests) != DIGEST_SIZE * count:  # fromhex skips whitespace
        raise TaskError("args.pieces must hold hex digits only")
    return Digests(size, piece_length, digests, parse_have(args.get("have"), count))


@dataclass(frozen=True)
class Stripe:
    """What a prefetch left on disk: pieces first..end-1 of the file at ``fileurl``."""

    fileurl: str
    size: int
    piece_length: int
    first: int
    end: int
    digests: bytes  # DIGEST_SIZE bytes per piece, first..end-1

    def covers(
        self, have: range, size: int, piece_length: int, piece_hash: Callable[[int], bytes]
    ) -> bool:
        """Whether pieces ``have`` of a torrent (its size, piece length and hashes) are
        the bytes this prefetch wrote: the same layout, within the stripe, the same SHA-1."""
        if (size, piece_length) != (self.size, self.piece_length):
            return False
        if have.step != 1 or have.start < self.first or have.stop > self.end:
            return False
        for index in have:
            at = (index - self.first) * DIGEST_SIZE
            if piece_hash(index) != self.digests[at : at + DIGEST_SIZE]:
                return False
        return True


class StripeTable:
    """The last :data:`STRIPES_KEPT` prefetches, by data path (bounded: oldest dropped)."""

    def __init__(self, limit: int = STRIPES_KEPT) -> None:
        self.limit = limit
        self._stripes: OrderedDict[str, Stripe] = OrderedDict()

    def __len__(self) -> int:
        return len(self._stripes)

    def put(self, path: str, stripe: Stripe) -> None:
        self._stripes[path] = stripe
        self._stripes.move_to_end(path)
        while len(self._stripes) > self.limit:
            self._stripes.popitem(last=False)

    def get(self, path: str) -> Stripe | None:
        return self._stripes.get(path)

    def forget(self, path: str) -> None:
        """``path`` was removed (a file, or a directory and all below it)."""
        below = path.rstrip("/") + "/"
        for key in [k for k in self._stripes if k == path or k.startswith(below)]:
            del self._stripes[key]


class PieceMismatchError(TorrentError):
    """The origin's bytes of a piece are not the torrent's: the file is not the one hashed."""


class PieceFeeder:
    """Cuts a stripe's bytes, fetched in order, into pieces ``first..end-1`` of a file of
    ``size`` bytes; checks each against ``piece_hash(index)`` and calls
    ``deliver(index, data)``. A fetcher's tee: it runs in the fetcher's writer thread.

    A piece whose SHA-1 differs raises :class:`PieceMismatchError` (nothing of it is
    delivered); bytes past the stripe raise too."""

    def __init__(
        self,
        first: int,
        end: int,
        piece_length: int,
        size: int,
        piece_hash: Callable[[int], bytes],
        deliver: Callable[[int, bytes], None],
    ) -> None:
        if piece_length <= 0 or not 0 <= first <= end or (end - 1) * piece_length >= size > 0:
            raise ValueError(f"no pieces [{first}, {end}) of {size} bytes in {piece_length}")
        self.first, self.end = first, end
        self.piece_length, self.size = piece_length, size
        self.piece_hash, self.deliver = piece_hash, deliver
        self.next = first  # the piece the next bytes belong to
        self.delivered = 0  # bytes handed on
        self._partial = bytearray()

    def _length(self, index: int) -> int:
        return min(self.piece_length, self.size - index * self.piece_length)

    @property
    def done(self) -> bool:
        return self.next >= self.end

    def update(self, data: bytes) -> None:
        view, at = memoryview(data), 0
        while self.next < self.end:
            need = self._length(self.next) - len(self._partial)
            if len(view) - at < need:
                break
            if self._partial:
                piece = bytes(self._partial) + bytes(view[at : at + need])
                self._partial = bytearray()
            else:
                piece = bytes(view[at : at + need])
            at += need
            if hashlib.sha1(piece).digest() != self.piece_hash(self.next):
                raise PieceMismatchError(
                    f"piece {self.next} from the origin is not the torrent's (SHA-1 differs): "
                    "the file changed since its torrent was made"
                )
            self.deliver(self.next, piece)
            self.delivered += len(piece)
            self.next += 1
        if at < len(view):
            if self.next >= self.end:
                raise TorrentError(f"more bytes than pieces {self.first} to {self.end - 1} hold")
            self._partial += view[at:]


def unsourced_runs(have: Sequence[bool], availability: Sequence[int]) -> list[range]:
    """Runs of pieces that this node does not have and no peer has (still to come from
    the origin), in order."""
    runs: list[range] = []
    start = -1
    for index, (had, peers) in enumerate(zip(have, availability, strict=False)):
        if not had and peers == 0:
            if start < 0:
                start = index
        elif start >= 0:
            runs.append(range(start, index))
            start = -1
    if start >= 0:
        runs.append(range(start, min(len(have), len(availability))))
    return runs
