"""The task handlers of seed 003: maketorrent, download, shutdown, shutdownall, delete;
and prefetch, of a striped push.

:class:`Agent` ties the parts together: paths are confined by :class:`Roots`, files
fetched by :class:`Fetcher`, torrents run by a :class:`TorrentEngine` (libtorrent's
:class:`~smartget.node.engine.Engine` in a node), rows kept in :class:`NodeState`,
progress reported by an optional :class:`StatusReporter`. The engine and the reporter
are the small Protocols declared here, so this module loads neither libtorrent nor
httpx; :mod:`smartget.node.service` wires the real ones in. :meth:`handle` never
raises: every failure becomes seed 003's response with ``result`` ``failed`` and the
reason in ``traceback``.

Download deadlines (a download task's ``expire``; the rules are in
:mod:`smartget.node.tasks`): the deadline is written with the torrent's row before the
answer leaves, and one timer task (:meth:`Agent.run_deadlines`) sleeps until the
earliest one that :class:`~smartget.node.tasks.Deadlines` holds. At a deadline a
torrent that is not complete is stopped (data and ``.torrent`` kept) and its row marked
expired with the figures it had; a torrent that completes forgets its deadline
(:meth:`Agent.on_change`); shutdown and delete cancel it. :meth:`Agent.restore` enforces
deadlines that fell while the node was down before adding anything back.

Downloads by magnet or info-hash (issue 14): a ``download`` task with ``args.magnet``
or ``args.sha1`` and no ``args.torrentfileurl`` is checked by
:mod:`smartget.node.magnet` and added to the engine by info-hash; its data goes to
``args.filename`` (relative to the root) or to the magnet's ``dn`` or the info-hash
under the root, and its ``.torrent`` is written beside it once the metadata came from
peers (:meth:`Agent.on_change`), so the file server serves it like any other.

The cache (issue 15; the policy and what "used" means are in :mod:`smartget.node.cache`):
the agent feeds :class:`~smartget.node.cache.CachePolicy` completions, uses (tasks
asking again, file server hits through :meth:`Agent.served`, upload totals read by
:meth:`Agent.run_cache`) and pins (``args.pin``), and one timer task
(:meth:`Agent.run_cache`) removes what the policy picks: out of libtorrent, data and
``.torrent`` deleted, a log line, an entry in ``GET /status``'s ``cache.evicted`` and a
last status report with the status ``evicted``.

Striped pushes (the arithmetic and the checks are in :mod:`smartget.node.prefetch`):
``prefetch`` fetches one stripe of ``args.fileurl`` by a ranged GET into the file, at the
path ``maketorrent`` would use (where a download of ``<files url>/<same path>.torrent``
lands too), and answers its pieces' SHA-1; the agent remembers what it wrote
(:class:`~smartget.node.prefetch.StripeTable`). ``maketorrent`` with ``args.pieces``
makes the torrent from every node's digests and runs it as a download, not a seed;
``maketorrent`` and ``download`` with ``args.have`` add the torrent with those pieces had,
unchecked, when this node's prefetch wrote exactly them (:meth:`Agent._had`), else
plainly. A prefetch never overwrites another torrent's data: where a torrent of the
node already has its data, the stripe is fetched and hashed, compared, not written.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import shutil
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from smartget.errors import MagnetError, NodeAgentError, SmartGetError, TaskError, TorrentError
from smartget.node.cache import CacheEntry, CachePolicy
from smartget.node.magnet import Magnet, check_tracker, parse_info_hash, parse_magnet
from smartget.node.maker import (
    MadeTorrent,
    PieceHasher,
    make_torrent,
    piece_length_for,
    torrent_from_digests,
    write_atomic,
)
from smartget.node.paths import Roots, prune_empty_dirs, remove_file, url_relpath
from smartget.node.policy import SWARM_CONNECTIONS
from smartget.node.prefetch import (
    Digests,
    PieceFeeder,
    PieceMismatchError,
    Stripe,
    StripeTable,
    parse_digests,
    parse_have,
    parse_stripe,
    stripe_pieces,
)
from smartget.node.state import NodeState, TorrentRecord
from smartget.node.status import INITIAL, Torrent, TorrentStatus, expired_status
from smartget.node.tasks import EVICTED, EXPIRED, Deadlines, NodeIdentity, Task, response

if TYPE_CHECKING:
    from smartget.node.fetcher import Fetcher
    from smartget.node.sources import ByteSources

__all__ = ["Agent", "StatusReporter", "TaskResult", "TorrentEngine"]

log = logging.getLogger(__name__)

TORRENT_SUFFIX = ".torrent"
# The deadline timer re-reads the wall clock at least this often (deadlines are UNIX
# times; the clock may be stepped), and retries an expiry that failed after EXPIRE_RETRY.
MAX_TIMER = 60.0
EXPIRE_RETRY = 10.0
CACHE_TICK = 5.0  # seconds between the cache's looks at upload totals and its saves
EVICTIONS_SHOWN = 100  # the last evictions GET /status lists
# Seconds a stripe's fetch waits for libtorrent to check a torrent just added (some
# 10-100 ms; the pieces of a fetch started sooner were dropped: demo 0.83 -> 0.31).
CHECK_WAIT = 10.0
FEED_RETRIES = 3  # tries of a pipelined stripe's GET before peers and web seeds bring it
HELP_POLL = 0.5  # seconds between a helper's looks for pieces nobody has
# A node helps no sooner than this after its stripe began: its peers must have joined
# and be seen fetching theirs (a node done first on a fast link would fetch the stripes
# of peers that did not start yet, and they their own again).
HELP_AFTER = 2.0
HELP_MIN_RUN = 4  # pieces: shorter runs nobody has are left to the fetch under way
HELP_STALLED = 5.0  # seconds a run nobody has may not move before it counts as dropped
# A stripe is asked for in segments of about SEGMENT_TIME s at the rate the last one
# came (a piece at first, at most MAX_SEGMENT bytes): what two fetches that meet fetch
# twice is at most a segment, and a fast origin is not asked for a piece at a time.
SEGMENT_TIME = 0.25
MAX_SEGMENT = 16 << 20
HELP_FOR = 3600.0  # seconds a node helps at most after its stripe


class TorrentEngine(Protocol):
    """What the agent asks of the BitTorrent engine."""

    def set_upload_limit(self, sha1: str, rate: int) -> None: ...

    def load(self, data: bytes) -> Torrent: ...

    def add(
        self,
        ti: Any,
        save_path: Path,
        *,
        rename_to: str | None = None,
        seed_mode: bool = False,
        resume: bytes | None = None,
        have: range | None = None,
    ) -> str: ...

    def add_magnet(
        self,
        sha1: str,
        save_path: Path,
        *,
        trackers: tuple[str, ...] = (),
        rename_to: str | None = None,
    ) -> str: ...

    def torrent_bytes(self, sha1: str) -> bytes | None: ...

    async def checked(self, sha1: str, within: float) -> bool: ...

    def add_piece(self, sha1: str, index: int, data: bytes) -> bool: ...

    def origin_wanted(self, sha1: str, index: int) -> bool: ...

    def unsourced(self, sha1: str) -> list[range]: ...

    def fail(self, sha1: str, reason: str) -> None: ...

    def size(self, sha1: str) -> int: ...

    async def remove(self, sha1: str, *, within: float = 10.0) -> bool: ...

    def has(self, sha1: str) -> bool: ...

    def is_complete(self, sha1: str) -> bool: ...

    def torrents(self) -> list[str]: ...

    def status(self, sha1: str) -> TorrentStatus: ...

    def resume_path(self, sha1: str) -> Path: ...

    def resume_progress(self, resume: bytes | None) -> tuple[dict[str, float], bool]: ...


class StatusReporter(Protocol):
    """What the agent tells the status reporter."""

    def track(self, sha1: str, *, done: bool = False, retries: int = 0) -> None: ...

    def untrack(self, sha1: str) -> None: ...

    def changed(self, sha1: str, status: str) -> None: ...


class TaskResult:
    """What a handler found: status, args and the retries used."""

    def __init__(self, args: dict[str, Any], *, status: str = "", retries: int = 0) -> None:
        self.args = args
        self.status = status
        self.retries = retries


class Agent:
    def __init__(
        self,
        identity: NodeIdentity,
        roots: Roots,
        engine: TorrentEngine,
        fetcher: Fetcher,
        state: NodeState,
        *,
        files_url: str,
        trackers: tuple[str, ...] = (),
        reporter: StatusReporter | None = None,
        cache: CachePolicy | None = None,
    ) -> None:
        self.identity = identity
        self.roots = roots
        self.engine = engine
        self.fetcher = fetcher
        self.state = state
        self.files_url = files_url.rstrip("/")
        self.trackers = trackers
        self.reporter = reporter
        # Where each download's bytes came from (node/sources.py), shown by GET /status.
        self.byte_sources: ByteSources | None = None
        self._lock = asyncio.Lock()
        self.handled: dict[str, int] = {}
        self.failed = 0
        self.expired = 0
        self.deadlines = Deadlines()
        self._deadline_wake = asyncio.Event()
        self.cache = cache or CachePolicy()
        self.evictions: deque[dict[str, Any]] = deque(maxlen=EVICTIONS_SHOWN)
        self._cache_wake = asyncio.Event()
        self._paths: dict[str, str] = {}  # data path or .torrent of complete torrents -> sha1
        self._uploaded: dict[str, int] = {}  # sha1 -> upload total at the cache's last look
        self._restored_used: dict[str, float] = {}  # sha1 -> last use saved before a restart
        self._completed_at: dict[str, float] = {}  # sha1 -> UNIX time this node saw it complete
        self.stripes = StripeTable()  # what the last prefetches wrote, by data path
        self._feeds: dict[str, asyncio.Task[None]] = {}  # sha1 -> its stripe's fetch
        self._handlers: dict[str, Callable[[Task], Awaitable[TaskResult]]] = {
            "maketorrent": self.maketorrent,
            "download": self.download,
            "shutdown": self.shutdown,
            "shutdownall": self.shutdownall,
            "delete": self.delete,
            "prefetch": self.prefetch,
        }

    def statistics(self) -> dict[str, int]:
        return {
            "failed": self.failed,
            "expired": self.expired,
            "deadlines": len(self.deadlines),
            "stripes": len(self.stripes),
            **self.cache.statistics(),
            **{f"handled_{k}": v for k, v in self.handled.items()},
        }

    # ---- entry point -----------------------------------------------------------------

    async def handle(self, task: Task) -> dict[str, Any]:
        """Run a task and answer with seed 003's response_msg; never raises."""
        self.handled[task.event] = self.handled.get(task.event, 0) + 1
        try:
            if task.expire_at is not None:
                left = task.expire_at - time.time()
                if left <= 0:
                    raise TaskError(f"task expired {-left:.0f} s before it arrived")
                try:
                    async with asyncio.timeout(left):
                        result = await self._handlers[task.event](task)
                except TimeoutError:
                    raise TaskError("task expired before it could finish") from None
            else:
                result = await self._handlers[task.event](task)
        except (SmartGetError, OSError) as exc:
            return self.failure(task.event, task.taskid, _reason(exc))
        except Exception as exc:
            log.exception("task %s (%s) failed unexpectedly", task.taskid, task.event)
            return self.failure(task.event, task.taskid, f"internal error: {exc!r}")
        return response(
            self.identity,
            task.event,
            taskid=task.taskid,
            status=result.status,
            retries=result.retries,
            args=result.args,
        )

    def failure(self, event: str, taskid: str, reason: str) -> dict[str, Any]:
        self.failed += 1
        log.info("task %s (%s) failed: %s", taskid, event, reason)
        return response(self.identity, event, taskid=taskid, result="failed", traceback=reason)

    # ---- maketorrent (synchronous) ---------------------------------------------------

    async def maketorrent(self, task: Task) -> TaskResult:
        """Seed 003: fetch fileurl unless the file is here, make a v1 torrent, seed it."""
        root = self.roots.root_for(task.arg("wwwroot"))
        fileurl, filename = task.arg("fileurl"), task.arg("filename")
        if not fileurl and not filename:
            raise TaskError("args.fileurl is required (or args.filename of a file already here)")
        path = (
            self.roots.filename(root, filename)
            if filename
            else self.roots.under(root, url_relpath(fileurl))
        )
        digests = parse_digests(task.args)
        _stripe_arg(task)  # refused before anything is fetched or made
        if digests is None and task.arg("origin_torrent"):
            digests = await self._origin_digests(task, fileurl)
        if digests is not None:
            return await self._maketorrent_from_digests(task, path, fileurl, digests)
        retries = 0
        hashed: PieceHasher | None = None  # the pieces of the try that wrote the file

        def hasher_for(size: int | None) -> PieceHasher | None:
            nonlocal hashed
            hashed = None  # unknown size, or no layout for it: hashed after, as before
            with contextlib.suppress(RuntimeError, ValueError):
                hashed = PieceHasher(piece_length_for(path.name, size)) if size else None
            return hashed

        if not path.is_file():
            if path.exists():
                raise TaskError(f"{path} exists and is not a regular file")
            if not fileurl:
                raise TaskError(f"{path} is not here and no args.fileurl says where to fetch it")
            fetched = await self.fetcher.fetch_file(
                fileurl, path, max_retries=task.max_retries, tee_for=hasher_for
            )
            retries = fetched.retries
        trackers = list(task.args.get("trackers") or self.trackers)
        web_seeds = [fileurl] if fileurl else []
        made = await asyncio.to_thread(
            make_torrent,
            path,
            trackers=trackers,
            web_seeds=web_seeds,
            hashed=hashed,
        )
        torrent_path = path.with_name(path.name + TORRENT_SUFFIX)
        async with self._lock:
            await asyncio.to_thread(write_atomic, torrent_path, made.data)
            await self._stop_other_owner(path, made.sha1)
            self.state.put(
                TorrentRecord(
                    sha1=made.sha1,
                    torrentfile=str(torrent_path),
                    save_path=str(path.parent),
                    data_path=str(path),
                    torrentfileurl=self.url_of(torrent_path),
                    fileurl=fileurl,
                    taskid=task.taskid,
                    seed_mode=True,
                    size=made.size,
                    pin_until=_pin_until(task),
                )
            )
            self._arm(made.sha1, None)  # complete from the start: nothing to bound
            self.engine.add(self.engine.load(made.data).info, path.parent, seed_mode=True)
            self._track(made.sha1)
            self._pin(made.sha1, task)
            self._cap(made.sha1, task)
            self._completed(made.sha1, str(path), str(torrent_path), made.size)
        return TaskResult(self._made_args(path, made, trackers), retries=retries)

    def _made_args(self, path: Path, made: MadeTorrent, trackers: list[str]) -> dict[str, Any]:
        """A maketorrent's answer: the file, its torrent and where the torrent is served."""
        torrent_path = path.with_name(path.name + TORRENT_SUFFIX)
        return {
            "filename": str(path),
            "filesize": made.size,
            "sha1": made.sha1,
            "torrentfile": str(torrent_path),
            "torrentfileurl": self.url_of(torrent_path),
            "trackers": trackers,
        }

    async def _origin_digests(self, task: Task, fileurl: str) -> Digests:
        """The pieces of ``fileurl`` from the torrent the origin publishes of it
        (``args.origin_torrent``): one file, the size the origin says the file is."""
        url = task.arg("origin_torrent")
        if not fileurl:
            raise TaskError("args.origin_torrent needs args.fileurl, the file it describes")
        # Both at once: a push waits for them (one round trip to the origin less).
        fetched, head = await asyncio.gather(
            self.fetcher.fetch_small(url, max_retries=task.max_retries),
            self.fetcher.head(fileurl, max_retries=task.max_retries),
        )
        ti = self.engine.load(fetched.body).info
        files, size, piece_length = _layout(ti)
        if files != 1:
            raise TorrentError(f"{url} is a torrent of {files} files, not of one file")
        if head.size != size:
            raise TorrentError(
                f"{url} describes {size:,} bytes; {fileurl} has {head.size:,} "
                "(the torrent is not of this version of the file)"
            )
        digests = b"".join(bytes(ti.hash_for_piece(i)) for i in range(ti.num_pieces()))
        return Digests(size, piece_length, digests, None)

    async def _maketorrent_from_digests(
        self, task: Task, path: Path, fileurl: str, digests: Digests
    ) -> TaskResult:
        """A striped push: the torrent from every stripe's digests (nothing fetched or
        hashed here), written beside the file and run as a download, this node's own
        stripe (``args.have``) had if its prefetch wrote it. A pipelined push (digests
        from the origin's torrent): this node fetches stripe ``args.stripe`` meanwhile."""
        trackers = list(task.args.get("trackers") or self.trackers)
        made = await asyncio.to_thread(
            torrent_from_digests,
            path.name,
            digests.size,
            digests.piece_length,
            digests.digests,
            trackers=trackers,
            web_seeds=[fileurl] if fileurl else [],
        )
        torrent = self.engine.load(made.data)
        torrent_path = path.with_name(path.name + TORRENT_SUFFIX)
        args = self._made_args(path, made, trackers)
        async with self._lock:
            if self.engine.has(made.sha1):
                return self._again(made.sha1, task, args, 0)
            _file_or_nothing(path)
            await self._stop_other_owner(path, made.sha1)
            path.parent.mkdir(parents=True, exist_ok=True)
            await asyncio.to_thread(write_atomic, torrent_path, made.data)
            self.state.put(
                TorrentRecord(
                    sha1=made.sha1,
                    torrentfile=str(torrent_path),
                    save_path=str(path.parent),
                    data_path=str(path),
                    torrentfileurl=args["torrentfileurl"],
                    fileurl=fileurl,
                    taskid=task.taskid,
                    expire_at=task.expire_at,
                    pin_until=_pin_until(task),
                )
            )
            had = self._had(path, torrent, digests.have)
            self.engine.add(torrent.info, path.parent, have=had)
            self._started(made.sha1, task)
            if fetching := self._feed_stripe(made.sha1, torrent, fileurl, task):
                args["fetching"] = fetching
        if digests.have is not None:
            args["had"] = [had.start, had.stop] if had else []
        return TaskResult(args, status=INITIAL)

    # ---- a pipelined push's stripe ---------------------------------------------------

    def _feed_stripe(self, sha1: str, torrent: Torrent, url: str, task: Task) -> list[int]:
        """Fetch stripe ``args.stripe`` of ``args.stripes`` of the torrent's file from
        ``url`` (the origin) in the background, each piece into libtorrent as it comes;
        the pieces ``[first, end)`` fetched ([] without ``args.stripes``)."""
        asked = _stripe_arg(task)
        if asked is None:
            return []
        stripe, stripes = asked
        files, size, piece_length = _layout(torrent.info)
        first, end = stripe_pieces(size, piece_length, stripe, stripes)
        if files != 1 or first >= end or not url:
            return []
        old = self._feeds.pop(sha1, None)
        if old is not None:
            old.cancel()
        feed = asyncio.create_task(
            self._feed(sha1, torrent.info, url, range(first, end), stripes),
            name=f"stripe {sha1}",
        )
        self._feeds[sha1] = feed
        feed.add_done_callback(
            lambda done: self._feeds.pop(sha1) if self._feeds.get(sha1) is done else None
        )
        return [first, end]

    async def _feed(self, sha1: str, ti: Any, url: str, pieces: range, stripes: int) -> None:
        """Fetch ``pieces`` (this node's stripe of ``stripes``) of ``url`` into the torrent,
        then help with the pieces still to come from the origin, at most as many bytes
        again (node/prefetch.py)."""
        piece_length = _layout(ti)[2]
        began = time.monotonic()
        if not await self.engine.checked(sha1, within=CHECK_WAIT):
            if self.engine.has(sha1):  # libtorrent would drop every piece handed to it
                log.warning(
                    "torrent %s: still being checked after %.0f s; its stripe is left to "
                    "peers and web seeds",
                    sha1,
                    CHECK_WAIT,
                )
            return
        fed = await self._fetch_pieces(sha1, ti, url, pieces)
        if fed is None:
            return
        log.info(
            "torrent %s: its stripe, pieces %d to %d, fetched from the origin in %.2f s "
            "(%s bytes; the rest came from peers)",
            sha1,
            pieces.start,
            pieces.stop - 1,
            time.monotonic() - began,
            f"{fed:,}",
        )
        budget = len(pieces) * piece_length
        rng = random.Random()
        await asyncio.sleep(max(0.0, began + HELP_AFTER - time.monotonic()))
        until = time.monotonic() + HELP_FOR
        # A push of more nodes than a torrent keeps peers (SWARM_CONNECTIONS): "no peer
        # has it" means none of ours; a run still being fetched may be had by peers out
        # of sight, and helping would fetch it again. Stalled runs only.
        sees_all = stripes - 1 <= SWARM_CONNECTIONS
        engine = self.engine
        since: dict[int, float] = {}  # where a run nobody has begins -> since when
        while budget >= piece_length and time.monotonic() < until:
            if not engine.has(sha1) or engine.is_complete(sha1):
                return
            unsourced, now = engine.unsourced(sha1), time.monotonic()
            # A run whose start has not moved for HELP_STALLED s has nobody fetching it
            # (its node failed, or never had it): taken from its start. Others are
            # being fetched from their start: helped from a point in their second part.
            since = {r.start: since.get(r.start, now) for r in unsourced}
            stalled = [r for r in unsourced if now - since[r.start] >= HELP_STALLED]
            runs = stalled or ([r for r in unsourced if len(r) >= HELP_MIN_RUN] if sees_all else [])
            if not runs:
                await asyncio.sleep(HELP_POLL)
                continue
            # Helpers that look at once would pick the same run: a random run (the
            # longer, the likelier), a random point in it, after a random pause.
            run = rng.choices(runs, weights=[len(r) ** 2 for r in runs])[0]
            first = run.start
            if not stalled:
                first += int(len(run) * rng.uniform(0.35, 0.75))
            await asyncio.sleep(rng.uniform(0, HELP_POLL / 2))
            if not engine.origin_wanted(sha1, first):
                continue
            take = range(first, min(run.stop, first + budget // piece_length))
            got = await self._fetch_pieces(sha1, ti, url, take)
            if got is None:
                return
            log.info(
                "torrent %s: helped with pieces %d to %d (%s bytes from the origin)",
                sha1,
                take.start,
                take.stop - 1,
                f"{got:,}",
            )
            budget -= max(got, piece_length)

    async def _fetch_pieces(self, sha1: str, ti: Any, url: str, pieces: range) -> int | None:
        """``pieces`` of ``url``, segment after segment (a ranged GET each), each piece
        checked and handed to libtorrent as it arrives, until a segment is had or a peer
        has it. The bytes handed on; None if a fetch failed (the pieces are left to peers
        and web seeds) or the bytes are not the torrent's (the download fails)."""
        _, size, piece_length = _layout(ti)
        per, most = 1, max(1, MAX_SEGMENT // piece_length)  # pieces a segment
        loop, sources = asyncio.get_running_loop(), self.byte_sources
        engine = self.engine
        fed = 0

        def deliver(index: int, data: bytes) -> None:  # the fetcher's writer thread
            nonlocal fed
            if engine.add_piece(sha1, index, data) and sources is not None:
                loop.call_soon_threadsafe(sources.fed, sha1, len(data))
            fed += len(data)

        first = pieces.start
        while first < pieces.stop:
            if not engine.origin_wanted(sha1, first):
                break  # had, or a peer has it: whoever fetched it goes on from there
            end = min(pieces.stop, first + per)
            began = time.monotonic()
            try:
                await self.fetcher.fetch_range(
                    url,
                    None,
                    start=first * piece_length,
                    end=min(end * piece_length, size),
                    size=size,
                    max_retries=FEED_RETRIES,
                    tee_for=functools.partial(
                        PieceFeeder, first, end, piece_length, size, _piece_hash(ti), deliver
                    ),
                    chunk=piece_length,  # each piece on to libtorrent as soon as it is in
                )
            except PieceMismatchError as exc:
                log.warning("torrent %s: %s (%s); the download fails", sha1, exc, url)
                engine.fail(sha1, f"{exc} ({url[:200]})")
                return None
            except Exception as exc:  # whatever it was, peers and web seeds are still there
                if not isinstance(exc, SmartGetError | OSError):
                    log.exception("torrent %s: the stripe's fetch failed unexpectedly", sha1)
                log.warning(
                    "torrent %s: pieces %d to %d not fetched from the origin (%s); peers "
                    "and the web seed bring them",
                    sha1,
                    first,
                    pieces.stop - 1,
                    exc,
                )
                return None
            rate = (end - first) * piece_length / max(1e-3, time.monotonic() - began)
            per = max(1, min(most, int(rate * SEGMENT_TIME / piece_length)))
            first = end
        return fed

    # ---- prefetch (synchronous; a striped push) --------------------------------------

    async def prefetch(self, task: Task) -> TaskResult:
        """Fetch stripe ``args.stripe`` of ``args.stripes`` of ``args.fileurl`` into the
        file (one ranged GET), hash its pieces, answer their SHA-1 (node/prefetch.py)."""
        fileurl = task.arg("fileurl")
        if not fileurl:
            raise TaskError("args.fileurl is required")
        stripe, stripes = parse_stripe(task.args)
        root = self.roots.root_for(task.arg("wwwroot"))
        path = self.roots.under(root, url_relpath(fileurl))
        head = await self.fetcher.head(fileurl, max_retries=task.max_retries)
        if head.size == 0:
            raise TaskError(f"{fileurl} is empty: a torrent needs one byte at least")
        piece_length = piece_length_for(path.name, head.size)
        first, end = stripe_pieces(head.size, piece_length, stripe, stripes)
        owner = await self._owner_of(path, head.size, piece_length)
        if owner is None:
            self.stripes.forget(str(path))  # its bytes are about to change
            await asyncio.to_thread(_sized_file, path, head.size)
        start, stop = first * piece_length, min(end * piece_length, head.size)
        hashers: list[PieceHasher] = []

        def hasher() -> PieceHasher:  # one per try: a retry hashes afresh
            hashers[:] = [PieceHasher(piece_length)]
            return hashers[0]

        retries = head.retries
        if start < stop:
            fetched = await self.fetcher.fetch_range(
                fileurl,
                path if owner is None else None,  # another torrent's data: hashed, not written
                start=start,
                end=stop,
                size=head.size,
                etag=head.etag,
                max_retries=task.max_retries,
                tee_for=hasher,
            )
            retries += fetched.retries
        digests = b"".join(hashers[0].digests()) if hashers else b""
        got = Stripe(fileurl, head.size, piece_length, first, end, digests)
        if owner is None:
            self.stripes.put(str(path), got)
        elif not got.covers(range(first, end), head.size, piece_length, _piece_hash(owner.info)):
            raise TaskError(
                f"{path} is the data of torrent {owner.sha1}, and pieces {first} to {end - 1} "
                f"of {fileurl} are not its pieces (the file changed at the origin?): nothing "
                "written"
            )
        # else: the torrent's own pieces; they are on disk when it has them, so not
        # remembered as written (a later add must not take them as had).
        return TaskResult(
            {
                "filename": str(path),
                "filesize": head.size,
                "piece_length": piece_length,
                "first_piece": first,
                "end_piece": end,
                "pieces": digests.hex(),
                "bytes": stop - start,
                "etag": head.etag,
                "last_modified": head.last_modified,
            },
            retries=retries,
        )

    async def _owner_of(self, path: Path, size: int, piece_length: int) -> Torrent | None:
        """The torrent of this node whose data is ``path`` (None: no torrent's), refused
        unless it lays the file out as a prefetch would (one file, size, piece length)."""
        record = self.state.find(data_path=str(path))
        if record is None or record.evicted:
            return None
        try:
            data = await asyncio.to_thread(Path(record.torrentfile).read_bytes)
        except FileNotFoundError:
            data = b""
        torrent = self.engine.load(data) if data else None
        if torrent is None or _layout(torrent.info) != (1, size, piece_length):
            raise TaskError(
                f"{path} is the data of torrent {record.sha1}, which is not this file in "
                f"pieces of {piece_length} bytes: a prefetch would overwrite it (delete it first)"
            )
        return torrent

    def _had(self, path: Path, torrent: Torrent, have: range | None) -> range | None:
        """``have``, if this node's last prefetch of ``path`` wrote exactly those pieces of
        ``torrent`` and the file is still that size; else None (added plainly)."""
        if not have:
            return None
        stripe = self.stripes.get(str(path))
        ti = torrent.info
        files, size, piece_length = _layout(ti)
        why = ""
        if stripe is None:
            why = "no prefetch of it here"
        elif files != 1 or _file_size(path) != size:
            why = "the file is not the torrent's size"
        elif not stripe.covers(have, size, piece_length, _piece_hash(ti)):
            why = "the prefetch wrote other pieces"
        if why:
            log.info(
                "torrent %s: pieces %d to %d of %s not taken as had (%s); libtorrent checks "
                "what is on disk",
                torrent.sha1,
                have.start,
                have.stop - 1,
                path,
                why,
            )
            return None
        return have

    # ---- download (asynchronous) -----------------------------------------------------

    async def download(self, task: Task) -> TaskResult:
        """Seed 003: fetch the .torrent, store it at the URL's path, start; answer at once.

        Without a URL, ``args.magnet`` or ``args.sha1`` name the torrent (issue 14).
        """
        url = task.arg("torrentfileurl")
        if not url:
            if task.arg("magnet") or task.arg("sha1"):
                return await self._download_magnet(task)
            raise TaskError("args.torrentfileurl is required (or args.magnet, or args.sha1)")
        root = self.roots.root_for(task.arg("wwwroot"))
        rel = url_relpath(url)
        torrent_path = self.roots.under(root, rel)
        _stripe_arg(task)  # refused before anything is fetched
        fetched = await self.fetcher.fetch_small(url, max_retries=task.max_retries)
        torrent = self.engine.load(fetched.body)
        sha1 = torrent.sha1
        wanted = task.arg("sha1").strip().lower()
        if wanted and wanted != sha1:
            raise TorrentError(f"the torrent's sha1 is {sha1}, the task asked for {wanted}")
        data_rel = _data_relpath(rel, torrent.name)
        data_path = self.roots.under(root, data_rel)
        have = parse_have(task.args.get("have"), torrent.info.num_pieces())
        args: dict[str, Any] = {
            "filename": str(data_path),
            "fileurl": url.removesuffix(TORRENT_SUFFIX) if url.endswith(TORRENT_SUFFIX) else "",
            "sha1": sha1,
            "torrentfile": str(torrent_path),
            "torrentfileurl": url,
        }
        async with self._lock:
            if self.engine.has(sha1):
                return self._again(sha1, task, args, fetched.retries)
            # The same torrent's row may be here, not running: expired, or not restorable.
            # A new task starts it again (with its own deadline, or none).
            other = self.state.find(data_path=str(data_path))
            if other is not None and other.sha1 != sha1 and not other.evicted:
                raise TorrentError(f"{data_path} already belongs to torrent {other.sha1}")
            torrent_path.parent.mkdir(parents=True, exist_ok=True)
            await asyncio.to_thread(write_atomic, torrent_path, fetched.body)
            self.state.put(
                TorrentRecord(
                    sha1=sha1,
                    torrentfile=str(torrent_path),
                    save_path=str(data_path.parent),
                    data_path=str(data_path),
                    rename_to=data_path.name,
                    torrentfileurl=url,
                    fileurl=args["fileurl"],
                    taskid=task.taskid,
                    expire_at=task.expire_at,
                    pin_until=_pin_until(task),
                )
            )
            had = self._had(data_path, torrent, have)
            self.engine.add(torrent.info, data_path.parent, rename_to=data_path.name, have=had)
            self._started(sha1, task)
            if fetching := self._feed_stripe(sha1, torrent, task.arg("fetch_from"), task):
                args["fetching"] = fetching
        if have is not None:
            args["had"] = [had.start, had.stop] if had else []
        return TaskResult(args, status=INITIAL, retries=fetched.retries)

    def _again(self, sha1: str, task: Task, args: dict[str, Any], retries: int) -> TaskResult:
        """A download of a torrent that runs here: asked for again (a use), maybe pinned."""
        args["already"] = True
        self._merge_deadline(sha1, task.expire_at)
        self.cache.used(sha1, time.time())
        self._pin(sha1, task)
        return TaskResult(args, status=self.engine.status(sha1).status, retries=retries)

    def _started(self, sha1: str, task: Task) -> None:
        """A download was added to the engine for ``task``: deadline, reports, cache."""
        self._arm(sha1, task.expire_at)
        if self.reporter is not None:
            self.reporter.untrack(sha1)  # a new task reports afresh, even after expiry
        self._track(sha1)
        self.cache.running(sha1, time.time())
        self._pin(sha1, task)
        self._cap(sha1, task)

    def _cap(self, sha1: str, task: Task) -> None:
        if limit := task.args.get("upload_limit"):  # a job's per-node cap (issue 15)
            self.engine.set_upload_limit(sha1, int(limit))

    async def _download_magnet(self, task: Task) -> TaskResult:
        """A download by magnet or bare info-hash: libtorrent gets the metadata from peers."""
        text, wanted = task.arg("magnet").strip(), task.arg("sha1").strip()
        magnet = parse_magnet(text) if text else Magnet(parse_info_hash(wanted))
        if text and wanted and parse_info_hash(wanted) != magnet.sha1:
            raise MagnetError(f"args.sha1 is {wanted}, the magnet's info-hash {magnet.sha1}")
        extra = [check_tracker(t) for t in task.args.get("trackers") or ()]
        trackers = tuple(dict.fromkeys([*magnet.trackers, *extra, *self.trackers]))
        magnet = Magnet(magnet.sha1, trackers, magnet.name)
        sha1 = magnet.sha1
        root = self.roots.root_for(task.arg("wwwroot"))
        filename = task.arg("filename")
        name = magnet.name if magnet.name and "/" not in magnet.name else sha1
        data_path = (
            self.roots.filename(root, filename) if filename else self.roots.under(root, name)
        )
        torrent_path = data_path.with_name(data_path.name + TORRENT_SUFFIX)
        args: dict[str, Any] = {
            "filename": str(data_path),
            "fileurl": "",
            "sha1": sha1,
            "torrentfile": str(torrent_path),
            "torrentfileurl": self.url_of(torrent_path),
            "magnet": magnet.uri(),
        }
        async with self._lock:
            if self.engine.has(sha1):
                return self._again(sha1, task, args, 0)
            other = self.state.find(data_path=str(data_path))
            if other is not None and other.sha1 != sha1 and not other.evicted:
                raise TorrentError(f"{data_path} already belongs to torrent {other.sha1}")
            data_path.parent.mkdir(parents=True, exist_ok=True)
            record = TorrentRecord(
                sha1=sha1,
                torrentfile=str(torrent_path),
                save_path=str(data_path.parent),
                data_path=str(data_path),
                rename_to=data_path.name,
                torrentfileurl=args["torrentfileurl"],
                taskid=task.taskid,
                expire_at=task.expire_at,
                magnet=magnet.uri(),
                pin_until=_pin_until(task),
            )
            self.state.put(record)
            await self._add_record(record, None)
            self._started(sha1, task)
        return TaskResult(args, status=INITIAL)

    async def _add_record(self, record: TorrentRecord, resume: bytes | None) -> None:
        """Add a torrent of the state to the engine: from its .torrent when that is
        here, else (a magnet whose metadata has not come yet) by its info-hash."""
        try:
            data = await asyncio.to_thread(Path(record.torrentfile).read_bytes)
        except FileNotFoundError:
            if not record.magnet:
                raise
            magnet = parse_magnet(record.magnet)
            self.engine.add_magnet(
                record.sha1,
                Path(record.save_path),
                trackers=magnet.trackers,
                rename_to=record.rename_to or None,
            )
            return
        torrent = self.engine.load(data)
        if torrent.sha1 != record.sha1:
            raise TorrentError(f"{record.torrentfile} is torrent {torrent.sha1}, not {record.sha1}")
        self.engine.add(
            torrent.info,
            Path(record.save_path),
            rename_to=record.rename_to or None,
            seed_mode=record.seed_mode and resume is None,
            resume=resume,
        )

    # ---- shutdown, shutdownall, delete (synchronous) ---------------------------------

    async def shutdown(self, task: Task) -> TaskResult:
        """Seed 003: stop by sha1 or torrentfileurl (sha1 wins when both are given)."""
        sha1 = task.arg("sha1").strip().lower()
        url = task.arg("torrentfileurl")
        if not sha1 and not url:
            raise TaskError("args.sha1 or args.torrentfileurl is required")
        async with self._lock:
            if not sha1:
                sha1 = self._sha1_of_url(url, task.arg("wwwroot"))
            if self.state.get(sha1) is None and not self.engine.has(sha1):
                raise TorrentError(f"no torrent with sha1 {sha1} runs on this node")
            await self._stop(sha1)
        return TaskResult({})

    async def shutdownall(self, task: Task) -> TaskResult:
        async with self._lock:
            for record in self.state.torrents():
                await self._stop(record.sha1)
            for sha1 in self.engine.torrents():
                await self._stop(sha1)
        return TaskResult({})

    async def delete(self, task: Task) -> TaskResult:
        """Seed 003: stop, remove data and .torrent, prune empty dirs; gone already is fine."""
        root = self.roots.root_for(task.arg("wwwroot"))
        filename, url = task.arg("filename"), task.arg("torrentfileurl")
        torrent_path: Path | None = None
        if filename:
            path = self.roots.filename(root, filename)
        elif url:
            rel = url_relpath(url)
            torrent_path = self.roots.under(root, rel)
            path = self.roots.under(root, _data_relpath(rel, rel.name))
        else:
            raise TaskError("args.filename or args.torrentfileurl is required")
        if torrent_path is None:
            torrent_path = path.with_name(path.name + TORRENT_SUFFIX)
        async with self._lock:
            found = self.state.find(data_path=str(path)) or self.state.find(
                torrentfile=str(torrent_path)
            )
            if found is not None:
                await self._stop(found.sha1)
            self.stripes.forget(str(path))
            if path.is_dir() and not path.is_symlink():
                await asyncio.to_thread(shutil.rmtree, path)
            else:
                remove_file(path)
            remove_file(torrent_path)
            if found is not None and found.torrentfile != str(torrent_path):
                remove_file(Path(found.torrentfile))
            home = self.roots.containing(path) or root
            prune_empty_dirs(path.parent, home)
        return TaskResult({})

    # ---- helpers ---------------------------------------------------------------------

    async def _stop_other_owner(self, path: Path, sha1: str) -> None:
        """Stop the torrent whose data ``path`` is, unless it is ``sha1``: made anew."""
        old = self.state.find(data_path=str(path))
        if old is not None and old.sha1 != sha1:
            await self._stop(old.sha1)

    async def _stop(self, sha1: str) -> None:
        self._arm(sha1, None)
        feed = self._feeds.pop(sha1, None)
        if feed is not None:
            feed.cancel()
        await self.engine.remove(sha1)
        self.state.delete(sha1)
        if self.reporter is not None:
            self.reporter.untrack(sha1)
        self._forget_cached(sha1)

    def _track(self, sha1: str) -> None:
        if self.reporter is not None:
            self.reporter.track(sha1)

    def _sha1_of_url(self, url: str, wwwroot: str) -> str:
        for record in self.state.torrents():
            if record.torrentfileurl == url:
                return record.sha1
        path = self.roots.under(self.roots.root_for(wwwroot), url_relpath(url))
        found = self.state.find(torrentfile=str(path))
        if found is None:
            raise TorrentError(f"no torrent from {url[:200]} runs on this node")
        return found.sha1

    def url_of(self, path: Path) -> str:
        """The file server's URL of ``path``, or '' if it is outside the node's roots.

        The file server shows the roots as one tree, the default root first, so the
        URL is the path below the deepest root holding it.
        """
        root = self.roots.containing(path)
        if root is None:
            return ""
        return f"{self.files_url}/{quote(path.relative_to(root).as_posix())}"

    async def restore(self) -> int:
        """Add back every torrent of the state (after a restart); returns how many.

        An expired torrent stays stopped (its last report may still be due); a download
        whose deadline fell while the node was down is expired here, before it starts.
        """
        count = 0
        now = time.time()
        for record in self.state.torrents():
            if record.evicted:  # removed for the cache: only its last report may be due
                if self.reporter is not None and not record.report_done:
                    self._track_restored(record)
                else:
                    self.state.delete(record.sha1)
                continue
            if record.expired:
                self._track_restored(record)
                continue
            resume_path = self.engine.resume_path(record.sha1)
            resume = None
            with contextlib.suppress(FileNotFoundError):
                resume = resume_path.read_bytes()
            if record.expire_at is not None and record.expire_at <= now:
                if not self.engine.resume_progress(resume)[1]:
                    self._track_restored(record)
                    figures = self._expire_stopped(record.sha1)
                    self._mark_expired(record, figures, down_for=now - record.expire_at)
                    continue
                # Complete on disk, killed before the completion cleared the deadline.
                record.expire_at = None
                self.state.set_expire(record.sha1, None)
            try:
                await self._add_record(record, resume)
            except (OSError, NodeAgentError) as exc:
                log.error("cannot restore torrent %s: %s", record.sha1, _reason(exc))
                continue
            count += 1
            self._arm(record.sha1, record.expire_at)
            used = record.used_at or now
            self._restored_used[record.sha1] = used
            self.cache.running(record.sha1, now, used=used)
            if record.pin_until:
                self.cache.pin(record.sha1, record.pin_until, now)
            if self.engine.is_complete(record.sha1):  # seed mode: complete at once
                self.on_change(record.sha1)
            self._track_restored(record)
        return count

    def _track_restored(self, record: TorrentRecord) -> None:
        if self.reporter is not None:
            self.reporter.track(record.sha1, done=record.report_done, retries=record.report_retries)

    # ---- download deadlines ----------------------------------------------------------

    def on_change(self, sha1: str) -> None:
        """The engine saw a state change: a complete torrent forgets its deadline and
        counts in the cache; a magnet's metadata came: its .torrent is written."""
        complete = self.engine.is_complete(sha1)
        if sha1 in self.deadlines and complete:
            self._arm(sha1, None)
            self.state.set_expire(sha1, None)
            log.info("download %s complete before its deadline; it keeps seeding", sha1)
        entry = self.cache.entries.get(sha1)
        if (entry is None or not entry.complete) and (complete or entry is not None):
            record = self.state.get(sha1)
            if record is not None and record.magnet:
                self._write_magnet_torrent(record)
            if record is not None and complete:
                size = self.engine.size(sha1)
                self.state.set_cache(
                    sha1, size=size, used_at=record.used_at, pin_until=record.pin_until
                )
                used = self._restored_used.pop(sha1, None)
                self._completed(sha1, record.data_path, record.torrentfile, size, used=used)

    def _write_magnet_torrent(self, record: TorrentRecord) -> None:
        """A magnet's metadata is here: write its .torrent (once) where the task said."""
        path = Path(record.torrentfile)
        if path.exists():
            return
        data = self.engine.torrent_bytes(record.sha1)
        if data is None:
            return
        try:
            write_atomic(path, data)
        except OSError as exc:
            log.error("cannot write %s of magnet %s: %s", path, record.sha1, _reason(exc))
            return
        log.info("magnet %s: metadata from peers; %s written", record.sha1, path)

    def report_status(self, sha1: str) -> tuple[TorrentStatus, str, str] | None:
        """What a status report of ``sha1`` shows: (status, torrentfile name, taskid)."""
        record = self.state.get(sha1)
        if record is None:
            return None
        if record.evicted:
            name = Path(record.data_path).name
            st = expired_status(sha1, name, record.evicted_figures(), status=EVICTED)
        elif record.expired:
            st = expired_status(sha1, Path(record.data_path).name, record.expired_figures())
        elif self.engine.has(sha1):
            st = self.engine.status(sha1)
        else:
            return None
        return st, Path(record.torrentfile).name, record.taskid

    def torrents_status(self) -> list[dict[str, Any]]:
        """``GET /status``: every running torrent, then those stopped at their deadline."""
        torrents = []
        for sha1 in self.engine.torrents():
            st = self.engine.status(sha1)
            record = self.state.get(sha1)
            torrentfile = record.torrentfile if record else ""
            sources = self.byte_sources.totals(sha1) if self.byte_sources else None
            completed_at = self._completed_at.get(sha1) if st.complete else None
            torrents.append(
                {
                    **st.__dict__,
                    "torrentfile": torrentfile,
                    "sources": sources,
                    "completed_at": completed_at,
                }
            )
        # Stopped at their deadline: no longer in the engine, still the node's business.
        for record in self.state.torrents():
            if record.expired and (shown := self.report_status(record.sha1)) is not None:
                torrents.append({**shown[0].__dict__, "torrentfile": record.torrentfile})
        return torrents

    def report_progress(self, sha1: str, *, done: bool, retries: int) -> None:
        """How far reporting of ``sha1`` got; an evicted torrent's row goes once reported."""
        record = self.state.get(sha1)
        if record is not None and record.evicted and done:
            self.state.delete(sha1)
        else:
            self.state.update_report(sha1, done=done, retries=retries)

    def cache_status(self) -> dict[str, Any]:
        """``GET /status``'s ``cache``: the watermarks, the bytes held, the last evictions."""
        c = self.cache
        return {
            "max": c.high,
            "low": c.low,
            "bytes": c.total,
            "evicted_total": c.evicted,
            "evicted": list(self.evictions),
        }

    # ---- the cache (node/cache.py) ---------------------------------------------------

    def served(self, path: Path) -> None:
        """The file server sent ``path``: a use of the complete torrent holding it."""
        if not self._paths:
            return
        now = time.time()
        for candidate in (path, *path.parents):
            sha1 = self._paths.get(str(candidate))
            if sha1 is not None:
                self.cache.used(sha1, now)
                return

    def _completed(
        self, sha1: str, data_path: str, torrentfile: str, size: int, *, used: float | None = None
    ) -> None:
        now = time.time()
        self.cache.completed(sha1, size, now, used=used)
        self._completed_at.setdefault(sha1, now)
        self._paths[data_path] = self._paths[torrentfile] = sha1
        self._cache_wake.set()

    def _pin(self, sha1: str, task: Task) -> None:
        until = _pin_until(task)
        if until is not None:
            self.cache.pin(sha1, until, time.time())
            record = self.state.get(sha1)
            if record is not None and (record.pin_until or 0) < until:
                self.state.set_cache(
                    sha1, size=record.size, used_at=record.used_at, pin_until=until
                )

    def _forget_cached(self, sha1: str) -> None:
        self.cache.forget(sha1)
        self._uploaded.pop(sha1, None)
        self._restored_used.pop(sha1, None)
        self._completed_at.pop(sha1, None)
        for key in [k for k, v in self._paths.items() if v == sha1]:
            del self._paths[key]

    async def run_cache(self) -> None:
        """Keep the cache under --cache-max: one task per node (cancel to stop)."""
        while True:
            self._cache_wake.clear()
            now = time.time()
            if self.cache.enabled:
                self._note_uploads(now)
                if self.cache.over():
                    async with self._lock:
                        for entry in self.cache.plan(time.time()):
                            await self._evict(entry, now)
            for entry in self.cache.take_dirty():
                with contextlib.suppress(SmartGetError):
                    self.state.set_cache(
                        entry.sha1,
                        size=entry.size,
                        used_at=entry.used,
                        pin_until=entry.pinned_until or None,
                    )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CACHE_TICK):
                    await self._cache_wake.wait()

    def _note_uploads(self, now: float) -> None:
        """A complete torrent whose upload total grew since the last look was used."""
        for sha1, entry in self.cache.entries.items():
            if not entry.complete or not self.engine.has(sha1):
                continue
            up = self.engine.status(sha1).uptotal
            if up > self._uploaded.setdefault(sha1, up):
                self.cache.used(sha1, now)
            self._uploaded[sha1] = up

    async def _evict(self, entry: CacheEntry, now: float) -> None:
        """Remove a complete torrent for the cache: engine, data, .torrent; report it."""
        sha1 = entry.sha1
        record = self.state.get(sha1)
        figures: dict[str, float] = {"percent": 100.0, "downtotal": 0.0, "uptotal": 0.0}
        if self.engine.has(sha1):
            st = self.engine.status(sha1)
            figures = {"percent": st.percent, "downtotal": st.downtotal, "uptotal": st.uptotal}
            await self.engine.remove(sha1)
        self._arm(sha1, None)
        name = ""
        if record is not None:
            name = Path(record.data_path).name
            self.stripes.forget(record.data_path)
            await asyncio.to_thread(self._remove_content, record)
        self.cache.evicted_one(sha1)
        self._forget_cached(sha1)
        self.evictions.append(
            {"sha1": sha1, "name": name, "size": entry.size, "used": entry.used, "at": now}
        )
        log.warning(
            "cache: evicted %s (%s, %d bytes, last used %.0f s ago): %d bytes held of "
            "--cache-max %d, going down to %d",
            sha1,
            record.data_path if record else "?",
            entry.size,
            max(0.0, now - entry.used),
            self.cache.total,
            self.cache.high,
            self.cache.low,
        )
        if record is None:
            return
        if self.reporter is None:
            self.state.delete(sha1)
            return
        self.state.mark_evicted(sha1, figures)
        self.state.update_report(sha1, done=False, retries=0)
        self.reporter.untrack(sha1)  # reported afresh, even if its seeding report was final
        self.reporter.track(sha1)

    def _remove_content(self, record: TorrentRecord) -> None:
        """Delete a torrent's data and .torrent, and the directories left empty."""
        data = Path(record.data_path)
        if data.is_dir() and not data.is_symlink():
            shutil.rmtree(data, ignore_errors=True)
        else:
            remove_file(data)
        remove_file(Path(record.torrentfile))
        home = self.roots.containing(data)
        if home is not None:
            prune_empty_dirs(data.parent, home)

    async def run_deadlines(self) -> None:
        """Stop downloads at their tasks' deadlines; one task per node (cancel to stop)."""
        while True:
            self._deadline_wake.clear()
            for sha1 in self.deadlines.due(time.time()):
                try:
                    await self._expire(sha1)
                except (SmartGetError, OSError) as exc:
                    log.error(
                        "cannot expire %s (%s); trying again in %.0f s",
                        sha1,
                        _reason(exc),
                        EXPIRE_RETRY,
                    )
                    self.deadlines.set(sha1, time.time() + EXPIRE_RETRY)
                except Exception:
                    log.exception("while expiring %s", sha1)
            deadline = self.deadlines.next_deadline()
            delay = MAX_TIMER if deadline is None else deadline - time.time()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(MAX_TIMER, max(0.0, delay))):
                    await self._deadline_wake.wait()

    def _arm(self, sha1: str, at: float | None) -> None:
        """Set (None: cancel) the timer of ``sha1``'s deadline."""
        if at is None:
            self.deadlines.cancel(sha1)
        else:
            self.deadlines.set(sha1, at)
            self._deadline_wake.set()

    def _merge_deadline(self, sha1: str, at: float | None) -> None:
        """Another download task for a running torrent: keep the later deadline."""
        record = self.state.get(sha1)
        if record is None or record.expire_at is None or self.engine.is_complete(sha1):
            return  # unbounded already, or complete: nothing to bound
        later = None if at is None else max(at, record.expire_at)
        if later != record.expire_at:
            self.state.set_expire(sha1, later)
            self._arm(sha1, later)

    async def _expire(self, sha1: str) -> None:
        async with self._lock:
            record = self.state.get(sha1)
            if record is None or record.expired or record.expire_at is None:
                return  # stopped, deleted or completed meanwhile
            if record.expire_at > time.time():
                self._arm(sha1, record.expire_at)  # the wall clock stepped back
                return
            if self.engine.is_complete(sha1):
                self.state.set_expire(sha1, None)  # completed: it keeps seeding
                return
            if self.engine.has(sha1):
                st = self.engine.status(sha1)
                figures = {"percent": st.percent, "downtotal": st.downtotal, "uptotal": st.uptotal}
                await self.engine.remove(sha1)  # like /shutdown: data and .torrent stay
            else:  # in the state but not running (it could not be restored)
                figures = self._expire_stopped(sha1)
            self._mark_expired(record, figures)

    def _expire_stopped(self, sha1: str) -> dict[str, float]:
        """The figures of a torrent not in the engine, from its resume data (then removed,
        as :meth:`Engine.remove` removes it when it stops one)."""
        path = self.engine.resume_path(sha1)
        resume = None
        with contextlib.suppress(FileNotFoundError):
            resume = path.read_bytes()
        path.unlink(missing_ok=True)
        return self.engine.resume_progress(resume)[0]

    def _mark_expired(
        self, record: TorrentRecord, figures: dict[str, float], *, down_for: float | None = None
    ) -> None:
        self.state.mark_expired(record.sha1, figures)
        self.expired += 1
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.expire_at or 0))
        log.warning(
            "download %s (task %r) expired at %s%s, %.1f%% done: stopped; its data %s and "
            "%s are kept (download it again to resume, delete it to remove them)",
            record.sha1,
            record.taskid,
            when,
            "" if down_for is None else f" ({down_for:.1f} s ago, while the node was down)",
            figures.get("percent", 0.0),
            record.data_path,
            record.torrentfile,
        )
        self._track(record.sha1)
        if self.reporter is not None:
            self.reporter.changed(record.sha1, EXPIRED)


def _pin_until(task: Task) -> float | None:
    """``args.pin`` (seconds from now, checked by tasks.py) as a UNIX time, or None."""
    pin = task.args.get("pin")
    return None if not pin else time.time() + float(pin)


def _data_relpath(rel: PurePosixPath, fallback: str) -> PurePosixPath:
    """Where a torrent's data goes: the URL's path without ``.torrent`` (seed 003)."""
    name = rel.name
    if name.endswith(TORRENT_SUFFIX) and len(name) > len(TORRENT_SUFFIX):
        return rel.with_name(name[: -len(TORRENT_SUFFIX)])
    return rel.with_name(fallback or f"{name}.data")


def _sized_file(path: Path, size: int) -> None:
    """Make ``path`` a file of ``size`` bytes (parents too; sparse where new); a file of
    that size already keeps its bytes. Blocking."""
    _file_or_nothing(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if os.fstat(fd).st_size != size:
            os.ftruncate(fd, size)
    finally:
        os.close(fd)


def _file_or_nothing(path: Path) -> None:
    if path.exists() and not path.is_file():
        raise TaskError(f"{path} exists and is not a regular file")


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size if path.is_file() else -1
    except OSError:
        return -1


def _stripe_arg(task: Task) -> tuple[int, int] | None:
    """A pipelined push's ``(args.stripe, args.stripes)`` to fetch, or None."""
    return None if task.args.get("stripes") in (None, "") else parse_stripe(task.args)


def _layout(ti: Any) -> tuple[int, int, int]:
    """A torrent's files, size and piece length."""
    return int(ti.num_files()), int(ti.total_size()), int(ti.piece_length())


def _piece_hash(ti: Any) -> Callable[[int], bytes]:
    """A torrent's v1 piece hashes, by index."""
    return lambda index: bytes(ti.hash_for_piece(index))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return str(exc) or type(exc).__name__
