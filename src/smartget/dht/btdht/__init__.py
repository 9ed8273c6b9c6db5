"""btdht's API (seed 002; nitmir/btdht 0.3.3) as a second face of SmartGet's DHT.

A script written for btdht runs with only its import changed::

    import smartget.dht.btdht as btdht      # was: import btdht
    dht = btdht.DHT()
    dht.start()                              # threads started; returns at once
    peers = dht.get_peers(info_hash)         # blocks until peers are found

Underneath is the same sans-IO :class:`~smartget.dht.core.DHTCore` the asyncio
:class:`smartget.dht.DHT` drives: here that driver runs on an event loop in a thread of
the DHT's own, user hooks (``on_*_query`` ...) run in a second thread, and ``clean`` /
``clean_long`` in a third. The modules mirror btdht's: :mod:`.dht`, :mod:`.utils`,
:mod:`.krcp`, :mod:`.exceptions`. README's DHT section lists what differs, and why.
"""

from smartget.dht.btdht.dht import DHT, DHT_BASE, Bucket, Node, RoutingTable
from smartget.dht.btdht.exceptions import BucketFull, NotFound, NoTokenError
from smartget.dht.btdht.utils import ID

__all__ = [
    "DHT",
    "DHT_BASE",
    "ID",
    "Bucket",
    "BucketFull",
    "NoTokenError",
    "Node",
    "NotFound",
    "RoutingTable",
]
