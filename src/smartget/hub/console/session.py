"""Console sessions, CSRF tokens and sign-in throttling, without I/O.

Theory of operation
-------------------
An operator signs in with the hub's token once; the console then knows the browser by
a session cookie that the hub can check but nobody can forge::

    cookie = "s1." + EXPIRES + "." + NONCE + "." + MAC
    MAC    = HMAC-SHA256(key, "s1." + EXPIRES + "." + NONCE)      (base64url, no padding)
    key    = HMAC-SHA256(secret, "smartget console session\\0" + hub token)

``secret`` is the hub's own (DATA_DIR/console.key, 0600, made once), so cookies survive a
restart of the hub (the page reconnects signed in) and a new hub token ends every
session. The expiry (Unix seconds) is inside the MAC: a client cannot stretch it. The
nonce (128 random bits) names the session: its CSRF token is
``HMAC-SHA256(key, "csrf\\0" + NONCE)``, sent by the page in a header with every action
(the cookie is also ``SameSite=Strict``). Signing out revokes the nonce until the
cookie would have expired anyway; the revocation list is bounded (the oldest entries
go first when it is full) and lives as long as the process.

Every comparison of a secret is in constant time. Time comes in as ``now``: Unix seconds
for sessions (they outlive the process), any clock for the throttle.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections import OrderedDict
from dataclasses import dataclass

from smartget.auth import secret_matches

__all__ = [
    "DEFAULT_LIFETIME",
    "LoginThrottle",
    "Session",
    "SessionKeys",
]

VERSION = "s1"
DEFAULT_LIFETIME = 12 * 3600  # seconds a sign-in lasts
MAX_REVOKED = 10_000
MAX_COOKIE = 256  # characters; anything longer is not ours


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True)
class Session:
    """A checked session: its nonce and when it ends (Unix seconds)."""

    nonce: str
    expires: int


class SessionKeys:
    """Makes and checks session cookies and CSRF tokens for one hub."""

    def __init__(
        self,
        secret: bytes,
        token: str,
        *,
        lifetime: int = DEFAULT_LIFETIME,
        max_revoked: int = MAX_REVOKED,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("the console's secret must be at least 16 bytes")
        self._token = token
        self._key = hmac.new(
            secret, b"smartget console session\0" + token.encode(), hashlib.sha256
        ).digest()
        self.lifetime = lifetime
        self.max_revoked = max_revoked
        self._revoked: OrderedDict[str, int] = OrderedDict()  # nonce -> its expiry

    def _mac(self, message: str) -> str:
        return _b64(hmac.new(self._key, message.encode(), hashlib.sha256).digest())

    def sign_in(self, given: str | None, now: float, nonce: bytes | None = None) -> str | None:
        """A new session cookie if ``given`` is the hub's token, else None."""
        if not secret_matches(given, self._token):
            return None
        expires = int(now) + self.lifetime
        body = f"{VERSION}.{expires}.{_b64(nonce or secrets.token_bytes(16))}"
        return f"{body}.{self._mac(body)}"

    def check(self, cookie: str | None, now: float) -> Session | None:
        """The session a cookie names, or None if it is forged, expired or revoked."""
        if not cookie or len(cookie) > MAX_COOKIE:
            return None
        body, _, mac = cookie.rpartition(".")
        parts = body.split(".")
        if len(parts) != 3 or parts[0] != VERSION or not parts[1].isdigit():
            return None
        if not hmac.compare_digest(mac.encode(), self._mac(body).encode()):
            return None
        expires = int(parts[1])
        if now >= expires or parts[2] in self._revoked:
            return None
        return Session(parts[2], expires)

    def csrf_token(self, session: Session) -> str:
        """The token the page sends in ``X-CSRF-Token`` with every action."""
        return self._mac(f"csrf\0{session.nonce}")

    def csrf_matches(self, session: Session, given: str | None) -> bool:
        return secret_matches(given, self.csrf_token(session))

    def sign_out(self, session: Session, now: float) -> None:
        """Revoke a session until it would have expired (bounded: oldest first out)."""
        while self._revoked:  # forget revocations of sessions expired anyway
            nonce, expires = next(iter(self._revoked.items()))
            if expires > now and len(self._revoked) < self.max_revoked:
                break
            del self._revoked[nonce]
        self._revoked[session.nonce] = session.expires

    def statistics(self) -> dict[str, int]:
        return {"revoked": len(self._revoked)}


class LoginThrottle:
    """Failed sign-ins per address: after ``limit`` within ``window`` seconds, that
    address must wait out the window. Bounded to ``max_addresses`` (oldest out)."""

    def __init__(self, limit: int = 10, window: float = 60.0, max_addresses: int = 4096) -> None:
        self.limit = limit
        self.window = window
        self.max_addresses = max_addresses
        self._failures: OrderedDict[str, tuple[float, int]] = OrderedDict()  # ip -> (since, n)

    def allowed(self, ip: str, now: float) -> bool:
        since, count = self._failures.get(ip, (now, 0))
        if now - since >= self.window:
            self._failures.pop(ip, None)
            return True
        return count < self.limit

    def failed(self, ip: str, now: float) -> None:
        since, count = self._failures.pop(ip, (now, 0))
        if now - since >= self.window:
            since, count = now, 0
        self._failures[ip] = (since, count + 1)
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)

    def succeeded(self, ip: str) -> None:
        self._failures.pop(ip, None)
