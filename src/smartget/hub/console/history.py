"""The console's charts: the fleet over the last hour, in a ring buffer (sans-IO).

Every ``every`` seconds the console's driver takes a :class:`Sample` of the fleet
(:func:`sample_of`) and adds it; the buffer keeps ``span / every`` samples and drops the
oldest, so it never holds more than an hour however long the hub runs.

Throughput is what the nodes report to the collector (seed 003 ``uprate`` and
``downrate``): the sum over reports younger than ``fresh`` seconds that are not done
(a node stops reporting a torrent once it is done, so its last report is no longer
news). Bytes by source are the push jobs' running totals (``JobBook.bytes_total``:
every verified copy's bytes from the origin, from peers of its zone and from peers of
other zones, counted when the copy is verified); :meth:`History.columns` gives them as
what arrived since the window's first sample. Times are Unix seconds, for the page's
clock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from smartget.hub.collector import Report

__all__ = ["DEFAULT_EVERY", "DEFAULT_SPAN", "History", "Sample", "sample_of"]

DEFAULT_SPAN = 3600.0  # seconds of history kept
DEFAULT_EVERY = 5.0  # seconds between samples
FRESH = 10.0  # seconds a report counts towards throughput


@dataclass(frozen=True, slots=True)
class Sample:
    """The fleet at one moment."""

    at: float  # Unix seconds
    up: float  # bytes/s the fleet's nodes report uploading
    down: float  # bytes/s they report downloading
    swarms: int  # swarms with at least one peer (the tracker's)
    peers: int  # peers in all swarms
    nodes: int  # registered nodes
    available: int  # nodes with free capacity
    origin: int = 0  # bytes of verified job copies from the origin, since the hub started
    peer_same_zone: int = 0  # ... from peers in the copy's node's zone
    peer_other_zone: int = 0  # ... from peers in other zones


def sample_of(
    reports: Iterable[Report],
    tracker_stats: dict[str, int],
    registry_stats: dict[str, int],
    *,
    at: float,
    now: float,
    job_bytes: dict[str, int] | None = None,
    fresh: float = FRESH,
) -> Sample:
    """A sample from the collector's reports (``now`` on their clock), the counts and the
    jobs' bytes by source (running totals)."""
    job_bytes = job_bytes or {}
    up = down = 0.0
    for report in reports:
        if not report.done and now - report.received_at <= fresh:
            up += report.uprate
            down += report.downrate
    return Sample(
        at=at,
        up=up,
        down=down,
        swarms=tracker_stats.get("swarms", 0),
        peers=tracker_stats.get("peers", 0),
        nodes=registry_stats.get("nodes", 0),
        available=registry_stats.get("available", 0),
        origin=job_bytes.get("origin", 0),
        peer_same_zone=job_bytes.get("peer_same_zone", 0),
        peer_other_zone=job_bytes.get("peer_other_zone", 0),
    )


class History:
    """At most ``span / every`` samples, the newest last; one per ``every`` seconds."""

    def __init__(self, span: float = DEFAULT_SPAN, every: float = DEFAULT_EVERY) -> None:
        if every <= 0 or span < every:
            raise ValueError("History needs every > 0 and span >= every")
        self.span = span
        self.every = every
        self._samples: deque[Sample] = deque(maxlen=int(span / every) + 1)

    def __len__(self) -> int:
        return len(self._samples)

    def due(self, at: float) -> bool:
        """True if a sample taken at ``at`` is one ``every`` after the last."""
        return not self._samples or at - self._samples[-1].at >= self.every

    def add(self, sample: Sample) -> None:
        self._samples.append(sample)

    def columns(self, at: float) -> dict[str, list[float]]:
        """The samples of the last ``span`` seconds before ``at``, column by column; the
        bytes by source as what arrived since the first of them (a total that went down,
        as after a restart, starts again from there)."""
        kept = [s for s in self._samples if at - s.at <= self.span]
        return {
            "at": [round(s.at, 1) for s in kept],
            "up": [round(s.up) for s in kept],
            "down": [round(s.down) for s in kept],
            "swarms": [s.swarms for s in kept],
            "peers": [s.peers for s in kept],
            "nodes": [s.nodes for s in kept],
            "available": [s.available for s in kept],
            "origin": _since_first([s.origin for s in kept]),
            "peer_same_zone": _since_first([s.peer_same_zone for s in kept]),
            "peer_other_zone": _since_first([s.peer_other_zone for s in kept]),
        }


def _since_first(totals: list[int]) -> list[float]:
    """Running totals as the sum of their rises since the first (drops count as 0)."""
    out: list[float] = []
    grown = 0
    for before, after in zip([*totals[:1], *totals], totals, strict=False):
        grown += max(0, after - before)
        out.append(grown)
    return out
