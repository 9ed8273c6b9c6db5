"""btdht.dht: ``DHT_BASE``, ``DHT``, ``Node``, ``Bucket``, ``RoutingTable`` (seed 002).

Theory of operation
-------------------
``DHT_BASE.start()`` starts three threads and returns, as btdht does:

- ``<prefix>loop``: an asyncio loop running :class:`smartget.dht.driver.DHT` (the thin
  driver of :class:`~smartget.dht.core.DHTCore`) with Unix time as its clock, so node
  timestamps read as btdht's do;
- ``<prefix>process_msg``: calls the ``on_*`` hooks of messages named with
  :meth:`DHT_BASE.register_message`, and ``get_peers`` callbacks, from a queue of
  ``process_queue_size`` items (full: the message is skipped, as btdht does). A slow hook
  never holds the network loop;
- ``<prefix>routine``: every 15 s :meth:`DHT_BASE.clean`, every 15 min
  :meth:`DHT_BASE.clean_long`, and :meth:`DHT_BASE.bootstarp` while no node is good.

The blocking methods (``get_peers``, ``announce_peer``) hand a coroutine to the loop and
wait on its result in the caller's thread. The table is SmartGet's
:class:`smartget.dht.routing.RoutingTable`; :class:`RoutingTable`, :class:`Bucket` and
:class:`Node` here are btdht-shaped views of it.
"""

from __future__ import annotations

import asyncio
import binascii
import concurrent.futures
import contextlib
import ipaddress
import logging
import queue
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Iterable, Iterator
from pathlib import Path
from typing import Any, Final, TypeVar

from smartget.dht import krpc, routing
from smartget.dht.btdht.exceptions import BucketFull, FailToStop, NotFound, NoTokenError
from smartget.dht.btdht.krcp import BMessage, error_for
from smartget.dht.btdht.utils import ID, ip_in_nets
from smartget.dht.core import (
    BTDHT_IGNORED_NET,
    ErrorReceived,
    Event,
    QueryReceived,
    ResponseReceived,
    default_ignored_nets,
)
from smartget.dht.driver import DEFAULT_BOOTSTRAP
from smartget.dht.driver import DHT as AsyncDHT
from smartget.dht.krpc import Addr
from smartget.errors import DHTError, KRPCError

__all__ = ["DHT", "DHT_BASE", "Bucket", "Node", "RoutingTable"]

log = logging.getLogger(__name__)
T = TypeVar("T")

CLEAN_EVERY: Final = 15.0  # seed: clean() every 15 s
CLEAN_LONG_EVERY: Final = 15 * 60.0  # seed: clean_long() every 15 min
GOT_PEERS_TTL: Final = 15 * 60.0  # seed: peers from get_peers responses kept 15 min
MAX_GOT_PEERS: Final = 1000  # seed: ... at most 1000 per hash
MAX_GOT_HASHES: Final = 10_000
MAX_TOKENS: Final = 10_000
TOKEN_TTL: Final = 600.0
LOOKUP_WAIT: Final = 30.0


class Node:
    """A node of the DHT (btdht's ``Node``), a view of a routing-table node."""

    __slots__ = ("_node",)

    def __init__(
        self,
        id: ID | bytes,
        ip: str,
        port: int,
        last_response: float = 0,
        last_query: float = 0,
        failed: int = 0,
    ) -> None:
        if ip[:1] == "0":
            raise ValueError(f"IP start with 0 *_* {ip!r}")
        if not 0 < port < 65536:
            raise ValueError(f"Invalid port number {port}, sould be within 1 and 65535 for {ip}")
        node = routing.Node(ID.to_bytes(id), ip, port, last_response, last_query, failed)
        self._node = node

    @classmethod
    def _wrap(cls, node: routing.Node) -> Node:
        view = cls.__new__(cls)
        view._node = node
        return view

    id = property(lambda self: self._node.id)
    ip = property(lambda self: self._node.ip)
    port = property(lambda self: self._node.port)

    @property
    def last_response(self) -> float:
        return self._node.last_response

    @last_response.setter
    def last_response(self, value: float) -> None:
        self._node.last_response = value

    @property
    def last_query(self) -> float:
        return self._node.last_query

    @last_query.setter
    def last_query(self, value: float) -> None:
        self._node.last_query = value

    @property
    def failed(self) -> int:
        return self._node.failed

    @failed.setter
    def failed(self, value: int) -> None:
        self._node.failed = value

    @property
    def good(self) -> bool:
        """Responded within 15 minutes, or ever and queried us within 15 minutes."""
        return self._node.is_good(time.time())

    @property
    def bad(self) -> bool:
        """Failed to respond to 3 queries in a row."""
        return self._node.bad

    def compact_info(self) -> bytes:
        return self._node.compact_info()

    @classmethod
    def from_compact_info(cls, info: bytes) -> Node:
        if len(info) != 26:
            raise OSError("compact node info should be 26 chars long")  # btdht's error
        return cls._wrap(routing.Node.from_compact_info(info))

    @classmethod
    def from_compact_infos(cls, infos: bytes) -> list[Node]:
        if len(infos) % 26:
            raise ValueError("nodes length should be a multiple of 26")
        records = (infos[i : i + 26] for i in range(0, len(infos), 26))
        return [
            cls.from_compact_info(r) for r in records if r[20:24] != b"\0" * 4 and r[24:] != b"\0\0"
        ]

    def ping(self, dht: DHT_BASE) -> None:
        dht._node_query(self, b"ping", {})

    def find_node(self, dht: DHT_BASE, target: ID | bytes) -> None:
        dht._node_query(self, b"find_node", {b"target": ID.to_bytes(target)})

    def get_peers(self, dht: DHT_BASE, info_hash: ID | bytes) -> None:
        dht._node_query(self, b"get_peers", {b"info_hash": ID.to_bytes(info_hash)})

    def announce_peer(self, dht: DHT_BASE, info_hash: ID | bytes, port: int) -> None:
        token = dht.mytoken.get(self.id)
        if token is None or time.time() - token[1] >= TOKEN_TTL:
            raise NoTokenError()
        args = {b"info_hash": ID.to_bytes(info_hash), b"port": port, b"token": token[0]}
        dht._node_query(self, b"announce_peer", args)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Node) and other.id == self.id

    def __lt__(self, other: Node) -> bool:
        return max(self.last_response, self.last_query) < max(other.last_response, other.last_query)

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"Node: {self.ip}:{self.port}"


class Bucket(list[Node]):
    """A bucket of nodes (btdht's ``Bucket``): a list of :class:`Node` with its prefix."""

    max_size = routing.K

    def __init__(self, id: bytes = b"", id_length: int = 0, init: Iterable[Node] = ()) -> None:
        super().__init__(init)
        self.id = id
        self.id_length = id_length
        self.last_changed = 0.0

    @classmethod
    def _view(cls, bucket: routing.Bucket) -> Bucket:
        prefix = (bucket.start.to_bytes(20, "big"))[: (bucket.id_length + 7) // 8]
        view = cls(prefix, bucket.id_length, (Node._wrap(n) for n in bucket.nodes.values()))
        view.last_changed = bucket.last_changed
        return view

    @property
    def to_refresh(self) -> bool:
        return time.time() - self.last_changed > 15 * 60

    def own(self, id: ID | bytes) -> bool:
        value = int.from_bytes(ID.to_bytes(id), "big")
        prefix = int.from_bytes(self.id.ljust(20, b"\0"), "big") >> (160 - self.id_length)
        return value >> (160 - self.id_length) == prefix

    def random_id(self) -> ID:
        prefix = int.from_bytes(self.id.ljust(20, b"\0"), "big") >> (160 - self.id_length)
        return ID(routing.Bucket(prefix, self.id_length).random_id())

    def get_node(self, id: ID | bytes) -> Node:
        value = ID.to_bytes(id)
        for node in self:
            if node.id == value:
                return node
        raise NotFound()

    def add(self, dht: DHT_BASE, node: Node) -> None:
        """Add ``node`` to the table this bucket is a view of (BucketFull if it stays out)."""
        if not self.own(node.id):
            raise ValueError("Wrong Bucket")
        if dht.root._table.add(node._node, time.time()) is routing.AddResult.CACHED:
            raise BucketFull()
        self.append(node)

    def split(self, rt: RoutingTable, dht: DHT_BASE) -> tuple[Bucket, Bucket]:
        rt.split(dht, self)
        low, high = (rt.find(self.id.ljust(20, b"\0")), rt.find(self._high()))
        return low, high

    def _high(self) -> bytes:
        value = int.from_bytes(self.id.ljust(20, b"\0"), "big") | (1 << (159 - self.id_length))
        return value.to_bytes(20, "big")

    def merge(self, bucket: Bucket) -> Bucket:
        nodes = [n for pair in zip(self, bucket, strict=False) for n in pair if n.good]
        return Bucket(self.id, self.id_length - 1, nodes[: self.max_size])

    def __hash__(self) -> int:  # type: ignore[override]
        return hash((self.id, self.id_length))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Bucket) and (self.id, self.id_length) == (
            other.id,
            other.id_length,
        )


class RoutingTable:
    """A routing table for one or more DHTs (btdht's ``RoutingTable``), a view of
    :class:`smartget.dht.routing.RoutingTable`. Its upkeep (refresh, pings, merges)
    runs in each DHT's core, so it has no threads of its own."""

    def __init__(self, scheduler: object = None, debuglvl: int = 0, prefix: str = "") -> None:
        self._table = routing.RoutingTable()
        self.debuglvl = debuglvl
        self.prefix = prefix
        self.stoped = True
        self.threads: list[threading.Thread] = []
        self._dhts: set[DHT_BASE] = set()
        self._last_debug = ("", 0.0)

    # lifecycle: nothing of its own to run
    def start(self) -> None:
        self.stoped = False

    def stop(self) -> None:
        self.stoped = True

    def stop_bg(self) -> None:
        self.stop()

    def is_alive(self) -> bool:
        return not self.stoped

    @property
    def zombie(self) -> bool:
        return False

    @property
    def need_merge(self) -> bool:
        return self._table.need_merge

    def debug(self, lvl: int, msg: str) -> None:
        now = time.time()
        if lvl <= self.debuglvl and (self._last_debug[0] != msg or now - self._last_debug[1] > 5):
            print(f"RT{self.prefix}:{msg}", flush=True)
            self._last_debug = (msg, now)

    def register_torrent(self, id: ID | bytes) -> None:
        self._table.register_torrent(ID.to_bytes(id))

    def release_torrent(self, id: ID | bytes) -> None:
        self._table.release_torrent(ID.to_bytes(id))

    def register_torrent_longterm(self, id: ID | bytes) -> None:
        self._table.register_torrent_longterm(ID.to_bytes(id))

    def release_torrent_longterm(self, id: ID | bytes) -> None:
        self._table.release_torrent_longterm(ID.to_bytes(id))

    def register_dht(self, dht: DHT_BASE) -> None:
        self._dhts.add(dht)

    def release_dht(self, dht: DHT_BASE) -> None:
        self._dhts.discard(dht)
        if not self._dhts:
            self.stop()

    def empty(self) -> None:
        self._table.empty()

    def stats(self) -> tuple[int, int, int]:
        """(nodes, good nodes, bad nodes)."""
        stats = self._table.stats(time.time())
        return stats.nodes, stats.good, stats.bad

    def heigth(self) -> int:
        """The height of the tree (1 for a lone root bucket, as btdht counts)."""
        return self._table.height() + 1

    height = heigth

    def __iter__(self) -> Iterator[Bucket]:
        return (Bucket._view(b) for b in self._table.buckets)

    @property
    def trie(self) -> dict[str, Bucket]:
        """Prefix (a string of 0 and 1) -> bucket, what btdht's datrie held."""
        return {b.prefix_str(): Bucket._view(b) for b in self._table.buckets}

    def find(self, id: ID | bytes) -> Bucket:
        return Bucket._view(self._table.find(ID.to_bytes(id)))

    def get_node(self, id: ID | bytes) -> Node:
        node = self._table.get_node(ID.to_bytes(id))
        if node is None:
            raise NotFound()
        return Node._wrap(node)

    def get_closest_nodes(self, id: ID | bytes, bad: bool = False) -> list[Node]:
        nodes = self._table.get_closest_nodes(ID.to_bytes(id), bad=bad)
        if len(nodes) < routing.K and not bad:  # btdht: retry with bad nodes
            nodes = self._table.get_closest_nodes(ID.to_bytes(id), bad=True)
        return [Node._wrap(n) for n in nodes]

    def add(self, dht: DHT_BASE, node: Node) -> None:
        if node.ip in dht.ignored_ip or ip_in_nets(node.ip, dht.ignored_net):
            return
        self._table.add(node._node, time.time())

    def split(self, dht: DHT_BASE, bucket: Bucket) -> None:
        self._table.split(self._table.find(bucket.id.ljust(20, b"\0")))

    def merge(self) -> None:
        self._table.need_merge = True


class _Driver(AsyncDHT):
    """The asyncio driver, its hook events handed to the btdht face."""

    face: DHT_BASE

    def _dispatch(self, event: Event) -> None:
        if isinstance(event, QueryReceived | ResponseReceived | ErrorReceived):
            self.face._on_event(event)
        else:
            super()._dispatch(event)


class DHT_BASE:
    """The DHT base class (btdht's ``DHT_BASE``): subclass it and override ``on_*``."""

    bind_ip: str = "0.0.0.0"
    bind_port: int | None = None
    debuglvl: int = 0
    last_msg: float = 0
    last_msg_rep: float = 0
    ignored_ip: Any = []  # noqa: RUF012 - btdht's class attributes
    ignored_net: Any = list(BTDHT_IGNORED_NET)  # noqa: RUF012
    myid: ID
    prefix: str = ""
    root: RoutingTable
    sock: Any = None
    stoped: bool = True
    threads: Any = []  # noqa: RUF012

    def __init__(
        self,
        routing_table: RoutingTable | None = None,
        bind_port: int | None = None,
        bind_ip: str = "0.0.0.0",
        id: ID | bytes | None = None,
        ignored_ip: Iterable[str] = (),
        debuglvl: int = 0,
        prefix: str = "",
        process_queue_size: int = 500,
        ignored_net: Iterable[str] | None = None,
        scheduler: object = None,
    ) -> None:
        if type(self) is DHT_BASE:
            raise RuntimeError(
                "DHT_BASE cannot be directly instantiated, use DHT instead or any subclass that"
                " may have be defined"
            )
        if id is not None and len(id) != 20:
            raise ValueError("id must be 20 char long")
        self.myid = ID(id)
        self.root = routing_table if routing_table is not None else RoutingTable(prefix=prefix)
        self.bind_port = bind_port
        self.bind_ip = bind_ip
        self.ignored_ip = set(ignored_ip)
        # btdht ignores its ranges always; here, as in all of SmartGet, not when bound to
        # a private or loopback address itself (DESIGN.md)
        self.ignored_net = (
            [ipaddress.ip_network(n) for n in ignored_net]
            if ignored_net is not None
            else default_ignored_nets(bind_ip)
        )
        self.debuglvl = debuglvl
        self.prefix = prefix
        self.threads = []
        self.stoped = True
        self.token: dict[str, list[tuple[bytes, float]]] = {}  # ours live in the core
        self.mytoken: dict[bytes, tuple[bytes, float]] = {}
        self.transaction_type: dict[bytes, Any] = {}  # ours live in the core
        self.last_msg = 0
        self.last_msg_rep = 0
        self._process_queue_size = process_queue_size
        self._to_process: queue.Queue[tuple[Callable[..., object], tuple[Any, ...]]] = queue.Queue(
            maxsize=process_queue_size
        )
        self._to_process_registered: set[bytes] = set()
        self._got_peers: dict[bytes, OrderedDict[Addr, float]] = {}
        self._got_lock = threading.Lock()
        self._lookups: dict[bytes, concurrent.futures.Future[Any]] = {}
        self._threads: list[threading.Thread] = []
        self._threads_zombie: list[threading.Thread] = []
        self._wake = threading.Event()
        self._driver: _Driver | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._bootstrap_addresses: list[Addr] = list(DEFAULT_BOOTSTRAP)
        self._last_debug = ("", 0.0)
        self._tasks: set[concurrent.futures.Future[Any]] = set()

    # -- lifecycle ------------------------------------------------------------------

    def start(
        self, start_routing_table: bool = True, start_scheduler: bool = True
    ) -> list[threading.Thread] | None:
        """Start the DHT's threads and return (btdht: ``dht.start()``)."""
        if not self.stoped:
            self.debug(0, "Already started")
            return None
        if self.zombie:
            self.debug(0, "Zombie threads, unable de start")
            return self._threads_zombie
        loop = self._loop = asyncio.new_event_loop()
        driver = self._driver = _Driver(
            self.bind_ip,
            self.bind_port or 0,
            id=self.myid.value,
            routing_table=self.root._table,
            ignored_ip=self.ignored_ip,
            ignored_net=[str(n) for n in self.ignored_net],
            clock=time.time,
        )
        driver.face = self
        self._wake.clear()
        loop_thread = threading.Thread(target=loop.run_forever, name=f"{self.prefix}loop")
        loop_thread.daemon = True
        loop_thread.start()
        self._threads = [loop_thread]
        try:
            self._call(driver.start(), 10)
        except BaseException:
            self._close_loop()
            raise
        driver.core.emit_messages = True  # tokens and nodes of single queries, the hooks
        self.bind_port = driver.bind_port
        self.sock = driver._sock
        self.stoped = False
        self.last_msg = self.last_msg_rep = time.time()
        self.root.register_dht(self)
        if start_routing_table and self.root.stoped:
            self.root.start()
        self.debug(0, f"init socket for {binascii.b2a_hex(self.myid.value).decode()}")
        for target, name in ((self._process_loop, "process_msg"), (self._routine, "routine")):
            thread = threading.Thread(target=target, name=f"{self.prefix}{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self.threads = list(self._threads)
        return None

    def stop(self) -> None:
        """Stop the DHT: wait (30 s at most) for its threads, close the socket."""
        if self.stoped:
            self.debug(0, "Already stoped or stoping in progress")
            return
        self.stoped = True
        self._wake.set()
        self.root.release_dht(self)
        if self._driver is not None and self._loop is not None:
            with contextlib.suppress(Exception):
                self._call(self._driver.stop(), 10)
        self._close_loop()
        deadline = time.monotonic() + 30
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t for t in self._threads if t.is_alive() and t is not threading.current_thread()]
        self._threads = []
        self.sock = None
        if alive:
            self._threads_zombie.extend(alive)
            raise FailToStop(*alive)

    def _close_loop(self) -> None:
        loop = self._loop
        if loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        if self._threads and self._threads[0] is not threading.current_thread():
            self._threads[0].join(10)
        if not loop.is_running():
            loop.close()
        self._loop = None

    def stop_bg(self) -> None:
        """Start stopping the DHT and return at once."""
        if not self.stoped:
            threading.Thread(target=self.stop, daemon=True).start()

    @property
    def zombie(self) -> bool:
        """Stopped, but one of its threads is still alive."""
        return self.stoped and any(t.is_alive() for t in self._threads + self._threads_zombie)

    def is_alive(self) -> bool:
        """True if every thread of the DHT is alive; stops the DHT if one died."""
        if self.threads and all(t.is_alive() for t in self.threads) and not self.stoped:
            return True
        if self.stoped and not any(t.is_alive() for t in self._threads):
            return False
        self.debug(0, "One thread died, stopping dht")
        self.stop_bg()
        return False

    def init_socket(self) -> None:
        """btdht opens its socket here; the driver opens it in :meth:`start`."""

    def debug(self, lvl: int, msg: str) -> None:
        """Print ``prefix + msg`` if ``lvl <= debuglvl`` (repeats within 5 s dropped)."""
        now = time.time()
        if lvl <= self.debuglvl and (self._last_debug[0] != msg or now - self._last_debug[1] > 5):
            print(self.prefix + msg, flush=True)
            self._last_debug = (msg, now)

    def sleep(self, t: float, fstop: Callable[[], object] | None = None) -> None:
        """Sleep ``t`` s in a DHT thread; exit the thread if the DHT stops meanwhile."""
        if self._wake.wait(t) or self.stoped:
            if fstop is not None:
                fstop()
            sys.exit(0)

    # -- the loop's side --------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None) -> T:
        if self._loop is None:
            coro.close()
            raise DHTError("the DHT is not started: call dht.start() first")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _spawn(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        if self._loop is None:
            coro.close()
            raise DHTError("the DHT is not started: call dht.start() first")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        self._tasks.add(future)
        future.add_done_callback(self._tasks.discard)
        return future

    def _in_loop(self, func: Callable[..., object], *args: Any) -> None:
        if self._loop is None:
            raise DHTError("the DHT is not started: call dht.start() first")
        self._loop.call_soon_threadsafe(func, *args)

    def _node_query(self, node: Node, method: bytes, args: dict[bytes, Any]) -> None:
        driver = self._driver
        if driver is None:
            raise DHTError("the DHT is not started: call dht.start() first")
        self._in_loop(driver.query, (node.ip, node.port), method, args)

    def _on_event(self, event: QueryReceived | ResponseReceived | ErrorReceived) -> None:
        """In the loop's thread: record what btdht records, queue the hooks."""
        now = time.time()
        self.last_msg = now
        if isinstance(event, QueryReceived):
            q = event.query
            if q.method in self._to_process_registered:
                msg = BMessage.make(b"q", q.tid, q.args, event.addr, q.method)
                self._queue(getattr(self, f"on_{q.method.decode('ascii', 'replace')}_query"), msg)
            return
        if isinstance(event, ErrorReceived):
            if b"error" in self._to_process_registered:
                err = event.error
                error = error_for(err.tid, err.code, err.message.encode())
                query = None
                if event.method is not None:
                    query = BMessage.make(b"q", err.tid, {}, event.addr, event.method)
                self._queue(self.on_error, error, query)
            return
        self.last_msg_rep = now
        response, method = event.response, event.method
        values = response.values
        if method in (b"find_node", b"get_peers"):
            self._learn(values, event.args, now)
        if method in self._to_process_registered:
            query = BMessage.make(b"q", response.tid, event.args, event.addr, method)
            answer = BMessage.make(b"r", response.tid, values, event.addr, None)
            self._queue(getattr(self, f"on_{method.decode()}_response"), query, answer)
        if method == b"get_peers" and isinstance(values.get(b"token"), bytes):
            if len(self.mytoken) >= MAX_TOKENS:
                self.mytoken.pop(next(iter(self.mytoken)))
            self.mytoken[response.sender] = (values[b"token"], now)

    def _learn(self, values: dict[bytes, Any], args: dict[bytes, Any], now: float) -> None:
        """btdht's ``_on_find_node_response`` / ``_on_get_peers_response``."""
        driver = self._driver
        if driver is None:
            return
        with contextlib.suppress(KRPCError):
            for node_id, addr in krpc.decode_nodes(values.get(b"nodes", b"")):
                driver.core.add_node(node_id, addr, now)
        info_hash = args.get(b"info_hash")
        if isinstance(info_hash, bytes) and b"values" in values:
            with contextlib.suppress(KRPCError):
                self._add_got(info_hash, krpc.decode_peers(values[b"values"]))

    def _queue(self, hook: Callable[..., object], *args: Any) -> None:
        try:
            self._to_process.put_nowait((hook, args))
        except queue.Full:
            self.debug(0, "Unable to queue msg to be processed, QueueFull")

    def _add_got(self, info_hash: bytes, peers: list[Addr]) -> None:
        now = time.time()
        with self._got_lock:
            got = self._got_peers.get(info_hash)
            if got is None:
                if len(self._got_peers) >= MAX_GOT_HASHES:
                    self._got_peers.pop(next(iter(self._got_peers)))
                got = self._got_peers[info_hash] = OrderedDict()
            for peer in peers:
                if peer[1] > 0 and not self._is_ignored(peer[0]):
                    got.pop(peer, None)
                    got[peer] = now
            while len(got) > MAX_GOT_PEERS:
                got.popitem(last=False)

    def _is_ignored(self, ip: str) -> bool:
        try:
            return ip in self.ignored_ip or ip_in_nets(ip, self.ignored_net)
        except ValueError:
            return True

    def _get_peers(self, info_hash: bytes, compact: bool = False) -> list[Any] | None:
        """Peers learned for ``info_hash``, the most recent first (None: none known)."""
        with self._got_lock:
            got = self._got_peers.get(info_hash)
            peers = list(reversed(got)) if got else None
        if peers is None or not compact:
            return peers
        return [krpc.compact_addr(p) for p in peers]

    # -- threads --------------------------------------------------------------------

    def _process_loop(self) -> None:
        while not self.stoped:
            try:
                hook, args = self._to_process.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                hook(*args)
            except Exception:  # a user's hook must not stop the DHT
                log.exception("btdht hook %s failed", getattr(hook, "__name__", hook))

    def _routine(self) -> None:
        next_clean = time.time() + CLEAN_EVERY
        next_long = time.time() + CLEAN_LONG_EVERY
        while not self._wake.wait(max(0.0, min(next_clean, next_long) - time.time())):
            now = time.time()
            if now >= next_clean:
                next_clean = now + CLEAN_EVERY
                self._clean(now)
                if self.root.stats()[1] <= 0:  # btdht: no good node, bootstrap again
                    self.bootstarp()
                    next_clean = now + 1
            if now >= next_long:
                next_long = now + CLEAN_LONG_EVERY
                self._clean_long(now)

    def _clean(self, now: float) -> None:
        try:
            self.clean()
        except Exception:
            log.exception("btdht clean() failed")

    def _clean_long(self, now: float) -> None:
        self.mytoken = {k: v for k, v in list(self.mytoken.items()) if now - v[1] < TOKEN_TTL}
        with self._got_lock:
            for info_hash in list(self._got_peers):
                got = self._got_peers[info_hash]
                for peer in [p for p, t in got.items() if now - t > GOT_PEERS_TTL]:
                    del got[peer]
                if not got:
                    del self._got_peers[info_hash]
        try:
            self.clean_long()
        except Exception:
            log.exception("btdht clean_long() failed")

    # -- btdht's API ----------------------------------------------------------------

    def bootstarp(self, addresses: Iterable[tuple[str, int]] | None = None) -> None:
        """find_node our id at ``addresses`` (default: the last given, else the public
        routers) and return at once; answers fill the table."""
        if addresses is not None:
            self._bootstrap_addresses = [(str(h), int(p)) for h, p in addresses]
        self.debug(0, "Bootstraping")
        driver = self._driver
        if driver is not None and not self.stoped:
            self._spawn(self._quiet(driver.bootstrap(list(self._bootstrap_addresses))))

    bootstrap = bootstarp

    @staticmethod
    async def _quiet(coro: Coroutine[Any, Any, Any]) -> None:
        try:
            await coro
        except DHTError as exc:
            log.debug("btdht background call ended: %s", exc)

    def build_table(self) -> bool:
        """find_node our own id at the closest nodes we know (returns at once)."""
        nodes = self.get_closest_nodes(self.myid)
        assert isinstance(nodes, list)
        for node in nodes:
            node.find_node(self, self.myid)
        return bool(nodes)

    def get_closest_nodes(self, id: ID | bytes, compact: bool = False) -> list[Node] | bytes:
        nodes = self.root.get_closest_nodes(id)
        return b"".join(n.compact_info() for n in nodes) if compact else nodes

    def get_peers(
        self,
        hash: ID | bytes,
        delay: float = 0,
        block: bool = True,
        callback: Callable[[list[Addr]], object] | None = None,
        limit: int = 10,
    ) -> list[Addr] | None:
        """Peers of ``hash``: with ``block``, wait until some are found or the lookup
        ends; otherwise return those found so far and go on looking in the background.
        ``callback(peers)`` gets them when the lookup ends (in the hooks' thread)."""
        info_hash = ID.to_bytes(hash)
        peers = self._get_peers(info_hash)
        if peers and len(peers) >= limit:
            if callback is not None:
                callback(peers)
            return peers
        lookup = self._lookups.get(info_hash)
        if lookup is None or lookup.done():
            lookup = self._spawn(self._lookup(info_hash, delay, callback, limit))
            self._lookups[info_hash] = lookup
        if not block:
            return peers
        while not self.stoped:
            peers = self._get_peers(info_hash)
            if peers or lookup.done():
                break
            with contextlib.suppress(concurrent.futures.TimeoutError):
                lookup.result(0.1)
        return self._get_peers(info_hash) or []

    async def _lookup(
        self,
        info_hash: bytes,
        delay: float,
        callback: Callable[[list[Addr]], object] | None,
        limit: int | None,
    ) -> None:
        driver = self._driver
        assert driver is not None
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            await driver.get_peers(
                info_hash,
                limit=limit or None,
                callback=lambda found: self._add_got(info_hash, found),
                max_wait=LOOKUP_WAIT,
            )
        except DHTError as exc:
            log.debug("get_peers ended: %s", exc)
        if callback is not None:
            self._queue(callback, self._get_peers(info_hash) or [])

    def announce_peer(
        self, info_hash: ID | bytes, port: int, delay: float = 0, block: bool = True
    ) -> int | None:
        """Announce ``info_hash`` on ``port`` to the closest nodes; with ``block``, wait
        and return how many accepted."""
        future = self._spawn(self._announce(ID.to_bytes(info_hash), port, delay))
        return future.result(LOOKUP_WAIT + delay + 10) if block else None

    async def _announce(self, info_hash: bytes, port: int, delay: float) -> int:
        driver = self._driver
        assert driver is not None
        if delay > 0:
            await asyncio.sleep(delay)
        return await driver.announce_peer(info_hash, port, max_wait=LOOKUP_WAIT)

    def sendto(self, msg: bytes, addr: tuple[str, int]) -> None:
        """Send an encoded message (a :class:`~.krcp.BMessage`'s ``encode()``) to ``addr``."""
        driver = self._driver
        if driver is None:
            raise DHTError("the DHT is not started: call dht.start() first")
        self._in_loop(driver.sendto, bytes(msg), (addr[0], int(addr[1])))

    def _state_file(self, filename: str | Path | None) -> Path:
        if filename is not None:
            return Path(filename)
        return Path(f"dht_{binascii.b2a_hex(self.myid.value).decode()}.status")

    def save(self, filename: str | Path | None = None, max_node: int | None = None) -> None:
        """Write the good nodes as 26-byte records to ``filename`` (``dht_<id>.status``)."""
        now = time.time()
        nodes = [n for n in self.root._table if n.is_good(now)][:max_node]
        path = self._state_file(filename)
        try:
            path.write_bytes(b"".join(n.compact_info() for n in nodes))
        except OSError as exc:
            raise DHTError(f"cannot save the DHT table to {path}: {exc.strerror}") from exc

    def load(self, filename: str | Path | None = None, max_node: int | None = None) -> None:
        """Add the nodes of ``filename`` (default ``dht_<id>.status``) to the table."""
        path = self._state_file(filename)
        if filename is None and not path.exists():  # btdht on Python 3 wrote this name
            legacy = Path(f"dht_{binascii.b2a_hex(self.myid.value)!s}.status")
            path = legacy if legacy.exists() else path
        try:
            data = path.read_bytes()[: 26 * (max_node or 100_000)]
        except OSError as exc:
            self.debug(0, str(exc))
            return
        for node in Node.from_compact_infos(data[: len(data) - len(data) % 26]):
            if node.id != self.myid.value:
                self.root.add(self, node)

    def clean(self) -> None:
        """Called every 15 s; override it."""

    def clean_long(self) -> None:
        """Called every 15 min; override it."""

    def register_message(self, msg: bytes | str) -> None:
        """Call ``on_<msg>_query`` / ``on_<msg>_response`` (``b"error"``: ``on_error``)
        for messages of that kind."""
        self._to_process_registered.add(msg.encode() if isinstance(msg, str) else msg)

    # -- hooks (btdht: called for registered messages, in the hooks' thread) ------------

    def on_error(self, error: Any, query: BMessage | None = None) -> None: ...
    def on_ping_response(self, query: BMessage, response: BMessage) -> None: ...
    def on_find_node_response(self, query: BMessage, response: BMessage) -> None: ...
    def on_get_peers_response(self, query: BMessage, response: BMessage) -> None: ...
    def on_announce_peer_response(self, query: BMessage, response: BMessage) -> None: ...
    def on_ping_query(self, query: BMessage) -> None: ...
    def on_find_node_query(self, query: BMessage) -> None: ...
    def on_get_peers_query(self, query: BMessage) -> None: ...
    def on_announce_peer_query(self, query: BMessage) -> None: ...


class DHT(DHT_BASE):
    """A DHT class ready for instantiation (btdht's ``DHT``)."""
