"""Caches that clean themselves (issue 15): which completed torrents a node evicts. No I/O.

Theory of operation
-------------------
``smartget node --cache-max SIZE`` bounds the content the node holds from completed
downloads and maketorrents (0, the default: no bound). When that content passes
``cache-max`` the node removes the least recently used completed torrents (data,
``.torrent`` and the torrent in libtorrent) until it is at or under the low watermark
``--cache-low`` (default 90 % of cache-max), so it does not evict again at the next
byte. :class:`CachePolicy` decides which; the agent carries it out and reports it.

* What counts: the total size of each *complete* torrent (finished and flushed). A
  download that runs is not counted and is never evicted: a running download holds its
  torrent.
* *Used* means: completed (a maketorrent is complete when made), served by the node's
  file server (a request for its data or ``.torrent``), uploaded to a peer over
  BitTorrent (its upload total grew since the last look, every few seconds), or asked
  for again (a ``download`` or ``maketorrent`` task for content already here).
* A task may *pin* its content for a duration (``args.pin``, seconds from when the node
  got the task): a pinned torrent is never evicted; two pins keep the later end.
* Order: least recently used first, ties by info-hash, so a plan is deterministic.
  If pins and running downloads hold more than the low watermark, everything else is
  evicted and the total stays above it; the next completion tries again.

The agent feeds it events with ``now`` (UNIX time, since use and pin times outlive a
restart in the node's state) and asks :meth:`CachePolicy.plan`; ``dirty`` names the
entries whose use or pin changed since :meth:`CachePolicy.take_dirty`, for the agent to
save.
"""

from __future__ import annotations

from dataclasses import dataclass

from smartget.errors import ConfigError

__all__ = ["DEFAULT_LOW", "CacheEntry", "CachePolicy"]

DEFAULT_LOW = 0.9  # the low watermark, as a share of cache-max, when none is given


@dataclass
class CacheEntry:
    """One torrent the node holds; ``size`` counts only once ``complete``."""

    sha1: str
    used: float  # the last use, UNIX time
    size: int = 0
    complete: bool = False
    pinned_until: float = 0.0  # UNIX time; 0: no pin

    def pinned(self, now: float) -> bool:
        return self.pinned_until > now


class CachePolicy:
    """Least recently used eviction between two watermarks. No I/O, no clock."""

    def __init__(self, high: int = 0, low: int | None = None) -> None:
        if high < 0 or (low is not None and low < 0):
            raise ConfigError(f"cache sizes must be >= 0, got max {high}, low {low}")
        if low is not None and high and low > high:
            raise ConfigError(f"--cache-low ({low} bytes) is above --cache-max ({high} bytes)")
        self.high = high
        self.low = int(high * DEFAULT_LOW) if low is None else low
        self.entries: dict[str, CacheEntry] = {}
        self.total = 0  # bytes of complete entries
        self.dirty: set[str] = set()
        self.evicted = 0
        self.evicted_bytes = 0

    @property
    def enabled(self) -> bool:
        return self.high > 0

    def _entry(self, sha1: str, now: float) -> CacheEntry:
        entry = self.entries.get(sha1)
        if entry is None:
            entry = self.entries[sha1] = CacheEntry(sha1, used=now)
        return entry

    def running(self, sha1: str, now: float, *, used: float | None = None) -> None:
        """A download of ``sha1`` runs (again): held, not counted; ``used`` defaults to now."""
        entry = self._entry(sha1, now)
        if entry.complete:
            self.total -= entry.size
            entry.complete = False
        entry.used = now if used is None else used
        self.dirty.add(sha1)

    def completed(self, sha1: str, size: int, now: float, *, used: float | None = None) -> None:
        """``sha1`` is complete with ``size`` bytes; ``used`` (default now) is its last use."""
        entry = self._entry(sha1, now)
        if entry.complete:
            self.total -= entry.size
        entry.size = max(0, size)
        entry.complete = True
        entry.used = now if used is None else used
        self.total += entry.size
        self.dirty.add(sha1)

    def used(self, sha1: str, now: float) -> None:
        """``sha1`` was served, uploaded or asked for again (unknown: ignored)."""
        entry = self.entries.get(sha1)
        if entry is not None and now > entry.used:
            entry.used = now
            self.dirty.add(sha1)

    def pin(self, sha1: str, until: float, now: float) -> None:
        """Keep ``sha1`` until ``until`` (UNIX time); a later pin wins."""
        entry = self._entry(sha1, now)
        if until > entry.pinned_until:
            entry.pinned_until = until
            self.dirty.add(sha1)

    def forget(self, sha1: str) -> None:
        """``sha1`` left the node (deleted, shut down, evicted)."""
        entry = self.entries.pop(sha1, None)
        if entry is not None and entry.complete:
            self.total -= entry.size
        self.dirty.discard(sha1)

    def over(self) -> bool:
        """Whether the content passed cache-max (never when the cache is off)."""
        return self.enabled and self.total > self.high

    def plan(self, now: float) -> list[CacheEntry]:
        """What to evict, least recently used first, to get to the low watermark.

        Empty unless :meth:`over`. Running and pinned entries are never in it. The plan
        changes nothing: call :meth:`evicted_one` for each entry actually removed.
        """
        if not self.over():
            return []
        candidates = sorted(
            (e for e in self.entries.values() if e.complete and not e.pinned(now)),
            key=lambda e: (e.used, e.sha1),
        )
        chosen, total = [], self.total
        for entry in candidates:
            if total <= self.low:
                break
            chosen.append(entry)
            total -= entry.size
        return chosen

    def evicted_one(self, sha1: str) -> None:
        """The agent removed ``sha1`` for the cache."""
        entry = self.entries.get(sha1)
        if entry is not None:
            self.evicted += 1
            self.evicted_bytes += entry.size if entry.complete else 0
        self.forget(sha1)

    def take_dirty(self) -> list[CacheEntry]:
        """The entries whose use or pin changed since the last call (to be saved)."""
        changed = [self.entries[s] for s in sorted(self.dirty) if s in self.entries]
        self.dirty.clear()
        return changed

    def statistics(self) -> dict[str, int]:
        return {
            "cache_bytes": self.total,
            "cache_max": self.high,
            "cache_low": self.low,
            "cache_entries": len(self.entries),
            "cache_evicted": self.evicted,
            "cache_evicted_bytes": self.evicted_bytes,
        }
