"""The shared engine: the fleet's registry and liveness in Redis, for several hubs.

::

    text server ──submit_text(read)──┐
    JSON API ──── await register ... ┼─> _Lane: one FIFO, one pipeline of FCALLs per
                                     │   batch (group commit), in submission order
    keeper (1 s): hub heartbeat,     │
      sweep lease, sweep, stats ─────┘            Redis (functions.py: atomic steps)
    mirror: XREAD the change log ──> this hub's Registry (read-only copy for the
                                     tracker, the console, /metrics)

Every command is one function call (:mod:`functions`), executed atomically by Redis. A
batch is sent as one pipeline, on one connection, only one batch at a time: whatever
arrives while it is out goes in the next, so a burst costs one round trip and Redis's
``appendfsync always`` one fsync for many replies, as the SQLite store groups commits.
A reply leaves once Redis has answered, which (with ``appendfsync always``) is after
the AOF write: nothing acknowledged is lost, if Redis is configured so
(:func:`check_durability` warns at start when it is not).

Redis's failures become :class:`StateUnavailable` (a ``RegistryError``): the text
server answers "could not save", the JSON API 503 (hub/http.py).

**Redis Cluster.** The same URL names one node of a cluster: :meth:`RedisState.start`
asks it ``INFO cluster`` and, on ``cluster_enabled:1``, talks through redis-py's
:class:`~redis.asyncio.cluster.RedisCluster` (it learns the slots and follows MOVED and
ASK), with the DB 0 (a cluster has no other; another is a ConfigError). The function
libraries are loaded on every primary (a resharding may move the slot), the durability
settings read on every node. Every key carries the hash tag ``{fleet}`` (keys.py), so
each FCALL, pipeline and XREAD touches one slot, held by one primary: the cluster
routes, it does not spread the fleet's load (README, "Several hubs").
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from smartget.errors import (
    ConfigError,
    NodeExistsError,
    NodeNotFoundError,
    NotPermittedError,
    RegistryError,
)
from smartget.hub import textproto as tp
from smartget.hub.commands import Caller, CommandRules, FromNode
from smartget.hub.registry import MAX_STATUS, STATUS_NOT_AVAILABLE, STATUS_ZOMBIE, Node, Registry
from smartget.hub.state.api import Outcome, StateUnavailable
from smartget.hub.state.functions import (
    DRAINS_LIBRARY,
    LIBRARY,
    MAX_DRAINED,
    REPORTS_LIBRARY,
    TOUCH_LIBRARY,
)
from smartget.hub.state.keys import NODE_FIELDS, Keys, StateURL, node_from_record
from smartget.hub.state.lease import Lease

__all__ = [
    "Client",
    "RedisState",
    "StateUnavailable",
    "check_durability",
    "close_reader",
    "redis_password",
    "stream_id_before",
]

log = logging.getLogger(__name__)

PASSWORD_ENV = "SMARTGET_REDIS_PASSWORD"
TIMEOUT = 5.0  # seconds: a command, a connect, a batch
MAX_BATCH = 2048  # commands in one pipeline
KEEP_EVERY = 1.0  # seconds between heartbeats, lease tries and sweeps
HUB_TTL = 5.0  # seconds a hub counts as up after its last heartbeat
SWEEP_LIMIT = 1000  # nodes per sweep call (bounded work per atomic step)
SWEEP_ROUNDS = 10  # sweep calls per tick at most
CLOSE_WITHIN = 2.0  # seconds a blocking reader may take to close
MIRROR_BATCH = 10_000  # change-log entries per read
TOUCH_EVERY = 0.5  # seconds between liveness sends at most (a quarter of the TTL if less)
TOUCH_CHUNK = 4096  # node ids per sg_touch call
_RECORD = 1 + len(NODE_FIELDS)

# A client of one Redis, or of a Redis Cluster (RedisState.start picks).
Client = aioredis.Redis | RedisCluster


def redis_password(password_file: Path | None, environ: dict[str, str]) -> str | None:
    """The password from ``--redis-password-file`` or SMARTGET_REDIS_PASSWORD."""
    if password_file is not None:
        try:
            return password_file.read_text().strip() or None
        except OSError as exc:
            raise ConfigError(f"--redis-password-file {password_file}: {exc.strerror}") from None
    return environ.get(PASSWORD_ENV) or None


def check_durability(config: dict[str, str]) -> list[str]:
    """What in Redis's CONFIG breaks "nothing acknowledged is lost" (empty: all holds)."""
    problems = []
    if config.get("appendonly") != "yes":
        problems.append(
            f"appendonly is {config.get('appendonly', '?')!r}: a Redis restart loses every "
            "change since its last snapshot (set appendonly yes)"
        )
    elif config.get("appendfsync") != "always":
        problems.append(
            f"appendfsync is {config.get('appendfsync', '?')!r}: a power cut or kernel crash "
            "may lose up to a second of acknowledged changes (set appendfsync always)"
        )
    return problems


# A text protocol heartbeat as the lane queues it: (_HEARTBEAT, key, prefix, id, status,
# owner); consecutive ones are sent as one sg_setstatus_many2 call (drain-aware).
_HEARTBEAT = object()


class _Lane:
    """One FIFO of function calls, sent in batches, one batch at a time, in order."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._queue: collections.deque[tuple[list[tuple[Any, ...]], asyncio.Future[list[Any]]]] = (
            collections.deque()
        )
        self._ready = asyncio.Event()
        self.batches = 0
        self.calls = 0

    def submit(self, calls: list[tuple[Any, ...]]) -> asyncio.Future[list[Any]]:
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        if not calls:
            future.set_result([])
            return future
        self._queue.append((calls, future))
        self._ready.set()
        return future

    async def run(self) -> None:
        queue = self._queue
        try:
            while True:
                await self._ready.wait()
                self._ready.clear()
                while queue:
                    batch = []
                    size = 0
                    while queue and size < MAX_BATCH:
                        entry = queue.popleft()
                        batch.append(entry)
                        size += len(entry[0])
                    await self._send(batch)
        finally:
            for _, future in queue:
                if not future.done():
                    future.set_exception(StateUnavailable("the hub is stopping"))

    async def _send(
        self, batch: list[tuple[list[tuple[Any, ...]], asyncio.Future[list[Any]]]]
    ) -> None:
        # On a cluster too: every call's key is in the one {fleet} slot, so the pipeline
        # goes to one primary, in order (MOVED after a resharding: sent again, not run).
        pipe = self.client.pipeline(transaction=False)
        # Heartbeats that follow each other become one sg_setstatus_many2 call, in order:
        # (pipeline index, how many) per merged run, to hand each its own code back.
        runs: list[tuple[int, int]] = []
        merged: list[Any] = []
        commands = 0
        for calls, _ in batch:
            for call in calls:
                if call[0] is _HEARTBEAT:
                    if not merged:
                        merged = ["FCALL", "sg_setstatus_many2", 1, call[1], call[2]]
                    merged += call[3:]
                    continue
                if merged:
                    runs.append((commands, (len(merged) - 5) // 3))
                    pipe.execute_command(*merged)
                    merged = []
                    commands += 1
                runs.append((commands, 0))
                pipe.execute_command(*call)
                commands += 1
        if merged:
            runs.append((commands, (len(merged) - 5) // 3))
            pipe.execute_command(*merged)
        try:
            async with asyncio.timeout(TIMEOUT):
                results = await pipe.execute(raise_on_error=False)
        except (RedisError, OSError, TimeoutError) as exc:
            error = StateUnavailable(
                f"the fleet's Redis did not answer: {exc or type(exc).__name__}"
            )
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        self.batches += 1
        self.calls += len(runs)
        replies: list[Any] = []
        for index, merged_count in runs:
            result = results[index]
            if not merged_count:
                replies.append(result)
            elif isinstance(result, list):
                replies += result
            else:  # the merged call failed as a whole
                replies += [result] * merged_count
        at = 0
        for calls, future in batch:
            if not future.done():
                future.set_result(replies[at : at + len(calls)])
            at += len(calls)


async def close_reader(reader: Client) -> None:
    """Close a blocking reader, bounded: it runs in a follower's ``finally`` while the hub
    stops, and closing a connection cancelled in the middle of an XREAD BLOCK could wait
    for good (seen in full test runs: a hub whose relay deliverer never finished
    stopping). The close runs as a task of its own, left behind if it takes too long, so
    not even a close that swallows its cancellation can hold the hub."""
    closing = asyncio.ensure_future(reader.aclose())
    done, _ = await asyncio.wait([closing], timeout=CLOSE_WITHIN)
    if not done:
        closing.cancel()
        log.warning("a Redis reader did not close within %g s; left behind", CLOSE_WITHIN)
        return
    with contextlib.suppress(RedisError, OSError):
        closing.result()


def _raise_unexpected(reply: Any) -> None:
    if isinstance(reply, ResponseError):
        raise StateUnavailable(f"the fleet's Redis refused a command: {reply}")
    if isinstance(reply, Exception):
        raise StateUnavailable(f"the fleet's Redis failed: {reply}")


def _nodes(reply: list[Any], start: int = 1) -> list[Node]:
    return [node_from_record(reply[i : i + _RECORD]) for i in range(start, len(reply), _RECORD)]


class RedisState:
    """:class:`~smartget.hub.state.api.FleetState` on Redis, shared by several hubs."""

    engine = "redis"

    def __init__(
        self,
        url: StateURL,
        *,
        password: str | None,
        ca_file: Path | None = None,
        rules: CommandRules | None = None,
        node_ttl: float,
        zombie_grace: float,
        hub_id: str,
        describe: Callable[[], dict[str, Any]],
        keys: Keys | None = None,
    ) -> None:
        self.url = url
        self.rules = rules or CommandRules()
        self.node_ttl = node_ttl
        self.zombie_grace = zombie_grace
        self.hub_id = hub_id
        self.keys = keys or Keys()
        self._describe = describe
        options: dict[str, Any] = {
            "host": url.host,
            "port": url.port,
            "username": url.username,
            "password": password,
            "decode_responses": True,
            "socket_timeout": TIMEOUT,
            "socket_connect_timeout": TIMEOUT,
            # No retry: a command may have run before the connection broke, and
            # register or requestnodes must not run twice.
            "retry": Retry(NoBackoff(), 0),
        }
        if url.tls:
            options["ssl"] = True
            if ca_file is not None:
                options["ssl_ca_certs"] = str(ca_file)
        self._options = options
        # One Redis until start() finds a cluster there (then a RedisCluster client).
        self.cluster = False
        self.client: Client = aioredis.Redis(**options, db=url.db)
        self._lane = _Lane(self.client)
        self.lease = Lease(ttl=HUB_TTL, margin=1.0)
        self.cached_stats: dict[str, int] = _empty_stats()
        self.durability_problems: list[str] = []
        self.mirror_applied = 0
        self._log_last = "0-0"
        # This hub's read-only copy of the fleet (load_mirror): what its own commands
        # changed goes in before their replies leave (a hub reads its own writes); the
        # other hubs' changes arrive through the change log (follow).
        self.mirror: Registry | None = None
        self._mirror_clock: Callable[[], float] = time.monotonic
        # Heartbeats answered from the mirror (status unchanged): their ids, until the
        # next sg_touch; and the ids with a status change still on its way to Redis
        # (a heartbeat behind one must follow it through the lane, not overtake it).
        self._touched: set[int] = set()
        self._changing: dict[int, int] = {}
        self.touches = 0
        prefix = self.keys.prefix
        self._p = prefix
        self._k = self.keys.next_id

    # -- start and stop -------------------------------------------------------------

    async def start(self) -> None:
        """Connect (to one Redis or a cluster), check durability, load the functions
        (each step has a deadline)."""
        try:
            async with asyncio.timeout(TIMEOUT * 3):
                if await self._is_cluster():
                    if self.url.db != 0:
                        raise ConfigError(
                            f"--state {self.url.url}: that Redis is a Redis Cluster, which has "
                            f"only DB 0 (not {self.url.db}): use "
                            f"redis{'s' if self.url.tls else ''}://"
                            f"{self.url.host}:{self.url.port}/0"
                        )
                    await self.client.aclose()
                    self.cluster = True
                    self.client = self._lane.client = self._new_client()
                await self.client.ping()
                await self._check_durability()
                for library in (LIBRARY, DRAINS_LIBRARY, REPORTS_LIBRARY, TOUCH_LIBRARY):
                    if isinstance(self.client, RedisCluster):
                        # On every primary: a function runs where its key's slot is, and
                        # a resharding or failover may move the {fleet} slot.
                        await self.client.execute_command(
                            "FUNCTION LOAD", "REPLACE", library, target_nodes=RedisCluster.PRIMARIES
                        )
                    else:
                        await self.client.function_load(library, replace=True)
        except (RedisError, OSError, TimeoutError, ConfigError) as exc:
            await self.client.aclose()
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(
                f"--state {self.url.url}: cannot use Redis there ({exc or type(exc).__name__})"
            ) from None
        log.info(
            "fleet state on %s%s (hub %s)",
            self.url.url,
            " (a Redis Cluster)" if self.cluster else "",
            self.hub_id,
        )

    async def _is_cluster(self) -> bool:
        """Whether the URL's Redis is a Redis Cluster node (``INFO cluster``).

        Asked on DB 0: a cluster node refuses ``SELECT``. A Redis that refuses INFO
        (renamed in a managed Redis) is taken as a plain one."""
        probe = aioredis.Redis(**self._options)
        try:
            info = await probe.info("cluster")
        except ResponseError as exc:
            log.warning(
                "cannot ask Redis whether it is a cluster (%s): taking it as one Redis", exc
            )
            return False
        finally:
            await probe.aclose()
        return str(info.get("cluster_enabled", 0)) == "1"

    def _new_client(self, **more: Any) -> Client:
        if not self.cluster:
            return aioredis.Redis(**{**self._options, "db": self.url.db, **more})
        # retry=0 as for one Redis: a command that may have run is not sent again.
        # MOVED and ASK (the command did not run) are followed all the same.
        return RedisCluster(**{**self._options, **more})

    async def _check_durability(self) -> None:
        """Read ``CONFIG GET append*`` (on a cluster: on every node, replicas too: one
        may be promoted) and warn about what breaks "nothing acknowledged is lost"."""
        client = self.client
        targets: list[Any] = client.get_nodes() if isinstance(client, RedisCluster) else [None]
        problems: list[str] = []
        for node in targets:
            where = self.url.url if node is None else f"cluster node {node.name}"
            try:
                if node is None:
                    config = await client.config_get("append*")
                else:
                    config = await client.config_get("append*", target_nodes=node)
            except ResponseError as exc:  # CONFIG renamed or refused (managed Redis)
                log.warning("cannot check the durability settings of Redis %s: %s", where, exc)
                continue
            found = {str(k): str(v) for k, v in config.items()}
            for problem in check_durability(found):
                log.warning("Redis %s: %s", where, problem)
                problems.append(problem if node is None else f"{node.name}: {problem}")
        self.durability_problems = problems

    async def aclose(self) -> None:
        """Leave: heartbeat removed, sweep lease given back (best effort, bounded)."""
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            async with asyncio.timeout(TIMEOUT):
                await self.client.fcall(
                    "sg_hub_beat", 1, self.keys.hubs, self._p, self.hub_id, "", 0
                )
                await self.client.fcall("sg_release", 1, self.keys.sweep_lease, self.hub_id)
        await self.client.aclose()

    async def run_lane(self) -> None:
        await self._lane.run()

    # -- the text protocol: a whole read in one submission --------------------------

    def submit_text(self, events: Sequence[tp.Event], ip: str) -> asyncio.Future[list[Outcome]]:
        calls: list[tuple[Any, ...]] = []
        plan: list[int] = []  # per event: index of its call, or -1 (no call)
        in_flight = self._changing
        changing: list[int] = []  # the ids of the setstatus calls among them
        for event in events:
            if isinstance(event, tp.SetStatus) and self._unchanged(event, ip):
                self._touched.add(event.node_id)
                plan.append(-1)
                continue
            call = self._text_call(event, ip)
            if call is None:
                plan.append(-1)
                continue
            plan.append(len(calls))
            calls.append(call)
            if call[0] is _HEARTBEAT:  # from now on, its node's heartbeats follow it
                node_id = call[3]
                changing.append(node_id)
                in_flight[node_id] = in_flight.get(node_id, 0) + 1
        loop = asyncio.get_running_loop()
        outcomes: asyncio.Future[list[Outcome]] = loop.create_future()
        if not calls:  # every one answered here: heartbeats that change nothing
            outcomes.set_result([None] * len(events))
            return outcomes
        sent = self._lane.submit(calls)

        def done(future: asyncio.Future[list[Any]]) -> None:
            for node_id in changing:
                if (left := in_flight[node_id] - 1) > 0:
                    in_flight[node_id] = left
                else:
                    del in_flight[node_id]
            if outcomes.done():
                return
            if (exc := future.exception()) is not None:
                outcomes.set_exception(exc)
                return
            replies = future.result()
            try:
                result = [
                    None if at < 0 else self._text_outcome(event, replies[at], ip)
                    for event, at in zip(events, plan, strict=True)
                ]
            except StateUnavailable as failed:
                outcomes.set_exception(failed)
                return
            held = {
                i
                for i, (event, at) in enumerate(zip(events, plan, strict=True))
                if at >= 0 and isinstance(event, tp.SetStatus) and replies[at] == "held"
            }
            self._mirror_text(events, result, held, plan)
            outcomes.set_result(result)

        sent.add_done_callback(done)
        return outcomes

    def _unchanged(self, event: tp.SetStatus, ip: str) -> bool:
        """A heartbeat this hub may answer itself: its node's own address asks for the
        status the node has, and no change of it is on its way. Liveness then is all
        there is to record (sg_touch, within a fraction of the TTL), as the embedded hub
        commits nothing for it. Status 0 always goes to Redis: a drained node sits at 0
        and its heartbeat records the status it asks for (sg_setstatus_many2)."""
        if event.status <= 0 or self.mirror is None or event.node_id in self._changing:
            return False
        node = self.mirror.get_node_by_id(event.node_id)
        return node is not None and node.status == event.status and node.addr == ip

    async def run_touches(self) -> None:
        """Send the liveness of the heartbeats answered from the mirror, until cancelled.
        A send that fails is tried again with the next (the ids are kept)."""
        every = min(TOUCH_EVERY, self.node_ttl / 4)
        while True:
            await asyncio.sleep(every)
            if not self._touched:
                continue
            ids, self._touched = sorted(self._touched), set()
            calls = [
                ("FCALL", "sg_touch", 1, self._k, self._p, *ids[i : i + TOUCH_CHUNK])
                for i in range(0, len(ids), TOUCH_CHUNK)
            ]
            try:
                for reply in await self._lane.submit(calls):
                    _raise_unexpected(reply)
            except StateUnavailable as exc:
                log.warning("fleet state: liveness of %d nodes not sent: %s", len(ids), exc)
                self._touched.update(ids)
                continue
            self.touches += len(ids)

    def _text_call(self, event: tp.Event, ip: str) -> tuple[Any, ...] | None:
        p, k = self._p, self._k
        kind = type(event)
        if kind is tp.SetStatus:
            assert isinstance(event, tp.SetStatus)
            if not STATUS_ZOMBIE <= event.status <= MAX_STATUS:
                return None
            return (_HEARTBEAT, k, p, event.node_id, event.status, ip)
        if kind is tp.Register:
            assert isinstance(event, tp.Register)
            most = self.rules.max_nodes_per_ip
            return ("FCALL", "sg_register", 1, k, p, ip, event.port, most, 0, "", "", 0, "", "")
        if kind is tp.RequestNodes:
            assert isinstance(event, tp.RequestNodes)
            allowed = "1" if self.rules.allows(ip) else "0"
            return ("FCALL", "sg_requestnodes", 1, k, p, event.n, "", ip, allowed)
        if kind is tp.Deregister:
            assert isinstance(event, tp.Deregister)
            return ("FCALL", "sg_deregister2", 1, k, p, "", ip, event.port, "")
        return None

    def _mirror_text(
        self,
        events: Sequence[tp.Event],
        outcomes: list[Outcome],
        held: set[int],
        plan: list[int],
    ) -> None:
        """What a read changed, into this hub's mirror (``held``: the indexes of drained
        nodes' heartbeats, which Redis kept at status 0; ``plan``: -1 for the events
        that made no call)."""
        mirror = self.mirror
        if mirror is None:
            return
        now = self._mirror_clock()
        for i, (event, outcome) in enumerate(zip(events, outcomes, strict=True)):
            if plan[i] < 0 or isinstance(outcome, RegistryError):
                continue
            if isinstance(event, tp.SetStatus):
                if event.node_id in mirror:
                    status = STATUS_NOT_AVAILABLE if i in held else event.status
                    mirror.set_node_status(event.node_id, status, now)
            elif isinstance(outcome, Node):
                if isinstance(event, tp.Deregister):
                    self._apply(mirror, [], [outcome.node_id], now)
                else:
                    self._apply(mirror, [outcome], [], now)
            elif isinstance(outcome, list):
                self._apply(mirror, outcome, [], now)
        mirror.drain_changes()

    def _mirror(self, nodes: list[Node], gone: Iterable[int] = ()) -> None:
        if self.mirror is not None:
            self._apply(self.mirror, nodes, list(gone), self._mirror_clock())
            self.mirror.drain_changes()

    def _text_outcome(self, event: tp.Event, reply: Any, ip: str) -> Outcome:
        _raise_unexpected(reply)
        try:
            if isinstance(event, tp.SetStatus):
                return self._status_outcome(reply, event.node_id, ip)
            if isinstance(event, tp.Register):
                return self._register_outcome(reply, ip, event.port)
            if isinstance(event, tp.RequestNodes):
                return self._request_outcome(reply, ip)
            if isinstance(event, tp.Deregister):
                if reply[0] == "notfound":
                    raise NodeNotFoundError(f"no node is registered at {ip}:{event.port}")
                return node_from_record(reply[1:])
        except RegistryError as exc:
            return exc
        return None

    # -- outcomes: the functions' codes as the errors tree -----------------------------

    def _status_outcome(self, reply: list[Any] | str, node_id: int, ip: str | None) -> Node | None:
        if isinstance(reply, str):  # one code of sg_setstatus_many2 ("held": drained)
            reply = reply.split(" ", 1)
        code = reply[0]
        if code == "notfound":
            raise NodeNotFoundError(f"no node has id {node_id}")
        if code == "notowner":
            raise NotPermittedError(f"node {node_id} belongs to {reply[1]}, not to {ip}")
        return node_from_record(reply[1:]) if len(reply) > 1 else None

    def _register_outcome(self, reply: list[Any], addr: str, port: int) -> Node:
        code = reply[0]
        if code == "exists":
            raise NodeExistsError(f"node {addr}:{port} already exists")
        if code == "toomany":
            raise RegistryError(
                f"{addr} already has {reply[1]} nodes registered (the hub's --max-nodes-per-ip)"
            )
        return node_from_record(reply[1:])

    def _request_outcome(self, reply: list[Any], ip: str | None) -> list[Node]:
        if reply[0] == "stranger":
            raise NotPermittedError(
                f"{ip} is no registered node: register first, or ask an operator "
                "to allow your network (the hub's --allow-net)"
            )
        return _nodes(reply)

    async def fcall(self, *call: Any) -> Any:
        """One function call through the lane, in order with every other change."""
        (reply,) = await self._lane.submit([("FCALL", *call)])
        _raise_unexpected(reply)
        return reply

    async def read(self, coro: Any) -> Any:
        """A read (not through the lane), with the engine's deadline and errors."""
        return await self._read(coro)

    def reader(self) -> Client:
        """A connection of its own, for blocking reads (XREAD BLOCK). On a cluster a
        client of its own: its XREAD goes to the primary of the {fleet} slot. Close it
        with :func:`close_reader`."""
        return self._new_client(socket_timeout=TIMEOUT + 2)

    async def _call(self, *call: Any) -> list[Any]:
        (reply,) = await self._lane.submit([("FCALL", *call)])
        _raise_unexpected(reply)
        assert isinstance(reply, list)
        return reply

    # -- FleetState -------------------------------------------------------------------

    async def register(
        self, caller: Caller, port: int, *, ip: str | None = None, **info: Any
    ) -> Node:
        addr = caller.ip if isinstance(caller, FromNode) or not ip else ip
        if not 0 < port <= 65535:
            raise RegistryError(f"port must be from 1 to 65535, got {port}")
        status = int(info.pop("status", 0) or 0)
        if not 0 <= status <= MAX_STATUS:
            raise RegistryError(f"status must be from -1 to {MAX_STATUS}, got {status}")
        most = self.rules.max_nodes_per_ip if isinstance(caller, FromNode) else 0
        reply = await self._call(
            "sg_register", 1, self._k, self._p, addr, port, most, status,
            info.get("name", ""), info.get("zone", ""), info.get("bt_port", 0),
            info.get("api_url", ""), info.get("files_url", ""),
        )  # fmt: skip
        node = self._register_outcome(reply, addr, port)
        self._mirror([node])
        return node

    async def deregister(self, caller: Caller, node_id: int) -> Node:
        owner = caller.ip if isinstance(caller, FromNode) else ""
        reply = await self._call("sg_deregister2", 1, self._k, self._p, node_id, "", "", owner)
        if reply[0] == "notfound":
            raise NodeNotFoundError(f"no node has id {node_id}")
        if reply[0] == "notowner":
            raise NotPermittedError(f"node {node_id} belongs to {reply[1]}, not to {owner}")
        node = node_from_record(reply[1:])
        self._mirror([], [node.node_id])
        return node

    async def request_nodes(
        self, caller: Caller, n: int, *, zone: str | None = None, exclude: Iterable[int] = ()
    ) -> list[Node]:
        if n <= 0:
            return []
        if isinstance(caller, FromNode):
            allowed = "1" if self.rules.allows(caller.ip) else "0"
            reply = await self._call(
                "sg_requestnodes", 1, self._k, self._p, n, "", caller.ip, allowed
            )
            nodes = self._request_outcome(reply, caller.ip)
            self._mirror(nodes)
            return nodes
        reply = await self._call(
            "sg_requestnodes", 1, self._k, self._p, n, zone or "", "", "1", *map(int, exclude)
        )
        nodes = self._request_outcome(reply, None)
        self._mirror(nodes)
        return nodes

    async def set_status(self, caller: Caller, node_id: int, status: int) -> Node:
        if not STATUS_ZOMBIE <= status <= MAX_STATUS:
            raise RegistryError(f"status must be from -1 to {MAX_STATUS}, got {status}")
        owner = caller.ip if isinstance(caller, FromNode) else ""
        reply = await self._call("sg_setstatus2", 1, self._k, self._p, node_id, status, owner, "1")
        node = self._status_outcome(reply, node_id, owner)
        assert node is not None
        self._mirror([node])
        return node

    async def update_info(self, node_id: int, **info: object) -> Node:
        fields = {
            "name": "nm",
            "zone": "z",
            "bt_port": "bt",
            "api_url": "api",
            "files_url": "files",
        }
        if unknown := set(info) - set(fields):
            raise RegistryError(f"cannot update {sorted(unknown)}; allowed: {sorted(fields)}")
        pairs = [x for key, value in info.items() for x in (fields[key], value)]
        reply = await self._call("sg_update", 1, self._k, self._p, node_id, *pairs)
        if reply[0] == "notfound":
            raise NodeNotFoundError(f"no node has id {node_id}")
        node = node_from_record(reply[1:])
        self._mirror([node])
        return node

    # -- drains: the nodes an operator took out of rotation, the fleet's ------------------

    async def drain(self, node_id: int, max_drained: int = MAX_DRAINED) -> Node:
        """Hold a node at status 0 in every hub (sg_drain) until :meth:`undrain`."""
        reply = await self._call("sg_drain", 1, self._k, self._p, node_id, max_drained)
        if reply[0] == "notfound":
            raise NodeNotFoundError(f"no node has id {node_id}")
        if reply[0] == "zombie":
            raise RegistryError(f"node {node_id} is a zombie: deregister it instead")
        if reply[0] == "toomany":
            raise RegistryError(f"{reply[1]} nodes are drained already (at most {max_drained})")
        node = node_from_record(reply[1:])
        self._mirror([node])
        return node

    async def undrain(self, node_id: int) -> Node:
        """Back in rotation with the status its last heartbeat asked for (sg_undrain)."""
        reply = await self._call("sg_undrain", 1, self._k, self._p, node_id)
        if reply[0] == "notfound":
            raise NodeNotFoundError(f"no node has id {node_id}")
        node = node_from_record(reply[1:])
        self._mirror([node])
        return node

    async def drained(self, seen: str = "") -> tuple[str, list[int] | None]:
        """The drained set's version and its ids; None for the ids when the version
        is still ``seen`` (the caller's copy is current)."""
        reply = await self._read(
            self.client.fcall_ro("sg_drained", 1, self.keys.drained, self._p, seen)
        )
        version = str(reply[0])
        if version == seen:
            return version, None
        return version, sorted(int(i) for i in reply[1:])

    async def _read(self, coro: Any) -> Any:
        try:
            async with asyncio.timeout(TIMEOUT):
                return await coro
        except (RedisError, OSError, TimeoutError) as exc:
            raise StateUnavailable(
                f"the fleet's Redis did not answer: {exc or type(exc).__name__}"
            ) from None

    async def get_node(self, node_id: int) -> Node | None:
        (found,) = await self._fetch([node_id])
        return found

    async def _fetch(self, ids: Sequence[int | str]) -> list[Node | None]:
        pipe = self.client.pipeline(transaction=False)
        for node_id in ids:
            pipe.hmget(self.keys.node(node_id), *NODE_FIELDS)
        values = await self._read(pipe.execute())
        return [
            None if v[0] is None else node_from_record([str(node_id), *v])
            for node_id, v in zip(ids, values, strict=True)
        ]

    async def find_node(self, addr: str, port: int) -> int | None:
        found = await self._read(self.client.hget(self.keys.prefix + "ap", f"{addr} {port}"))
        return None if found is None else int(found)

    async def list_nodes(
        self,
        *,
        zone: str | None = None,
        status: int | None = None,
        available: bool | None = None,
        limit: int = 1000,
        offset: int = 0,
    ) -> list[Node]:
        if available and status is None:
            ids = [
                m.rpartition(":")[2]
                for m in await self._read(self.client.zrange(self.keys.free, 0, -1))
            ]
        else:
            ids = await self._read(self.client.zrange(self.keys.all, 0, -1))
        picked = [
            n
            for n in await self._fetch(ids)
            if n is not None
            and (zone is None or n.zone == zone)
            and (status is None or n.status == status)
            and (available is None or (n.status > 0) == available)
        ]
        return picked[offset : offset + limit]

    async def statistics(self) -> dict[str, int]:
        keys = self.keys
        pipe = self.client.pipeline(transaction=False)
        pipe.zcard(keys.all)
        pipe.zcard(keys.free)
        pipe.zcard(keys.zombies)
        pipe.hmget(keys.stat, "slots", "handed")
        pipe.get(keys.next_id)
        nodes, available, zombies, (slots, handed), last = await self._read(pipe.execute())
        self.cached_stats = {
            "nodes": nodes,
            "available": available,
            "idle": nodes - available - zombies,
            "zombies": zombies,
            "free_slots": int(slots or 0),
            "handed_out": int(handed or 0),
            "max_node_id": int(last or 0),
        }
        return self.cached_stats

    async def shared_token(self, mine: str) -> str:
        """The fleet's generated API token: the first hub's (SET NX), so a client that
        moves to another hub keeps its token. Redis's own access rules guard it, as
        they guard everything else the fleet keeps there."""
        key = self.keys.prefix + "token"
        await self._read(self.client.set(key, mine, nx=True))
        found = await self._read(self.client.get(key))
        return found.decode() if isinstance(found, bytes) else str(found)

    async def hubs(self) -> list[dict[str, Any]]:
        found = await self._read(self.client.fcall_ro("sg_hubs", 1, self.keys.hubs, self._p))
        return [json.loads(info) for info in found]

    # -- the keeper: heartbeat, the sweep lease, sweeps, cached statistics --------------

    async def keep(self, clock: Callable[[], float]) -> None:
        """Every second: heartbeat; hold or try the lease; sweep if held. Until cancelled."""
        while True:
            try:
                await self.keep_once(clock)
            except (RedisError, OSError, TimeoutError, StateUnavailable) as exc:
                self.lease.failed()
                log.warning("fleet state: Redis did not answer the keeper: %s", exc)
            await asyncio.sleep(KEEP_EVERY)

    async def keep_once(self, clock: Callable[[], float]) -> None:
        info = json.dumps({**self._describe(), "id": self.hub_id, "seen": time.time()})
        ttl_ms = int(HUB_TTL * 1000)
        sent = clock()
        async with asyncio.timeout(TIMEOUT):
            pipe = self.client.pipeline(transaction=False)
            pipe.fcall("sg_hub_beat", 1, self.keys.hubs, self._p, self.hub_id, info, ttl_ms)
            pipe.fcall("sg_lease", 1, self.keys.sweep_lease, self.hub_id, self.lease.ttl_ms)
            _, granted = await pipe.execute()
        if self.lease.answered(sent, bool(granted), clock()):
            log.info("fleet state: this hub now runs the liveness sweeps")
        if self.lease.holds(clock()):
            await self.sweep()
        await self.statistics()

    async def sweep(self) -> tuple[list[Node], list[Node]]:
        """Zombies and removals due now (bounded: SWEEP_ROUNDS calls of SWEEP_LIMIT)."""
        ttl_ms, grace_ms = int(self.node_ttl * 1000), int(self.zombie_grace * 1000)
        zombies: list[Node] = []
        removed: list[Node] = []
        for _ in range(SWEEP_ROUNDS):
            got_zombies, got_removed = await self._call(
                "sg_sweep2", 1, self._k, self._p, ttl_ms, grace_ms, SWEEP_LIMIT
            )
            new_z, new_r = _nodes(got_zombies, 0), _nodes(got_removed, 0)
            for node in new_z:
                log.warning(
                    "node %d (%s:%d) is silent: now a zombie", node.node_id, node.addr, node.port
                )
            for node in new_r:
                log.warning("zombie node %d (%s:%d) removed", node.node_id, node.addr, node.port)
            zombies += new_z
            removed += new_r
            if len(new_z) < SWEEP_LIMIT and len(new_r) < SWEEP_LIMIT:
                break
        return zombies, removed

    # -- the mirror: this hub's read-only copy of the fleet -----------------------------

    async def load_mirror(
        self, registry: Registry, now: float, clock: Callable[[], float] | None = None
    ) -> int:
        """Fill ``registry`` with every node (at start, or after falling behind the log)."""
        self.mirror = registry
        if clock is not None:
            self._mirror_clock = clock
        last = await self._read(self.client.xrevrange(self.keys.log, count=1))
        self._log_last = last[0][0] if last else "0-0"
        ids = await self._read(self.client.zrange(self.keys.all, 0, -1))
        nodes = [n for n in await self._fetch(ids) if n is not None]
        present = set(ids)
        for node_id in [i for i in registry.get_nodes() if str(i) not in present]:
            registry.rm_node(node_id)
        self._apply(registry, nodes, [], now)
        max_id = await self._read(self.client.get(self.keys.next_id))
        registry.max_node_id = max(registry.max_node_id, int(max_id or 0))
        registry.drain_changes()
        return len(nodes)

    async def follow(self, registry: Registry, clock: Callable[[], float]) -> None:
        """Apply the change log to ``registry`` as it grows, until cancelled."""
        await self.follow_stream(
            lambda reader: self._follow_once(reader, registry, clock),
            "fleet state: cannot follow the change log",
        )

    async def follow_stream(self, step: Callable[[Client], Awaitable[None]], failing: str) -> None:
        """A follower: ``step`` (one blocking read and what it applies) on a reader of
        its own, again and again until cancelled; a failure is logged (``failing``) and
        tried again a second later; the reader is closed, bounded, on the way out."""
        reader = self.reader()
        try:
            while True:
                try:
                    await step(reader)
                except (RedisError, OSError, TimeoutError, StateUnavailable) as exc:
                    log.warning("%s: %s", failing, exc)
                    await asyncio.sleep(KEEP_EVERY)
        finally:
            await close_reader(reader)

    async def _follow_once(
        self, reader: Client, registry: Registry, clock: Callable[[], float]
    ) -> None:
        got: Any
        info: Any
        # One round trip: Redis runs the XINFO once the blocking XREAD has returned, so
        # it tells whether the log was trimmed past where this hub had read.
        async with asyncio.timeout(TIMEOUT + 1):
            pipe = reader.pipeline(transaction=False)
            pipe.xread(
                {self.keys.log: self._log_last}, count=MIRROR_BATCH, block=int(TIMEOUT * 1000 / 2)
            )
            pipe.xinfo_stream(self.keys.log)
            got, info = await pipe.execute(raise_on_error=False)
        if isinstance(got, Exception):
            raise got
        if not got:
            return
        if isinstance(info, Exception):
            raise info
        entries = got[0][1]
        if stream_id_before(self._log_last, info.get("max-deleted-entry-id", "0-0")):
            log.warning("fleet state: this hub fell behind the change log; reloading the fleet")
            await self.load_mirror(registry, clock())
            return
        self._log_last = entries[-1][0]
        # A node whose every entry here says its new status (and that this hub knows)
        # takes the last one; any other is read whole (registered, removed, edited).
        statuses: dict[str, str] = {}
        to_fetch: dict[str, None] = {}
        for _, fields in entries:
            node_id = fields["n"]
            if (status := fields.get("s")) is not None and node_id not in to_fetch:
                statuses[node_id] = status
            else:
                to_fetch[node_id] = None
                statuses.pop(node_id, None)
        now = clock()
        for node_id, status in statuses.items():
            node = registry.get_node_by_id(int(node_id))
            if node is None:
                to_fetch[node_id] = None
            elif node.status != (new := int(status)):
                registry.set_node_status(node.node_id, new, now)
        if to_fetch:
            ids = list(to_fetch)
            found = await self._fetch(ids)
            gone = [int(i) for i, n in zip(ids, found, strict=True) if n is None]
            self._apply(registry, [n for n in found if n is not None], gone, clock())
        registry.drain_changes()
        self.mirror_applied += len(entries)

    @staticmethod
    def _apply(registry: Registry, nodes: list[Node], gone: list[int], now: float) -> None:
        for node_id in gone:
            if node_id in registry:
                registry.rm_node(node_id)
        for node in nodes:
            mine = registry.get_node_by_id(node.node_id)
            if mine is None:
                status, node.status = node.status, 0
                registry.add_node(node, now)
                if status:
                    registry.set_node_status(node.node_id, status, now)
                continue
            info = {
                key: getattr(node, key)
                for key in ("name", "zone", "bt_port", "api_url", "files_url")
                if getattr(mine, key) != getattr(node, key)
            }
            if info:
                registry.update_info(node.node_id, **info)
            if mine.status != node.status:
                registry.set_node_status(node.node_id, node.status, now)


def stream_id_before(a: str, b: str) -> bool:
    """Stream id ``a`` < ``b`` (``ms-seq``)."""
    am, _, aseq = a.partition("-")
    bm, _, bseq = b.partition("-")
    return (int(am), int(aseq or 0)) < (int(bm), int(bseq or 0))


def _empty_stats() -> dict[str, int]:
    keys = ("nodes", "available", "idle", "zombies", "free_slots", "handed_out", "max_node_id")
    return dict.fromkeys(keys, 0)
