"""The libtorrent session, driven from the asyncio loop through its alerts.

Theory of operation
-------------------
One ``lt.session`` per node. libtorrent writes a byte to a pipe whenever alerts are
waiting (``set_alert_fd``); the loop reads the pipe (``add_reader``), pops the alerts and
handles them in the loop, so no Python code ever runs on libtorrent's threads and no
call blocks the loop for long. Things that wait on libtorrent (removal, resume data,
completion) wait on futures that alerts resolve, each with a deadline.

Completion (issue 4): a torrent counts as complete only after ``torrent_finished_alert``
*and then* ``cache_flushed_alert`` for it: a file hashed right at the finished alert can
still be incomplete on disk. Torrents this node made itself (seed mode) are complete
from the start.

Resume data is asked for on every state change, after completion, every
``resume_interval`` seconds for torrents that changed, and at shutdown; it is written to
``DATA_DIR/resume/<sha1>.resume`` (temp file + rename), with the info dict, so a
``kill -9`` loses at most a few seconds of download and a restart does not recheck.

Network (issue 4, "one machine"): listen and outgoing interfaces bound to ``--ip``; LSD,
UPnP, NAT-PMP and libtorrent's DHT off; outgoing uTP off (it costs seconds against
TCP-only peers). Rate limits apply to every peer, loopback and LAN included: by default
libtorrent puts those in its "local" peer class, which is exempt, so the peer class
filter puts every address in the global class instead.

Swarm efficiency under upload caps (issue 6): with a capped seed the seed's upload is
the bottleneck, so every piece it sends twice, and every tick it cannot fill, is time
lost. :func:`_swarm_tuning` holds the libtorrent settings that were measured to matter
(how libtorrent's rate limiter works and why each setting, in its docstring), and each
download is split into stripes (:func:`stripe_priorities`) so that peers fetch
different pieces from the seed and the rest from each other: re-checked every 0.1 s
while the download is young and its peers are still connecting, then once a second
(checking only once a second, a seed at 20 MiB/s sent 1.13-1.15 F at N = 8, against
1.10-1.11 F).
Without a cap nothing is hoarded on loopback, but on a real network a connection
carries at most reqq blocks per round trip, so an uncapped node advertises a deep queue
(:func:`request_queue_for`, measured with ``benchmarks/wan.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libtorrent as lt

from smartget import __version__
from smartget.errors import TorrentError

__all__ = [
    "Engine",
    "EngineSettings",
    "TorrentStatus",
    "info_hash_of",
    "load_torrent",
    "resume_progress",
]

log = logging.getLogger(__name__)

# Seed 003's status strings ("status" of status_response).
INITIAL = "Initial startup"
DOWNLOADING = "downloading"
DOWNLOAD_SUCCESS = "download success"
SEEDING = "seeding"

MAX_TORRENT_BYTES = 16 << 20
BLOCK = 16 << 10  # bytes a peer requests at a time (BEP 3's usual 2^14)
REQUEST_QUEUE = 8  # least block requests a peer may queue at this node (see _swarm_tuning)
UNCAPPED_REQUEST_QUEUE = 500  # ... without an upload cap (see request_queue_for)
TICK_MS = 5  # libtorrent's tick, when its rate limiter hands out quota (see _swarm_tuning)
QUEUE_TICKS = 5  # the requests a peer may queue cover this many ticks of the upload cap
# A new download's peers connect within a few tenths of a second of each other; its
# stripes are checked this often while it is young, then once a second (_restripe).
YOUNG_CHECK = 0.1
YOUNG_FOR = 3.0
SWARM_UNCHOKE_SLOTS = 32  # peers a node uploads to at once, at least


@dataclass
class EngineSettings:
    ip: str = "0.0.0.0"
    bt_port: int = 6881
    upload_limit: int = 0  # bytes/s, 0 = none
    download_limit: int = 0
    outgoing_utp: bool = False
    resume_interval: float = 5.0
    unchoke_slots: int = 8  # upload slots, reported to the hub as free capacity
    # Seconds a download may go without progress from peers before it may use the
    # torrent's web seeds (the origin); 0 uses them from the start. The fleet should
    # fetch from each other, so the origin sends each byte about once (DESIGN.md).
    webseed_fallback: float = 10.0
    # The reqq this node advertises: how many block requests one peer may queue here.
    # None: REQUEST_QUEUE, or more under a high upload cap (request_queue_for).
    peer_request_queue: int | None = None


@dataclass
class _HeldWebSeeds:
    """Web seeds taken off a download until its peers stop making progress."""

    urls: list[str]
    progress: int  # total_wanted_done at the last check that saw progress
    since: float  # when that progress was seen


@dataclass(frozen=True)
class TorrentStatus:
    """One torrent's figures, in seed 003's status_response vocabulary."""

    sha1: str
    name: str
    status: str
    percent: float
    downrate: int
    uprate: int
    downtotal: int
    uptotal: int
    numpeers: int
    numseeds: int
    timeleft: int
    complete: bool
    error: str


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
        self.handles: dict[str, Any] = {}
        self.complete: set[str] = set()
        self._flushing: set[str] = set()
        self._waiters: dict[tuple[str, str], list[asyncio.Future[Any]]] = {}
        self._resume_pending: dict[str, int] = {}
        self.listen_port: int | None = None
        self._listening = asyncio.Event()
        self._session: Any = None
        self._pipe: tuple[int, int] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._held_web_seeds: dict[str, _HeldWebSeeds] = {}
        self._stripes: dict[str, tuple[str, ...]] = {}
        self._added: dict[str, float] = {}  # sha1 -> when it was added (monotonic)
        self.restripes = 0
        self.alerts_handled = 0
        self.resume_saves = 0
        self.resume_rejected = 0

    # ---- lifecycle -------------------------------------------------------------------

    def _pack(self) -> Any:  # a settings_pack; the stubs do not accept a dict
        s = self.settings
        mask = (
            lt.alert_category.error
            | lt.alert_category.status
            | lt.alert_category.storage
            | lt.alert_category.port_mapping
        )
        return {
            "listen_interfaces": f"{_bracket(s.ip)}:{s.bt_port}",
            "outgoing_interfaces": "" if s.ip in ("0.0.0.0", "::") else s.ip,
            "enable_dht": False,
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
        } | _swarm_tuning(s)

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
    ) -> str:
        """Add a torrent; its data lands in ``save_path``, its first path part renamed."""
        sha1 = info_hash_of(ti)
        if sha1 in self.handles:
            return sha1
        atp = None
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
        atp.ti = ti
        atp.save_path = str(save_path)
        flags = atp.flags if resume else lt.torrent_flags.default_flags
        flags &= ~lt.torrent_flags.auto_managed
        flags &= ~lt.torrent_flags.paused
        if seed_mode:
            flags |= lt.torrent_flags.seed_mode
        atp.flags = flags
        try:
            handle = self._session.add_torrent(atp)
        except RuntimeError as exc:
            raise TorrentError(f"libtorrent refused the torrent {sha1}: {exc}") from None
        self.handles[sha1] = handle
        self._added[sha1] = time.monotonic()
        if not seed_mode and self.settings.webseed_fallback > 0:
            self._hold_web_seeds(sha1, handle, ti)
        if seed_mode:
            self.complete.add(sha1)
            self.request_resume(sha1)
        return sha1

    async def remove(self, sha1: str, *, within: float = 10.0) -> bool:
        """Stop a torrent (data stays); False if it was not running."""
        handle = self.handles.pop(sha1, None)
        self._added.pop(sha1, None)
        if handle is None:
            return False
        self.complete.discard(sha1)
        self._flushing.discard(sha1)
        waiter = self._wait_for("removed", sha1)
        self._session.remove_torrent(handle)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await waiter
        with contextlib.suppress(FileNotFoundError):
            (self.resume_dir / f"{sha1}.resume").unlink()
        return True

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
        complete = sha1 in self.complete
        states = lt.torrent_status.states
        if complete and st.state == states.seeding:
            label = SEEDING
        elif complete:
            label = DOWNLOAD_SUCCESS
        elif st.state in (states.downloading, states.finished, states.seeding):
            # Finished but not flushed yet is not complete (issue 4). The label must
            # change at the flush too: the reporter reports at once on a new label.
            label = DOWNLOADING
        else:
            label = INITIAL
        remaining = max(0, st.total_wanted - st.total_wanted_done)
        rate = st.download_payload_rate
        return TorrentStatus(
            sha1=sha1,
            name=st.name,
            status=label,
            percent=100.0 if complete else round(min(st.progress * 100.0, 99.9), 1),
            downrate=st.download_payload_rate,
            uprate=st.upload_payload_rate,
            downtotal=max(st.all_time_download, st.total_payload_download),
            uptotal=max(st.all_time_upload, st.total_payload_upload),
            numpeers=st.num_peers,
            numseeds=st.num_seeds,
            timeleft=0 if complete or not rate else remaining // rate,  # 0: unknown (seed)
            complete=complete,
            error=str(st.errc.message()) if st.errc.value() else "",
        )

    async def wait_complete(self, sha1: str, within: float) -> None:
        """Wait until ``sha1`` is complete (finished and flushed to disk)."""
        if sha1 in self.complete:
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
            "complete": len(self.complete),
            "alerts_handled": self.alerts_handled,
            "resume_saves": self.resume_saves,
            "resume_rejected": self.resume_rejected,
            "restripes": self.restripes,
        }

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
        last_resume = last_second = time.monotonic()
        while True:
            await asyncio.sleep(YOUNG_CHECK)
            now = time.monotonic()
            if now - last_second < 1.0:
                # Between seconds, only young downloads: at 20 MiB/s a seed sends a
                # third of a 64 MiB file in the first second, unstriped (issue 6).
                self._restripe(young_after=now - YOUNG_FOR)
                continue
            last_second = now
            self._release_web_seeds(now)
            self._restripe()
            if now - last_resume >= self.settings.resume_interval:
                last_resume = now
                for sha1 in list(self.handles):
                    self.request_resume(sha1)

    def _hold_web_seeds(self, sha1: str, handle: Any, ti: Any) -> None:
        urls = set(handle.url_seeds()) | {seed["url"] for seed in ti.web_seeds()}
        if not urls:
            return
        for url in urls:
            handle.remove_url_seed(url)
        self._held_web_seeds[sha1] = _HeldWebSeeds(sorted(urls), 0, time.monotonic())

    def _release_web_seeds(self, now: float) -> None:
        """Give a download its web seeds back once peers stopped helping it."""
        for sha1, held in list(self._held_web_seeds.items()):
            handle = self.handles.get(sha1)
            if handle is None or sha1 in self.complete:
                del self._held_web_seeds[sha1]
                continue
            done = handle.status().total_wanted_done
            if done > held.progress:
                held.progress, held.since = done, now
            elif now - held.since >= self.settings.webseed_fallback:
                log.info(
                    "%s: no progress from peers for %.0f s; using its web seed(s) %s",
                    sha1,
                    now - held.since,
                    ", ".join(held.urls),
                )
                for url in held.urls:
                    handle.add_url_seed(url)
                del self._held_web_seeds[sha1]

    def _restripe(self, young_after: float | None = None) -> None:
        """Re-split downloads into stripes when their set of downloading peers changed.

        With ``young_after``, only downloads added after that time (monotonic).
        """
        for sha1, handle in self.handles.items():
            if young_after is not None and self._added.get(sha1, 0.0) <= young_after:
                continue
            if sha1 in self.complete:
                self._stripes.pop(sha1, None)
                continue
            own, members = self.settings.ip, []
            for peer in handle.get_peer_info():
                if peer.flags & peer.connecting or peer.flags & peer.handshake:
                    continue
                if own in ("0.0.0.0", "::"):
                    own = str(peer.local_endpoint[0])
                if not peer.flags & peer.seed:
                    members.append(str(peer.ip[0]))
            key = tuple(sorted({own, *members}))
            if self._stripes.get(sha1) == key:
                continue
            ti = handle.torrent_file()
            if ti is None:
                continue
            self._stripes[sha1] = key
            num_pieces = ti.num_pieces()
            priorities = stripe_priorities(num_pieces, own, [own, *members])
            handle.prioritize_pieces(priorities or [4] * num_pieces)
            self.restripes += 1
            log.debug("%s: stripe %d of %d", sha1, key.index(own), len(key) if priorities else 0)

    # ---- alerts ----------------------------------------------------------------------

    def _wait_for(self, kind: str, sha1: str) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault((kind, sha1), []).append(future)
        return future

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
            finished = st.state in (
                lt.torrent_status.states.finished,
                lt.torrent_status.states.seeding,
            )
            if finished and sha1 not in self.complete and sha1 not in self._flushing:
                # Issue 4: flush before counting it complete.
                self._flushing.add(sha1)
                alert.handle.flush_cache()
            self.request_resume(sha1)
            self.on_change(sha1)
            return
        if isinstance(alert, lt.cache_flushed_alert):
            sha1 = _hash_of_alert(alert)
            if sha1 in self._flushing:
                self._flushing.discard(sha1)
                self.complete.add(sha1)
                log.info("torrent %s complete and flushed", sha1)
                self._resolve("complete", sha1)
                self.request_resume(sha1)
                self.on_change(sha1)
            return
        if isinstance(alert, lt.fastresume_rejected_alert):
            self.resume_rejected += 1  # libtorrent falls back to a full recheck
            log.warning("resume data rejected: %s", alert.message())
            return
        if isinstance(alert, lt.torrent_error_alert | lt.file_error_alert):
            log.warning("torrent: %s", alert.message())


def request_queue_for(upload_limit: int) -> int:
    """The reqq to advertise by default: 500 without an upload cap, else 8 or more.

    Under a cap, enough requests that what one peer has queued here covers
    ``QUEUE_TICKS`` ticks of the cap (see :func:`_swarm_tuning`): 8 up to 5 MiB/s, 32
    at 20 MiB/s. That small queue stops peers hoarding the capped seed's upload, which
    only a cap makes the bottleneck on loopback.

    Without a cap the queue must cover the path's bandwidth-delay product instead: one
    connection carries at most reqq x 16 KiB per round trip. Measured with
    ``benchmarks/wan.py`` (64 MiB, one connection through a delay proxy): reqq 8 gave
    4.8 / 2.5 / 1.1 MB/s at 20 / 50 / 100 ms RTT, 128 gave 67 / 31 / 16 MB/s and 500
    gave 127 / 68 / 36 MB/s (and 3 connections 3 x that); at RTT 0 reqq 8 held a
    connection to 83-99 MB/s against 290-345 for 32 and more, and a 4-node loopback
    ``smartget demo --upload-limit 0`` (64 MiB) took 0.64-0.67 s at 500 against
    0.82-0.91 s at 8, origin 1.00 F both. 500 is also libtorrent 2.1's default
    ``max_out_request_queue``: what it queues at peers that advertise no reqq.
    """
    if upload_limit <= 0:
        return UNCAPPED_REQUEST_QUEUE
    ticks_worth = upload_limit * TICK_MS * QUEUE_TICKS // 1000
    return max(REQUEST_QUEUE, -(-ticks_worth // BLOCK))


def _swarm_tuning(settings: EngineSettings) -> dict[str, int]:
    """libtorrent settings for a fleet swarm under upload caps (issue 6, measured).

    How libtorrent 2.x enforces an upload cap (``bandwidth_manager.cpp``,
    ``bandwidth_limit.hpp``) explains most of them. The cap is a bucket of quota that
    grows by cap x tick only on a tick when some connection waits for quota. A
    connection gets quota at once only while the bucket holds more than a second of
    quota; otherwise it waits for the next tick, and then gets at most what it asked
    for: the bytes in its send buffer (what its peer requested and the disk has read).
    So a fresh node's first second under a cap is paced by ticks: each tick, each
    connection sends what its peer had on order. A second of quota, saved up while the
    node sends less than the cap, is what ends that phase; until then every byte a
    connection could not send at its tick is lost for good (up to one second of the
    cap per node, measured: a 2-node 8 MiB push at 20 MiB/s took 2.2 s for 0.4 s).

    Each setting removed a cost measured with ``benchmarks/distribution.py``,
    ``smartget demo`` and two engines in one process:

    * ``tick_interval`` 5 ms (default 500): a connection waiting for quota waits a
      tick, the handshake's messages included, and each tick hands a connection what
      it had on order: at most reqq blocks. 20 ms held one connection at 20 MiB/s to
      ~8 MiB/s and the 4-node demo at 0.55-0.62 efficiency; 5 ms with the reqq
      below sends 32 MiB at 20 MiB/s in 1.8 s (bound 1.6) and the demo reaches 0.84.
      At reqq 8, 2 ms did as well for one connection and no better in the demo
      (0.66-0.77 against 0.70-0.82 at 5 ms); 3-4 ms and 10 ms did worse.
      Shorter ticks cost CPU: an idle session uses 0.4 % of a core at 5 ms, 1 % at 2.
    * ``send_buffer_low_watermark`` reqq blocks (default 10 KiB): a node reads ahead
      from disk what it uploads in half a second, *as measured*, so a fresh connection
      had one block in its send buffer at a time, one block per two ticks
      (400 KiB/s for the first second). The node now reads every request it accepted
      (up to 1 MiB a connection).
    * ``whole_pieces_threshold`` 0 (default 20 s): peers that can fetch a piece in 20 s
      ask for runs of up to 8 MiB of *contiguous* pieces; two peers in the same run
      then fetch the same pieces from the seed one after the other.
    * ``max_allowed_in_request_queue`` (what we advertise as ``reqq``; the remote's
      ``reqq`` overrides ``max_out_request_queue``, which only counts for peers that
      advertise none) 2000 -> 500 without an upload cap, for real networks' round
      trips (figures in :func:`request_queue_for`); under a cap, 8 blocks, or what the
      cap sends in 5 ticks if more (32 at 20 MiB/s). With deep queues every peer had
      a quarter of the file requested from the rate-limited seed, so whatever another
      peer could have given it was already on order from the seed; the seed sent the
      file twice. 8 blocks per connection was the best of 4, 8, 16, 32 at 8 and 16
      peers and 4 MiB/s; but a tick hands a connection at most what it has on order,
      so under a higher cap 8 blocks cannot fill the ticks (one connection, 20 MiB/s,
      5 ms: 32 MiB in 4.3-5.0 s at 8 blocks, 1.8-2.2 s at 16, 1.8 s at 32).
      The price of the small queue under a cap is paid at WAN round trips
      (``benchmarks/wan.py``, 4 MiB/s cap, 16 MiB a downloader): one connection got
      1.7 MB/s at 50 ms and 1.0 at 100 ms (3.5-3.7 at reqq 32-128); three connections
      together still filled the cap at 50 ms (3.8 MB/s at reqq 8) but not at 100 ms
      (2.6). Covering 100 ms of the cap instead (26 blocks at 4 MiB/s, 128 at 20)
      cost the loopback fleet: demo 0.84 -> 0.78, distribution N = 8 0.88 ->
      0.84-0.86 with the seed sending 1.08-1.11 F; so the cap's rule stays, and a
      capped fleet on long paths sets ``--peer-request-queue`` (32-64).
      Transmission 3.00 clients pay too: Transmission sends one batch of at most
      ``reqq`` requests a second to a peer, so it downloads reqq x 16 KiB/s from each
      node (``benchmarks/transmission_interop.py``): 128 KiB/s from a capped node,
      more from an uncapped one (reqq 500). Under a cap, a reqq of 64 / 500 gives it
      1 / 4 MB/s but at N = 8 the seed sent 1.16 F instead of 1.06 F (efficiency
      0.79 against 0.86); 16 was within noise of 8 (0.85-0.86) and 32 cost 0.83.
      ``smartget node --peer-request-queue`` sets it for fleets that serve Transmission.
    * ``request_queue_time`` 1 s (default 3): a downloader queues a second of its
      measured rate, capped by the reqq above.
    """
    reqq = settings.peer_request_queue or request_queue_for(settings.upload_limit)
    read_ahead = min(reqq * BLOCK, 1 << 20)  # per connection; reqq may be 2000 (the CLI's)
    return {
        "tick_interval": TICK_MS,
        "send_buffer_low_watermark": read_ahead,
        "send_buffer_watermark": max(500 << 10, read_ahead),
        "whole_pieces_threshold": 0,
        "max_allowed_in_request_queue": reqq,
        "max_out_request_queue": reqq,
        "request_queue_time": 1,
    }


def stripe_priorities(num_pieces: int, own: str, members: list[str]) -> list[int] | None:
    """Piece priorities that give each downloading peer its own stripe of the file.

    Rarest-first alone has every peer pick among the same pieces that only the seed
    holds, so two peers often fetch the same piece from the seed at the same time
    and the seed (the bottleneck under upload caps) sends it twice. Every fleet peer
    sees the same set of downloading peers (``members``, by address, itself
    included), so the one at rank ``r`` of ``M`` favours pieces ``i % M == r``: one
    priority step (5 over the default 4). libtorrent picks the lowest
    (availability + 1) x (8 - priority); one step reorders pieces of the same
    availability only, so rarest-first stays: a piece only the seed has still comes
    before one that another peer could give. None when there is nothing to split
    (fewer than two members, or not a member).
    """
    ranked = sorted(set(members))
    if len(ranked) < 2 or own not in ranked:
        return None
    rank, count = ranked.index(own), len(ranked)
    return [5 if index % count == rank else 4 for index in range(num_pieces)]


def _bracket(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip
