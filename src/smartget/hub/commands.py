"""The hub's command rules, in one place for every front end (sans-IO).

The text protocol (seed 000) and the JSON API carry the same registry commands, and
the tracker and the collector decide what the fleet's torrents are. Who asks decides
what a command may do; the front ends only say who is asking:

==============  ====================================  ===================================
command         a node (``FromNode``: text protocol,  an operator (``FromOperator``: the
                known by its TCP peer address)        JSON API, holding the hub's token)
==============  ====================================  ===================================
register        at its own IP, at most                at any IP it names (default: its own)
                ``max_nodes_per_ip`` nodes per IP
deregister      only its own ip+port                  any node, by id
requestnodes    only a registered node or a caller    the zone it names; never the ids
                in ``allow_nets``; its own zone       it names
                first; never itself
setstatus       only a node registered at its IP      any node; ``status`` from 0
update info     (not offered)                         any node
==============  ====================================  ===================================

Fleet rules: a fleet node (an IP the registry knows) that announces a torrent or
reports on one made it or was asked to fetch it, so the tracker starts tracking it.

Strangers (issue 12): an address that has registered no node can neither drain the
fleet's capacity with ``requestnodes`` (unless an operator allows its network) nor
register more than ``max_nodes_per_ip`` nodes; and a status report is taken only from
the address of the node it names (``ZONE_IP``, seed 003), so nobody reports for another
node (a stranger's reports are about itself, and bounded per node by the collector).

Every command raises the :mod:`smartget.errors` tree (``RegistryError`` and below);
each front end maps those to its replies in one place. Nothing here does I/O: the
caller passes ``now`` and persists what changed (``Registry.change_count``, and the
``newly_tracked`` flags the fleet commands return).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from smartget.errors import ConfigError, NotPermittedError, RegistryError
from smartget.hub import tracker as tr
from smartget.hub.collector import Collector, Report, own_report
from smartget.hub.registry import Node, Registry

__all__ = [
    "Announced",
    "Caller",
    "CommandRules",
    "FromNode",
    "FromOperator",
    "HubCommands",
    "Reported",
]


@dataclass(frozen=True, slots=True)
class FromNode:
    """A node speaking for itself; its identity is the TCP peer address."""

    ip: str


@dataclass(frozen=True, slots=True)
class FromOperator:
    """A controller holding the hub's token; ``ip`` is where it called from."""

    ip: str = ""


Caller = FromNode | FromOperator


@dataclass(slots=True)  # not frozen: made per announce (tracker._HOT)
class Announced:
    """The tracker's answer, and whether this announce made the torrent tracked."""

    reply: tr.AnnounceReply
    newly_tracked: bool


@dataclass(frozen=True, slots=True)
class Reported:
    """A status report taken in: ``done`` ends its node's reporting (answer ``success``)."""

    report: Report
    done: bool
    newly_tracked: bool


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class CommandRules:
    """What nodes speaking for themselves may do (operators are not limited)."""

    max_nodes_per_ip: int = 16
    allow_nets: tuple[Network, ...] = ()  # may requestnodes without a registered node
    # Torrents one fleet address may make the tracker track by announcing or reporting
    # them (operators add any with POST /api/torrents); counted per hub run.
    max_tracked_per_ip: int = 256

    @classmethod
    def parse(
        cls, max_nodes_per_ip: int, allow_nets: Iterable[str], max_tracked_per_ip: int = 256
    ) -> CommandRules:
        try:
            nets = tuple(ipaddress.ip_network(n.strip(), strict=False) for n in allow_nets)
        except ValueError as exc:
            raise ConfigError(f"--allow-net takes networks such as 10.0.0.0/8: {exc}") from None
        return cls(max_nodes_per_ip, nets, max_tracked_per_ip)

    def allows(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in self.allow_nets)


class HubCommands:
    """The rules of the table above over the registry, the tracker and the collector."""

    def __init__(
        self,
        registry: Registry,
        tracker: tr.Tracker,
        collector: Collector,
        rules: CommandRules | None = None,
    ) -> None:
        self.registry = registry
        self.tracker = tracker
        self.collector = collector
        self.rules = rules or CommandRules()
        self._tracked_by: dict[str, int] = {}  # torrents each fleet address made tracked

    # -- registry ---------------------------------------------------------------------

    def register(
        self, caller: Caller, port: int, now: float, *, ip: str | None = None, **info: Any
    ) -> Node:
        """Register a node at the caller's IP (an operator may name another).

        ``status`` in ``info`` sets the first free capacity. Raises NodeExistsError.
        """
        addr = ip if ip and isinstance(caller, FromOperator) else caller.ip
        if isinstance(caller, FromNode):
            taken = len(self.registry.get_node_ids_by_addr(addr))
            if taken >= self.rules.max_nodes_per_ip:
                raise RegistryError(
                    f"{addr} already has {taken} nodes registered (the hub's --max-nodes-per-ip)"
                )
        status = int(info.pop("status", 0) or 0)
        node = self.registry.register(addr, port, now, **info)
        if status:
            self.registry.set_node_status(node.node_id, status, now)
        return node

    def deregister(self, caller: Caller, node_id: int) -> Node:
        """Remove a node; a node may remove only itself (NotPermittedError)."""
        if isinstance(caller, FromNode):
            self.registry.check_owner(node_id, caller.ip)
        return self.registry.rm_node(node_id)

    def deregister_port(self, caller: FromNode, port: int) -> Node:
        """The text protocol's ``deregister PORT``: the node at the caller's IP and port."""
        return self.registry.rm_node(self.registry.get_node_id(caller.ip, port))

    def request_nodes(
        self,
        caller: Caller,
        n: int,
        *,
        zone: str | None = None,
        exclude: Iterable[int] = (),
    ) -> list[Node]:
        """Hand out up to ``n`` free nodes, lowering each one's status by one."""
        if isinstance(caller, FromNode):
            if not self.is_fleet_address(caller.ip) and not self.rules.allows(caller.ip):
                raise NotPermittedError(
                    f"{caller.ip} is no registered node: register first, or ask an operator "
                    "to allow your network (the hub's --allow-net)"
                )
            zone = self.registry.zone_of_addr(caller.ip)
            return self.registry.request_nodes(n, zone=zone, exclude_addr=caller.ip)
        return self.registry.request_nodes(n, zone=zone, exclude_ids=exclude)

    def set_status(self, caller: Caller, node_id: int, status: int, now: float) -> Node:
        """The heartbeat; a node may set only its own (NotPermittedError)."""
        addr = caller.ip if isinstance(caller, FromNode) else None
        return self.registry.set_node_status(node_id, status, now, addr=addr)

    def update_info(self, caller: FromOperator, node_id: int, **info: object) -> Node:
        """Change a node's zone, name, ports or URLs."""
        return self.registry.update_info(node_id, **info)

    # -- fleet: tracker and collector ---------------------------------------------------

    def is_fleet_address(self, ip: str) -> bool:
        return bool(self.registry.get_node_ids_by_addr(ip))

    def track(self, info_hash: bytes) -> bool:
        """Track a torrent (a controller's ``POST /api/torrents``); True if it is new."""
        return self.tracker.allow(info_hash)

    def announce(self, query: tr.Announce, caller_ip: str, now: float) -> Announced:
        """A BitTorrent announce; raises TrackerError for an untracked torrent."""
        newly = self._track_for(caller_ip, query.info_hash)
        return Announced(self.tracker.announce(query, now), newly)

    def _track_for(self, ip: str, info_hash: bytes) -> bool:
        """A fleet node announcing or reporting a torrent made it or was asked to fetch it:
        track it, up to ``max_tracked_per_ip`` torrents per address (issue 12.6: one
        registration let an address make the hub track 2,000 arbitrary info-hashes)."""
        if self.tracker.is_tracked(info_hash) or not self.is_fleet_address(ip):
            return False
        if self._tracked_by.get(ip, 0) >= self.rules.max_tracked_per_ip:
            return False
        newly = self.tracker.allow(info_hash)
        if newly:
            self._tracked_by[ip] = self._tracked_by.get(ip, 0) + 1
        return newly

    def report(self, data: object, caller_ip: str, now: float) -> Reported:
        """A seed 003 status report; raises CollectorError for a malformed one, or one
        that does not come from the node it names (issue 12.2: nobody reports for
        another node, so a stranger cannot mark a copy done)."""
        report = own_report(data, caller_ip, now)
        done = self.collector.receive(report)
        return Reported(report, done, self.track_reported(caller_ip, report))

    def track_reported(self, caller_ip: str, report: Report) -> bool:
        """A report taken (here or by the fleet's shared state): track its torrent if a
        fleet node sent it (the fleet rule above); True if it is newly tracked."""
        return self._track_for(caller_ip, bytes.fromhex(report.sha1))
