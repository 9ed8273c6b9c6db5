"""The libtorrent session, driven from the asyncio loop through its alerts.

Theory of operation
-------------------
One ``lt.session`` per node. libtorrent writes a byte to a pipe whenever alerts are
waiting (``set_alert_fd``); the loop reads the pipe (``add_reader``), pops the alerts and
handles them in the loop, so no Python code ever runs on libtorrent's threads and no
call blocks the loop for long. Things that wait on libtorrent (removal, resume data,
completion) wait on futures that alerts resolve, each with a deadline.

The engine is a thin driver of the sans-IO swarm policy in :mod:`smartget.node.policy`
(completion, web-seed hold, striping, the tick schedule): it reads libtorrent, feeds
the policy the figures and the time, and applies its decisions. The agent uses the
narrow API below (``has``, ``is_complete``, ``torrents``, ``status``, ``add``,
``remove``, ...), never the session or the handles.

Resume data is asked for on every state change, after completion, every
``resume_interval`` seconds for torrents that changed, and at shutdown; it is written to
``DATA_DIR/resume/<sha1>.resume`` (temp file + rename), with the info dict, so a
``kill -9`` loses at most a few seconds of download and a restart does not recheck.

Network (issue 4, "one machine"): listen and outgoing interfaces bound to ``--ip``; LSD,
UPnP, NAT-PMP off; outgoing uTP off (it costs seconds against TCP-only peers). Rate
limits apply to every peer, loopback and LAN included: by default libtorrent puts those
in its "local" peer class, which is exempt, so the peer class filter puts every address
in the global class instead. Swarm efficiency under upload caps (issue 6):
:func:`~smartget.node.policy.swarm_tuning`.

The fleet's DHT (issue 14): libtorrent's own DHT node runs on the BitTorrent port (UDP),
bootstrapped only from ``--dht-bootstrap`` (the fleet's DHT nodes: the hub's, ``smartget
dht run``), never from the public routers. It is libtorrent's rather than ours embedded
because libtorrent ties it to every torrent: it announces each one, feeds the peers a
lookup finds straight into the torrent, re-announces on its own schedule and fetches a
magnet's metadata, all in its own threads; ours would need that glue written in Python
and a second UDP port. A fleet lives on private or loopback addresses, so the checks
meant for the public DHT are off (one node per /24, search results per /24, verified
node ids), and a torrent is announced at once when it is added and again when the DHT
has bootstrapped (libtorrent alone would wait for its announce timer).

Downloads by magnet or info-hash (issue 14): :meth:`Engine.add_magnet` adds the
info-hash alone, with the trackers the magnet names; libtorrent finds peers through
them and the DHT and gets the info dict from those peers (BEP 9). When it comes
(``metadata_received_alert``) the engine renames the torrent's first path part as
:meth:`Engine.add` does for a ``.torrent`` and tells the agent (``on_change``), which
writes the ``.torrent`` (:meth:`Engine.torrent_bytes`) beside the data.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import libtorrent as lt

from smartget import __version__
from smartget.errors import TorrentError
from smartget.node.policy import (
    DEFAULT_PRIORITY,
    REQUEST_QUEUE,
    SWARM_CONNECTIONS,
    SWARM_UNCHOKE_SLOTS,
    UNCAPPED_REQUEST_QUEUE,
    YOUNG_CHECK,
    Completion,
    Striping,
    TickSchedule,
    WebSeedHolds,
    own_stripe,
    request_queue_for,
    stripe_only,
    stripe_priorities,
    swarm_tuning,
)
from smartget.node.prefetch import unsourced_runs
from smartget.node.settings import EngineSettings
from smartget.node.status import (
    DOWNLOAD_SUCCESS,
    DOWNLOADING,
    INITIAL,
    SEEDING,
    Torrent,
    TorrentStatus,
    percent_done,
    status_label,
)

# Re-exported for the benchmarks and older imports; they live in the pure modules.
__all__ = [
    "DOWNLOADING",
    "DOWNLOAD_SUCCESS",
    "INITIAL",
    "REQUEST_QUEUE",
    "SEEDING",
    "UNCAPPED_REQUEST_QUEUE",
    "Engine",
    "EngineSettings",
    "Torrent",
    "TorrentStatus",
    "info_hash_of",
    "load_torrent",
    "request_queue_for",
    "resume_progress",
    "stripe_priorities",
]

log = logging.getLogger(__name__)

MAX_TORRENT_BYTES = 16 << 20
_swarm_tuning = swarm_tuning  # the name the tests knew


def load_torrent(data: bytes) -> Any:
    """A ``lt.torrent_info`` from .torrent bytes; :class:`TorrentError` if it is not one."""
    if len(data) > MAX_TORRENT_BYTES:
        raise TorrentError(f".torrent larger than {MAX_TORRENT_BYTES} bytes")
    try:
        return lt.torrent_info(lt.bdecode(data))  # type: ignore[arg-type]
    except (RuntimeError, TypeError, ValueError) as exc:
        raise TorrentError(f"not a valid .torrent file: {exc}") from None


def resume_progress(resume: bytes | None) -> tuple[dict[str, float], bool]:
    """(percent, downtotal, uptotal) from resume data this engine wrote, and whether
    every piece is there: the progress of a torrent that is not in the session (the
    agent expires downloads whose deadline fell while the node was down).

    The engine saves resume data with the info dict, so the piece count is in it.
    """
    figures = {"percent": 0.0, "downtotal": 0.0, "uptotal": 0.0}
    if not resume:
        return figures, False
    try:
        atp = lt.read_resume_data(resume)
    except (RuntimeError, ValueError):
        return figures, False
    pieces = atp.ti.num_pieces() if atp.ti is not None else 0
    have = sum(1 for bit in atp.have_pieces if bit)
    whole = pieces > 0 and have >= pieces
    if pieces:
        figures["percent"] = 100.0 if whole else round(min(have * 100.0 / pieces, 99.9), 1)
    figures["downtotal"] = float(atp.total_downloaded)
    figures["uptotal"] = float(atp.total_uploaded)
    return figures, whole


def info_hash_of(ti: Any) -> str:
    """The v1 info-hash in hex: seed 003's ``sha1``."""
    return str(ti.info_hashes().v1)


def _hash_of_alert(alert: Any) -> str:
    with contextlib.suppress(AttributeError, RuntimeError):
        return str(alert.info_hashes.v1)
    return str(alert.handle.info_hashes().v1)


class Engine:
    """The node's libtorrent session. Use only from the event loop that started it."""

    def __init__(
        self,
        settings: EngineSettings,
        resume_dir: Path,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.resume_dir = resume_dir
        self.on_change = on_change or (lambda sha1: None)
        self.handles: dict[str, Any] = {}  # the driver's own; others use the methods
        self._completion = Completion()
        self._waiters: dict[tuple[str, str], list[asyncio.Future[Any]]] = {}
        self._resume_pending: dict[str, int] = {}
        self.listen_port: int | None = None
        self._listening = asyncio.Event()
        self._session: Any = None
        self._pipe: tuple[int, int] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._holds = WebSeedHolds(settings.webseed_fallback)
        self._striping = Striping()
        self._added: dict[str, float] = {}  # sha1 -> when it was added (monotonic)
        self.alerts_handled = 0
        self.resume_saves = 0
        self.resume_rejected = 0
        self.dht_bootstraps = 0
        self._dht_nodes = 0
        self._file_errors: dict[str, str] = {}  # sha1 -> the last disk error (file_error_alert)
        self._renames: dict[str, str] = {}  # magnets: sha1 -> rename_to, once metadata comes
        self.metadata_received = 0

    # ---- lifecycle -------------------------------------------------------------------

    def _pack(self) -> Any:  # a settings_pack; the stubs do not accept a dict
        s = self.settings
        mask = (
            lt.alert_category.error
            | lt.alert_category.status
            | lt.alert_category.storage
            | lt.alert_category.port_mapping
            | lt.alert_category.dht
        )
        return {
            "listen_interfaces": f"{_bracket(s.ip)}:{s.bt_port}",
            "outgoing_interfaces": "" if s.ip in ("0.0.0.0", "::") else s.ip,
            **_dht_pack(s),
            "enable_lsd": False,
            "enable_upnp": False,
            "enable_natpmp": False,
            "enable_outgoing_utp": s.outgoing_utp,
            "enable_incoming_utp": True,
            "alert_mask": int(mask),
            "alert_queue_size": 10000,
            "allow_multiple_connections_per_ip": True,
            "user_agent": f"SmartGet/{__version__} libtorrent/{lt.__version__}",
            "peer_fingerprint": "-SG0100-",
            "upload_rate_limit": s.upload_limit,
            "download_rate_limit": s.download_limit,
            # unchoke_slots is what the hub is told; libtorrent may unchoke more peers
            # than that: a seed must feed every peer of a push at once, or the stripes
            # of the peers it chokes go to the others (issue 6, measured at 8 and 16).
            "unchoke_slots_limit": max(s.unchoke_slots, SWARM_UNCHOKE_SLOTS),
            "announce_ip": "" if s.ip in ("0.0.0.0", "::") else s.ip,
            "active_limit": -1,
            "active_seeds": -1,
            "active_downloads": -1,
            "aio_threads": s.disk_threads,
        } | swarm_tuning(s)

    async def start(self) -> None:
        """Open the session; returns once BitTorrent is listening (or raises)."""
        self.resume_dir.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        self._session = lt.session(self._pack())
        # Rate limits for every peer, loopback and LAN too (see module docstring).
        everyone = lt.ip_filter()
        everyone.add_rule("0.0.0.0", "255.255.255.255", 1 << lt.session.global_peer_class_id)
        everyone.add_rule(
            "::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 1 << lt.session.global_peer_class_id
        )
        self._session.set_peer_class_filter(everyone)
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        os.set_blocking(write_fd, False)
        self._pipe = (read_fd, write_fd)
        self._session.set_alert_fd(write_fd)
        loop.add_reader(read_fd, self._on_readable)
        self._ticker = asyncio.create_task(self._tick_forever(), name="lt-resume-ticker")
        self._on_readable()
        try:
            async with asyncio.timeout(10):
                await self._listening.wait()
        except TimeoutError:
            await self.aclose(save=False)
            raise TorrentError(
                f"BitTorrent could not listen on {self.settings.ip}:{self.settings.bt_port}"
            ) from None

    async def aclose(self, *, save: bool = True, within: float = 10.0) -> None:
        """Save resume data for every torrent (bounded by ``within`` s), then close."""
        if self._session is None:
            return
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        if save and self.handles:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(within):
                    await asyncio.gather(*(self.save_resume(s, force=True) for s in self.handles))
        session, self._session = self._session, None
        loop = asyncio.get_running_loop()
        if self._pipe is not None:
            loop.remove_reader(self._pipe[0])
        # The session's destructor joins libtorrent's threads: keep it off the loop.
        box = [session]
        del session
        await asyncio.to_thread(box.clear)
        if self._pipe is not None:
            for fd in self._pipe:
                os.close(fd)
            self._pipe = None

    # ---- torrents --------------------------------------------------------------------

    def add(
        self,
        ti: Any,
        save_path: Path,
        *,
        rename_to: str | None = None,
        seed_mode: bool = False,
        resume: bytes | None = None,
        have: range | None = None,
    ) -> str:
        """Add a torrent; its data lands in ``save_path``, its first path part renamed.

        ``have``: pieces known to be on disk already (a striped push's own stripe,
        :mod:`smartget.node.prefetch`), taken as had without a check; ignored with
        resume data, which says what is had itself."""
        sha1 = info_hash_of(ti)
        if sha1 in self.handles:
            return sha1
        atp = None
        had = False  # pieces taken as had (have), unchecked
        if resume:
            try:
                atp = lt.read_resume_data(resume)
            except (RuntimeError, ValueError) as exc:
                log.warning("resume data of %s unusable (%s); will recheck", sha1, exc)
        if atp is None:
            atp = lt.add_torrent_params()
            if rename_to:
                layout = ti.layout()
                count = layout.num_files()
                renamed = {}
                for index in range(count):
                    rest = layout.file_path(index).split(os.sep, 1)[1:] if count > 1 else []
                    renamed[index] = os.path.join(rename_to, *rest)
                atp.renamed_files = renamed
            if have and not seed_mode:
                pieces = ti.num_pieces()
                first, end = min(have.start, pieces), min(have.stop, pieces)
                atp.have_pieces = (
                    [False] * first + [True] * (end - first) + [False] * (pieces - end)
                )
                had = True
        atp.ti = ti
        atp.save_path = str(save_path)
        atp.max_connections = SWARM_CONNECTIONS
        flags = atp.flags if resume else lt.torrent_flags.default_flags
        flags &= ~lt.torrent_flags.auto_managed
        flags &= ~lt.torrent_flags.paused
        holding = not seed_mode and self._holds.enabled
        if seed_mode:
            flags |= lt.torrent_flags.seed_mode
        elif had:
            # Only the pieces of have_pieces are had; the rest of the files is not read.
            flags |= lt.torrent_flags.no_verify_files
        if holding:
            # Added paused, its web seeds taken off, then resumed: a torrent that
            # starts at once can reach the origin before remove_url_seed lands.
            flags |= lt.torrent_flags.paused
        atp.flags = flags
        try:
            handle = self._session.add_torrent(atp)
        except RuntimeError as exc:
            raise TorrentError(f"libtorrent refused the torrent {sha1}: {exc}") from None
        self.handles[sha1] = handle
        now = time.monotonic()
        self._added[sha1] = now
        if holding:
            # The torrent's url-list is in url_seeds() once added (ti.web_seeds() is
            # deprecated: a DeprecationWarning on every add).
            urls = list(handle.url_seeds())
            for url in self._holds.hold(sha1, urls, now):
                handle.remove_url_seed(url)
            handle.resume()
        if seed_mode:
            self._completion.seeded(sha1)
            self.request_resume(sha1)
        if self.settings.dht:
            handle.force_dht_announce()
        return sha1

    def add_magnet(
        self,
        sha1: str,
        save_path: Path,
        *,
        trackers: tuple[str, ...] = (),
        rename_to: str | None = None,
    ) -> str:
        """Add a torrent by its v1 info-hash (hex, checked by :mod:`smartget.node.magnet`):
        libtorrent gets its metadata from peers; then it is renamed like :meth:`add`."""
        if sha1 in self.handles:
            return sha1
        atp = lt.add_torrent_params()
        atp.info_hashes = lt.info_hash_t(lt.sha1_hash(bytes.fromhex(sha1)))
        atp.trackers = list(trackers)
        atp.save_path = str(save_path)
        atp.max_connections = SWARM_CONNECTIONS
        if rename_to:
            atp.name = rename_to
        flags = lt.torrent_flags.default_flags
        flags &= ~lt.torrent_flags.auto_managed
        flags &= ~lt.torrent_flags.paused
        atp.flags = flags
        try:
            handle = self._session.add_torrent(atp)
        except RuntimeError as exc:
            raise TorrentError(f"libtorrent refused the magnet {sha1}: {exc}") from None
        self.handles[sha1] = handle
        self._added[sha1] = time.monotonic()
        if rename_to:
            self._renames[sha1] = rename_to
        if self.settings.dht:
            handle.force_dht_announce()
        return sha1

    def has_metadata(self, sha1: str) -> bool:
        """Whether ``sha1`` runs and its info dict is known (always, unless a magnet)."""
        handle = self.handles.get(sha1)
        return handle is not None and handle.torrent_file() is not None

    def torrent_bytes(self, sha1: str) -> bytes | None:
        """The ``.torrent`` of a running torrent (its info dict exactly as hashed, and
        its trackers), or None while a magnet's metadata is not here."""
        handle = self.handles.get(sha1)
        ti = None if handle is None else handle.torrent_file()
        if handle is None or ti is None:
            return None
        info = bytes(ti.info_section())
        trackers = [str(t["url"]) for t in handle.trackers()]
        head = b""
        if trackers:
            first = trackers[0].encode()
            tiers = b"".join(b"l%d:%se" % (len(t.encode()), t.encode()) for t in trackers)
            head = b"8:announce%d:%s13:announce-listl%se" % (len(first), first, tiers)
        return b"d" + head + b"4:info" + info + b"e"

    async def checked(self, sha1: str, within: float) -> bool:
        """Wait (at most ``within`` s) until libtorrent has checked the torrent: it drops
        pieces handed to a torrent still checking (add_piece). True once checked."""
        handle = self.handles.get(sha1)
        if handle is None:
            return False
        if handle.status(0).state not in CHECKING:
            return True
        future = self._wait_for("checked", sha1)
        try:
            await asyncio.wait_for(future, within)
        except TimeoutError:
            self._forget_waiter("checked", sha1, future)  # removed meanwhile, maybe
            return False
        return True

    def add_piece(self, sha1: str, index: int, data: bytes) -> bool:
        """Hand libtorrent one piece fetched outside it (a pipelined push's stripe): it
        checks the piece, writes it and offers it to the peers. False if ``sha1`` does not
        run or is being checked (libtorrent would drop the piece: see :meth:`checked`).
        Safe from any thread (libtorrent's handle calls are)."""
        handle = self.handles.get(sha1)
        # status(0): the state alone, not the optional fields (once a piece)
        if handle is None or handle.status(0).state in CHECKING:
            return False
        handle.add_piece(index, data, 0)
        return True

    def origin_wanted(self, sha1: str, index: int) -> bool:
        """Whether piece ``index`` is still to come from the origin: not had here and no
        connected peer has it. Safe from any thread."""
        handle = self.handles.get(sha1)
        try:
            if handle is None or handle.have_piece(index):
                return False
            availability = handle.piece_availability()
        except RuntimeError:  # removed meanwhile (an invalid handle)
            return False
        return index < len(availability) and availability[index] == 0

    def unsourced(self, sha1: str) -> list[range]:
        """Runs of pieces neither this node nor any connected peer has (prefetch.py)."""
        handle = self.handles.get(sha1)
        try:
            have = list(handle.status().pieces) if handle is not None else []
            availability = handle.piece_availability() if handle is not None else []
        except RuntimeError:  # removed meanwhile (an invalid handle)
            return []
        return unsourced_runs(have, availability)

    def fail(self, sha1: str, reason: str) -> None:
        """Stop a download that cannot succeed: paused, its status ``failed`` with ``reason``."""
        handle = self.handles.get(sha1)
        if handle is None:
            return
        self._file_errors[sha1] = reason
        handle.pause()

    def size(self, sha1: str) -> int:
        """The torrent's total size in bytes (0 while a magnet's metadata is not here)."""
        handle = self.handles.get(sha1)
        ti = None if handle is None else handle.torrent_file()
        return 0 if ti is None else int(ti.total_size())

    async def remove(self, sha1: str, *, within: float = 10.0) -> bool:
        """Stop a torrent (data stays); False if it was not running."""
        handle = self.handles.pop(sha1, None)
        self._added.pop(sha1, None)
        self._file_errors.pop(sha1, None)
        self._renames.pop(sha1, None)
        if handle is None:
            return False
        self._completion.forget(sha1)
        waiter = self._wait_for("removed", sha1)
        self._session.remove_torrent(handle)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await waiter
        with contextlib.suppress(FileNotFoundError):
            (self.resume_dir / f"{sha1}.resume").unlink()
        return True

    @property
    def complete(self) -> set[str]:
        """The torrents that are complete (finished and flushed); read only."""
        return self._completion.complete

    @property
    def restripes(self) -> int:
        return self._striping.restripes

    def has(self, sha1: str) -> bool:
        """Whether ``sha1`` runs in the session."""
        return sha1 in self.handles

    def is_complete(self, sha1: str) -> bool:
        return sha1 in self._completion

    def torrents(self) -> list[str]:
        """The info-hashes of the torrents that run, in the order they were added."""
        return list(self.handles)

    @staticmethod
    def load(data: bytes) -> Torrent:
        """Parse .torrent bytes (:func:`load_torrent`)."""
        ti = load_torrent(data)
        return Torrent(info_hash_of(ti), ti.name(), ti)

    @staticmethod
    def resume_progress(resume: bytes | None) -> tuple[dict[str, float], bool]:
        """:func:`resume_progress`: the figures of a torrent not in the session."""
        return resume_progress(resume)

    def set_upload_limit(self, sha1: str, rate: int) -> None:
        """Cap one torrent's upload (bytes/s; 0: only the node's own cap). It is kept in
        the torrent's resume data, so it holds after a restart."""
        handle = self.handles.get(sha1)
        if handle is None:
            raise TorrentError(f"no torrent with sha1 {sha1}")
        handle.set_upload_limit(rate)

    def upload_limit(self, sha1: str) -> int:
        handle = self.handles.get(sha1)
        return 0 if handle is None else max(0, int(handle.upload_limit()))

    def connect_peer(self, sha1: str, address: tuple[str, int]) -> None:
        """Tell a torrent about a peer (tests and controllers that know one)."""
        handle = self.handles.get(sha1)
        if handle is None:
            raise TorrentError(f"no torrent with sha1 {sha1}")
        handle.connect_peer(address)

    def status(self, sha1: str) -> TorrentStatus:
        handle = self.handles.get(sha1)
        if handle is None:
            raise TorrentError(f"no torrent with sha1 {sha1}")
        st = handle.status()
        complete = sha1 in self._completion
        states = lt.torrent_status.states
        label = status_label(
            complete=complete,
            seeding=st.state == states.seeding,
            transferring=st.state in (states.downloading, states.finished, states.seeding),
        )
        error = str(st.errc.message()) if st.errc.value() else self._file_errors.get(sha1, "")
        if error and not complete:
            # libtorrent stopped it (a full disk, a file it cannot write): the collector
            # and GET /status say so, with the reason in "error" (issue 14).
            label = FAILED
        remaining = max(0, st.total_wanted - st.total_wanted_done)
        rate = st.download_payload_rate
        return TorrentStatus(
            sha1=sha1,
            name=st.name,
            status=label,
            percent=percent_done(st.progress, complete=complete),
            downrate=st.download_payload_rate,
            uprate=st.upload_payload_rate,
            downtotal=max(st.all_time_download, st.total_payload_download),
            uptotal=max(st.all_time_upload, st.total_payload_upload),
            numpeers=st.num_peers,
            numseeds=st.num_seeds,
            timeleft=0 if complete or not rate else remaining // rate,  # 0: unknown (seed)
            complete=complete,
            error=error,
        )

    async def wait_complete(self, sha1: str, within: float) -> None:
        """Wait until ``sha1`` is complete (finished and flushed to disk)."""
        if sha1 in self._completion:
            return
        waiter = self._wait_for("complete", sha1)
        async with asyncio.timeout(within):
            await waiter

    def free_upload_slots(self) -> int:
        """Upload slots not in use: the hub's "status" of this node."""
        used: int = sum(h.status().num_uploads for h in self.handles.values())
        return max(0, self.settings.unchoke_slots - used)

    def statistics(self) -> dict[str, int]:
        return {
            "torrents": len(self.handles),
            "complete": len(self._completion),
            "alerts_handled": self.alerts_handled,
            "resume_saves": self.resume_saves,
            "resume_rejected": self.resume_rejected,
            "restripes": self.restripes,
            "dht_bootstraps": self.dht_bootstraps,
            "dht_nodes": self.dht_nodes(),
            "metadata_received": self.metadata_received,
        }

    def dht_nodes(self) -> int:
        """Nodes in the DHT's routing table, as of the last count (every 2 s; 0: off)."""
        return self._dht_nodes

    # ---- resume data -----------------------------------------------------------------

    def request_resume(self, sha1: str, *, force: bool = False) -> None:
        handle = self.handles.get(sha1)
        if handle is None:
            return
        flags = lt.save_resume_flags_t.save_info_dict
        if not force:
            flags |= lt.save_resume_flags_t.only_if_modified
        handle.save_resume_data(flags)

    async def save_resume(self, sha1: str, *, force: bool = False) -> None:
        waiter = self._wait_for("resume", sha1)
        self.request_resume(sha1, force=force)
        await waiter

    def resume_path(self, sha1: str) -> Path:
        return self.resume_dir / f"{sha1}.resume"

    def _write_resume(self, sha1: str, params: Any) -> None:
        if sha1 not in self.handles:
            return  # removed meanwhile: its resume data must not come back
        data = lt.write_resume_data_buf(params)
        path = self.resume_path(sha1)
        temp = path.with_suffix(".tmp")
        temp.write_bytes(data)
        os.replace(temp, path)
        self.resume_saves += 1

    async def _tick_forever(self) -> None:
        schedule = TickSchedule(self.settings.resume_interval, time.monotonic())
        ticks = 0
        while True:
            await asyncio.sleep(YOUNG_CHECK)
            ticks += 1
            if self.settings.dht and ticks % DHT_STATS_TICKS == 0 and self._session is not None:
                self._session.post_dht_stats()  # answered by a dht_stats_alert
            if self.settings.dht and ticks % PEERLESS_TICKS == 0:
                self._announce_peerless()
            now = time.monotonic()
            tick = schedule.tick(now)
            if tick.release_web_seeds:
                self._release_web_seeds(now)
            self._restripe(young_after=tick.young_after)
            if tick.save_resume:
                for sha1 in list(self.handles):
                    self.request_resume(sha1)

    def _release_web_seeds(self, now: float) -> None:
        """Give a download its web seeds back once peers stopped helping it; hold them
        again once a striped fallback has its stripe."""
        for sha1 in self._holds.fetching_stripes():
            handle = self.handles.get(sha1)
            ti = None if handle is None else handle.torrent_file()
            if handle is None or ti is None or sha1 in self._completion:
                self._holds.forget(sha1)
                continue
            stripe = self._striping.current(sha1, self._own_address(handle), ti.num_pieces())
            st = handle.status()
            if stripe is None or all(st.pieces[i] for i in own_stripe(stripe)):
                self._stripe_done(sha1, handle, st.total_wanted_done)
        for sha1 in self._holds.held():
            handle = self.handles.get(sha1)
            if handle is None or sha1 in self._completion:
                self._holds.forget(sha1)
                continue
            can_stripe = self._striping.members(sha1) >= 2
            done = handle.status().total_wanted_done
            fallback = self._holds.check(sha1, done, now, can_stripe=can_stripe)
            if fallback is None:
                continue
            ti = handle.torrent_file()
            own = self._own_address(handle)
            stripe = None if ti is None else self._striping.current(sha1, own, ti.num_pieces())
            if fallback.striped and stripe is not None:
                handle.prioritize_pieces(stripe_only(stripe))
            log.info(
                "%s: no progress from peers for %.0f s; using its web seed(s) %s%s",
                sha1,
                fallback.idle,
                ", ".join(fallback.urls),
                " for its own stripe" if fallback.striped else "",
            )
            for url in fallback.urls:
                handle.add_url_seed(url)

    def _stripe_done(self, sha1: str, handle: Any, done: int) -> None:
        """A striped fallback has its stripe: web seeds held again, every piece wanted."""
        if not self._holds.striping(sha1):
            return
        urls = self._holds.stripe_done(sha1, done, time.monotonic())
        for url in urls:
            handle.remove_url_seed(url)
        ti = handle.torrent_file()
        if ti is None:
            return
        stripe = self._striping.current(sha1, self._own_address(handle), ti.num_pieces())
        handle.prioritize_pieces(stripe or [DEFAULT_PRIORITY] * ti.num_pieces())
        log.info("%s: own stripe fetched; the rest from peers (web seeds held again)", sha1)

    def _own_address(self, handle: Any) -> str:
        """This node's address as its peers see it (the stripes are keyed by it)."""
        own = self.settings.ip
        if own not in ("0.0.0.0", "::"):
            return own
        for peer in handle.get_peer_info():
            return str(peer.local_endpoint[0])
        return own

    def _restripe(self, young_after: float | None = None) -> None:
        """Re-split downloads into stripes when their set of downloading peers changed.

        With ``young_after``, only downloads added after that time (monotonic).
        """
        for sha1, handle in self.handles.items():
            if young_after is not None and self._added.get(sha1, 0.0) <= young_after:
                continue
            if sha1 in self._completion:
                self._striping.forget(sha1)
                continue
            own, members = self.settings.ip, []
            for peer in handle.get_peer_info():
                if peer.flags & peer.connecting or peer.flags & peer.handshake:
                    continue
                if own in ("0.0.0.0", "::"):
                    own = str(peer.local_endpoint[0])
                if not peer.flags & peer.seed:
                    members.append(str(peer.ip[0]))
            key = self._striping.changed(sha1, own, members)
            if key is None:
                continue
            ti = handle.torrent_file()
            if ti is None:
                continue
            priorities = self._striping.assign(sha1, key, own, ti.num_pieces())
            if self._holds.striping(sha1):  # fetching its own stripe from the origin
                priorities = stripe_only(priorities)
            handle.prioritize_pieces(priorities)
            log.debug("%s: stripe %d of %d", sha1, key.index(own), len(key) if len(key) > 1 else 0)

    def _announce_peerless(self) -> None:
        """A download that has no peer yet looks again now rather than at its next
        announce: when the DHT's routing table grew (a lookup made while the table held
        one node or two may have missed the nodes that keep the swarm's announces), and
        every :data:`PEERLESS_TICKS` ticks."""
        for sha1, handle in self.handles.items():
            if sha1 not in self._completion and handle.status().num_peers == 0:
                handle.force_dht_announce()

    def _rename(self, sha1: str, handle: Any) -> None:
        """A magnet's metadata came: its first path part becomes ``rename_to`` (as add)."""
        rename_to = self._renames.pop(sha1, None)
        ti = handle.torrent_file()
        if not rename_to or ti is None:
            return
        layout = ti.layout()
        count = layout.num_files()
        for index in range(count):
            rest = layout.file_path(index).split(os.sep, 1)[1:] if count > 1 else []
            handle.rename_file(index, os.path.join(rename_to, *rest))

    # ---- alerts ----------------------------------------------------------------------

    def _wait_for(self, kind: str, sha1: str) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault((kind, sha1), []).append(future)
        return future

    def _forget_waiter(self, kind: str, sha1: str, future: asyncio.Future[Any]) -> None:
        waiting = self._waiters.get((kind, sha1), [])
        if future in waiting:
            waiting.remove(future)
        if not waiting:
            self._waiters.pop((kind, sha1), None)

    def _resolve(self, kind: str, sha1: str, value: Any = None) -> None:
        for future in self._waiters.pop((kind, sha1), []):
            if not future.done():
                future.set_result(value)

    def _on_readable(self) -> None:
        if self._pipe is not None:
            with contextlib.suppress(BlockingIOError):
                while os.read(self._pipe[0], 4096):
                    pass
        if self._session is None:
            return
        for alert in self._session.pop_alerts():
            self.alerts_handled += 1
            try:
                self._handle(alert)
            except Exception:
                log.exception("while handling %s", type(alert).__name__)

    def _handle(self, alert: Any) -> None:
        if isinstance(alert, lt.listen_succeeded_alert):
            if alert.socket_type == lt.socket_type_t.tcp:
                self.listen_port = alert.port
                self._listening.set()
            return
        if isinstance(alert, lt.listen_failed_alert):
            log.error("BitTorrent: %s", alert.message())
            return
        if isinstance(alert, lt.torrent_removed_alert):
            self._resolve("removed", _hash_of_alert(alert))
            return
        if isinstance(alert, lt.save_resume_data_failed_alert):
            self._resolve("resume", _hash_of_alert(alert))
            return
        if isinstance(alert, lt.save_resume_data_alert):
            sha1 = _hash_of_alert(alert)
            self._write_resume(sha1, alert.params)
            self._resolve("resume", sha1)
            return
        if isinstance(alert, lt.torrent_finished_alert | lt.state_changed_alert):
            sha1 = _hash_of_alert(alert)
            if sha1 not in self.handles:
                return
            st = alert.handle.status()
            if st.state not in CHECKING:
                self._resolve("checked", sha1)
            finished = st.state in (
                lt.torrent_status.states.finished,
                lt.torrent_status.states.seeding,
            )
            if finished and self._holds.striping(sha1):
                # Finished its own stripe (the rest is priority 0): not complete yet.
                self._stripe_done(sha1, alert.handle, st.total_wanted_done)
            elif finished and self._completion.finished(sha1):
                alert.handle.flush_cache()  # issue 4: flushed before it counts as complete
            self.request_resume(sha1)
            self.on_change(sha1)
            return
        if isinstance(alert, lt.cache_flushed_alert):
            sha1 = _hash_of_alert(alert)
            if self._completion.flushed(sha1):
                log.info("torrent %s complete and flushed", sha1)
                self._resolve("complete", sha1)
                self.request_resume(sha1)
                self.on_change(sha1)
            return
        if isinstance(alert, lt.metadata_received_alert):
            sha1 = _hash_of_alert(alert)
            if sha1 in self.handles:
                self.metadata_received += 1
                self._rename(sha1, alert.handle)
                log.info("torrent %s: metadata received from peers", sha1)
                self.request_resume(sha1)
                self.on_change(sha1)
            return
        if isinstance(alert, lt.dht_stats_alert):
            before = self._dht_nodes
            self._dht_nodes = sum(int(b["num_nodes"]) for b in alert.routing_table)
            if self._dht_nodes > before:
                self._announce_peerless()
            return
        if isinstance(alert, lt.dht_bootstrap_alert):
            log.info("DHT bootstrapped; announcing %d torrents", len(self.handles))
            self.dht_bootstraps += 1
            for handle in self.handles.values():
                handle.force_dht_announce()
            return
        if isinstance(alert, lt.fastresume_rejected_alert):
            self.resume_rejected += 1  # libtorrent falls back to a full recheck
            log.warning("resume data rejected: %s", alert.message())
            return
        if isinstance(alert, lt.file_error_alert):
            sha1 = _hash_of_alert(alert)
            if sha1 in self.handles and sha1 not in self._completion:
                self._file_errors[sha1] = f"{alert.error.message()} ({alert.filename()})"
        if isinstance(alert, lt.torrent_error_alert | lt.file_error_alert):
            log.warning("torrent: %s", alert.message())


# libtorrent's states before a torrent takes pieces (add_piece drops them meanwhile)
CHECKING = (
    lt.torrent_status.states.checking_files,
    lt.torrent_status.states.checking_resume_data,
)
FAILED = "failed"  # the collector's status of a download libtorrent stopped on an error
DHT_ANNOUNCE_INTERVAL = 60  # seconds between announces of all torrents (libtorrent: 900)
DHT_STATS_TICKS = 20  # count the DHT's nodes every 20 ticks (2 s)
# A download without a single peer asks the DHT again every 100 ticks (10 s), not at
# the next announce (60 s): with the hub away the DHT is how it finds the swarm, and
# the node that holds the swarm's announce may have joined since its last lookup.
PEERLESS_TICKS = 100


def _dht_pack(s: EngineSettings) -> dict[str, Any]:
    """libtorrent's DHT settings for a fleet (see the module docstring)."""
    if not s.dht:
        return {"enable_dht": False}
    return {
        "enable_dht": True,
        "dht_bootstrap_nodes": ",".join(f"{_bracket(h)}:{p}" for h, p in s.dht_bootstrap),
        "dht_restrict_routing_ips": False,
        "dht_restrict_search_ips": False,
        "dht_prefer_verified_node_ids": False,
        "dht_enforce_node_id": False,
        "dht_ignore_dark_internet": False,
        "dht_block_ratelimit": 1000,  # queries/s from one address: a fleet shares a few
        "dht_announce_interval": DHT_ANNOUNCE_INTERVAL,
    }


def _bracket(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip
