"""The hub's fleet state behind one interface, with two engines.

* ``--state sqlite`` (default): :class:`SqliteState`, the in-memory registry made durable
  in ``DATA_DIR/hub.sqlite3``: one hub, the demo, one-machine fleets.
* ``--state redis://HOST:PORT/DB`` (``rediss://`` with TLS):
  :class:`~smartget.hub.state.redisengine.RedisState`, several hubs on one Redis; every
  change is one server-side function (``functions.py``); keys hash-tagged (``keys.py``).
  The status collector's reports go there too (:class:`SharedReports`, ``reports.py``).

``keys.py`` (key layout, member encoding, ``--state`` parsing), ``lease.py`` (the sweep
lease) and ``functions.py`` (the Lua library) are sans-IO; ``redisengine.py`` imports
redis-py only when a hub runs on Redis.
"""

from smartget.hub.state.api import (
    FleetState,
    Outcome,
    RemoteText,
    SharedReports,
    StateUnavailable,
)
from smartget.hub.state.keys import Keys, StateURL, parse_state
from smartget.hub.state.lease import Lease
from smartget.hub.state.sqlite import SqliteState, hub_identity

__all__ = [
    "FleetState",
    "Keys",
    "Lease",
    "Outcome",
    "RemoteText",
    "SharedReports",
    "SqliteState",
    "StateURL",
    "StateUnavailable",
    "hub_identity",
    "parse_state",
]
