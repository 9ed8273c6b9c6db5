"""One token check for every HTTP face of SmartGet (hub API, dashboard, relay, node).

A client presents a secret in the ``Authorization`` header, either as a Bearer token
or as the password of HTTP Basic (any user name): browsers ask for Basic, and
``xmlrpc.client.ServerProxy("http://relay:TOKEN@hub/RPC2")`` sends it. Comparison is
in constant time. Secret files are written with :func:`write_private`.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
from pathlib import Path

__all__ = ["presented_secret", "secret_matches", "write_private"]


def presented_secret(authorization: str, *, basic: bool = True) -> str | None:
    """The secret in an ``Authorization`` header value, or None if there is none.

    ``Bearer T`` gives ``T``; with ``basic``, ``Basic base64(user:P)`` gives ``P``.
    """
    scheme, _, value = authorization.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        return value.strip()
    if basic and scheme == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2]
    return None


def secret_matches(given: str | None, expected: str) -> bool:
    """True if ``given`` is ``expected`` (constant time; None never matches)."""
    if given is None or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def write_private(path: Path, data: bytes | str) -> None:
    """Write a secret file readable by its owner only (0600, also if it existed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        os.fchmod(file.fileno(), 0o600)  # O_CREAT's mode applies only to a new file
        file.write(data.encode() if isinstance(data, str) else data)
