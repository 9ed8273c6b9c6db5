"""Where a download's bytes came from: the web seed (the origin) or each peer, by IP.

libtorrent counts bytes per connection (``peer_info.total_download``) and forgets them
when the connection closes, so :func:`watch` reads every running download's peers
every ``every`` seconds (and once more after it completes) and :class:`ByteSources`
adds up what each connection brought since the last read. A connection's counter that
went down is a new connection from the same address and port. What a connection
brought in its last fraction of a second before it closed is not counted.

A pipelined push's stripe is fetched from the origin by the agent, not by libtorrent:
the agent counts it here (:meth:`ByteSources.fed`), as origin bytes.

``GET /status`` shows the totals under each torrent's ``sources``:
``{"web": BYTES, "stripe": BYTES, "peers": {IP: BYTES}, "fallback": WHY}`` (``web``
counts all the origin's bytes, ``stripe`` those of the stripe among them); the hub sorts
the peers by zone (hub/jobs/runner.py). ``fallback`` says why the web seed was used,
when it was.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["ByteSources", "read", "watch"]


class ByteSources:
    """Per torrent: bytes from the web seed and from each peer IP. No I/O."""

    def __init__(self, fallback_after: float = 0.0) -> None:
        self.fallback_after = fallback_after
        self._last: dict[str, dict[tuple[str, int, bool], int]] = {}
        self._web: dict[str, int] = {}
        self._fed: dict[str, int] = {}
        self._peers: dict[str, dict[str, int]] = {}

    def observe(self, sha1: str, ip: str, port: int, web: bool, total: int) -> None:
        """One connection's ``total_download`` now."""
        last = self._last.setdefault(sha1, {})
        key = (ip, port, web)
        before = last.get(key, 0)
        delta = total - before if total >= before else total
        last[key] = total
        if delta <= 0:
            return
        if web:
            self._web[sha1] = self._web.get(sha1, 0) + delta
        else:
            peers = self._peers.setdefault(sha1, {})
            peers[ip] = peers.get(ip, 0) + delta

    def fed(self, sha1: str, count: int) -> None:
        """``count`` bytes of the torrent's stripe came from the origin (the agent's fetch)."""
        self._fed[sha1] = self._fed.get(sha1, 0) + count

    def totals(self, sha1: str) -> dict[str, Any]:
        web, fed = self._web.get(sha1, 0), self._fed.get(sha1, 0)
        fallback = ""
        if web:
            fallback = f"used the origin (web seed) for {web:,} bytes: " + (
                f"peers made no progress for {self.fallback_after:g} s (--webseed-fallback)"
                if self.fallback_after
                else "web seeds are not held back (--webseed-fallback 0)"
            )
        peers = dict(self._peers.get(sha1, {}))
        return {"web": web + fed, "stripe": fed, "peers": peers, "fallback": fallback}

    def forget(self, sha1: str) -> None:
        for table in (self._last, self._web, self._fed, self._peers):
            table.pop(sha1, None)


def read(engine: Any, sources: ByteSources, sha1: str) -> None:
    """Read one torrent's connections now (also called at each of its state changes)."""
    handle = engine.handles.get(sha1)
    if handle is None:
        return
    for peer in handle.get_peer_info():
        web = peer.connection_type in (peer.web_seed, peer.http_seed)
        sources.observe(sha1, str(peer.ip[0]), int(peer.ip[1]), web, peer.total_download)


async def watch(engine: Any, sources: ByteSources, every: float = 0.1) -> None:
    """Read the peers of every download still running, and of each just completed."""
    settled: set[str] = set()
    while True:
        await asyncio.sleep(every)
        for sha1 in list(engine.handles):
            if sha1 in settled:
                continue
            if engine.is_complete(sha1):
                settled.add(sha1)  # one last read
            read(engine, sources, sha1)
        settled &= set(engine.handles)
