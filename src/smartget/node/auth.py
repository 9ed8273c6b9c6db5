"""Who may use the node's API (issue 4, "Auth on every route").

Two ways in, either is enough: seed 003's ``?user=U&pwd=<md5 hex of the password>``
query, and ``Authorization: Bearer <token>``. Anything else gets 401 ``Unauthorized``.
With neither a password nor a token configured, a random password for user ``admin`` is
generated on first start and kept in ``DATA_DIR/node.password`` (mode 0600, made so
also when the file was there with another mode): the API never runs open. The log says
where the password is, never what it is (logs travel further than files).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from smartget.auth import write_private

__all__ = ["DEFAULT_USER", "Credentials", "load_or_create_password", "md5_hex"]

log = logging.getLogger(__name__)

DEFAULT_USER = "admin"
PASSWORD_FILE = "node.password"


def md5_hex(password: str) -> str:
    """What seed 003's clients send as ``pwd``: md5 of the password, hex."""
    return hashlib.md5(password.encode("utf-8"), usedforsecurity=False).hexdigest()


def load_or_create_password(data_dir: Path) -> tuple[str, bool]:
    """The password in DATA_DIR/node.password, created on first start; (password, created)."""
    path = data_dir / PASSWORD_FILE
    with contextlib.suppress(FileNotFoundError):
        text = path.read_text().strip()
        if text:
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o077:
                path.chmod(0o600)
                log.warning("%s was readable by others (mode %o): made it 0600", path, mode)
            return text, False
    password = secrets.token_urlsafe(18)
    write_private(path, password + "\n")
    return password, True


@dataclass(frozen=True)
class Credentials:
    user: str | None
    pwd_md5: str | None  # md5 hex of the password, lower case
    token: str | None

    @classmethod
    def build(
        cls, data_dir: Path, user: str | None, password: str | None, token: str | None
    ) -> Credentials:
        if user and not password:
            from smartget.errors import ConfigError

            raise ConfigError("--user needs --password")
        if not password and not token:
            password, created = load_or_create_password(data_dir)
            if created:
                log.warning(
                    "no --password or --token given: generated an API password for user %r "
                    "in %s (readable by this user only)",
                    user or DEFAULT_USER,
                    data_dir / PASSWORD_FILE,
                )
        return cls(
            user=(user or DEFAULT_USER) if password else None,
            pwd_md5=md5_hex(password) if password else None,
            token=token or None,
        )

    def check(self, *, user: str | None, pwd: str | None, bearer: str | None) -> bool:
        ok = False
        if self.token and bearer:
            ok = hmac.compare_digest(bearer.encode(), self.token.encode())
        if not ok and self.user and self.pwd_md5 and user is not None and pwd is not None:
            ok = hmac.compare_digest(user.encode(), self.user.encode()) & hmac.compare_digest(
                pwd.lower().encode(), self.pwd_md5.encode()
            )
        return ok
