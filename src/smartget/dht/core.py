"""The sans-IO DHT node: KRPC in, KRPC out, lookups and table upkeep in between.

Theory of operation
-------------------
Shaped like aioquic's ``QuicConnection``: the core never reads a clock or touches a
socket. The driver feeds :meth:`DHTCore.receive_datagram` with ``(data, addr, now)``,
sends what :meth:`DHTCore.datagrams_to_send` returns, re-arms one timer at
:meth:`DHTCore.get_timer` and calls :meth:`DHTCore.handle_timer` when it fires, and
drains :meth:`DHTCore.next_event` for results (peers found, lookups done, announces).

Incoming datagrams pass, in order: the ignore lists, the per-IP rate limit (a token
bucket; over the limit the datagram is dropped, as libtorrent does), the KRPC codec
(malformed -> error 203 when a ``t`` can be recovered), then dispatch. A reply to a
source that has not proved its address (:mod:`.sources`: it never answered one of our
queries nor showed a valid token) is charged to its byte budget and carries a few peers
rather than a hundred: a spoofed source cannot turn this node into an amplifier. Queries are
answered at once (BEP 5 "DHT Queries"); every response echoes the requester's address
in ``ip`` (BEP 42). The sender joins the routing table unless it set ``ro`` (BEP 43).

A node under load spends its time answering get_peers, so that path is lean (the
issue's benchmark: half of libtorrent's rate or better): the query's fields are checked
straight from the decoded dict (no :class:`krpc.Query` unless a hook wants one), the
reply is assembled as bytes (:func:`krpc.get_peers_body`, :func:`krpc.encode_reply`)
from cached parts: the ``nodes`` of the target's bucket
(:meth:`RoutingTable.compact_closest`), the requester's token for this rotation
(:class:`TokenManager`) and its packed IP; and a known sender is refreshed in place
(:meth:`RoutingTable.heard`).

Our own queries are transactions keyed by a 2-byte ``t``; each has a deadline kept in
a heap. A query that times out is sent once more (``retries``) and then fails, which
counts against the node (:attr:`Node.failed`; three in a row make it bad and it is
replaced from its bucket's cache).

Every ``MAINTENANCE`` seconds: expire announced peers, merge buckets if a registration
was released, ping the stalest questionable node of full buckets that have
replacements waiting, and refresh (find_node a random id in) buckets unchanged for 15
minutes (BEP 5 "Routing Table").
"""

from __future__ import annotations

import heapq
import ipaddress
import itertools
import os
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from fastbencode import bencode

from smartget.config import setting
from smartget.dht import krpc
from smartget.dht.krpc import Addr
from smartget.dht.lookup import Lookup
from smartget.dht.peers import MAX_VALUES, PeerStore
from smartget.dht.routing import K, Node, RoutingTable
from smartget.dht.sources import SourceTable, Verified
from smartget.dht.tokens import TokenManager
from smartget.errors import DHTError, KRPCError

__all__ = [
    "BTDHT_IGNORED_NET",
    "AnnounceDone",
    "DHTConfig",
    "DHTCore",
    "ErrorReceived",
    "Event",
    "LookupDone",
    "PeersFound",
    "QueryReceived",
    "ResponseReceived",
    "default_ignored_nets",
]


@dataclass(frozen=True)
class DHTConfig:
    """A DHT node's tunables, each default written once: the core's keyword defaults
    and ``smartget dht run``'s options are made from these fields."""

    rate_limit: float = setting(
        200.0,
        "Queries per second accepted from one IP (0: no limit); more are dropped.",
        min=0,
    )
    rate_burst: float = 400.0  # ... with this much burst (a token bucket per IP)
    query_timeout: float = 2.0  # seconds before one of our queries is sent again or fails
    reply_rate: float = setting(
        2048.0,
        "Reply bytes per second to one IP that has not proved its address (answered a "
        "query of ours or shown a valid token); more replies are dropped (0: no limit). "
        "Bounds what a spoofed source can make this node send a victim.",
        min=0,
    )
    reply_burst: float = 16384.0  # ... with this much burst
    max_sources: int = setting(
        50_000,
        "Source IPs whose rate and reply budget are tracked; past that, new sources share "
        "one budget (the table is never wiped).",
        min=16,
    )
    unverified_values: int = 16  # peers in a get_peers reply to an unverified source


_DEFAULTS: Final = DHTConfig()
QUERY_TIMEOUT: Final = _DEFAULTS.query_timeout
RATE_LIMIT: Final = _DEFAULTS.rate_limit
RATE_BURST: Final = _DEFAULTS.rate_burst
MAINTENANCE: Final = 5.0
REPLY_RATE: Final = _DEFAULTS.reply_rate
REPLY_BURST: Final = _DEFAULTS.reply_burst
MAX_SOURCES: Final = _DEFAULTS.max_sources
UNVERIFIED_VALUES: Final = _DEFAULTS.unverified_values
MAX_RATE_ENTRIES: Final = 50_000  # the caches of per-IP derived values (cleared when full)
MAX_TRANSACTIONS: Final = 4096

# seed 002: btdht.dht.DHT_BASE.ignored_net, the private and reserved ranges btdht ignores
BTDHT_IGNORED_NET: Final = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "255.255.255.255/32",
)
# what no DHT node can be, wherever we are bound
_NEVER_UNICAST: Final = ("0.0.0.0/8", "224.0.0.0/4", "240.0.0.0/4", "255.255.255.255/32")


def default_ignored_nets(bind_ip: str) -> list[ipaddress.IPv4Network]:
    """btdht's ranges for a DHT on the Internet: bound to ``0.0.0.0`` or a public address.

    A DHT bound to a private, loopback or other non-public address serves a fleet there
    (DESIGN.md): it keeps those ranges and ignores only what cannot be a node.
    """
    try:
        address = ipaddress.ip_address(bind_ip)
    except ValueError:
        address = ipaddress.IPv4Address(0)
    public = address.is_unspecified or address.is_global
    return [ipaddress.IPv4Network(n) for n in (BTDHT_IGNORED_NET if public else _NEVER_UNICAST)]


# -- events ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeersFound:
    """A get_peers (or announce) lookup learned new peers."""

    lookup_id: int
    info_hash: bytes
    peers: list[Addr]


@dataclass(frozen=True, slots=True)
class LookupDone:
    """A lookup converged; ``nodes`` are the closest that answered."""

    lookup_id: int
    target: bytes
    nodes: list[tuple[bytes, Addr]]
    peers: list[Addr]
    queries: int
    responses: int


@dataclass(frozen=True, slots=True)
class AnnounceDone:
    """announce_peer went to the closest nodes; ``accepted`` of them confirmed."""

    lookup_id: int
    info_hash: bytes
    accepted: int
    tried: int


@dataclass(frozen=True, slots=True)
class QueryReceived:
    """Only with ``emit_messages``: a valid query (for the seed's on_*_query hooks)."""

    addr: Addr
    query: krpc.Query


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """Only with ``emit_messages``: a response to one of our queries."""

    addr: Addr
    method: bytes
    args: dict[bytes, Any]
    response: krpc.Response


@dataclass(frozen=True, slots=True)
class ErrorReceived:
    """Only with ``emit_messages``: an error reply (``method`` None if unmatched)."""

    addr: Addr
    method: bytes | None
    error: krpc.Error


Event = PeersFound | LookupDone | AnnounceDone | QueryReceived | ResponseReceived | ErrorReceived


@dataclass(slots=True)
class _Transaction:
    tid: bytes
    addr: Addr
    method: bytes
    args: dict[bytes, Any]
    deadline: float
    tries: int = 1
    lookup_id: int | None = None
    node_id: bytes | None = None


@dataclass
class _Announce:
    lookup_id: int
    info_hash: bytes
    port: int
    implied_port: bool
    pending: set[bytes] = field(default_factory=set)
    accepted: int = 0
    tried: int = 0


class DHTCore:
    """One DHT node's protocol state. Not thread-safe; call from one thread."""

    def __init__(
        self,
        myid: bytes | None = None,
        *,
        now: float,
        bind_ip: str = "0.0.0.0",
        routing_table: RoutingTable | None = None,
        ignored_ip: Iterable[str] = (),
        ignored_net: Iterable[ipaddress.IPv4Network] | None = None,
        rate_limit: float = RATE_LIMIT,
        rate_burst: float = RATE_BURST,
        reply_rate: float = REPLY_RATE,
        reply_burst: float = REPLY_BURST,
        max_sources: int = MAX_SOURCES,
        query_timeout: float = QUERY_TIMEOUT,
        retries: int = 1,
        read_only: bool = False,
        emit_messages: bool = False,
    ) -> None:
        self.myid = krpc.node_id(myid if myid is not None else os.urandom(20), "myid")
        self._myid_int = int.from_bytes(self.myid, "big")
        self.root = routing_table if routing_table is not None else RoutingTable()
        self.root.register_dht(self)
        self.ignored_ip: set[str] = set(ignored_ip)
        self.ignored_net: list[ipaddress.IPv4Network] = (
            list(ignored_net) if ignored_net is not None else default_ignored_nets(bind_ip)
        )
        self.rate_limit = rate_limit
        self.rate_burst = rate_burst
        self.query_timeout = query_timeout
        self.retries = retries
        self.read_only = read_only
        self.emit_messages = emit_messages
        self.tokens = TokenManager(now)
        self.peers = PeerStore()
        self.last_msg = 0.0
        self.last_msg_rep = 0.0
        self.external_addr: Addr | None = None  # what the last BEP 42 ``ip`` told us
        self.stats: Counter[str] = Counter()
        self._out: deque[tuple[bytes, Addr]] = deque()
        self._events: deque[Event] = deque()
        self._transactions: dict[bytes, _Transaction] = {}
        self._deadlines: list[tuple[float, bytes]] = []
        self._lookups: dict[int, Lookup] = {}
        self._lookup_ids = itertools.count(1)
        self._announces: dict[int, _Announce] = {}
        # per source IP: query rate, reply budget, proof of address (issue 12, item 9)
        self.sources = SourceTable(rate_limit, rate_burst, reply_rate, reply_burst, max_sources)
        self.verified = Verified(max_sources)
        self._ignored_cache: dict[str, bool] = {}
        self._packed_ips: dict[str, bytes | None] = {}  # ip -> inet_aton(ip), for BEP 42
        self._next_maintenance = now + MAINTENANCE
        self._refreshing: int | None = None
        self.closed = False

    # -- the sans-IO surface ------------------------------------------------------------

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        out = list(self._out)
        self._out.clear()
        self.stats["sent"] += len(out)
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        if self.closed:
            return None
        timer = self._next_maintenance
        if self._deadlines:
            timer = min(timer, self._deadlines[0][0])
        return timer

    def handle_timer(self, now: float) -> None:
        while self._deadlines and self._deadlines[0][0] <= now:
            deadline, tid = heapq.heappop(self._deadlines)
            tx = self._transactions.get(tid)
            if tx is not None and tx.deadline == deadline:
                self._on_timeout(tx, now)
        if now >= self._next_maintenance:
            self._next_maintenance = now + MAINTENANCE
            self._maintenance(now)

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        """Handle one datagram. Never raises on bad input: it is counted and dropped."""
        stats = self.stats
        stats["received"] += 1
        ip = addr[0]
        if (self.ignored_ip or self.ignored_net) and self._ignored(ip):
            stats["ignored"] += 1
            return
        if not self.sources.allow(ip, now):
            stats["rate_limited"] += 1
            return
        try:
            msg = krpc.bdecode(data)
            tid, kind = krpc.envelope(msg)
            if kind == b"q":
                method, sender, args, read_only = krpc.query_fields(msg)
                parsed: krpc.Response | krpc.Error | None = None
            elif kind == b"r":
                parsed = krpc.response_of(msg, tid)
            else:
                parsed = krpc.error_of(msg, tid)
        except KRPCError as exc:
            stats["malformed"] += 1
            tid_or_none = krpc.tid_of(data)
            if tid_or_none is not None:
                self._reply(krpc.encode_error(tid_or_none, exc.code, exc.hint), addr, now)
            return
        self.last_msg = now
        if parsed is None:
            self._on_query(tid, method, sender, args, read_only, addr, now)
        elif isinstance(parsed, krpc.Response):
            self._on_response(parsed, addr, now)
        else:
            self._on_error(parsed, addr, now)

    def close(self) -> None:
        """Release the table's registrations (the table may be shared)."""
        if not self.closed:
            self.closed = True
            for lookup in list(self._lookups.values()):
                self._release(lookup)
            self._lookups.clear()
            self.root.release_dht(self)

    # -- commands -----------------------------------------------------------------------

    def ping(self, addr: Addr, now: float) -> None:
        self._query(addr, b"ping", {}, now)

    def query(self, addr: Addr, method: bytes, args: dict[bytes, Any], now: float) -> None:
        """One query outside any lookup (btdht's ``Node.find_node`` and friends)."""
        self._query(addr, method, args, now)

    def bootstrap(self, addresses: Iterable[Addr], now: float) -> int:
        """find_node our own id, starting from ``addresses`` (ids unknown) and the table."""
        return self._start_lookup(b"find_node", self.myid, now, seeds=addresses)

    def find_node(self, target: bytes, now: float) -> int:
        return self._start_lookup(b"find_node", krpc.node_id(target, "target"), now)

    def get_peers(self, info_hash: bytes, now: float, limit: int | None = None) -> int:
        info_hash = krpc.node_id(info_hash, "info_hash")
        return self._start_lookup(b"get_peers", info_hash, now, limit=limit)

    def announce_peer(
        self, info_hash: bytes, port: int, now: float, implied_port: bool = False
    ) -> int:
        """get_peers lookup, then announce_peer to the 8 closest with their tokens."""
        if not 0 < port < 65536 and not implied_port:
            raise DHTError(f"port must be 1 to 65535, got {port}")
        lookup_id = self.get_peers(info_hash, now)
        self._announces[lookup_id] = _Announce(lookup_id, info_hash, port, implied_port)
        if lookup_id not in self._lookups:  # finished at once: empty table
            self._finish_announce(self._announces[lookup_id])
        return lookup_id

    def build_table(self, now: float) -> list[int]:
        """find_node a random id in every bucket (btdht's build_table)."""
        return [self.find_node(bucket.random_id(), now) for bucket in self.root.buckets]

    def cancel(self, lookup_id: int) -> None:
        lookup = self._lookups.pop(lookup_id, None)
        self._announces.pop(lookup_id, None)
        if lookup is not None:
            self._release(lookup)

    def announce_progress(self, lookup_id: int) -> int:
        """How many nodes accepted the announce ``lookup_id`` so far (0 if unknown)."""
        announce = self._announces.get(lookup_id)
        return announce.accepted if announce is not None else 0

    def get_closest_nodes(self, target: bytes, k: int = K) -> list[Node]:
        return self.root.get_closest_nodes(target, k=k)

    def add_node(self, node_id: bytes, addr: Addr, now: float) -> None:
        """Put a node in the table as questionable (for ``load``)."""
        if node_id != self.myid and not self._ignored(addr[0]):
            self.root.add(Node(node_id, addr[0], addr[1]), now)

    def lookups(self) -> int:
        return len(self._lookups)

    def statistics(self, now: float) -> dict[str, Any]:
        table = self.root.stats(now)
        return {
            **dict(self.stats),
            "nodes": table.nodes,
            "good_nodes": table.good,
            "bad_nodes": table.bad,
            "buckets": table.buckets,
            "height": table.height,
            "transactions": len(self._transactions),
            "lookups": len(self._lookups),
            "stored_peers": len(self.peers),
            "stored_hashes": self.peers.hashes(),
            "sources_tracked": len(self.sources),
            "source_table_full": self.sources.full,
            "verified_sources": len(self.verified),
            "tokens_issued": self.tokens.issued,
            "tokens_rejected": self.tokens.rejected,
        }

    # -- incoming -----------------------------------------------------------------------

    def _ignored(self, ip: str) -> bool:
        if ip in self.ignored_ip:
            return True
        if not self.ignored_net:
            return False
        hit = self._ignored_cache.get(ip)
        if hit is None:
            try:
                address = ipaddress.ip_address(ip)
                hit = any(address in net for net in self.ignored_net)
            except ValueError:
                hit = True
            if len(self._ignored_cache) > MAX_RATE_ENTRIES:
                self._ignored_cache.clear()
            self._ignored_cache[ip] = hit
        return hit

    def _send(self, data: bytes, addr: Addr) -> None:
        self._out.append((data, addr))

    def _reply(self, data: bytes, addr: Addr, now: float) -> None:
        """Send a reply; to a source that has not proved its address only within its
        byte budget (BEP 5 has no handshake: the source may be a spoofed victim)."""
        if addr[0] not in self.verified and not self.sources.spend(addr[0], len(data), now):
            self.stats["reply_budget_exceeded"] += 1
            return
        self._out.append((data, addr))

    def _requester_ip(self, addr: Addr) -> bytes | None:
        """BEP 42's ``ip``: the requester's compact address (None unless IPv4)."""
        packed = self._packed_ips.get(addr[0], b"")
        if packed == b"":
            packed = krpc.pack_ipv4(addr[0]) if krpc.is_ipv4(addr[0]) else None
            if len(self._packed_ips) >= MAX_RATE_ENTRIES:
                self._packed_ips.clear()
            self._packed_ips[addr[0]] = packed
        if packed is None or not 0 <= addr[1] < 65536:
            return None
        return packed + addr[1].to_bytes(2, "big")

    def _on_query(
        self,
        tid: bytes,
        method: bytes,
        sender: bytes,
        args: dict[bytes, Any],
        read_only: bool,
        addr: Addr,
        now: float,
    ) -> None:
        """Answer at once (BEP 5 "DHT Queries"): the reply is built as bytes, the
        common get_peers from cached parts (the ``nodes`` of the target's bucket, the
        requester's token), so a flood costs little per query."""
        stats = self.stats
        stats["queries_in"] += 1
        try:
            if method == b"get_peers":
                stats["get_peers_in"] += 1
                info_hash = args.get(b"info_hash")
                if type(info_hash) is not bytes or len(info_hash) != 20:
                    info_hash = krpc.node_id(info_hash, "info_hash")  # raises the error
                # always nodes and a token: libtorrent bootstraps with get_peers (``bs: 1``);
                # a source that has not proved its address gets a few peers, not a hundred
                verified = addr[0] in self.verified
                body = krpc.get_peers_body(
                    self.myid,
                    self.root.compact_closest(info_hash),
                    self.tokens.get(addr[0], now),
                    self.peers.get_compact(
                        info_hash, now, MAX_VALUES if verified else UNVERIFIED_VALUES
                    ),
                )
            else:
                values = self._answer(method, args, addr, now)
                values[b"id"] = self.myid
                body = bencode(values)
        except KRPCError as exc:
            stats["bad_queries"] += 1
            self._reply(krpc.encode_error(tid, exc.code, exc.hint), addr, now)
            return
        self._reply(krpc.encode_reply(tid, body, self._requester_ip(addr)), addr, now)
        if not read_only and sender != self.myid:  # BEP 43: ``ro`` senders stay out
            self.root.heard(sender, addr[0], addr[1], now)
        if self.emit_messages:
            query = krpc.Query(tid, method, krpc.NodeId(sender), args, read_only)
            self._events.append(QueryReceived(addr, query))

    def _answer(
        self, method: bytes, args: dict[bytes, Any], addr: Addr, now: float
    ) -> dict[bytes, Any]:
        """The ``r`` dict of a query but get_peers (BEP 5 "DHT Queries"); KRPCError for a
        bad one."""
        if method == b"ping":
            self.stats["ping_in"] += 1
            return {}
        if method == b"find_node":
            self.stats["find_node_in"] += 1
            target = krpc.node_id(args.get(b"target"), "target")
            return {b"nodes": self.root.compact_closest(target)}
        if method == b"announce_peer":
            self.stats["announce_peer_in"] += 1
            info_hash = krpc.node_id(args.get(b"info_hash"), "info_hash")
            token = args.get(b"token")
            if not isinstance(token, bytes) or not self.tokens.check(token, addr[0], now):
                raise KRPCError("announce_peer with a bad token", hint="bad token")
            self.verified.add(addr[0])  # the token came back: it receives at that address
            if args.get(b"implied_port") == 1:
                port = addr[1]
            else:
                given = args.get(b"port")
                if not isinstance(given, int) or not 0 < given < 65536:
                    raise KRPCError(f"announce_peer port must be 1 to 65535, got {given!r}")
                port = given
            if krpc.is_ipv4(addr[0]) and not self.peers.add(info_hash, (addr[0], port), now):
                self.stats["announces_refused"] += 1  # answered all the same, as libtorrent
            return {}
        self.stats["unknown_method_in"] += 1
        raise KRPCError(
            f"unknown method {method[:32]!r}",
            code=krpc.ERROR_METHOD_UNKNOWN,
            hint="Method Unknown",
        )

    def _on_response(self, response: krpc.Response, addr: Addr, now: float) -> None:
        tx = self._transactions.get(response.tid)
        if tx is None or tx.addr != addr:
            self.stats["unmatched_responses"] += 1
            return
        del self._transactions[response.tid]
        self.verified.add(addr[0])  # our random tid came back: it receives at that address
        self.stats["responses_in"] += 1
        self.last_msg_rep = now
        if response.requester_ip is not None:
            self.external_addr = response.requester_ip
        if response.sender != self.myid:
            self.root.heard(response.sender, addr[0], addr[1], now, responded=True)
        if self.emit_messages:
            self._events.append(ResponseReceived(addr, tx.method, tx.args, response))
        if tx.lookup_id is not None:
            if tx.method == b"announce_peer":
                self._announce_answered(tx, accepted=True)
            else:
                self._lookup_response(tx, response, now)

    def _on_error(self, error: krpc.Error, addr: Addr, now: float) -> None:
        self.stats["errors_in"] += 1
        tx = self._transactions.get(error.tid)
        if tx is None or tx.addr != addr:
            if self.emit_messages:
                self._events.append(ErrorReceived(addr, None, error))
            return
        del self._transactions[error.tid]
        if self.emit_messages:
            self._events.append(ErrorReceived(addr, tx.method, error))
        if tx.lookup_id is None:
            return
        if tx.method == b"announce_peer":
            self._announce_answered(tx, accepted=False)
            return
        lookup = self._lookups.get(tx.lookup_id)
        if lookup is not None:
            lookup.on_failure(addr)
            self._pump(lookup, now)

    # -- outgoing queries ---------------------------------------------------------------

    def _new_tid(self) -> bytes:
        """A random free 2-byte id: unpredictable, so that a spoofer cannot answer for a
        victim and have it counted as verified (at most MAX_TRANSACTIONS of 65,536 are
        taken, so a few draws suffice)."""
        for _ in range(64):
            tid = os.urandom(2)
            if tid not in self._transactions:
                return tid
        raise KRPCError("no free transaction id", code=krpc.ERROR_SERVER)

    def _query(
        self,
        addr: Addr,
        method: bytes,
        args: dict[bytes, Any],
        now: float,
        lookup_id: int | None = None,
        node_id: bytes | None = None,
    ) -> bytes | None:
        if len(self._transactions) >= MAX_TRANSACTIONS:
            self.stats["queries_dropped"] += 1
            return None
        tid = self._new_tid()
        args = {**args, b"id": self.myid}
        tx = _Transaction(tid, addr, method, args, now + self.query_timeout, 1, lookup_id, node_id)
        self._transactions[tid] = tx
        heapq.heappush(self._deadlines, (tx.deadline, tid))
        self._send(krpc.encode_query(tid, method, args, read_only=self.read_only), addr)
        self.stats["queries_out"] += 1
        return tid

    def _on_timeout(self, tx: _Transaction, now: float) -> None:
        if tx.tries <= self.retries:  # the issue: a per-query timeout with a retry
            tx.tries += 1
            tx.deadline = now + self.query_timeout
            heapq.heappush(self._deadlines, (tx.deadline, tx.tid))
            self._send(
                krpc.encode_query(tx.tid, tx.method, tx.args, read_only=self.read_only), tx.addr
            )
            self.stats["retries"] += 1
            return
        del self._transactions[tx.tid]
        self.stats["timeouts"] += 1
        if tx.node_id is not None:
            node = self.root.get_node(tx.node_id)
            if node is not None and node.addr == tx.addr:
                node.failed += 1
                if node.bad:
                    self.root.remove(node)
        if tx.lookup_id is None:
            return
        if tx.method == b"announce_peer":
            self._announce_answered(tx, accepted=False)
            return
        lookup = self._lookups.get(tx.lookup_id)
        if lookup is not None:
            lookup.on_failure(tx.addr)
            self._pump(lookup, now)

    # -- lookups ------------------------------------------------------------------------

    def _start_lookup(
        self,
        kind: bytes,
        target: bytes,
        now: float,
        seeds: Iterable[Addr] = (),
        limit: int | None = None,
    ) -> int:
        lookup = Lookup(next(self._lookup_ids), target, kind, limit=limit, started=now)
        for addr in seeds:
            lookup.add(None, addr)
        for node in self.root.get_closest_nodes(target, k=2 * K):
            lookup.add(node.id, node.addr)
        self._lookups[lookup.lookup_id] = lookup
        if kind == b"get_peers":
            self.root.register_torrent(target)  # seed: split around it while it runs
        self.stats[f"lookups_{kind.decode()}"] += 1
        self._pump(lookup, now)
        return lookup.lookup_id

    def _pump(self, lookup: Lookup, now: float) -> None:
        key = b"target" if lookup.kind == b"find_node" else b"info_hash"
        for cand in lookup.next_queries():
            tid = self._query(
                cand.addr, lookup.kind, {key: lookup.target}, now, lookup.lookup_id, cand.id
            )
            if tid is None:
                lookup.on_failure(cand.addr)
        if lookup.done:
            self._finish(lookup, now)

    def _lookup_response(self, tx: _Transaction, response: krpc.Response, now: float) -> None:
        lookup = self._lookups.get(tx.lookup_id or 0)
        if lookup is None:
            return
        values = response.values
        try:
            nodes = krpc.decode_nodes(values.get(b"nodes", b""))
            peers = krpc.decode_peers(values[b"values"]) if b"values" in values else []
        except KRPCError:
            self.stats["bad_responses"] += 1
            lookup.on_failure(tx.addr)
            self._pump(lookup, now)
            return
        nodes = [(nid, a) for nid, a in nodes if nid != self.myid and not self._ignored(a[0])]
        token = values.get(b"token")
        fresh = lookup.on_response(
            tx.addr, response.sender, nodes, peers, token if isinstance(token, bytes) else None
        )
        if fresh:
            self._events.append(PeersFound(lookup.lookup_id, lookup.target, fresh))
        self._pump(lookup, now)

    def _finish(self, lookup: Lookup, now: float) -> None:
        if self._lookups.pop(lookup.lookup_id, None) is None:
            return
        self._release(lookup)
        closest = lookup.closest_responded()
        announce = self._announces.get(lookup.lookup_id)
        if announce is not None:
            for cand in closest:
                if cand.token is None or cand.id is None:
                    continue
                args: dict[bytes, Any] = {
                    b"info_hash": lookup.target,
                    b"port": announce.port or 1,
                    b"token": cand.token,
                }
                if announce.implied_port:
                    args[b"implied_port"] = 1
                tid = self._query(cand.addr, b"announce_peer", args, now, lookup.lookup_id, cand.id)
                if tid is not None:
                    announce.pending.add(tid)
                    announce.tried += 1
            if not announce.pending:
                self._finish_announce(announce)
        self._events.append(
            LookupDone(
                lookup.lookup_id,
                lookup.target,
                [(c.id, c.addr) for c in closest if c.id is not None],
                list(lookup.peers),
                lookup.queries,
                lookup.responses,
            )
        )

    def _release(self, lookup: Lookup) -> None:
        if lookup.kind == b"get_peers":
            self.root.release_torrent(lookup.target)

    def _announce_answered(self, tx: _Transaction, accepted: bool) -> None:
        announce = self._announces.get(tx.lookup_id or 0)
        if announce is None:
            return
        announce.pending.discard(tx.tid)
        announce.accepted += accepted
        if not announce.pending:
            self._finish_announce(announce)

    def _finish_announce(self, announce: _Announce) -> None:
        self._announces.pop(announce.lookup_id, None)
        self.stats["announces_accepted"] += announce.accepted
        self._events.append(
            AnnounceDone(announce.lookup_id, announce.info_hash, announce.accepted, announce.tried)
        )

    # -- upkeep -------------------------------------------------------------------------

    def _maintenance(self, now: float) -> None:
        self.peers.expire(now)
        self.sources.prune(now)
        if self.root.need_merge:
            self.root.merge()
        pinging = {tx.addr for tx in self._transactions.values() if tx.method == b"ping"}
        for bucket in self.root.buckets:
            if bucket.replacements and bucket.full:
                for node in bucket.questionable(now)[:1]:
                    if node.addr not in pinging:
                        self._query(node.addr, b"ping", {}, now, node_id=node.id)
        if self._refreshing is not None and self._refreshing not in self._lookups:
            self._refreshing = None
        if self._refreshing is None and len(self.root):
            stale = self.root.to_refresh(now)
            if stale:
                stale[0].last_changed = now
                self._refreshing = self.find_node(stale[0].random_id(), now)
