"""co2's relay registry in the hub (seed 004): XML-RPC at ``/RPC2``.

Satellites register, relay messages to every other satellite (through their
``notify``), are pinged and keep statistics; registrations live in the hub's store.

* :mod:`~smartget.hub.relay.core`: satellites and statistics, pure logic;
* :mod:`~smartget.hub.relay.xmlrpc`: safe XML-RPC parsing and faults;
* :mod:`~smartget.hub.relay.methods`: the methods, aliases and introspection;
* :mod:`~smartget.hub.relay.outbox`: accepted messages until delivered, pure logic;
* :mod:`~smartget.hub.relay.store`: the satellites' and messages' tables;
* :mod:`~smartget.hub.relay.records`: satellites and messages as the fleet's Redis
  holds them (``--state redis://``; the I/O is :mod:`smartget.hub.state.relay`);
* :mod:`~smartget.hub.relay.service`: the asyncio driver (limiter, notifier, pinger);
* :mod:`~smartget.hub.relay.http`: the ``POST /RPC2`` route.
"""

from smartget.hub.relay.core import Satellite, SatelliteRegistry
from smartget.hub.relay.http import RPC2Passthrough, add_relay_routes
from smartget.hub.relay.service import RelayService, RelaySettings

__all__ = [
    "RPC2Passthrough",
    "RelayService",
    "RelaySettings",
    "Satellite",
    "SatelliteRegistry",
    "add_relay_routes",
]
