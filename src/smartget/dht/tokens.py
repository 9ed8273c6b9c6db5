"""Write tokens for announce_peer (BEP 5 "get_peers" / "announce_peer").

A token is ``sha1(secret || requester IP)[:8]``. The secret rotates at most every 5
minutes and old secrets are kept until every token made from them is 10 minutes old
(seed 002: "A new token by ip is generated at most every 5 min, a single token is valid
10 min"). The current secret's tokens are cached per IP until it rotates, so a busy
requester costs one dict look-up rather than a SHA-1; the cache is bounded
(:data:`MAX_CACHED`), so a flood of get_peers from many addresses costs no more memory
than that. Sans-IO: the caller passes ``now``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections import deque
from typing import Final

__all__ = ["TOKEN_ROTATE", "TOKEN_VALID", "TokenManager"]

TOKEN_ROTATE: Final = 5 * 60.0
TOKEN_VALID: Final = 10 * 60.0
MAX_CACHED: Final = 10_000


class TokenManager:
    """Hands out and checks tokens for requester IPs."""

    def __init__(self, now: float, secret: bytes | None = None) -> None:
        # (secret, time it was retired or None while current); newest first
        self._secrets: deque[tuple[bytes, float | None]] = deque()
        self._secrets.appendleft((secret or os.urandom(16), None))
        self._created = now
        self._next_check = now + TOKEN_ROTATE  # nothing to rotate or drop before this
        self._cache: dict[str, bytes] = {}  # ip -> token from the current secret
        self.issued = 0
        self.rejected = 0

    def _rotate(self, now: float) -> None:
        if now < self._next_check:
            return
        if now - self._created >= TOKEN_ROTATE:
            old, _ = self._secrets[0]
            self._secrets[0] = (old, now)
            self._secrets.appendleft((os.urandom(16), None))
            self._created = now
            self._cache.clear()
        # a secret retired at r made tokens up to r; they must stay valid until r + 10 min
        while len(self._secrets) > 1:
            _, retired = self._secrets[-1]
            if retired is not None and now - retired > TOKEN_VALID:
                self._secrets.pop()
            else:
                break
        self._next_check = self._created + TOKEN_ROTATE
        if len(self._secrets) > 1:
            retired = self._secrets[-1][1]
            if retired is not None:
                self._next_check = min(self._next_check, retired + TOKEN_VALID)

    @staticmethod
    def _make(secret: bytes, ip: str) -> bytes:
        return hashlib.sha1(secret + ip.encode()).digest()[:8]

    def get(self, ip: str, now: float) -> bytes:
        """The token to give ``ip`` in a get_peers response."""
        if now >= self._next_check:
            self._rotate(now)
        self.issued += 1
        token = self._cache.get(ip)
        if token is None:
            if len(self._cache) >= MAX_CACHED:
                self._cache.clear()
            token = self._cache[ip] = self._make(self._secrets[0][0], ip)
        return token

    def check(self, token: bytes, ip: str, now: float) -> bool:
        """Was ``token`` given to ``ip`` less than 10 minutes ago (at least)?"""
        self._rotate(now)
        for secret, _ in self._secrets:
            if hmac.compare_digest(self._make(secret, ip), token):
                return True
        self.rejected += 1
        return False
