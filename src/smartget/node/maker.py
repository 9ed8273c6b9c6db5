"""Making a v1-only torrent with libtorrent (seed 003, maketorrent).

v1 only: Debian's aria2 and Transmission cannot use v2 or hybrid torrents (DESIGN.md).
``lt.create_torrent`` lays out the torrent; the pieces are hashed by
``lt.set_piece_hashes`` (libtorrent's own threads). That hashes on one core only (the
Python binding cannot pass it ``hashing_threads``), which is 60% of ``mktorrent``'s
speed on two cores; so a single file of :data:`PARALLEL_MIN` or more is hashed with one
thread per core instead (``os.pread`` + ``hashlib.sha1``, both release the GIL; OpenSSL's
SHA-1 is as fast as libtorrent's) and the digests handed to ``create_torrent.set_hash``.
Call :func:`make_torrent` through ``asyncio.to_thread``: it blocks.

A file the node fetches is hashed as it arrives (:class:`PieceHasher`, fed by the
fetcher's writer thread, pieces laid out by :func:`piece_length_for` as libtorrent
would), so making its torrent reads nothing again: for a large file that is a whole
pass over the disk saved, and the seed starts sharing sooner.

A striped push (:mod:`smartget.node.prefetch`) hashes the file on many nodes, a stripe
each; :func:`torrent_from_digests` makes the torrent from their digests alone, with the
same builder as :func:`make_torrent`, so the info-hash is the same as hashing the file.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libtorrent as lt

from smartget import __version__
from smartget.errors import TorrentError

__all__ = [
    "PARALLEL_MIN",
    "MadeTorrent",
    "PieceHasher",
    "make_torrent",
    "piece_length_for",
    "torrent_from_digests",
    "write_atomic",
]

PARALLEL_MIN = 32 << 20


@dataclass(frozen=True)
class MadeTorrent:
    data: bytes  # the bencoded .torrent
    sha1: str  # v1 info-hash, hex
    size: int


class PieceHasher:
    """SHA-1 of each ``piece_length`` bytes of a stream (BEP 3 pieces), fed in order."""

    def __init__(self, piece_length: int) -> None:
        if piece_length <= 0:
            raise ValueError("piece_length must be positive")
        self.piece_length = piece_length
        self.size = 0
        self._digests: list[bytes] = []
        self._piece = hashlib.sha1()
        self._filled = 0  # bytes in the current piece

    def update(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        self.size += len(view)
        while view:
            take = min(len(view), self.piece_length - self._filled)
            self._piece.update(view[:take])
            self._filled += take
            view = view[take:]
            if self._filled == self.piece_length:
                self._digests.append(self._piece.digest())
                self._piece, self._filled = hashlib.sha1(), 0

    def digests(self) -> list[bytes]:
        """Every piece's digest, the last (short) one included; call once fed."""
        return self._digests + ([self._piece.digest()] if self._filled else [])


def piece_length_for(name: str, size: int) -> int:
    """The piece length libtorrent picks for one file of ``size`` bytes (v1)."""
    files = [lt.create_file_entry(name, size)]
    return int(lt.create_torrent(files, 0, lt.create_torrent.v1_only).piece_length())


def make_torrent(
    path: Path,
    *,
    trackers: list[str] | tuple[str, ...] = (),
    web_seeds: list[str] | tuple[str, ...] = (),
    piece_size: int = 0,
    hashed: PieceHasher | None = None,
) -> MadeTorrent:
    """Hash ``path`` (a file or a directory) into a v1 torrent; blocking.

    ``hashed``: the file's pieces, hashed as it was written; used if they fit the
    layout (same piece length, count and size), else the file is hashed here."""
    if not path.exists():
        raise TorrentError(f"cannot make a torrent of {path}: no such file")
    files = lt.list_files(str(path))
    if not files:
        raise TorrentError(f"cannot make a torrent of {path}: no files in it")
    creator = _creator(files, piece_size, trackers, web_seeds)
    threads = os.cpu_count() or 1
    digests = hashed.digests() if hashed is not None else []
    try:
        if (
            hashed is not None
            and path.is_file()
            and hashed.piece_length == creator.piece_length()
            and len(digests) == creator.num_pieces()
            and hashed.size == path.stat().st_size
        ):
            for index, digest in enumerate(digests):
                creator.set_hash(index, digest)
        elif path.is_file() and path.stat().st_size >= PARALLEL_MIN and threads > 1:
            _hash_in_threads(creator, path, threads)
        else:
            lt.set_piece_hashes(creator, str(path.parent))
    except (RuntimeError, OSError) as exc:
        raise TorrentError(f"cannot hash {path}: {exc}") from None
    size = (
        path.stat().st_size
        if path.is_file()
        else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    )
    return _generate(creator, size)


def torrent_from_digests(
    name: str,
    size: int,
    piece_length: int,
    digests: bytes,
    *,
    trackers: list[str] | tuple[str, ...] = (),
    web_seeds: list[str] | tuple[str, ...] = (),
) -> MadeTorrent:
    """The v1 torrent of one file ``name`` of ``size`` bytes from its pieces' SHA-1
    (``digests``: 20 bytes each, in order), as :func:`make_torrent` would make it from
    the file; nothing is read. Blocking for many pieces (``asyncio.to_thread``).

    The piece length must be the one libtorrent lays the file out in
    (:func:`piece_length_for`), or the info-hash would differ from the file's."""
    try:
        creator = _creator([lt.create_file_entry(name, size)], 0, trackers, web_seeds)
    except RuntimeError as exc:
        raise TorrentError(f"cannot make a torrent of {name!r} ({size} bytes): {exc}") from None
    if piece_length != creator.piece_length():
        raise TorrentError(
            f"a torrent of {size} bytes has pieces of {creator.piece_length()} bytes, "
            f"not {piece_length}"
        )
    count = creator.num_pieces()
    if len(digests) != 20 * count:
        raise TorrentError(
            f"a torrent of {size} bytes in pieces of {piece_length} has {count} pieces; "
            f"got {len(digests) / 20:g} digests"
        )
    for index in range(count):
        creator.set_hash(index, digests[20 * index : 20 * index + 20])
    try:
        return _generate(creator, size)
    except RuntimeError as exc:  # libtorrent takes an all-zero digest for a missing one
        raise TorrentError(f"cannot make a torrent of {name!r} from its digests: {exc}") from None


def _creator(
    files: Any,
    piece_size: int,
    trackers: list[str] | tuple[str, ...],
    web_seeds: list[str] | tuple[str, ...],
) -> Any:
    """libtorrent's v1 torrent builder with SmartGet's trackers, web seeds and creator."""
    creator = lt.create_torrent(files, piece_size, lt.create_torrent.v1_only)
    for tier, url in enumerate(trackers):
        creator.add_tracker(url, tier)
    for url in web_seeds:
        creator.add_url_seed(url)
    creator.set_creator(f"SmartGet {__version__}")
    return creator


def _generate(creator: Any, size: int) -> MadeTorrent:
    data = lt.bencode(creator.generate())
    ti = lt.torrent_info(lt.bdecode(data))  # type: ignore[arg-type]
    return MadeTorrent(data=data, sha1=str(ti.info_hashes().v1), size=size)


def _hash_in_threads(creator: Any, path: Path, threads: int) -> None:
    """SHA-1 of every piece of one file (BEP 3), ``threads`` at a time."""
    piece_length = creator.piece_length()
    pieces = creator.num_pieces()
    batch = 64  # pieces per job: big enough to amortise, small enough to balance

    def job(first: int) -> list[bytes]:
        fd = os.open(path, os.O_RDONLY)
        try:
            last = min(pieces, first + batch)
            return [
                hashlib.sha1(os.pread(fd, piece_length, i * piece_length)).digest()
                for i in range(first, last)
            ]
        finally:
            os.close(fd)

    with ThreadPoolExecutor(threads, thread_name_prefix="hash") as pool:
        for first, digests in zip(
            range(0, pieces, batch), pool.map(job, range(0, pieces, batch)), strict=True
        ):
            for offset, digest in enumerate(digests):
                creator.set_hash(first + offset, digest)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file and a rename."""
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_bytes(data)
    os.replace(temp, path)
