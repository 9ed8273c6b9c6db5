"""A torrent's figures as seed 003 reports them, and how its status label is chosen.

Pure data, no I/O: the agent, the reporter, the API and their tests use these without
loading libtorrent; the engine fills them from libtorrent's ``torrent_status``.

Labels (seed 003's "status" of status_response): complete means finished *and* flushed
to disk (issue 4, see :class:`smartget.node.policy.Completion`), so a torrent that
libtorrent calls finished but that is not flushed yet still shows ``downloading``; the
label changes at the flush, and the reporter reports at once on a new label.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from smartget.node.tasks import EVICTED, EXPIRED

__all__ = [
    "DOWNLOADING",
    "DOWNLOAD_SUCCESS",
    "EVICTED",
    "EXPIRED",
    "INITIAL",
    "SEEDING",
    "Torrent",
    "TorrentStatus",
    "expired_status",
    "percent_done",
    "status_label",
]

# Seed 003's status strings, and the one SmartGet adds (EXPIRED, see tasks.py).
INITIAL = "Initial startup"
DOWNLOADING = "downloading"
DOWNLOAD_SUCCESS = "download success"
SEEDING = "seeding"


@dataclass(frozen=True)
class Torrent:
    """A parsed .torrent: its v1 info-hash, its name and the engine's ``torrent_info``."""

    sha1: str
    name: str
    info: Any


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


def status_label(*, complete: bool, seeding: bool, transferring: bool) -> str:
    """The label of a running torrent.

    ``seeding``: libtorrent's state is seeding; ``transferring``: downloading, finished
    or seeding (past checking and metadata).
    """
    if complete:
        return SEEDING if seeding else DOWNLOAD_SUCCESS
    return DOWNLOADING if transferring else INITIAL


def percent_done(progress: float, *, complete: bool) -> float:
    """Percent to one decimal; 100.0 only once complete (flushed), else at most 99.9."""
    return 100.0 if complete else round(min(progress * 100.0, 99.9), 1)


def expired_status(
    sha1: str, name: str, figures: dict[str, float], *, status: str = EXPIRED
) -> TorrentStatus:
    """A torrent stopped at its deadline (or ``status`` EVICTED: removed for the cache),
    with the figures it had then."""
    return TorrentStatus(
        sha1=sha1,
        name=name,
        status=status,
        percent=figures.get("percent", 0.0),
        downrate=0,
        uprate=0,
        downtotal=int(figures.get("downtotal", 0)),
        uptotal=int(figures.get("uptotal", 0)),
        numpeers=0,
        numseeds=0,
        timeleft=0,
        complete=False,
        error="",
    )
