"""Where each Datapack goes: local apps, direct links, proxies, or the retry queue (sans-IO).

Theory of operation
-------------------
The driver (node.py) tells the :class:`Router` which direct links are up
(:meth:`link_up`, :meth:`link_down`), hands it every packet an app sends
(``sender=None``) or a link delivers (``sender`` = the peer's certificate id), and
carries out the actions it returns, in order:

==============  =========================================================================
``Deliver``     give the packet to the local app ``datapack.app``
``Transmit``    write the packet on the direct link to ``peer``
``Dial``        open a link to ``host:port`` (an address learned from a peer)
``Dropped``     the packet is given up; log ``reason``
==============  =========================================================================

``to`` (seed 001, "plugins/net.py"; DESIGN.md): absent means a local app; a node id;
``*`` for every direct peer (each gets one copy without ``to``); or a ``&``-joined list of
hops visited in order (``B&D&E``), each hop stripped by the node it names. The next hop
toward a node is the node itself when linked, else the proxy with the shortest
advertised distance, else the link the node's last packet came in on (so a reply finds
its way back before any heartbeat advertised the asker). Nodes swap peer lists and
distance tables on a heartbeat (app ``net``), with split horizon; :meth:`heartbeat_for`
builds the body and :meth:`route` consumes it.

Every packet from a link is counted in ``hops`` and dropped past ``max_hops``; a flag
seen within ``dedupe_seconds`` with the same remaining ``to`` is dropped as a duplicate.
A packet with no next hop waits in the retry queue: it is tried again every
``retry_interval`` seconds, at once when a link comes up or a route appears, and dropped
after ``retry_count`` failed tries
(seed: "重试失败次数超过39次，数据包将被丢弃"; 3.9 s apart per DESIGN.md). The queue holds
at most ``retry_max_packets`` packets and ``retry_max_bytes`` bytes of heads and bodies
(a file's content is on disk and counts as its head only): beyond that a new packet is
dropped (issue 12, item 7: one member sending 16 MiB packets to an unknown node must not
grow the node without bound).

Learned addresses (heartbeats' ``peers``) are kept for at most ``address_ttl`` seconds
after they were last advertised and ``max_addresses`` in all, the oldest going first.
The clock is the caller's ``now``; :meth:`get_timer` says when :meth:`handle_timer` is due.

Packets are immutable: every change (``id``, ``to``, ``hops``) makes a copy, so the copy
a :class:`Transmit` hands to a link is never touched again. ``hops`` counts the links a
packet was given to, one per :class:`Transmit`; a packet handed back by a link that went
down (:meth:`Router.reroute`) never crossed it, so that hop is taken back first.

Every tunable is in one frozen :class:`RouterConfig` whose fields carry their default,
help and range; ``smartget mesh run`` makes its options from it.
"""

from __future__ import annotations

import collections
import dataclasses
import heapq
import json
from dataclasses import dataclass, field
from typing import Any

from smartget.config import SIZE, setting
from smartget.mesh.datapack import Datapack, new_flag

__all__ = [
    "NET_APP",
    "Action",
    "Deliver",
    "Dial",
    "Dropped",
    "Router",
    "RouterConfig",
    "Transmit",
]

NET_APP = "net"  # the heartbeat's app, as MSW's plugins/net.py
MAX_ADVERT = 10_000  # entries taken from one heartbeat
_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")


def small_number(text: str, digits: int = 9) -> bool:
    """ASCII digits only (``str.isdigit`` also takes '¹' and '٣', which int() refuses)."""
    return 0 < len(text) <= digits and text.isascii() and text.isdigit()


def valid_id(text: str) -> bool:
    return 0 < len(text) <= 64 and not set(text) - _ID_CHARS


@dataclass(frozen=True)
class RouterConfig:
    """How a node routes: the settings of ``smartget mesh run`` that the router takes."""

    retry_count: int = setting(39, "Tries before a packet with no route is dropped.", min=1)
    retry_interval: float = setting(
        3.9, "Seconds between tries of a packet with no route.", min=0.01
    )
    max_hops: int = setting(16, "Packets that crossed more links are dropped.", min=1, max=255)
    dial_learned: bool = setting(
        True,
        "Dial addresses learned from peers (off: use only --peers and proxies).",
        flag="--dial-learned/--no-dial-learned",
    )
    retry_max_packets: int = setting(
        10_000, "Packets the retry queue holds at most; newer ones are dropped.", min=1
    )
    retry_max_bytes: int = setting(
        64 << 20,
        "Bytes (heads and bodies) the retry queue holds at most; newer packets are dropped.",
        min=0,
        click_type=SIZE,
        show_default="64MiB",
    )
    max_addresses: int = setting(
        4096, "Addresses learned from heartbeats kept at most (oldest go first).", min=1
    )
    address_ttl: float = setting(
        3600.0, "Seconds a learned address is kept after it was last advertised.", min=1
    )
    dedupe_seconds: float = 600.0  # how long a flag is remembered (and a signature fresh)
    dedupe_max: int = 200_000  # flags remembered at most


@dataclass(frozen=True, slots=True)
class Deliver:
    """Hand ``datapack`` to the local app it names; ``sender`` is the link it came in on."""

    datapack: Datapack
    sender: str | None


@dataclass(frozen=True, slots=True)
class Transmit:
    """Write ``datapack`` on the direct link to ``peer``."""

    peer: str
    datapack: Datapack


@dataclass(frozen=True, slots=True)
class Dial:
    """Connect to ``node_id`` at ``host:port`` (learned from a heartbeat)."""

    node_id: str
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class Dropped:
    """``datapack`` is given up; ``level`` says how loudly to log it."""

    datapack: Datapack
    reason: str
    level: str = "info"  # "debug" (expected, e.g. duplicates), "info", "warning"


Action = Deliver | Transmit | Dial | Dropped


def _size(dp: Datapack) -> int:
    """What a queued packet costs in memory: its body and head (a file's content is on disk)."""
    return len(dp.body) + sum(len(k) + len(v) + 4 for k, v in dp.head.items()) + 64


@dataclass(order=True, slots=True)
class _Waiting:
    due: float
    seq: int
    datapack: Datapack = field(compare=False)
    tries: int = field(compare=False, default=0)
    done: bool = field(compare=False, default=False)


class Router:
    """The routing state of one node. Touch it only from the driver's loop."""

    def __init__(
        self,
        node_id: str,
        config: RouterConfig | None = None,
        *,
        listen: str = "",
        **changes: Any,
    ) -> None:
        """``changes`` replace single fields of ``config`` (``Router("a", max_hops=3)``)."""
        self.node_id = node_id
        self.config = dataclasses.replace(config or RouterConfig(), **changes)
        self.listen = listen  # "host:port" advertised to peers ("" = not dialable)
        self.default_route: str | None = None  # next hop when nothing better is known
        # Reverse paths: origin -> the link its last packet came in on. A reply can go
        # back that way before any heartbeat has advertised the origin.
        self._reverse: collections.OrderedDict[str, str] = collections.OrderedDict()
        self.peers: dict[str, str] = {}  # direct links: id -> advertised "host:port" or ""
        # Every id -> "host:port" we have heard of, oldest advertised first, with when.
        self.addresses: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._address_seen: dict[str, float] = {}
        self.routes: dict[str, tuple[str, int]] = {}  # id -> (next hop, distance)
        self._adverts: dict[str, dict[str, int]] = {}  # peer -> its distance table
        self._seen: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._waiting: list[_Waiting] = []
        self._waiting_count = 0  # entries not done
        self._waiting_bytes = 0
        self._seq = 0
        self.stats = collections.Counter[str]()

    # -- links ---------------------------------------------------------------------

    def link_up(self, peer: str, now: float) -> list[Action]:
        self.peers.setdefault(peer, "")
        self._recompute()
        return self._flush(now)

    def link_down(self, peer: str, now: float) -> None:
        self.peers.pop(peer, None)
        self._adverts.pop(peer, None)
        self._recompute()

    def next_hop(self, dest: str) -> str | None:
        if dest in self.peers:
            return dest
        route = self.routes.get(dest)
        if route:
            return route[0]
        back = self._reverse.get(dest)
        if back in self.peers:
            return back
        return self.default_route if self.default_route in self.peers else None

    # -- packets -------------------------------------------------------------------

    def route(
        self, dp: Datapack, now: float, sender: str | None = None, *, peer_host: str = ""
    ) -> list[Action]:
        """Decide what to do with ``dp``, from a local app (``sender=None``) or a link.

        ``peer_host`` is the link's remote address, used for a peer that listens on a
        wildcard address (``0.0.0.0:PORT``).
        """
        if sender is None:
            dp = dp.with_head({"flag": dp.flag or new_flag(), "id": self.node_id})
            self._remember(f"{dp.flag}>{dp.head.get('to', '')}", now)
        else:
            head = dp.head
            flag = head.get("flag", "")
            if flag:
                # A source route may pass a node twice (b&c&b), each time with less 'to'.
                key = f"{flag}>{head.get('to', '')}"
                seen_at = self._seen.get(key)
                if seen_at is not None and seen_at >= now - self.config.dedupe_seconds:
                    self.stats["duplicates"] += 1
                    return [Dropped(dp, f"duplicate flag {flag}", "debug")]
                self._remember(key, now)
            hops = head.get("hops", "0")
            if not small_number(hops) or int(hops) > self.config.max_hops:
                self.stats["dropped"] += 1
                return [Dropped(dp, f"hop limit: hops={hops[:8]!r} > {self.config.max_hops}")]
            dp = dp.with_defaults({"id": sender})
            origin = dp.head["id"]
            if origin != sender and valid_id(origin):
                self._learn_reverse(origin, sender)
            if dp.app == NET_APP and "to" not in dp.head:
                return self._heartbeat(sender, dp, now, peer_host)
        return self._dispatch(dp, now, sender)

    def _dispatch(self, dp: Datapack, now: float, sender: str | None) -> list[Action]:
        to = dp.head.get("to", "")
        hops = to.split("&") if to else []
        while hops and hops[0] == self.node_id:
            hops.pop(0)
        if not hops:
            self.stats["delivered"] += 1
            return [Deliver(dp.with_head(drop=("to",)) if to else dp, sender)]
        if any(not (valid_id(hop) or hop == "*") for hop in hops) or "*" in hops[:-1]:
            self.stats["dropped"] += 1
            return [Dropped(dp, f"bad 'to' {to[:64]!r}: node ids joined by '&', '*' last")]
        if hops == ["*"]:
            return self._broadcast(dp, sender)
        rest = "&".join(hops)
        if rest != to:
            dp = dp.with_head({"to": rest})
        action = self._forward(dp)
        if action is not None:
            return [action]
        dropped = self._enqueue(dp, now + self.config.retry_interval)
        return [dropped] if dropped else []

    def reroute(self, dp: Datapack, now: float) -> list[Action]:
        """Route again a packet of an earlier :class:`Transmit` that its link never wrote.

        Its ``hops`` counts that link already; it never crossed it, so the hop is taken
        back before the packet goes out again (else it would count twice).
        """
        if not dp.head.get("to"):
            return [Dropped(dp, "its link went down (a broadcast copy is not retried)")]
        hops = dp.head.get("hops", "")
        if small_number(hops):
            back = int(hops) - 1
            dp = dp.with_head({"hops": str(back)}) if back > 0 else dp.with_head(drop=("hops",))
        action = self._forward(dp)
        if action is not None:
            return [action]
        dropped = self._enqueue(dp, now + self.config.retry_interval)
        return [dropped] if dropped else []

    def _broadcast(self, dp: Datapack, sender: str | None) -> list[Action]:
        actions: list[Action] = []
        base = dp.with_head(drop=("to",))
        for peer in sorted(self.peers):
            if peer == sender:
                continue
            actions.append(self._transmit(peer, base))
        if not actions:
            actions.append(Dropped(dp, "broadcast with no direct peer"))
        return actions

    def _forward(self, dp: Datapack) -> Transmit | None:
        hop = self.next_hop(dp.head["to"].split("&", 1)[0])
        return None if hop is None else self._transmit(hop, dp)

    def _transmit(self, peer: str, dp: Datapack) -> Transmit:
        """The copy for ``peer``, one more hop on it (the original stays as it was)."""
        hops = dp.head.get("hops", "0")
        self.stats["transmitted"] += 1
        return Transmit(
            peer, dp.with_head({"hops": str(int(hops) + 1 if small_number(hops) else 1)})
        )

    def _learn_reverse(self, origin: str, peer: str) -> None:
        reverse = self._reverse
        reverse[origin] = peer
        reverse.move_to_end(origin)
        if len(reverse) > MAX_ADVERT:
            reverse.popitem(last=False)

    def _remember(self, flag: str, now: float) -> None:
        seen = self._seen
        seen[flag] = now
        seen.move_to_end(flag)
        limit = now - self.config.dedupe_seconds
        while seen and (len(seen) > self.config.dedupe_max or next(iter(seen.values())) < limit):
            seen.popitem(last=False)

    # -- retry queue ---------------------------------------------------------------

    def _enqueue(self, dp: Datapack, due: float, tries: int = 0) -> Dropped | None:
        """Queue ``dp`` for a retry at ``due``; a :class:`Dropped` if the queue is full."""
        size = _size(dp)
        config = self.config
        if (
            self._waiting_count >= config.retry_max_packets
            or self._waiting_bytes + size > config.retry_max_bytes
        ):
            self.stats["retry_full"] += 1
            full = self.stats["retry_full"]
            loud = full in (1, 10, 100) or full % 1000 == 0
            return Dropped(
                dp,
                f"retry queue is full ({self._waiting_count} packets, {self._waiting_bytes} "
                f"bytes; --retry-max-packets/--retry-max-bytes); {full} dropped so far",
                "warning" if loud else "debug",
            )
        self._seq += 1
        heapq.heappush(self._waiting, _Waiting(due, self._seq, dp, tries))
        self._waiting_count += 1
        self._waiting_bytes += size
        self.stats["queued"] += 1
        return None

    def _unqueue(self, entry: _Waiting) -> None:
        self._waiting_count -= 1
        self._waiting_bytes -= _size(entry.datapack)

    def get_timer(self) -> float | None:
        while self._waiting and self._waiting[0].done:
            heapq.heappop(self._waiting)
        return self._waiting[0].due if self._waiting else None

    def handle_timer(self, now: float) -> list[Action]:
        actions: list[Action] = []
        while self._waiting and self._waiting[0].due <= now:
            entry = heapq.heappop(self._waiting)
            if entry.done:
                continue
            self._unqueue(entry)
            action = self._forward(entry.datapack)
            if action is not None:
                actions.append(action)
                continue
            entry.tries += 1
            self.stats["retries"] += 1
            if entry.tries >= self.config.retry_count:
                self.stats["dropped"] += 1
                to = entry.datapack.head.get("to", "")
                actions.append(
                    Dropped(
                        entry.datapack, f"no route to {to!r} after {entry.tries} tries", "warning"
                    )
                )
            else:
                dropped = self._enqueue(
                    entry.datapack, now + self.config.retry_interval, entry.tries
                )
                if dropped is not None:
                    actions.append(dropped)
        return actions

    def _flush(self, now: float) -> list[Action]:
        """Send every waiting packet that has a next hop now (a link or route appeared)."""
        actions: list[Action] = []
        for entry in self._waiting:
            if not entry.done:
                action = self._forward(entry.datapack)
                if action is not None:
                    entry.done = True
                    self._unqueue(entry)
                    actions.append(action)
        return actions

    @property
    def waiting(self) -> int:
        return self._waiting_count

    # -- heartbeat -----------------------------------------------------------------

    def heartbeat_for(self, peer: str) -> Datapack:
        """The ``net`` packet for ``peer``: our address, our links, our distances.

        Split horizon: routes whose next hop is ``peer`` are not offered back to it.
        """
        body = {
            "listen": self.listen,
            "peers": {p: addr for p, addr in self.peers.items() if p != peer},
            "routes": {d: dist for d, (hop, dist) in self.routes.items() if hop != peer},
        }
        return Datapack("post", NET_APP, {"from": NET_APP}, json.dumps(body).encode())

    def _heartbeat(self, peer: str, dp: Datapack, now: float, peer_host: str) -> list[Action]:
        try:
            body = json.loads(dp.body)
            listen, peers, routes = body["listen"], body["peers"], body["routes"]
            if not (
                isinstance(listen, str) and isinstance(peers, dict) and isinstance(routes, dict)
            ):
                raise TypeError("wrong types")
        except (ValueError, TypeError, KeyError) as exc:
            return [Dropped(dp, f"malformed heartbeat from {peer}: {exc}", "warning")]
        self.stats["heartbeats"] += 1
        for wildcard in ("0.0.0.0:", "[::]:", ":::"):
            if listen.startswith(wildcard) and peer_host:
                listen = f"{peer_host}:{listen[len(wildcard) :]}"
        if peer in self.peers and listen and len(listen) <= 300:
            self.peers[peer] = listen
            self._learn_address(peer, listen, now)
        advert: dict[str, int] = {}
        for dest, dist in list(routes.items())[:MAX_ADVERT]:
            if isinstance(dest, str) and valid_id(dest) and isinstance(dist, int) and dist > 0:
                advert[dest] = dist
        actions: list[Action] = []
        for dest, addr in list(peers.items())[:MAX_ADVERT]:
            if not (isinstance(dest, str) and valid_id(dest) and isinstance(addr, str)):
                continue
            advert[dest] = 1
            if addr and len(addr) <= 300 and dest != self.node_id:
                self._learn_address(dest, addr, now)
                if self.config.dial_learned and dest not in self.peers:
                    host, _, port = addr.rpartition(":")
                    if host and small_number(port, 5) and int(port) < 65536:
                        actions.append(Dial(dest, host.strip("[]"), int(port)))
        self._age_addresses(now)
        if peer in self.peers:
            self._adverts[peer] = advert
            self._recompute()
            actions.extend(self._flush(now))
        return actions

    def _learn_address(self, node: str, addr: str, now: float) -> None:
        addresses = self.addresses
        addresses[node] = addr
        addresses.move_to_end(node)
        self._address_seen[node] = now
        while len(addresses) > self.config.max_addresses:
            oldest, _ = addresses.popitem(last=False)
            del self._address_seen[oldest]

    def _age_addresses(self, now: float) -> None:
        limit = now - self.config.address_ttl
        addresses = self.addresses
        while addresses:
            oldest = next(iter(addresses))
            if self._address_seen[oldest] >= limit:
                break
            del addresses[oldest]
            del self._address_seen[oldest]

    def _recompute(self) -> None:
        routes: dict[str, tuple[str, int]] = {}
        for peer in sorted(self._adverts):
            for dest, dist in self._adverts[peer].items():
                if dest == self.node_id or dest in self.peers or dist + 1 > self.config.max_hops:
                    continue
                best = routes.get(dest)
                if best is None or dist + 1 < best[1]:
                    routes[dest] = (peer, dist + 1)
        self.routes = routes

    def statistics(self) -> dict[str, int]:
        return {
            **self.stats,
            "peers": len(self.peers),
            "routes": len(self.routes),
            "waiting": self.waiting,
            "waiting_bytes": self._waiting_bytes,
            "addresses": len(self.addresses),
            "flags_remembered": len(self._seen),
        }
