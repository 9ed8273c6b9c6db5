"""What ``smartget mesh run`` takes: :class:`MeshSettings`, and MSW's address.txt reader.

The routing settings (retries, hops, dialing learned addresses) are defined once, with
their help and range, in :class:`~smartget.mesh.router.RouterConfig`; the fields of the
same names here take their defaults from it and :meth:`MeshSettings.router_config`
hands them back to the router.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smartget.config import parse_hostport, setting
from smartget.errors import ConfigError
from smartget.mesh.apps import App
from smartget.mesh.datapack import MAX_FILE
from smartget.mesh.router import RouterConfig

__all__ = ["DEFAULT_APPS", "MAX_PEERS_FILE", "MeshSettings", "read_peers_file"]

DEFAULT_APPS = ["logger", "shell", "update"]
MAX_PEERS_FILE = 1 << 20  # bytes: tens of thousands of addresses
_ROUTER = RouterConfig()


@dataclass
class MeshSettings:
    """Everything ``smartget mesh run`` takes. ``listen=None`` runs no server (a client)."""

    tls_dir: Path
    data_dir: Path
    listen: tuple[str, int] | None = ("0.0.0.0", 20120)
    peers: list[tuple[str, int]] = field(default_factory=list)
    apps: list[str] = field(default_factory=lambda: list(DEFAULT_APPS))
    apps_dir: Path | None = None
    allow: dict[str, list[str]] = field(default_factory=dict)
    heartbeat: float = setting(10.0, "Seconds between peer-list exchanges (and redials).", min=0.05)
    retry_count: int = _ROUTER.retry_count
    retry_interval: float = _ROUTER.retry_interval
    max_hops: int = _ROUTER.max_hops
    dial_learned: bool = _ROUTER.dial_learned
    retry_max_packets: int = _ROUTER.retry_max_packets
    retry_max_bytes: int = _ROUTER.retry_max_bytes
    max_addresses: int = _ROUTER.max_addresses
    address_ttl: float = _ROUTER.address_ttl
    connect_timeout: float = 10.0
    idle_timeout: float = 0.0  # 0: three heartbeats plus 10 s
    max_file: int = MAX_FILE
    app_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    extra_apps: dict[str, App] = field(default_factory=dict)  # in-process apps (tests, CLI)

    def __post_init__(self) -> None:
        if not self.idle_timeout:
            self.idle_timeout = 3 * self.heartbeat + 10.0

    def router_config(self) -> RouterConfig:
        return RouterConfig(
            retry_count=self.retry_count,
            retry_interval=self.retry_interval,
            max_hops=self.max_hops,
            dial_learned=self.dial_learned,
            retry_max_packets=self.retry_max_packets,
            retry_max_bytes=self.retry_max_bytes,
            max_addresses=self.max_addresses,
            address_ttl=self.address_ttl,
        )


def read_peers_file(path: Path) -> list[tuple[str, int]]:
    """MSW's address.txt: one ``host:port`` a line; blank lines and ``#`` comments skipped."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_PEERS_FILE + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read peers file {path}: {exc.strerror}") from exc
    if len(data) > MAX_PEERS_FILE:
        raise ConfigError(f"peers file {path} is larger than {MAX_PEERS_FILE} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"peers file {path} is not UTF-8 text: {exc.reason}") from None
    peers = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if line:
            try:
                peers.append(parse_hostport(line, default_host="127.0.0.1"))
            except ConfigError as exc:
                raise ConfigError(f"{path}:{number}: {exc}") from exc
    return peers
