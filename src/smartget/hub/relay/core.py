"""co2's relay registry as pure logic: satellites, their statistics, the limiter's bucket.

Theory of operation
-------------------
No I/O and no clock: every call that depends on time takes ``now`` (seconds since the
epoch, since the seed reports ``ctime`` and the ``*_time`` fields as dates). The
asyncio driver (:mod:`smartget.hub.relay.service`) asks this registry who to notify
and who to ping, makes the calls, and reports each outcome back with ``note_*``.

A satellite (seed 004, ``x_relay_register``) is keyed by ``host_id = "ip:port"``, where
``ip`` is the caller's address: so a satellite can only register itself, and only the
address in a host_id may deregister it or relay as it (``x_relay_deregister``: "the
calling client's address must match the supplied host id"). Registering again with
the same ip and port refreshes nick, plugins and notify_pass and keeps the statistics.

Statistics are the props the seed lists for ``x_co2_get_satellite_props``. Ping times
are in milliseconds; ``ping_current`` (and min, max, avg) is -1 until a ping has
answered. ``ping_fails`` counts every failed ping; a satellite whose last
``ping_fails_limit`` pings all failed is dropped.

Every change is recorded; :meth:`SatelliteRegistry.drain_changes` hands the store the
rows to write and the host_ids to delete.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields

from smartget.errors import (
    ConfigError,
    RelayBusyError,
    RelayError,
    RelayFullError,
    RelayNotPermittedError,
    SatelliteNotFoundError,
)

__all__ = [
    "SATELLITE_FIELDS",
    "RelayBusyError",
    "RelayChanges",
    "RelayFullError",
    "RelayNotPermittedError",
    "Satellite",
    "SatelliteNotFoundError",
    "SatelliteRegistry",
    "host_id_of",
    "split_host_id",
]


def host_id_of(ip: str, port: int) -> str:
    """The seed's host id: ``"ip:port"``."""
    return f"{ip}:{port}"


def split_host_id(host_id: str) -> tuple[str, int]:
    """``"10.0.0.5:8000"`` -> ``("10.0.0.5", 8000)``; raises SatelliteNotFoundError if malformed."""
    ip, sep, port = host_id.rpartition(":")
    if not sep or not ip or not port.isdigit() or not 0 < int(port) <= 65535:
        raise SatelliteNotFoundError(f"malformed host_id {host_id[:80]!r}: expected 'ip:port'")
    return ip, int(port)


@dataclass(slots=True)
class Satellite:
    """One registered satellite and its statistics (seed: ``x_co2_get_satellite_props``)."""

    ip: str
    port: int
    nick: str
    plugins: list[str]
    notify_pass: str
    ctime: float
    ping_current: float = -1.0  # ms of the last answered ping, -1 if none yet
    ping_count: int = 0  # pings sent (answered or not)
    ping_min: float = -1.0
    ping_max: float = -1.0
    ping_total: float = 0.0  # sum of answered ping times, for the average
    ping_answered: int = 0
    ping_fails: int = 0  # failed pings in all
    ping_fails_in_row: int = 0  # failed pings since the last answer
    send_count: int = 0  # relay.relay calls by this satellite
    send_time: float = 0.0
    recv_count: int = 0  # notify calls to this satellite
    recv_time: float = 0.0  # last notify it accepted
    notify_fails: int = 0  # notify calls that failed or were dropped

    @property
    def host_id(self) -> str:
        return host_id_of(self.ip, self.port)

    @property
    def ping_avg(self) -> float:
        return self.ping_total / self.ping_answered if self.ping_answered else -1.0

    @property
    def url(self) -> str:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"http://{host}:{self.port}/"

    def raw(self) -> dict[str, object]:
        """Every statistic as plain numbers (times in seconds since the epoch); no secret."""
        return {
            "addr": [self.ip, self.port],
            "host_id": self.host_id,
            "nick": self.nick,
            "plugins": list(self.plugins),
            "ctime": self.ctime,
            "ping_current": self.ping_current,
            "ping_count": self.ping_count,
            "ping_min": self.ping_min,
            "ping_max": self.ping_max,
            "ping_avg": self.ping_avg,
            "ping_fails": self.ping_fails,
            "ping_fails_in_row": self.ping_fails_in_row,
            "send_count": self.send_count,
            "send_time": self.send_time,
            "recv_count": self.recv_count,
            "recv_time": self.recv_time,
            "notify_fails": self.notify_fails,
        }


# Every field of a Satellite, in its constructor's order: the columns of the relay's
# SQLite table (store.py) and the fields of its Redis record (records.py).
SATELLITE_FIELDS = tuple(f.name for f in fields(Satellite))


@dataclass(slots=True)
class RelayChanges:
    """Satellites to write and host_ids to delete since the last drain."""

    upserts: list[Satellite] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.upserts or self.deletes)


class SatelliteRegistry:
    """Registered satellites by host_id, in registration order."""

    def __init__(
        self, *, max_satellites: int = 100, ping_fails_limit: int = 3, max_per_ip: int = 1 << 30
    ) -> None:
        if max_satellites < 1 or ping_fails_limit < 1:
            raise ConfigError("max_satellites and ping_fails_limit must be >= 1")
        self.max_satellites = max_satellites
        self.ping_fails_limit = ping_fails_limit
        self.max_per_ip = max_per_ip
        self._sats: dict[str, Satellite] = {}
        self._per_ip: dict[str, int] = {}  # satellites per address (issue 12: no flooding)
        self._dirty: dict[str, Satellite | None] = {}
        self.dropped = 0  # satellites dropped for failing pings
        self.relayed = 0  # messages accepted from satellites

    def __len__(self) -> int:
        return len(self._sats)

    def __contains__(self, host_id: object) -> bool:
        return host_id in self._sats

    # -- registration (seed: x_relay_register, x_relay_deregister) --------------------

    def register(
        self,
        ip: str,
        port: int,
        now: float,
        *,
        nick: str = "",
        plugins: Iterable[str] = (),
        notify_pass: str = "",
    ) -> Satellite:
        """Register (or refresh) the satellite at ip:port; RelayFullError past the limit."""
        if not 0 < port <= 65535:
            raise RelayError(f"port must be from 1 to 65535, got {port}")
        host_id = host_id_of(ip, port)
        sat = self._sats.get(host_id)
        if sat is None:
            if len(self._sats) >= self.max_satellites:
                raise RelayFullError(
                    f"the relay is full: {len(self._sats)} of {self.max_satellites} "
                    "satellites registered (raise --relay-max-satellites)"
                )
            if self._per_ip.get(ip, 0) >= self.max_per_ip:
                raise RelayFullError(
                    f"{ip} already has {self.max_per_ip} satellites registered "
                    "(raise --relay-max-per-ip)"
                )
            self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
            sat = Satellite(ip, port, nick or host_id, list(plugins), notify_pass, ctime=now)
            self._sats[host_id] = sat
        else:
            sat.nick = nick or host_id
            sat.plugins = list(plugins)
            sat.notify_pass = notify_pass
            sat.ping_fails_in_row = 0
        self._dirty[host_id] = sat
        return sat

    def deregister(self, host_id: str, caller_ip: str | None) -> Satellite:
        """Remove a satellite; only a caller at its own address may."""
        sat = self.check_owner(host_id, caller_ip)
        return self._remove(sat)

    def check_owner(self, host_id: str, caller_ip: str | None) -> Satellite:
        """The satellite ``host_id``, if ``caller_ip`` is its address (seed: the caller's
        address must match the supplied host id)."""
        sat = self.get(host_id)
        if caller_ip != sat.ip:
            who = "an anonymous call" if caller_ip is None else f"a caller at {caller_ip}"
            raise RelayNotPermittedError(
                f"{who} may not act for satellite {host_id}: only {sat.ip} may"
            )
        return sat

    def get(self, host_id: str) -> Satellite:
        sat = self._sats.get(host_id)
        if sat is None:
            split_host_id(host_id)  # a clearer message for a malformed id
            raise SatelliteNotFoundError(f"no satellite {host_id[:80]!r} is registered")
        return sat

    def host_ids(self) -> list[str]:
        return list(self._sats)

    def satellites(self) -> list[Satellite]:
        return list(self._sats.values())

    def _remove(self, sat: Satellite) -> Satellite:
        del self._sats[sat.host_id]
        self._dirty[sat.host_id] = None
        left = self._per_ip.get(sat.ip, 1) - 1
        if left > 0:
            self._per_ip[sat.ip] = left
        else:
            self._per_ip.pop(sat.ip, None)
        return sat

    def _count(self, sat: Satellite) -> None:
        self._per_ip[sat.ip] = self._per_ip.get(sat.ip, 0) + 1

    # -- relaying (seed: x_relay_relay, _relay_real) --------------------------------

    def accept_relay(self, host_id: str, caller_ip: str | None, now: float) -> Satellite:
        """A satellite relays a message: check the caller is that satellite and count it.
        Who receives it is decided when it leaves the queue (:meth:`recipients`)."""
        sender = self.check_owner(host_id, caller_ip)
        sender.send_count += 1
        sender.send_time = now
        self.relayed += 1
        self._dirty[host_id] = sender
        return sender

    def recipients(self, sender_id: str) -> list[Satellite]:
        """Every registered satellite but the sender (now; some may have left since)."""
        return [sat for hid, sat in self._sats.items() if hid != sender_id]

    def note_notify(self, host_id: str, ok: bool, now: float) -> None:
        """A notify call to ``host_id`` ended (``ok``) or failed or was dropped."""
        sat = self._sats.get(host_id)
        if sat is None:
            return  # left while the call was under way
        if ok:
            sat.recv_count += 1
            sat.recv_time = now
        else:
            sat.notify_fails += 1
        self._dirty[host_id] = sat

    # -- the pinger (seed: _ping) ----------------------------------------------------

    def note_ping(self, host_id: str, rtt_ms: float | None) -> Satellite | None:
        """Record a ping (``rtt_ms`` None if it failed); return the satellite if that
        failure was its ``ping_fails_limit``-th in a row, and so dropped it."""
        sat = self._sats.get(host_id)
        if sat is None:
            return None
        sat.ping_count += 1
        self._dirty[host_id] = sat
        if rtt_ms is None:
            sat.ping_fails += 1
            sat.ping_fails_in_row += 1
            if sat.ping_fails_in_row >= self.ping_fails_limit:
                self.dropped += 1
                return self._remove(sat)
            return None
        sat.ping_fails_in_row = 0
        sat.ping_current = rtt_ms
        sat.ping_min = rtt_ms if sat.ping_min < 0 else min(sat.ping_min, rtt_ms)
        sat.ping_max = max(sat.ping_max, rtt_ms)
        sat.ping_total += rtt_ms
        sat.ping_answered += 1
        return None

    # -- persistence ---------------------------------------------------------------

    def restore(self, satellites: Iterable[Satellite]) -> None:
        """Load persisted satellites (start-up); they count against no limit."""
        for sat in satellites:
            if sat.host_id not in self._sats:
                self._count(sat)
            self._sats[sat.host_id] = sat

    def adopt(self, sat: Satellite) -> None:
        """Add a satellite as it is (from a co2 dump), to be saved."""
        if sat.host_id not in self._sats:
            self._count(sat)
        self._sats[sat.host_id] = sat
        self._dirty[sat.host_id] = sat

    def replace_all(self, satellites: Iterable[Satellite]) -> list[Satellite]:
        """Become a copy of the fleet's satellites, in the order given (Redis: this hub's
        mirror); nothing is marked to save. Returns the satellites that left."""
        kept = {sat.host_id: sat for sat in satellites}
        gone = [sat for host_id, sat in self._sats.items() if host_id not in kept]
        self._sats = kept
        self._per_ip = {}
        for sat in kept.values():
            self._count(sat)
        for sat in gone:
            self._dirty.pop(sat.host_id, None)
        return gone

    def mirror(self, sat: Satellite) -> Satellite:
        """Take one satellite as the fleet holds it (a registration through this hub);
        a registered one with that host_id is updated in place. Nothing to save."""
        known = self._sats.get(sat.host_id)
        if known is None:
            self._count(sat)
            self._sats[sat.host_id] = sat
            return sat
        for f in fields(Satellite):
            setattr(known, f.name, getattr(sat, f.name))
        return known

    def unmirror(self, host_id: str) -> Satellite | None:
        """A satellite the fleet no longer has (deregistered or dropped through any hub)."""
        sat = self._sats.get(host_id)
        if sat is None:
            return None
        self._remove(sat)
        self._dirty.pop(host_id, None)
        return sat

    def drain_changes(self) -> RelayChanges:
        changes = RelayChanges()
        for host_id, sat in self._dirty.items():
            if sat is None:
                changes.deletes.append(host_id)
            else:
                changes.upserts.append(sat)
        self._dirty.clear()
        return changes

    def statistics(self) -> dict[str, int]:
        return {
            "satellites": len(self._sats),
            "max_satellites": self.max_satellites,
            "relayed": self.relayed,
            "dropped": self.dropped,
        }
