"""A BitTorrent Mainline DHT (BEP 5) with btdht's API (seed 002), on asyncio.

``krpc`` (the message codec), ``routing`` (Node, Bucket, RoutingTable), ``tokens``,
``peers``, ``lookup`` and ``core`` are sans-IO; ``driver`` runs a core on a UDP socket
and is where :class:`DHT` lives; ``cli`` is ``smartget dht``.
"""

from smartget.dht.core import DHTCore
from smartget.dht.driver import DEFAULT_BOOTSTRAP, DHT, BlockingDHT
from smartget.dht.routing import Bucket, Node, RoutingTable

__all__ = ["DEFAULT_BOOTSTRAP", "DHT", "BlockingDHT", "Bucket", "DHTCore", "Node", "RoutingTable"]
