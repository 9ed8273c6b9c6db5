"""The asyncio driver and btdht's ``DHT`` class (seed 002) on top of :mod:`.core`.

A thin driver: a non-blocking UDP socket watched with ``loop.add_reader`` (rather than
a ``DatagramProtocol``, which costs one epoll round trip per datagram; reading a batch
per wake-up more than doubles the rate a node answers). Each datagram goes into the
core with the loop's clock; after every batch the driver sends what the core queued,
hands out the events (to lookups' futures, ``get_peers`` callbacks and the ``on_*``
hooks) and re-arms one timer at the core's next deadline. No threads, no task per query.

The btdht names are kept (``bootstarp`` and ``heigth`` included, DESIGN.md); what was a
blocking call in btdht is a coroutine here, and :class:`BlockingDHT` runs a DHT on a
loop in its own thread for threaded callers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ipaddress
import logging
import os
import socket
import threading
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

from smartget.dht import krpc
from smartget.dht.core import (
    AnnounceDone,
    DHTCore,
    ErrorReceived,
    Event,
    LookupDone,
    PeersFound,
    QueryReceived,
    ResponseReceived,
)
from smartget.dht.krpc import Addr
from smartget.dht.routing import Node, RoutingTable
from smartget.errors import DHTError

__all__ = ["DEFAULT_BOOTSTRAP", "DHT", "BlockingDHT"]

log = logging.getLogger(__name__)

# seed 002: btdht.dht.DHT_BASE.bootstarp's default routers (never used by tests)
DEFAULT_BOOTSTRAP: Final[tuple[Addr, ...]] = (
    ("router.utorrent.com", 6881),
    ("grenade.genua.fr", 6880),
    ("dht.transmissionbt.com", 6881),
)
MAX_STATE_NODES: Final = 10_000
RCVBUF: Final = 1 << 21
RECV_SIZE: Final = 4096  # larger than krpc.MAX_DATAGRAM, so oversized ones are seen whole
BATCH: Final = 64
_HOOKS: Final = (
    "on_ping_query",
    "on_find_node_query",
    "on_get_peers_query",
    "on_announce_peer_query",
    "on_ping_response",
    "on_find_node_response",
    "on_get_peers_response",
    "on_announce_peer_response",
    "on_error",
)
T = TypeVar("T")


@dataclass
class _Waiter:
    future: asyncio.Future[Any]
    callback: Callable[[list[Addr]], object] | None = None
    peers: list[Addr] = field(default_factory=list)
    announce: bool = False


class DHT:
    """A Mainline DHT node (BEP 5) with btdht's API, on asyncio.

    ``async with DHT("127.0.1.1", 0) as dht: await dht.bootstrap([...])``.
    """

    def __init__(
        self,
        bind_ip: str = "0.0.0.0",
        bind_port: int = 0,
        *,
        id: bytes | None = None,
        routing_table: RoutingTable | None = None,
        ignored_ip: Iterable[str] = (),
        ignored_net: Iterable[str] | None = None,
        rate_limit: float | None = None,
        query_timeout: float | None = None,
        read_only: bool = False,
        reply_rate: float | None = None,
        max_sources: int | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if not krpc.is_ipv4(bind_ip):
            raise DHTError(
                f"bind_ip must be an IPv4 address (BEP 5 compact format), got {bind_ip!r}"
            )
        self.bind_ip = bind_ip
        self.bind_port = bind_port
        self.myid: bytes = krpc.node_id(id if id is not None else os.urandom(20), "id")
        self.root = routing_table if routing_table is not None else RoutingTable()
        self._core_args: dict[str, Any] = {
            "bind_ip": bind_ip,
            "ignored_ip": ignored_ip,
            "ignored_net": None
            if ignored_net is None
            else [ipaddress.IPv4Network(n) for n in ignored_net],
            "read_only": read_only,
        }
        if rate_limit is not None:
            self._core_args.update(rate_limit=rate_limit, rate_burst=max(2 * rate_limit, 1.0))
        if query_timeout is not None:
            self._core_args["query_timeout"] = query_timeout
        if reply_rate is not None:
            self._core_args.update(reply_rate=reply_rate, reply_burst=max(8 * reply_rate, 2048.0))
        if max_sources is not None:
            self._core_args["max_sources"] = max_sources
        self._clock = clock  # None: the loop's clock; time.time for btdht's Unix timestamps
        self._core: DHTCore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sock: socket.socket | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._waiters: dict[int, _Waiter] = {}
        self.send_errors = 0
        self.send_dropped = 0
        self.hook_errors = 0

    # -- lifecycle ------------------------------------------------------------------

    @property
    def core(self) -> DHTCore:
        if self._core is None:
            raise DHTError("the DHT is not started: call await dht.start() first")
        return self._core

    async def start(self) -> None:
        if self._sock is not None:
            return
        loop = self._loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind((self.bind_ip, self.bind_port))
        except OSError as exc:
            sock.close()
            raise DHTError(
                f"cannot bind UDP {self.bind_ip}:{self.bind_port}: {exc.strerror}"
            ) from exc
        with contextlib.suppress(OSError):  # bursts must not overflow the kernel's buffer
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        self._sock = sock
        self.bind_port = sock.getsockname()[1]
        core = DHTCore(self.myid, now=self._now(), routing_table=self.root, **self._core_args)
        core.emit_messages = any(getattr(type(self), h) is not getattr(DHT, h) for h in _HOOKS)
        self._core = core
        loop.add_reader(sock.fileno(), self._read_ready)
        self._pump()
        log.info("DHT %s listening on %s:%d", self.myid.hex()[:12], self.bind_ip, self.bind_port)

    async def stop(self) -> None:
        """Close the socket, fail pending lookups, release the (maybe shared) table."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._sock is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        if self._core is not None:
            self._core.close()
        for waiter in self._waiters.values():
            if not waiter.future.done():
                waiter.future.set_exception(DHTError("the DHT was stopped"))
                waiter.future.exception()  # mark retrieved: nobody may be waiting
        self._waiters.clear()

    def is_alive(self) -> bool:
        return self._sock is not None

    async def __aenter__(self) -> DHT:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def ignored_ip(self) -> set[str]:
        return self.core.ignored_ip

    @property
    def ignored_net(self) -> list[ipaddress.IPv4Network]:
        return self.core.ignored_net

    # -- the driver loop ------------------------------------------------------------

    def _now(self) -> float:
        if self._clock is not None:
            return self._clock()
        assert self._loop is not None
        return self._loop.time()

    def _read_ready(self) -> None:
        """Drain up to BATCH datagrams per wake-up (one epoll round trip per batch)."""
        sock, core = self._sock, self._core
        if sock is None or core is None:
            return
        now = self._now()
        recvfrom, receive = sock.recvfrom, core.receive_datagram
        for _ in range(BATCH):
            try:
                data, addr = recvfrom(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # ICMP unreachable and the like: the query's timeout handles it
                self.send_errors += 1
                continue
            receive(data, addr, now)  # an AF_INET socket's addr is already (ip, port)
        self._pump()

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        if self._core is not None:
            self._core.handle_timer(self._now())
            self._pump()

    def _pump(self) -> None:
        """Transmit, dispatch events, re-arm the timer."""
        core = self._core
        if core is None or self._loop is None:
            return
        now = self._now()
        sock = self._sock
        out = core.datagrams_to_send(now)
        if sock is not None:
            sendto = sock.sendto
            for data, addr in out:
                try:
                    sendto(data, addr)
                except (BlockingIOError, InterruptedError):
                    self.send_dropped += 1  # a full send buffer drops, as the network would
                except OSError:
                    self.send_errors += 1
        while (event := core.next_event()) is not None:
            self._dispatch(event)
        when = core.get_timer()
        if when != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = when
            if when is None:
                self._timer = None
            elif self._clock is None:
                self._timer = self._loop.call_at(when, self._on_timer)
            else:
                self._timer = self._loop.call_later(max(0.0, when - now), self._on_timer)

    def _dispatch(self, event: Event) -> None:
        if isinstance(event, PeersFound):
            waiter = self._waiters.get(event.lookup_id)
            if waiter is not None:
                waiter.peers.extend(event.peers)
                if waiter.callback is not None:
                    self._call_hook(waiter.callback, list(event.peers))
        elif isinstance(event, LookupDone):
            waiter = self._waiters.get(event.lookup_id)
            if waiter is not None and not waiter.announce and not waiter.future.done():
                waiter.future.set_result(waiter.peers)
        elif isinstance(event, AnnounceDone):
            waiter = self._waiters.get(event.lookup_id)
            if waiter is not None and not waiter.future.done():
                waiter.future.set_result(event.accepted)
        elif isinstance(event, QueryReceived):
            hook = getattr(self, f"on_{event.query.method.decode('ascii', 'replace')}_query", None)
            if hook is not None:
                self._call_hook(hook, event.query)
        elif isinstance(event, ResponseReceived):
            hook = getattr(self, f"on_{event.method.decode('ascii', 'replace')}_response", None)
            if hook is not None:
                self._call_hook(hook, event.args, event.response)
        elif isinstance(event, ErrorReceived):
            self._call_hook(self.on_error, event.error, event.method)

    def _call_hook(self, hook: Callable[..., object], *args: object) -> None:
        try:
            hook(*args)
        except Exception:  # a user's hook must not break the driver
            self.hook_errors += 1
            log.exception("DHT hook %s failed", getattr(hook, "__name__", hook))

    async def _wait(self, lookup_id: int, waiter: _Waiter, max_wait: float) -> Any:
        self._waiters[lookup_id] = waiter
        self._pump()
        try:
            async with asyncio.timeout(max_wait):
                return await waiter.future
        finally:
            self._waiters.pop(lookup_id, None)

    # -- btdht's API ----------------------------------------------------------------

    async def bootstrap(
        self, addresses: Iterable[tuple[str, int]] = DEFAULT_BOOTSTRAP, max_wait: float = 30.0
    ) -> int:
        """find_node our id from ``addresses`` (names resolved); return the table's size."""
        resolved = [await self._resolve(host, port) for host, port in addresses]
        seeds = [a for a in resolved if a is not None]
        if not seeds and not len(self.root):
            raise DHTError("bootstrap: none of the addresses resolved to an IPv4 address")
        lookup_id = self.core.bootstrap(seeds, self._now())
        try:
            await self._wait(lookup_id, _Waiter(self._future()), max_wait)
        except TimeoutError:
            self.core.cancel(lookup_id)
        return len(self.root)

    bootstarp = bootstrap  # btdht's spelling (seed 002)

    async def _resolve(self, host: str, port: int) -> Addr | None:
        if krpc.is_ipv4(host):
            return (host, port)
        assert self._loop is not None
        try:
            infos = await self._loop.getaddrinfo(host, port, family=socket.AF_INET)
        except OSError as exc:
            log.warning("bootstrap: cannot resolve %s: %s", host, exc)
            return None
        return (str(infos[0][4][0]), port) if infos else None

    async def build_table(self, max_wait: float = 30.0) -> int:
        """find_node a random id in every bucket; return the table's size."""
        ids = self.core.build_table(self._now())
        waits = [self._wait(i, _Waiter(self._future()), max_wait) for i in ids]
        try:
            await asyncio.gather(*waits)
        except TimeoutError:
            for i in ids:
                self.core.cancel(i)
        return len(self.root)

    def _future(self) -> asyncio.Future[Any]:
        assert self._loop is not None
        return self._loop.create_future()

    async def get_peers(
        self,
        hash: bytes,
        limit: int | None = 10,
        callback: Callable[[list[Addr]], object] | None = None,
        max_wait: float = 30.0,
    ) -> list[Addr]:
        """Peers of info-hash ``hash``: stop after ``limit`` (None: the whole lookup).

        ``callback(peers)`` is called as each batch arrives. After ``max_wait``
        seconds, what was found so far.
        """
        lookup_id = self.core.get_peers(hash, self._now(), limit=limit)
        waiter = _Waiter(self._future(), callback)
        try:
            peers: list[Addr] = await self._wait(lookup_id, waiter, max_wait)
        except TimeoutError:
            self.core.cancel(lookup_id)
            peers = waiter.peers
        return peers[:limit] if limit is not None else peers

    async def announce_peer(
        self, info_hash: bytes, port: int, implied_port: bool = False, max_wait: float = 30.0
    ) -> int:
        """Announce to the 8 closest nodes; return how many accepted."""
        lookup_id = self.core.announce_peer(info_hash, port, self._now(), implied_port)
        try:
            accepted: int = await self._wait(
                lookup_id, _Waiter(self._future(), announce=True), max_wait
            )
        except TimeoutError:
            accepted = self.core.announce_progress(lookup_id)
            self.core.cancel(lookup_id)
        return accepted

    def sendto(self, data: bytes, addr: Addr) -> None:
        """Send raw bytes (btdht's ``sendto``: a message the caller encoded)."""
        if self._sock is None:
            raise DHTError("the DHT is not started: call await dht.start() first")
        try:
            self._sock.sendto(data, addr)
        except OSError:
            self.send_errors += 1

    def query(self, addr: Addr, method: bytes, args: dict[bytes, Any]) -> None:
        """Send one query outside any lookup; the answer comes as a hook event."""
        self.core.query(addr, method, args, self._now())
        self._pump()

    async def ping(self, addr: Addr) -> None:
        """Send a ping (fire and forget; the answer adds the node to the table)."""
        self.core.ping(addr, self._now())
        self._pump()

    def add_node(self, node_id: bytes, addr: Addr) -> None:
        self.core.add_node(node_id, addr, self._now())

    def get_closest_nodes(self, id: bytes, compact: bool = False) -> list[Node] | bytes:
        nodes = self.root.get_closest_nodes(id)
        return b"".join(n.compact_info() for n in nodes) if compact else nodes

    def save(self, filename: str | Path, max_node: int | None = None) -> int:
        """Write the table as concatenated 26-byte compact node records (btdht's format)."""
        now = self._now() if self._loop is not None else 0.0
        nodes = sorted(self.root, key=lambda n: (not n.is_good(now), n.bad, -n.last_response))
        nodes = [n for n in nodes if not n.bad][: max_node or MAX_STATE_NODES]
        path = Path(filename)
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_bytes(b"".join(n.compact_info() for n in nodes))
            os.replace(tmp, path)
        except OSError as exc:
            raise DHTError(f"cannot save the DHT table to {path}: {exc.strerror}") from exc
        return len(nodes)

    def load(self, filename: str | Path, max_node: int | None = None) -> int:
        """Add the nodes of a btdht state file to the table (questionable until they answer)."""
        limit = max_node or MAX_STATE_NODES
        try:
            with open(filename, "rb") as file:
                data = file.read(26 * limit)
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise DHTError(f"cannot read DHT state {filename}: {exc.strerror}") from exc
        data = data[: len(data) - len(data) % 26]  # a torn last record is skipped
        nodes = Node.from_compact_infos(data)
        for node in nodes:
            if node.port:
                self.add_node(node.id, node.addr)
        return len(nodes)

    def statistics(self) -> dict[str, Any]:
        stats = self.core.statistics(self._now())
        stats.update(
            send_errors=self.send_errors,
            send_dropped=self.send_dropped,
            hook_errors=self.hook_errors,
        )
        return stats

    # -- hooks for subclasses (seed 002: on_*_query / on_*_response / on_error) ------

    def on_ping_query(self, query: krpc.Query) -> None: ...
    def on_find_node_query(self, query: krpc.Query) -> None: ...
    def on_get_peers_query(self, query: krpc.Query) -> None: ...
    def on_announce_peer_query(self, query: krpc.Query) -> None: ...
    def on_ping_response(self, query: dict[bytes, Any], response: krpc.Response) -> None: ...
    def on_find_node_response(self, query: dict[bytes, Any], response: krpc.Response) -> None: ...
    def on_get_peers_response(self, query: dict[bytes, Any], response: krpc.Response) -> None: ...
    def on_announce_peer_response(
        self, query: dict[bytes, Any], response: krpc.Response
    ) -> None: ...
    def on_error(self, error: krpc.Error, query: bytes | None = None) -> None: ...


class BlockingDHT:
    """A :class:`DHT` on its own loop in a thread, with blocking methods."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.dht = DHT(*args, **kwargs)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="dht", daemon=True)

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = 60.0) -> T:
        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout)

    def start(self) -> None:
        self._thread.start()
        self._call(self.dht.start())

    def stop(self) -> None:
        if self._thread.is_alive():
            self._call(self.dht.stop())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()

    def is_alive(self) -> bool:
        return self._thread.is_alive() and self.dht.is_alive()

    def bootstrap(self, addresses: Iterable[tuple[str, int]] = DEFAULT_BOOTSTRAP) -> int:
        return self._call(self.dht.bootstrap(list(addresses)))

    bootstarp = bootstrap

    def get_peers(self, hash: bytes, limit: int | None = 10, max_wait: float = 30.0) -> list[Addr]:
        return self._call(self.dht.get_peers(hash, limit, max_wait=max_wait), max_wait + 5)

    def announce_peer(self, info_hash: bytes, port: int, max_wait: float = 30.0) -> int:
        return self._call(self.dht.announce_peer(info_hash, port, max_wait=max_wait), max_wait + 5)

    def statistics(self) -> dict[str, Any]:
        async def _stats() -> dict[str, Any]:
            return self.dht.statistics()

        return self._call(_stats())
