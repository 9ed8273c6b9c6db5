"""The relay's asyncio driver: XML-RPC calls in, notifies and pings out.

:class:`RelayService` owns the :class:`~smartget.hub.relay.core.SatelliteRegistry` and
runs, in one ``TaskGroup`` (:meth:`RelayService.run`):

* the **limiter** (seed: "this actually only puts the data into the limiter.Limiter's
  queue"): ``relay.relay`` puts the message in the :class:`~smartget.hub.relay.outbox.Outbox`
  (bounded by ``queue``, a busy fault when it is full, so nothing accepted is ever
  dropped by the limiter) and answers 'OK' once the store's group commit holds it, so
  an acknowledged message survives ``kill -9``. The dispatcher takes committed messages
  in order at ``rate`` a second and hands each to its recipients' mailboxes;
* one **mailbox** per satellite: a small queue and a worker that calls its
  ``notify(dict)`` one message at a time, in order, each call with a deadline. A slow or
  dead satellite fills only its own mailbox (further messages to it are counted as
  failed notifies), so it never holds up the others (seed: ``_relay_real``, "exceptions
  thrown when making the call to a satellite are logged and ignored"). Each outcome is
  reported to the outbox; its progress is committed within ``PROGRESS_DELAY``, with
  everything else that ended meanwhile (or sooner, along with newly accepted messages);
* the **pinger**: every ``ping_interval`` it calls every satellite's ``ping`` at once,
  each with a deadline, and drops a satellite after ``ping_fails`` failures in a row;
* the **flusher**: statistics go to the store at most once a second.

Registrations are saved, and awaited, before their reply leaves. After a restart,
messages a recipient has not had yet go out first, in order; delivery is at least once
(see :mod:`smartget.hub.relay.outbox`).

On Redis (:meth:`RelayService.share`, :mod:`smartget.hub.state.relay`) the satellites
and the outbox are the fleet's: registrations and accepted messages go to Redis (each
one atomic step there, before the reply), this hub's registry is a mirror of the
fleet's satellites (reloaded when their version moves, checked on every call), and only
the hub holding the fleet's lease delivers and pings: it loads the outbox from Redis
when it takes the lease and follows it, and writes its progress back there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import platform
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import prometheus_client as prom
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from smartget import __version__
from smartget.auth import write_private
from smartget.config import setting
from smartget.errors import RelayError, StoreError
from smartget.hub.relay import store as relay_store
from smartget.hub.relay.client import CallFailed, SatelliteClient
from smartget.hub.relay.core import (
    RelayBusyError,
    Satellite,
    SatelliteRegistry,
)
from smartget.hub.relay.dump import dump_satellites, load_satellites_dump
from smartget.hub.relay.methods import Dispatcher, to_datetime
from smartget.hub.relay.outbox import Message, Outbox
from smartget.hub.relay.records import merge_record, satellite_record
from smartget.hub.relay.xmlrpc import (
    APPLICATION_ERROR,
    BUSY,
    INTERNAL_ERROR,
    MAX_REQUEST_BYTES,
    XmlRpcError,
    dump_fault,
    dump_response,
    parse_request,
)
from smartget.hub.store import Store, Write
from smartget.ratelimit import TokenBucket

if TYPE_CHECKING:
    from smartget.hub.state.relay import RedisRelay

__all__ = ["RelayService", "RelaySettings"]

log = logging.getLogger(__name__)

STATS_FLUSH_INTERVAL = 1.0
# Delivery progress is committed at most this long after a notify ends, one commit for
# all that ended meanwhile (accepts commit it sooner). A crash within it means those
# messages go out again: at least once.
PROGRESS_DELAY = 0.1
PING_CONCURRENCY = 64
LOAD_BATCH = 500  # messages the deliverer loads from Redis at a time
LEAD_CHECK = 0.25  # seconds between looks at the lease while this hub does not deliver


@dataclass(frozen=True)
class RelaySettings:
    """The relay's knobs: each field makes ``smartget hub --relay-FIELD`` (config.setting)."""

    max_satellites: int = setting(
        100,
        "Satellites that may be registered at once; relay.register past it is a fault.",
        min=1,
        max=2**31 - 1,
    )
    ping_interval: float = setting(
        60.0, "Seconds between two rounds of pings to every satellite.", min=0.05
    )
    ping_timeout: float = setting(10.0, "Seconds a satellite has to answer a ping.", min=0.05)
    ping_fails: int = setting(3, "Failed pings in a row after which a satellite is dropped.", min=1)
    notify_timeout: float = setting(
        10.0, "Seconds a satellite has to take one relayed message (its notify call).", min=0.05
    )
    queue: int = setting(
        1000,
        "Accepted messages not yet delivered to every satellite (kept in the store, so "
        "they survive a restart); past it relay.relay answers a 'busy' fault.",
        min=1,
    )
    rate: float = setting(100.0, "Messages relayed a second.", min=0.001)
    mailbox: int = setting(
        100,
        "Messages waiting for one slow satellite before further ones to it are dropped.",
        min=1,
    )
    max_request: int = setting(
        MAX_REQUEST_BYTES, "Largest XML-RPC request body, in bytes.", min=1024
    )
    require_token: bool = setting(
        True,
        "Require the hub's token on /RPC2 (satellites call http://relay:TOKEN@HOST/RPC2). "
        "--relay-open lets anyone register and relay, as co2 did; only on a trusted network.",
        flag="--relay-require-token/--relay-open",
    )
    max_per_ip: int = setting(
        8, "Satellites one address may register; relay.register past it is a fault.", min=1
    )
    import_file: Path | None = setting(
        None,
        "A co2 satellite dump (XML) to register satellites from at start.",
        click_type=click.Path(dir_okay=False, exists=True, path_type=Path),
        flag="--relay-import",
        show_default=False,
    )
    export_file: Path | None = setting(
        None,
        "Write a co2 satellite dump (XML, mode 0600) here on exit.",
        click_type=click.Path(dir_okay=False, path_type=Path),
        flag="--relay-export",
        show_default=False,
    )
    drain_timeout: float = 5.0  # on stop, how long queued messages may still go out
    maintainer: str = setting("", "Shown by system.get_properties.", show_default=False)
    maintainer_email: str = setting("", "Shown by system.get_properties.", show_default=False)


class _Mailbox:
    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[Message] = asyncio.Queue(size)
        self.worker: asyncio.Task[None] | None = None
        self.dropped = 0


class RelayService:
    """The relay registry in the hub: call :meth:`restore_now`, run :meth:`run` in a task,
    serve :meth:`handle` at ``/RPC2``, and :meth:`aclose` on the way out."""

    def __init__(
        self,
        settings: RelaySettings,
        store: Store,
        *,
        metrics: prom.CollectorRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.registry = SatelliteRegistry(
            max_per_ip=settings.max_per_ip,
            max_satellites=settings.max_satellites,
            ping_fails_limit=settings.ping_fails,
        )
        self.dispatcher = Dispatcher(self)
        self.client = SatelliteClient()
        self.bucket = TokenBucket(settings.rate)
        self.outbox = Outbox(settings.queue)
        # Messages to dispatch, in order, with the commit that holds them (None: restored).
        # Unbounded here: the outbox bounds them.
        self._queue: asyncio.Queue[tuple[Message, asyncio.Future[None] | None]] = asyncio.Queue()
        self._mailboxes: dict[str, _Mailbox] = {}
        self._tasks: asyncio.TaskGroup | None = None
        self._progress_due = asyncio.Event()
        self._stop = asyncio.Event()
        self._stopped = asyncio.Event()
        self.started = time.time()
        self._host = _host_properties()
        self.counts = {
            "calls": 0,
            "faults": 0,
            "busy": 0,
            "notify_ok": 0,
            "notify_failed": 0,
            "notify_dropped": 0,
            "ping_ok": 0,
            "ping_failed": 0,
        }
        # On Redis (share()): the fleet's satellites and outbox; deliveries by the hub
        # that holds the fleet's lease (``leading``).
        self.shared: RedisRelay | None = None
        self._leading: Callable[[], bool] = lambda: True
        self._version = -1  # the fleet's satellites' version this hub's mirror is at
        self.delivering = False  # this hub delivers the fleet's messages now (Redis)
        self._loaded_seq = 0  # the last message the deliverer loaded
        self.metrics = metrics
        if metrics is not None:
            self._calls = prom.Counter(
                "smartget_relay_calls", "Relay XML-RPC calls", ["method"], registry=metrics
            )
            self._faults = prom.Counter(
                "smartget_relay_faults", "Relay XML-RPC faults", ["code"], registry=metrics
            )
            metrics.register(_RelayCollector(self))

    # -- start, run, stop ---------------------------------------------------------------

    async def share(self, shared: RedisRelay, leading: Callable[[], bool]) -> int:
        """Use the fleet's satellites and outbox in Redis (before :meth:`run`); this hub
        delivers while ``leading()``. Imports ``--relay-import`` there. Returns the
        number of satellites."""
        self.shared = shared
        self._leading = leading
        await self.refresh()
        if self.settings.import_file is not None:
            added = 0
            for sat in load_satellites_dump(self.settings.import_file.read_bytes()):
                done = await shared.adopt(sat, self.registry.max_satellites)
                if done == "full":
                    log.warning(
                        "relay: full; %s and later satellites of the dump skipped", sat.host_id
                    )
                    break
                added += done == "ok"
            log.info("relay: %d satellites imported from a dump into the fleet's", added)
            await self.refresh()
        return len(self.registry)

    async def refresh(self, host_id: str | None = None) -> None:
        """Redis: bring the mirror up to date (every satellite if their version moved;
        else ``host_id``'s statistics). Nothing to do on SQLite."""
        if self.shared is None:
            return
        version, record = await self.shared.version(host_id)
        if version != self._version:
            await self._reload()
        elif record is not None and host_id is not None and host_id in self.registry:
            merge_record(self.registry.get(host_id), record, delivering=self.delivering)

    async def _reload(self) -> None:
        assert self.shared is not None
        if self.delivering:  # its statistics first: the reload brings them back
            await self.save()
        version, sats = await self.shared.satellites()
        if self.delivering:  # keep what this hub counted (newer than Redis's)
            for at, sat in enumerate(sats):
                if sat.host_id in self.registry:
                    known = self.registry.get(sat.host_id)
                    merge_record(known, satellite_record(sat), delivering=True)
                    sats[at] = known
        for sat in self.registry.replace_all(sats):
            self.forget(sat)
        self._version = version

    # -- Redis: the deliverer -------------------------------------------------------------

    async def _lead_forever(self) -> None:
        """Redis: deliver the fleet's messages while this hub holds the lease."""
        from smartget.hub.state.redisengine import close_reader  # Redis only

        assert self.shared is not None
        reader = self.shared.engine.reader()
        wake = "0-0"
        try:
            while True:
                try:
                    if not self._leading():
                        if self.delivering:
                            self._stop_delivering()
                        # A timer: the keeper tries the lease every second.
                        await asyncio.sleep(LEAD_CHECK)
                        continue
                    if not self.delivering:
                        wake = await self.shared.last_wake()
                        await self._start_delivering()
                    await self._load_messages()
                    wake = await self.shared.wait_wake(reader, wake)
                except StoreError as exc:
                    log.warning("relay: cannot follow the fleet's outbox: %s", exc)
                    await asyncio.sleep(LEAD_CHECK)
        finally:
            if self.delivering:
                self._stop_delivering()
            await close_reader(reader)

    async def _start_delivering(self) -> None:
        self._version = -1  # the fleet's statistics as they are, then counted here
        await self.refresh()
        self.outbox = Outbox(self.settings.queue)
        self._loaded_seq = 0
        self.delivering = True
        log.info("relay: this hub delivers the fleet's messages now")

    def _stop_delivering(self) -> None:
        """The lease is lost: what is under way is left to the next deliverer (at least
        once), nothing more is written."""
        self.delivering = False
        for box in self._mailboxes.values():
            if box.worker is not None:
                box.worker.cancel()
        self._mailboxes.clear()
        self.outbox = Outbox(self.settings.queue)
        while not self._queue.empty():
            self._queue.get_nowait()
            self._queue.task_done()
        self.registry.drain_changes()
        log.info("relay: this hub no longer delivers the fleet's messages")

    async def _load_messages(self) -> None:
        """Take the messages accepted since the last load (any hub), to deliver."""
        assert self.shared is not None
        loaded: list[Message] = []
        while len(self.outbox) + len(loaded) < self.settings.queue:
            batch = await self.shared.messages(
                self._loaded_seq, LOAD_BATCH, relay_store.MAX_STORED_MESSAGE
            )
            if not batch:
                break
            loaded += batch
            self._loaded_seq = batch[-1].seq
            if len(batch) < LOAD_BATCH:
                break
        # After the messages: every satellite registered before them is in the mirror.
        await self.refresh()
        if not loaded or not self.delivering:
            return
        for msg in self.outbox.restore(loaded, self.registry.host_ids()):
            self._queue.put_nowait((msg, None))
        self._progress()

    def restore_now(self) -> int:
        """Create the tables, load the satellites and the messages not yet delivered to
        every recipient (start-up; blocks briefly). Returns the number of satellites.
        On Redis (:meth:`share`) the fleet's were loaded already."""
        if self.shared is not None:
            return len(self.registry)
        sats = self.store.read_now(relay_store.load_satellites)
        self.registry.restore(sats)
        if self.settings.import_file is not None:
            self.import_dump(self.settings.import_file.read_bytes())
        messages, last_seq = self.store.read_now(relay_store.load_messages)
        self.outbox.last_seq = max(self.outbox.last_seq, last_seq)
        for msg in self.outbox.restore(messages, self.registry.host_ids()):
            self._queue.put_nowait((msg, None))  # before anything accepted from now on
        if messages:
            log.info(
                "relay: %d undelivered messages restored (seq %d to %d), %d to deliver",
                len(messages),
                messages[0].seq,
                messages[-1].seq,
                self._queue.qsize(),
            )
        return len(sats)

    def import_dump(self, data: bytes) -> int:
        """Register the satellites of a co2 dump (relay/dump.py); returns how many were new.

        A satellite already registered keeps its state; past max_satellites the rest are
        skipped with a warning. They are saved by the next flush.
        """
        added = 0
        for sat in load_satellites_dump(data):
            if sat.host_id in self.registry:
                continue
            if len(self.registry) >= self.registry.max_satellites:
                log.warning("relay: full; %s and later satellites of the dump skipped", sat.host_id)
                break
            self.registry.adopt(sat)
            added += 1
        log.info("relay: %d satellites imported from a dump", added)
        return added

    def export_dump(self) -> bytes:
        """A co2 satellite dump of every registered satellite (with its notify_pass)."""
        return dump_satellites(self.registry.satellites())

    async def run(self) -> None:
        """The dispatcher, the pinger, the flusher and the mailboxes, until :meth:`aclose`."""
        self._progress()  # restored messages that nobody is left to receive
        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                children = [
                    tasks.create_task(self._dispatch_forever(), name="relay-dispatch"),
                    tasks.create_task(self._ping_forever(), name="relay-pinger"),
                    tasks.create_task(self._flush_forever(), name="relay-flush"),
                    tasks.create_task(self._progress_forever(), name="relay-progress"),
                ]
                if self.shared is not None:
                    children.append(tasks.create_task(self._lead_forever(), name="relay-lead"))
                await self._stop.wait()
                for task in children:
                    task.cancel()
                for box in self._mailboxes.values():
                    if box.worker is not None:
                        box.worker.cancel()
        finally:
            self._tasks = None
            self._stopped.set()

    async def aclose(self) -> None:
        """Let queued messages go out (up to drain_timeout), stop, save the statistics."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.drain_timeout):
                await self.wait_idle()
        self._stop.set()
        if self._tasks is not None:
            await self._stopped.wait()
        try:
            await self.save()
            await self._write_progress()
        except StoreError as exc:
            log.error("relay: could not save statistics on the way out: %s", exc)
        if self.settings.export_file is not None:
            write_private(self.settings.export_file, self.export_dump())
            log.info("relay: satellite dump written to %s", self.settings.export_file)
        await self.client.aclose()

    async def wait_idle(self) -> None:
        """Wait until the limiter's queue and every mailbox are empty and answered, and
        that progress is committed."""
        await self._queue.join()
        for box in list(self._mailboxes.values()):
            await box.queue.join()
        await self._write_progress()

    # -- the backend of the methods ---------------------------------------------------

    def wall(self) -> float:
        return time.time()

    async def save(self) -> None:
        """Commit the registry's changes and wait until they are durable (on Redis, the
        deliverer's statistics; registrations went there when they were made)."""
        if self.shared is not None:
            changes = self.registry.drain_changes()
            if self.delivering and changes.upserts:
                await self.shared.save_stats(changes.upserts)
            return
        if changes := self.registry.drain_changes():
            # shielded: a caller that goes away must not cancel the store's shared future
            await asyncio.shield(self.store.submit(relay_store.save_changes(changes)))

    async def register(
        self, ip: str, port: int, *, nick: str, plugins: list[str], notify_pass: str
    ) -> Satellite:
        """Register (or refresh) the satellite at ip:port; saved before this returns."""
        if self.shared is None:
            sat = self.registry.register(
                ip, port, self.wall(), nick=nick, plugins=plugins, notify_pass=notify_pass
            )
            await self.save()
            return sat
        if not 0 < port <= 65535:
            raise RelayError(f"port must be from 1 to 65535, got {port}")
        fresh = await self.shared.register(
            ip, port, self.wall(), nick=nick, plugins=plugins, notify_pass=notify_pass,
            max_satellites=self.registry.max_satellites, max_per_ip=self.registry.max_per_ip,
        )  # fmt: skip
        if fresh.host_id in self.registry:  # a refresh: the deliverer keeps its counts
            known = self.registry.get(fresh.host_id)
            merge_record(known, satellite_record(fresh), delivering=self.delivering)
            return known
        return self.registry.mirror(fresh)

    async def deregister(self, host_id: str, caller_ip: str | None) -> Satellite:
        """Remove a satellite (only its own address may); saved before this returns."""
        if self.shared is None:
            sat = self.registry.deregister(host_id, caller_ip)
            self.forget(sat)
            await self.save()
            return sat
        sat = self.registry.check_owner(host_id, caller_ip)
        await self.shared.deregister(host_id, caller_ip)
        self.registry.unmirror(host_id)
        self.forget(sat)
        return sat

    def enqueue(self, sender: Satellite, message: dict[str, Any]) -> Awaitable[None]:
        """Accept a message into the outbox; RelayBusyError if it is full. Await the
        result before answering: it resolves once the message is committed (StoreError
        if that failed; the message is then not sent). On Redis, the fleet's outbox:
        the awaitable raises RelayBusyError when that is full."""
        if self.shared is not None:
            return asyncio.ensure_future(self._accept_shared(sender, dict(message)))
        if self.outbox.full:
            self.counts["busy"] += 1
            raise RelayBusyError(
                f"the relay is busy: {len(self.outbox)} messages are waiting "
                f"(--relay-queue) and go out at {self.settings.rate:g} a second "
                "(--relay-rate); try again later"
            )
        recipients = [sat.host_id for sat in self.registry.recipients(sender.host_id)]
        msg = self.outbox.accept(sender.host_id, dict(message), recipients, self.wall())
        try:
            # One write per transaction for every message accepted meanwhile (group commit).
            saved = self.store.submit_later(self._outbox_write)
        except StoreError:
            self.outbox.discard(msg)
            raise
        self._queue.put_nowait((msg, saved))
        return asyncio.shield(saved)

    async def _accept_shared(self, sender: Satellite, message: dict[str, Any]) -> None:
        assert self.shared is not None
        try:
            await self.shared.accept(
                sender.host_id, sender.ip, message, self.wall(), self.settings.queue
            )
        except RelayBusyError:
            self.counts["busy"] += 1
            raise

    async def _write_progress(self) -> None:
        """Have the outbox's changes written (and wait for it)."""
        if self.shared is None:
            await asyncio.shield(self.store.submit_later(self._outbox_write))
            return
        changes = self.outbox.drain_changes()
        if self.delivering and changes:  # a former deliverer's are the new one's now
            await self.shared.progress(changes)

    def _outbox_write(self) -> Write | None:
        changes = self.outbox.drain_changes()
        return relay_store.save_outbox(changes) if changes else None

    def _progress(self) -> None:
        """The outbox changed: have it written soon (PROGRESS_DELAY)."""
        self._progress_due.set()

    async def _progress_forever(self) -> None:
        while True:
            await self._progress_due.wait()
            await asyncio.sleep(PROGRESS_DELAY)  # a timer: gather outcomes into one commit
            self._progress_due.clear()
            try:
                await self._write_progress()
            except StoreError as exc:  # the rows stay: delivered again after a restart
                log.error("relay: could not save delivery progress: %s", exc)

    def forget(self, sat: Satellite) -> None:
        """A satellite left: stop its mailbox; it is done with every message."""
        box = self._mailboxes.pop(sat.host_id, None)
        if box is not None and box.worker is not None:
            box.worker.cancel()
        self.outbox.forget(sat.host_id)
        self._progress()

    def properties(self) -> dict[str, Any]:
        """system.get_properties (seed: every field of x_sys_get_properties)."""
        now = self.wall()
        return {
            **self._host,
            "maintainer": self.settings.maintainer,
            "maintainer_email": self.settings.maintainer_email,
            "uptime": int(now - self.started),
            "start_time": to_datetime(self.started),
            "server_time": to_datetime(now),
            "plugins": ["relay"],
        }

    # -- XML-RPC ------------------------------------------------------------------------

    async def handle(self, body: bytes, caller_ip: str | None) -> bytes:
        """One XML-RPC request body -> the response body (a value or a fault, never raises)."""
        self.counts["calls"] += 1
        method = "unparsed"
        try:
            call = parse_request(body, max_bytes=self.settings.max_request)
            method = call.method if call.method in self.dispatcher.by_name else "unknown"
            if self.shared is not None:  # the fleet's satellites as they are now
                await self.refresh(_named_host(call.params))
            result = await self.dispatcher.call(call.method, call.params, caller_ip)
            reply = dump_response(result)
        except XmlRpcError as exc:
            return self._fault(method, exc.code, str(exc))
        except RelayBusyError as exc:
            return self._fault(method, BUSY, str(exc))
        except RelayError as exc:
            return self._fault(method, APPLICATION_ERROR, str(exc))
        except StoreError as exc:
            return self._fault(method, INTERNAL_ERROR, f"the hub could not save: {exc}")
        except Exception:
            log.exception("relay: %s failed", method)
            return self._fault(method, INTERNAL_ERROR, "internal error (the hub logged it)")
        finally:
            if self.metrics is not None:
                self._calls.labels(method).inc()
        return reply

    def _fault(self, method: str, code: int, message: str) -> bytes:
        self.counts["faults"] += 1
        if self.metrics is not None:
            self._faults.labels(str(code)).inc()
        log.debug("relay: %s -> fault %d: %s", method, code, message)
        return dump_fault(code, message)

    # -- relaying -----------------------------------------------------------------------

    async def _dispatch_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            message, saved = await self._queue.get()
            try:
                if saved is not None and not await self._committed(message, saved):
                    continue
                # The limiter's rate: wait for the token (a timer, not a synchronisation).
                if (delay := self.bucket.take(1, loop.time())) > 0:
                    await asyncio.sleep(delay)
                if not self.outbox.holds(message):  # Redis: this hub stopped delivering
                    continue
                for hid in list(message.pending):
                    if hid not in self.registry:  # left since; forget() normally did this
                        self.outbox.done(message, hid)
                for sat in self.registry.satellites():  # in registration order
                    if sat.host_id in message.pending:
                        self._post(sat, message)
                self.outbox.dispatched(message)
                self._progress()
            except Exception:  # a bug here must not take the hub down with it
                log.exception("relay: dispatching a message from %s failed", message.sender)
            finally:
                self._queue.task_done()

    async def _committed(self, message: Message, saved: asyncio.Future[None]) -> bool:
        """Wait for the message's commit: only what its sender was told 'OK' goes out."""
        try:
            await asyncio.shield(saved)
        except StoreError:
            self.outbox.discard(message)  # its sender got a fault instead of 'OK'
            return False
        return True

    def _post(self, sat: Satellite, message: Message) -> None:
        box = self._mailboxes.get(sat.host_id)
        if box is None:
            box = self._mailboxes[sat.host_id] = _Mailbox(self.settings.mailbox)
        if box.worker is None or box.worker.done():
            assert self._tasks is not None
            box.worker = self._tasks.create_task(
                self._deliver_forever(sat.host_id, box), name=f"relay-notify-{sat.host_id}"
            )
        try:
            box.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.counts["notify_dropped"] += 1
            self.registry.note_notify(sat.host_id, False, self.wall())
            self.outbox.done(message, sat.host_id)  # failed for good: not kept for later
            box.dropped += 1
            if box.dropped % 100 == 1:  # the first of a run, then one line per 100
                log.warning(
                    "relay: %s is not keeping up (%d notifies waiting, --relay-mailbox): "
                    "%d messages to it dropped so far",
                    sat.host_id,
                    box.queue.qsize(),
                    box.dropped,
                )

    async def _deliver_forever(self, host_id: str, box: _Mailbox) -> None:
        while True:
            message = await box.queue.get()
            try:
                try:
                    await self._notify(host_id, message)
                except Exception:  # a bug here must not take the hub down with it
                    log.exception("relay: notify of %s failed unexpectedly", host_id)
                    self.counts["notify_failed"] += 1
                # Done, whatever the outcome (a failed notify is not retried, as in co2),
                # but not when cancelled: the hub stopping leaves it for the next start.
                self.outbox.done(message, host_id)
                self._progress()
            finally:
                box.queue.task_done()

    async def _notify(self, host_id: str, message: Message) -> None:
        if host_id not in self.registry:
            return
        sat = self.registry.get(host_id)
        params = {**message.params, "notify_pass": sat.notify_pass}
        try:
            await self.client.call(sat.url, "notify", params, self.settings.notify_timeout)
        except CallFailed as exc:
            self.counts["notify_failed"] += 1
            self.registry.note_notify(host_id, False, self.wall())
            log.warning(
                "relay: notify of %s failed (message from %s): %s", host_id, message.sender, exc
            )
        else:
            self.counts["notify_ok"] += 1
            self.registry.note_notify(host_id, True, self.wall())

    # -- pinging ------------------------------------------------------------------------

    async def _ping_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.ping_interval)
            try:
                await self.ping_all()
            except Exception:  # a bug here must not take the hub down with it
                log.exception("relay: a round of pings failed unexpectedly")

    async def ping_all(self) -> None:
        """One round: ping every satellite at once, record, drop the dead ones (on
        Redis, the deliverer only)."""
        if self.shared is not None and not self.delivering:
            return
        sats = self.registry.satellites()
        if not sats:
            return
        limit = asyncio.Semaphore(PING_CONCURRENCY)
        results = await asyncio.gather(*(self._ping(sat, limit) for sat in sats))
        for sat, rtt_ms in zip(sats, results, strict=True):
            dropped = self.registry.note_ping(sat.host_id, rtt_ms)
            if dropped is not None:
                self.forget(dropped)
                if self.shared is not None:
                    try:
                        await self.shared.deregister(dropped.host_id, None)
                    except RelayError:  # deregistered meanwhile, through another hub
                        pass
                    except StoreError as exc:
                        log.error("relay: could not drop %s: %s", dropped.host_id, exc)
                log.warning(
                    "relay: satellite %s (%s) dropped: %d pings in a row failed",
                    dropped.host_id,
                    dropped.nick,
                    dropped.ping_fails_in_row,
                )
        try:
            await self.save()
        except StoreError as exc:
            log.error("relay: could not save ping results: %s", exc)

    async def _ping(self, sat: Satellite, limit: asyncio.Semaphore) -> float | None:
        loop = asyncio.get_running_loop()
        async with limit:
            start = loop.time()
            try:
                await self.client.call(sat.url, "ping", {}, self.settings.ping_timeout)
            except CallFailed as exc:
                if exc.fault is None:
                    self.counts["ping_failed"] += 1
                    log.info("relay: ping of %s failed: %s", sat.host_id, exc)
                    return None
                # A fault is an answer: the satellite is alive.
            self.counts["ping_ok"] += 1
            return (loop.time() - start) * 1000.0

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(STATS_FLUSH_INTERVAL)
            try:
                await self.save()
            except StoreError as exc:
                log.error("relay: could not save statistics: %s", exc)

    # -- observability ------------------------------------------------------------------

    def statistics(self) -> dict[str, int]:
        return {
            **self.registry.statistics(),
            **self.counts,
            "queued": self._queue.qsize(),
            "undelivered": len(self.outbox),
            "last_seq": self.outbox.last_seq,
            "waiting_notifies": sum(b.queue.qsize() for b in self._mailboxes.values()),
        }


class _RelayCollector(Collector):
    def __init__(self, relay: RelayService) -> None:
        self.relay = relay

    def collect(self) -> Any:
        stats = self.relay.statistics()
        for key in ("satellites", "queued", "undelivered", "waiting_notifies"):
            yield GaugeMetricFamily(f"smartget_relay_{key}", f"Relay: {key}", value=stats[key])
        for key in (
            "relayed",
            "dropped",
            "busy",
            "notify_ok",
            "notify_failed",
            "notify_dropped",
            "ping_ok",
            "ping_failed",
        ):
            yield GaugeMetricFamily(
                f"smartget_relay_{key}_count", f"Relay: {key} since start", value=stats[key]
            )


def _named_host(params: tuple[Any, ...]) -> str | None:
    """The host_id a call names, if any (its statistics are read fresh on Redis)."""
    if params and isinstance(params[0], dict):
        host_id = params[0].get("host_id")
        if isinstance(host_id, str) and 0 < len(host_id) <= 300:
            return host_id
    return None


def _host_properties() -> dict[str, Any]:
    """The fixed part of system.get_properties, gathered once."""
    uname = platform.uname()
    return {
        "co2_author": "SmartGet (after co2's relay registry)",
        "co2_version": __version__,
        "kernel": f"{uname.system} {uname.release}",
        "operating_system": platform.platform(terse=True),
        "sw_platform": f"{platform.python_implementation()} {platform.python_version()}",
        "hw_platform": uname.machine,
        "hardware": uname.machine,
        "processor": uname.processor or uname.machine,
        "host": socket.gethostname(),
    }
