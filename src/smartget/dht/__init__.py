"""A BitTorrent Mainline DHT (BEP 5) with btdht's API (seed 002), on asyncio.

``krpc`` (the message codec), ``routing`` (Node, Bucket, RoutingTable), ``tokens``,
``peers``, ``lookup`` and ``core`` are sans-IO; ``driver`` runs a core on a UDP socket
and is where :class:`DHT` lives; ``cli`` is ``smartget dht``. The driver's names are
imported on first use, so that importing a core loads no asyncio or socket.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from smartget.dht.core import DHTConfig, DHTCore
from smartget.dht.routing import Bucket, Node, RoutingTable

if TYPE_CHECKING:
    from smartget.dht.driver import DEFAULT_BOOTSTRAP, DHT, BlockingDHT

__all__ = [
    "DEFAULT_BOOTSTRAP",
    "DHT",
    "BlockingDHT",
    "Bucket",
    "DHTConfig",
    "DHTCore",
    "Node",
    "RoutingTable",
]


def __getattr__(name: str) -> Any:
    if name in ("DEFAULT_BOOTSTRAP", "DHT", "BlockingDHT"):
        from smartget.dht import driver

        return getattr(driver, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
