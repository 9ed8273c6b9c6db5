"""Small socket helpers shared by the services."""

from __future__ import annotations

import socket

from smartget.errors import ConfigError

__all__ = ["bind_tcp", "free_port"]


def bind_tcp(host: str, port: int) -> socket.socket:
    """A bound (not yet listening) TCP socket; ConfigError says why it could not bind.

    Binding before the server starts gives port 0 a real port to report and turns
    "address in use" into a sentence instead of a traceback.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    return sock


def free_port(host: str = "127.0.0.1", *, udp: bool = False) -> int:
    """A TCP (or UDP) port free on ``host`` right now (for starting other processes on it).

    Another process may take it before ours binds; tests and the demo accept that race.
    """
    with socket.socket(type=socket.SOCK_DGRAM if udp else socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
