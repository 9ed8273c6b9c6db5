"""Which signed packets this node already delivered, for as long as their signature is valid.

Issue 12, item 1: a relay that carries a packet ops signed for beta could re-send it
(with another ``to``, or after beta restarted). The signature names the destination
(``dest``, policy.py), so it cannot go elsewhere; this cache makes sure it runs once
where it may go. A signature is accepted while its signed ``time`` is within ``window``
seconds of now (ca.py ``verify_datapack``), so an entry (signer, flag) is kept until
``time + window``; after that the signature itself is refused as too old.

Sans-IO: ``now`` (unix seconds, the clock signatures are stamped with) comes in as an
argument, and :meth:`ReplayCache.admit` returns the line the driver appends to
DATA_DIR/replay.log (replaylog.py) before the packet is delivered, so the cache
survives a restart, also ``kill -9``.

Bounds: at most ``per_signer`` entries per signing node (a member that signs more than
that within a window is refused, rather than pushing out the entries that protect
others) and ``max_entries`` in all.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterable

from smartget.errors import AuthError

__all__ = ["MAX_ENTRIES", "PER_SIGNER", "ReplayCache", "format_record", "parse_record"]

MAX_ENTRIES = 200_000
PER_SIGNER = 20_000
_TOKEN = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def format_record(expires: float, signer: str, flag: str) -> str:
    return f"{int(expires)} {signer} {flag}\n"


def parse_record(line: str) -> tuple[float, str, str] | None:
    """A line of replay.log as (expires, signer, flag), or None if it is not one."""
    parts = line.split()
    if len(parts) != 3 or not (parts[0].isascii() and parts[0].isdigit() and len(parts[0]) < 13):
        return None
    if not (_TOKEN.fullmatch(parts[1]) and _TOKEN.fullmatch(parts[2])):
        return None
    return float(parts[0]), parts[1], parts[2]


class ReplayCache:
    """(signer, flag) pairs delivered while their signatures are valid."""

    def __init__(
        self, window: float, *, max_entries: int = MAX_ENTRIES, per_signer: int = PER_SIGNER
    ) -> None:
        self.window = window
        self.max_entries = max_entries
        self.per_signer = per_signer
        self._expires: dict[tuple[str, str], float] = {}
        self._heap: list[tuple[float, str, str]] = []
        self._per_signer: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._expires)

    def load(self, records: Iterable[tuple[float, str, str]], now: float) -> None:
        """Take the records of an earlier run (expired ones and extras are skipped)."""
        for expires, signer, flag in records:
            fresh = expires > now and (signer, flag) not in self._expires
            if fresh and len(self._expires) < self.max_entries and self._room(signer):
                self._add(signer, flag, expires)

    def seen(self, signer: str, flag: str, now: float) -> bool:
        expires = self._expires.get((signer, flag))
        return expires is not None and expires > now

    def admit(self, signer: str, flag: str, stamp: float, now: float) -> str:
        """Record a first delivery and return the line to persist; :class:`AuthError` if not."""
        self.expire(now)
        if not _TOKEN.fullmatch(flag):
            raise AuthError(f"signed packet's flag {flag[:70]!r} is not 1-64 of A-Z a-z 0-9 _ . -")
        if self.seen(signer, flag, now):
            raise AuthError(f"replay: packet {flag} signed by {signer!r} was already delivered")
        if not self._room(signer):
            raise AuthError(
                f"{signer!r} signed more than {self.per_signer} packets to this node "
                f"within {self.window:.0f} s; refused until older ones expire"
            )
        if len(self._expires) >= self.max_entries:
            raise AuthError(
                f"replay cache is full ({self.max_entries} signed packets within "
                f"{self.window:.0f} s); refused until older ones expire"
            )
        expires = max(stamp, now) + self.window
        self._add(signer, flag, expires)
        return format_record(expires, signer, flag)

    def expire(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            expires, signer, flag = heapq.heappop(heap)
            if self._expires.get((signer, flag)) == expires:
                del self._expires[(signer, flag)]
                left = self._per_signer[signer] - 1
                if left:
                    self._per_signer[signer] = left
                else:
                    del self._per_signer[signer]

    def records(self) -> list[tuple[float, str, str]]:
        """Every live entry, for rewriting the log without the expired ones."""
        return [(expires, signer, flag) for (signer, flag), expires in self._expires.items()]

    def _room(self, signer: str) -> bool:
        return self._per_signer.get(signer, 0) < self.per_signer

    def _add(self, signer: str, flag: str, expires: float) -> None:
        self._expires[(signer, flag)] = expires
        heapq.heappush(self._heap, (expires, signer, flag))
        self._per_signer[signer] = self._per_signer.get(signer, 0) + 1
