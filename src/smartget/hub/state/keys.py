"""Where the fleet's state lives in Redis, and how it is encoded (sans-IO).

Key layout (``P`` is ``sg:{fleet}:``; the braces are a Redis Cluster hash tag, so every
key of the registry maps to one slot and each atomic step, a server-side function,
touches that slot only):

==================  ========  ========================================================
key                 type      what
==================  ========  ========================================================
``P next``          string    the node id counter (INCR: ids are unique, never reused)
``P n:<id>``        hash      one node: a (ip), p (port), nm, s (status), z (zone), bt,
                              api, files, m (its member in the free sets, if free)
``P ap``            hash      ``"<ip> <port>"`` -> id (a node's key)
``P ip:<ip>``       set       the ids at one address (who is a fleet node, max per IP)
``P all``           zset      every id, scored by id (listing in id order)
``P free``          zset      nodes with status > 0: score ``-status``, member
                              :func:`rotation_member` (see below)
``P free:z:<zone>`` zset      the same, one zone's nodes (zone preference)
``P seq``           string    the rotation counter
``P alive``         zset      id -> last heartbeat (Redis server time, ms)
``P zomb``          zset      id -> zombie since (ms)
``P stat``          hash      slots (free connections in all), handed (nodes handed out)
``P log``           stream    ids of changed nodes, for each hub's read-only mirror
``P hub:<hub id>``  string    a hub's heartbeat (JSON), with a TTL
``P hubs``          zset      hub id -> when its heartbeat expires (ms)
``P lease:sweep``   string    the hub allowed to run liveness sweeps (SET NX PX)
``P drained``       hash      id -> the status its heartbeats last asked for: the nodes
                              an operator drained (held at 0; at most MAX_DRAINED,
                              forgotten when the node is removed)
``P drainv``        string    the drained set's version (INCR when an id comes or goes)
==================  ========  ========================================================

The status collector's keys (seed 003 reports, ``hub/state/reports.py``), in the same
slot, so a report is one atomic step (``sg_report``) over all of them:

==================  ========  ========================================================
key                 type      what
==================  ========  ========================================================
``P rq``            string    the report sequence (INCR): ``X-Progress-Seq``, fleet-wide
``P r:<sha1>``      hash      nodeid -> :func:`report_entry` (the latest report)
``P rn:<nodeid>``   set       the sha1s a node id has a report on (cap per node)
``P ri:<ip>``       set       the node ids reported from one address (cap per address)
``P rt``            zset      sha1 -> its last report (Redis time, ms): listing, expiry
``P rc``            string    how many (nodeid, sha1) reports are held (cap in all)
``P rlog``          stream    q (seq), k (``r`` report / ``f`` sha1 forgotten), s
                              (sha1), n (nodeid), v (entry): wakes every hub's
                              long-polls and keeps its read-only copy (capped, MAXLEN ~)
==================  ========  ========================================================

What one hash tag means on a Redis Cluster: every key above is in one slot, so the
whole fleet lives on the one master that holds it. The cluster routes the hubs there
(and moves the slot on a resharding or failover); it does not spread the fleet's load:
one slot gives one master's throughput and memory, however many masters there are.
Sharding would take one tag per zone (or per swarm), and then a ``requestnodes`` over
several zones would no longer be one atomic step; that is left for when one master is
not enough.

Handing out (``requestnodes``): most free capacity first, ties in turn. A sorted set
orders by score, then members of one score by their bytes. The score is ``-status``
(highest status first); the member is a zero-padded rotation counter then the id, so
within one status the node whose status changed longest ago comes first, and a node
handed out goes to the end of its new bucket. The counter lives in the member, not in
the score, so it never has to share a double's 53 bits with the status and never
wraps. Taking k nodes is one ZRANGE: O(log n + k).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote, urlsplit

from smartget.errors import ConfigError
from smartget.hub.collector import Report
from smartget.hub.registry import Node

__all__ = [
    "FLEET_TAG",
    "NODE_FIELDS",
    "Keys",
    "StateURL",
    "member_id",
    "node_from_record",
    "parse_state",
    "report_entry",
    "report_from_entry",
    "rotation_member",
]

FLEET_TAG: Final = "fleet"
# The fields of a node record as the functions return it, after its id.
NODE_FIELDS: Final = ("a", "p", "nm", "s", "z", "bt", "api", "files")
ROTATION_DIGITS: Final = 16


@dataclass(frozen=True, slots=True)
class Keys:
    """The names of the fleet's keys; ``tag`` is the Redis Cluster hash tag."""

    tag: str = FLEET_TAG

    @property
    def prefix(self) -> str:
        return f"sg:{{{self.tag}}}:"

    @property
    def next_id(self) -> str:
        return self.prefix + "next"

    def node(self, node_id: int | str) -> str:
        return f"{self.prefix}n:{node_id}"

    @property
    def all(self) -> str:
        return self.prefix + "all"

    @property
    def free(self) -> str:
        return self.prefix + "free"

    def free_zone(self, zone: str) -> str:
        return f"{self.prefix}free:z:{zone}"

    @property
    def alive(self) -> str:
        return self.prefix + "alive"

    @property
    def zombies(self) -> str:
        return self.prefix + "zomb"

    @property
    def stat(self) -> str:
        return self.prefix + "stat"

    @property
    def log(self) -> str:
        return self.prefix + "log"

    @property
    def hubs(self) -> str:
        return self.prefix + "hubs"

    @property
    def sweep_lease(self) -> str:
        return self.prefix + "lease:sweep"

    @property
    def drained(self) -> str:
        return self.prefix + "drained"

    @property
    def drain_version(self) -> str:
        return self.prefix + "drainv"

    # -- the status collector --------------------------------------------------------

    @property
    def report_seq(self) -> str:
        return self.prefix + "rq"

    def reports(self, sha1: str) -> str:
        return f"{self.prefix}r:{sha1}"

    def reports_of_node(self, nodeid: str) -> str:
        return f"{self.prefix}rn:{nodeid}"

    @property
    def report_times(self) -> str:
        return self.prefix + "rt"

    @property
    def report_log(self) -> str:
        return self.prefix + "rlog"


def rotation_member(seq: int, node_id: int) -> str:
    """A node's member in the free sets: ``0000000000000042:7`` sorts by ``seq``."""
    return f"{seq:0{ROTATION_DIGITS}d}:{node_id}"


def member_id(member: str) -> int:
    return int(member.rpartition(":")[2])


def node_from_record(record: list[str] | tuple[str, ...]) -> Node:
    """A node from ``[id, a, p, nm, s, z, bt, api, files]`` (the functions' record)."""
    node_id, addr, port, name, status, zone, bt_port, api_url, files_url = record
    return Node(
        int(node_id),
        addr,
        int(port),
        name or "",
        int(status),
        zone or "",
        int(bt_port or 0),
        api_url or "",
        files_url or "",
    )


@dataclass(frozen=True, slots=True)
class StateURL:
    """``--state``: ``sqlite`` (None url) or a Redis URL without its password."""

    engine: str  # "sqlite" or "redis"
    url: str = ""  # redis://host:port/db or rediss://... (never with a password)
    host: str = ""
    port: int = 0
    db: int = 0
    tls: bool = False
    username: str | None = None

    @property
    def is_redis(self) -> bool:
        return self.engine == "redis"


def parse_state(value: str) -> StateURL:
    """``sqlite`` or ``redis[s]://[USER@]HOST:PORT/DB``; a password here is refused."""
    if value == "sqlite":
        return StateURL("sqlite")
    parts = urlsplit(value)
    if parts.scheme not in ("redis", "rediss"):
        raise ConfigError(
            f"--state takes sqlite or redis://HOST:PORT/DB (rediss:// for TLS), got {value!r}"
        )
    if parts.password is not None:
        raise ConfigError(
            "--state: put the Redis password in --redis-password-file or the "
            "SMARTGET_REDIS_PASSWORD environment variable, not in the URL (a command "
            "line is visible to every user of the machine)"
        )
    if parts.query or parts.fragment:
        raise ConfigError(f"--state: no query or fragment allowed, got {value!r}")
    try:
        port = parts.port or 6379
    except ValueError as exc:
        raise ConfigError(f"--state: {exc}") from None
    host = parts.hostname or ""
    if not host:
        raise ConfigError(f"--state needs a host: redis://HOST:PORT/DB, got {value!r}")
    path = parts.path.strip("/") or "0"
    if not path.isdigit():
        raise ConfigError(f"--state: the database is a number (redis://HOST:PORT/0), got {path!r}")
    username = unquote(parts.username) if parts.username else None
    netloc = f"[{host}]" if ":" in host else host
    user = f"{parts.username}@" if parts.username else ""
    url = f"{parts.scheme}://{user}{netloc}:{port}/{int(path)}"
    return StateURL("redis", url, host, port, int(path), parts.scheme == "rediss", username)


def report_entry(report: Report) -> str:
    """What ``sg_report`` is given for a report: its fields as JSON, ``received_at``
    left out (Redis stores ``<done 0|1>|<Redis time, ms>|<json>``)."""
    fields = report.as_dict()
    del fields["received_at"], fields["done"]
    return json.dumps(fields, separators=(",", ":"))


def report_from_entry(entry: str, local_time: Callable[[float], float]) -> Report:
    """A report as Redis holds it; ``local_time`` turns Redis's wall-clock seconds into
    the hub's clock (``received_at`` and ``age`` are on the hub's clock, as with one hub)."""
    _, ms, fields = entry.split("|", 2)
    return Report(**json.loads(fields), received_at=local_time(int(ms) / 1000))
