"""What the DHT keeps per source IP: a query rate, a reply budget, proof of address.

Theory of operation
-------------------
BEP 5 runs over UDP, so a source address is only a claim: a spoofer can make us answer
a victim. Three bounded tables answer that (issue 12, item 9), all sans-IO (``now`` in):

- :meth:`SourceTable.allow`: a token bucket of queries per IP (over it, the datagram is
  dropped, as libtorrent does);
- :meth:`SourceTable.spend`: a token bucket of reply *bytes* per IP, charged only for
  sources that have not proved their address, so one node cannot be used to send a
  victim more than ``reply_burst`` plus ``reply_rate`` bytes a second;
- :class:`Verified`: the IPs that proved they receive at their address, by answering one
  of our queries (its random transaction id came back) or by presenting a valid token.

The tables are bounded by ``max_entries``. A full rate table is never wiped (a flood of
spoofed source addresses must not reset the victim's bucket): sources it cannot hold
share one overflow bucket until idle entries are pruned (:meth:`SourceTable.prune`).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

__all__ = ["MAX_SOURCES", "SourceTable", "Verified"]

MAX_SOURCES: Final = 50_000
_OVERFLOW: Final = ""  # the key of the bucket shared by sources the table cannot hold


class SourceTable:
    """Per-IP token buckets, ``[queries, reply bytes, last seen]`` each."""

    __slots__ = (
        "_entries",
        "byte_burst",
        "byte_rate",
        "full",
        "max_entries",
        "query_burst",
        "query_rate",
    )

    def __init__(
        self,
        query_rate: float,
        query_burst: float,
        byte_rate: float,
        byte_burst: float,
        max_entries: int = MAX_SOURCES,
    ) -> None:
        self.query_rate = query_rate  # 0: no limit
        self.query_burst = query_burst
        self.byte_rate = byte_rate  # 0: no limit
        self.byte_burst = byte_burst
        self.max_entries = max_entries
        self._entries: dict[str, list[float]] = {}
        self.full = 0  # sources charged to the overflow bucket

    def __len__(self) -> int:
        return len(self._entries)

    def _entry(self, ip: str, now: float) -> list[float]:
        entry = self._entries.get(ip)
        if entry is None:
            if len(self._entries) >= self.max_entries:
                self.full += 1
                ip = _OVERFLOW
                entry = self._entries.get(ip)
            if entry is None:
                entry = self._entries[ip] = [self.query_burst, self.byte_burst, now]
            return entry
        elapsed = now - entry[2]
        if elapsed > 0:
            entry[0] = min(self.query_burst, entry[0] + elapsed * self.query_rate)
            entry[1] = min(self.byte_burst, entry[1] + elapsed * self.byte_rate)
            entry[2] = now
        return entry

    def allow(self, ip: str, now: float) -> bool:
        """One datagram from ``ip``: within its query rate?"""
        if self.query_rate <= 0:
            return True
        entry = self._entry(ip, now)
        if entry[0] < 1.0:
            return False
        entry[0] -= 1.0
        return True

    def spend(self, ip: str, size: int, now: float) -> bool:
        """May we send ``size`` bytes to ``ip``, which has not proved its address?"""
        if self.byte_rate <= 0:
            return True
        entry = self._entry(ip, now)
        if entry[1] < size:
            return False
        entry[1] -= size
        return True

    def prune(self, now: float) -> int:
        """Forget entries idle long enough to be full again (nothing is lost)."""
        idle = max(
            self.query_burst / self.query_rate if self.query_rate > 0 else 0.0,
            self.byte_burst / self.byte_rate if self.byte_rate > 0 else 0.0,
        )
        before = len(self._entries)
        self._entries = {ip: e for ip, e in self._entries.items() if now - e[2] < idle}
        return before - len(self._entries)


class Verified:
    """IPs that proved they receive at their address; the oldest proof is forgotten first."""

    __slots__ = ("_ips", "max_entries")

    def __init__(self, max_entries: int = MAX_SOURCES) -> None:
        self.max_entries = max_entries
        self._ips: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._ips)

    def __contains__(self, ip: object) -> bool:
        return ip in self._ips

    def add(self, ip: str) -> None:
        ips = self._ips
        if ip in ips:
            ips.move_to_end(ip)
            return
        ips[ip] = None
        if len(ips) > self.max_entries:
            ips.popitem(last=False)
