"""co2's relay on Redis: the satellites and the outbox are the fleet's (issue 13).

::

    relay.register ─────> sg relay register (one step: caps, order, version)
    relay.deregister ───> sg relay deregister (owner checked in the step)
    relay.relay ────────> sg relay accept: owner, queue and bytes caps, INCR the seq,
      (any hub)           the message, its recipients (every other satellite now),
                          send_count, XADD P rl:log (a wake-up): one atomic step
    every call ─────────> GET P rl:ver (+ the satellite it names): the hub's mirror
                          of the satellites reloaded when the version moved
    deliverer ──────────> the hub holding the fleet's lease (state/lease.py):
      (one per fleet)     XREAD BLOCK P rl:log, then the messages past the last it
                          loaded; notifies and pings as with one hub; progress and
                          its statistics written back; finished messages deleted

**Who delivers: the lease holder.** One hub of the fleet delivers every message and
pings every satellite: the hub that holds the lease which already runs the liveness
sweeps and the push jobs. Why not each hub its own satellites: a satellite is only an
address, and the hub it registered through may be gone while the satellite is fine;
one deliverer keeps the one-hub promises as they are (every recipient gets the
messages in the fleet's sequence order; ``--relay-rate`` is the fleet's rate; a
satellite is pinged once a round, not once per hub, so ``--relay-ping-fails`` means
what it says), and takeover is the restart path the relay already has: the next hub
to take the lease (within 5 s of the holder's death) loads the outbox from here and
delivers what any recipient has not had yet, in order (at least once: a notify the
dead hub made before it wrote its progress may come twice). The cost is that one hub
makes every notify; at co2's rates (100 a second by default) that is nothing.

**Ids.** ``P rl:next`` is INCR'd in the step that stores the message: sequence
numbers are unique across the fleet and never reused (the counter outlives the
messages). Satellites keep co2's ``ip:port`` ids.

Keys (``P`` = ``sg:{fleet}:``, the fleet's hash tag: every step touches one slot):

====================  ========  ======================================================
key                   type      what
====================  ========  ======================================================
``P rl:ver``          string    the satellites' version (INCR on every change of
                                who is registered or of a registration)
``P rl:sats``         zset      host_id -> registration order (``P rl:sseq``)
``P rl:sseq``         string    the registration order counter
``P rl:s:<host_id>``  hash      one satellite (relay/records.py: one field each)
``P rl:ip``           hash      ip -> satellites registered from it
``P rl:next``         string    the message sequence (INCR: unique, never reused)
``P rl:out``          zset      seq -> seq: messages some recipient has not had yet
``P rl:m:<seq>``      hash      s (sender), a (accepted, s since the epoch), x (the
                                relay.relay dict as XML-RPC), n (its bytes)
``P rl:p:<seq>``      set       the recipients not done with it yet
``P rl:bytes``        string    bytes of the messages in ``P rl:out``
``P rl:log``          stream    q (seq): wakes the deliverer (capped, MAXLEN ~)
====================  ========  ======================================================

Bounds (what satellites, through any hub, can make Redis hold): at most
``--relay-max-satellites`` satellites and ``--relay-max-per-ip`` per address (each
hub passes its own settings to the step, which checks them atomically); a satellite's
strings are bounded by relay/methods.py (nick 128, notify_pass 256, 64 plugins of
128); at most ``--relay-queue`` messages in the outbox and :data:`MAX_OUTBOX_BYTES`
bytes of them (past either, ``relay.relay`` answers the busy fault); one message is at
most ``--relay-max-request`` (256 KB) as it came; a message's recipients are the
satellites registered then, so each satellite is owed at most ``--relay-queue``
messages, and the deliverer's mailbox per satellite stays ``--relay-mailbox`` as with
one hub; the wake-up stream is capped at about :data:`LOG_LENGTH` entries.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable
from typing import Any

from redis.exceptions import RedisError

from smartget.errors import (
    RelayBusyError,
    RelayFullError,
    RelayNotPermittedError,
    SatelliteNotFoundError,
    StoreError,
)
from smartget.hub.relay.core import Satellite, host_id_of
from smartget.hub.relay.outbox import Message, OutboxChanges
from smartget.hub.relay.records import (
    DELIVERER_FIELDS,
    RecordError,
    deliverer_record,
    message_from_record,
    message_params,
    satellite_from_record,
    satellite_record,
)
from smartget.hub.state.redisengine import TIMEOUT, Client, RedisState

__all__ = ["LOG_LENGTH", "MAX_OUTBOX_BYTES", "RedisRelay"]

log = logging.getLogger(__name__)

MAX_OUTBOX_BYTES = 64 << 20  # bytes of undelivered messages the fleet's Redis holds
LOG_LENGTH = 1000  # wake-up entries kept (about)
WAKE_BLOCK = 0.5  # seconds one XREAD of the deliverer waits at most
SADD_CHUNK = 1000  # members per SADD inside a step (Lua's unpack has a limit)

# KEYS[1] = P rl:ver; ARGV: prefix, ip, port, nick, plugins (JSON), notify_pass, now,
# max satellites, max per ip.
_REGISTER = """
local p, ip, port = ARGV[1], ARGV[2], ARGV[3]
local hid = ip .. ':' .. port
local key = p .. 'rl:s:' .. hid
if redis.call('EXISTS', key) == 1 then
  redis.call('HSET', key, 'nick', ARGV[4], 'plugins', ARGV[5], 'notify_pass', ARGV[6],
             'ping_fails_in_row', '0')
else
  local n = redis.call('ZCARD', p .. 'rl:sats')
  if n >= tonumber(ARGV[8]) then return {'full', n} end
  local per = tonumber(redis.call('HGET', p .. 'rl:ip', ip) or '0')
  if per >= tonumber(ARGV[9]) then return {'ip', per} end
  redis.call('HINCRBY', p .. 'rl:ip', ip, 1)
  redis.call('ZADD', p .. 'rl:sats', redis.call('INCR', p .. 'rl:sseq'), hid)
  redis.call('HSET', key, 'ip', ip, 'port', port, 'nick', ARGV[4], 'plugins', ARGV[5],
             'notify_pass', ARGV[6], 'ctime', ARGV[7])
end
redis.call('INCR', KEYS[1])
return {'ok', redis.call('HGETALL', key)}
"""

# KEYS[1] = P rl:ver; ARGV: prefix, host_id, ip, max satellites, then field, value pairs
# (a satellite of a co2 dump, as it is). 'exists' leaves a registered one alone.
_ADOPT = """
local p, hid, ip = ARGV[1], ARGV[2], ARGV[3]
local key = p .. 'rl:s:' .. hid
if redis.call('EXISTS', key) == 1 then return 'exists' end
if redis.call('ZCARD', p .. 'rl:sats') >= tonumber(ARGV[4]) then return 'full' end
redis.call('HINCRBY', p .. 'rl:ip', ip, 1)
redis.call('ZADD', p .. 'rl:sats', redis.call('INCR', p .. 'rl:sseq'), hid)
redis.call('HSET', key, unpack(ARGV, 5))
redis.call('INCR', KEYS[1])
return 'ok'
"""

# KEYS[1] = P rl:ver; ARGV: prefix, host_id, owner ip ('' : dropped by the pinger).
_DEREGISTER = """
local p, hid = ARGV[1], ARGV[2]
local key = p .. 'rl:s:' .. hid
local ip = redis.call('HGET', key, 'ip')
if not ip then return {'notfound'} end
if ARGV[3] ~= '' and ARGV[3] ~= ip then return {'notowner', ip} end
redis.call('DEL', key)
redis.call('ZREM', p .. 'rl:sats', hid)
if redis.call('HINCRBY', p .. 'rl:ip', ip, -1) <= 0 then redis.call('HDEL', p .. 'rl:ip', ip) end
redis.call('INCR', KEYS[1])
return {'ok'}
"""

# KEYS[1] = P rl:next; ARGV: prefix, host_id, caller ip, accepted (s), params (XML),
# max messages, max bytes, log length, SADD chunk. -> {'ok', seq} (seq 0: nobody else
# is registered, nothing stored), or a refusal.
_ACCEPT = """
local p, hid = ARGV[1], ARGV[2]
local key = p .. 'rl:s:' .. hid
local ip = redis.call('HGET', key, 'ip')
if not ip then return {'notfound'} end
if ip ~= ARGV[3] then return {'notowner', ip} end
local held = redis.call('ZCARD', p .. 'rl:out')
if held >= tonumber(ARGV[6]) then return {'busy', held} end
local size = string.len(ARGV[5])
local bytes = tonumber(redis.call('GET', p .. 'rl:bytes') or '0')
if bytes + size > tonumber(ARGV[7]) then return {'bytes', bytes} end
redis.call('HINCRBY', key, 'send_count', 1)
redis.call('HSET', key, 'send_time', ARGV[4])
local others = {}
for _, member in ipairs(redis.call('ZRANGE', p .. 'rl:sats', 0, -1)) do
  if member ~= hid then others[#others + 1] = member end
end
if #others == 0 then return {'ok', 0} end
local seq = redis.call('INCR', KEYS[1])
redis.call('HSET', p .. 'rl:m:' .. seq, 's', hid, 'a', ARGV[4], 'x', ARGV[5], 'n', size)
local chunk = tonumber(ARGV[9])
for i = 1, #others, chunk do
  redis.call('SADD', p .. 'rl:p:' .. seq, unpack(others, i, math.min(i + chunk - 1, #others)))
end
redis.call('ZADD', p .. 'rl:out', seq, seq)
redis.call('INCRBY', p .. 'rl:bytes', size)
redis.call('XADD', p .. 'rl:log', 'MAXLEN', '~', ARGV[8], '*', 'q', seq)
return {'ok', seq}
"""

# KEYS[1] = P rl:ver; ARGV: prefix. -> {version, host_id, {field, value, ...}, ...}
_SATELLITES = """
local p = ARGV[1]
local out = {redis.call('GET', KEYS[1]) or '0'}
for _, hid in ipairs(redis.call('ZRANGE', p .. 'rl:sats', 0, -1)) do
  out[#out + 1] = hid
  out[#out + 1] = redis.call('HGETALL', p .. 'rl:s:' .. hid)
end
return out
"""

# KEYS: satellites' keys; ARGV: n (fields), the n field names, then n values per key.
# A satellite gone meanwhile is not brought back.
_STATS = """
local n = tonumber(ARGV[1])
for k = 1, #KEYS do
  if redis.call('EXISTS', KEYS[k]) == 1 then
    local base = 1 + n + (k - 1) * n
    for f = 1, n do redis.call('HSET', KEYS[k], ARGV[1 + f], ARGV[base + f]) end
  end
end
return 1
"""

# KEYS[1] = P rl:out; ARGV: prefix, SADD chunk, then operations: 'd', seq (finished:
# deleted) or 'u', seq, count, the count recipients it is still owed to.
_PROGRESS = """
local p, chunk = ARGV[1], tonumber(ARGV[2])
local i = 3
while i <= #ARGV do
  local op, seq = ARGV[i], ARGV[i + 1]
  local msg, pending = p .. 'rl:m:' .. seq, p .. 'rl:p:' .. seq
  local known = redis.call('EXISTS', msg) == 1
  if op == 'd' then
    if known then
      local size = tonumber(redis.call('HGET', msg, 'n') or '0')
      redis.call('DEL', msg, pending)
      redis.call('ZREM', KEYS[1], seq)
      if redis.call('DECRBY', p .. 'rl:bytes', size) < 0 then
        redis.call('SET', p .. 'rl:bytes', 0)
      end
    end
    i = i + 2
  else
    local count = tonumber(ARGV[i + 2])
    if known then
      redis.call('DEL', pending)
      for j = i + 3, i + 2 + count, chunk do
        redis.call('SADD', pending, unpack(ARGV, j, math.min(j + chunk - 1, i + 2 + count)))
      end
    end
    i = i + 3 + count
  end
end
return 1
"""


class RedisRelay:
    """The relay's satellites and outbox in the fleet's Redis (see the module's doc)."""

    def __init__(self, engine: RedisState) -> None:
        self.engine = engine
        self.client: Client = engine.client
        p = self.prefix = engine.keys.prefix
        self.version_key = p + "rl:ver"
        self.next_key = p + "rl:next"
        self.out_key = p + "rl:out"
        self.log_key = p + "rl:log"
        self.bytes_key = p + "rl:bytes"
        self.max_bytes = MAX_OUTBOX_BYTES
        register = self.client.register_script
        self._register = register(_REGISTER)
        self._adopt = register(_ADOPT)
        self._deregister = register(_DEREGISTER)
        self._accept = register(_ACCEPT)
        self._satellites = register(_SATELLITES)
        self._stats = register(_STATS)
        self._progress = register(_PROGRESS)

    def satellite_key(self, host_id: str) -> str:
        return f"{self.prefix}rl:s:{host_id}"

    def message_key(self, seq: int) -> str:
        return f"{self.prefix}rl:m:{seq}"

    async def _do(self, coro: Any) -> Any:
        try:
            async with asyncio.timeout(TIMEOUT):
                return await coro
        except (RedisError, OSError, TimeoutError) as exc:
            raise StoreError(
                f"the fleet's Redis did not answer: {exc or type(exc).__name__}"
            ) from None

    # -- satellites ---------------------------------------------------------------------

    async def register(
        self,
        ip: str,
        port: int,
        now: float,
        *,
        nick: str,
        plugins: list[str],
        notify_pass: str,
        max_satellites: int,
        max_per_ip: int,
    ) -> Satellite:
        """Register (or refresh) ip:port in one step; RelayFullError past a cap."""
        host_id = host_id_of(ip, port)
        reply = await self._do(
            self._register(
                keys=[self.version_key],
                args=[
                    self.prefix,
                    ip,
                    port,
                    nick or host_id,
                    json.dumps(plugins),
                    notify_pass,
                    repr(now),
                    max_satellites,
                    max_per_ip,
                ],
            )
        )
        if reply[0] == "full":
            raise RelayFullError(
                f"the relay is full: {reply[1]} of {max_satellites} satellites registered "
                "(raise --relay-max-satellites)"
            )
        if reply[0] == "ip":
            raise RelayFullError(
                f"{ip} already has {max_per_ip} satellites registered (raise --relay-max-per-ip)"
            )
        return satellite_from_record(_pairs(reply[1]))

    async def adopt(self, sat: Satellite, max_satellites: int) -> str:
        """Add a satellite of a co2 dump as it is: 'ok', 'exists' or 'full'."""
        pairs = [x for item in satellite_record(sat).items() for x in item]
        return str(
            await self._do(
                self._adopt(
                    keys=[self.version_key],
                    args=[self.prefix, sat.host_id, sat.ip, max_satellites, *pairs],
                )
            )
        )

    async def deregister(self, host_id: str, owner_ip: str | None) -> None:
        """Remove a satellite; ``owner_ip`` None: dropped by the deliverer's pinger."""
        reply = await self._do(
            self._deregister(keys=[self.version_key], args=[self.prefix, host_id, owner_ip or ""])
        )
        if reply[0] == "notfound":
            raise SatelliteNotFoundError(f"no satellite {host_id[:80]!r} is registered")
        if reply[0] == "notowner":
            raise RelayNotPermittedError(
                f"a caller at {owner_ip} may not act for satellite {host_id}: only {reply[1]} may"
            )

    async def satellites(self) -> tuple[int, list[Satellite]]:
        """The version and every satellite, in registration order (one atomic read)."""
        reply = await self._do(self._satellites(keys=[self.version_key], args=[self.prefix]))
        sats = []
        for at in range(1, len(reply) - 1, 2):
            try:
                sats.append(satellite_from_record(_pairs(reply[at + 1])))
            except RecordError as exc:
                log.error("relay: satellite %s in Redis cannot be read: %s", reply[at], exc)
        return int(reply[0]), sats

    async def version(self, host_id: str | None = None) -> tuple[int, dict[str, str] | None]:
        """The satellites' version, and the record of ``host_id`` (None: not asked or
        not registered): one round trip."""
        pipe = self.client.pipeline(transaction=False)
        pipe.get(self.version_key)
        if host_id is not None:
            pipe.hgetall(self.satellite_key(host_id))
        got = await self._do(pipe.execute())
        record = got[1] if host_id is not None and got[1] else None
        return int(got[0] or 0), record

    async def save_stats(self, sats: Iterable[Satellite]) -> None:
        """The deliverer's statistics of these satellites (those still registered)."""
        sats = list(sats)
        if not sats:
            return
        values = [v for sat in sats for v in deliverer_record(sat).values()]
        await self._do(
            self._stats(
                keys=[self.satellite_key(sat.host_id) for sat in sats],
                args=[len(DELIVERER_FIELDS), *DELIVERER_FIELDS, *values],
            )
        )

    # -- messages -----------------------------------------------------------------------

    async def accept(
        self, host_id: str, caller_ip: str | None, params: dict[str, Any], now: float, queue: int
    ) -> int:
        """Store a message for every other satellite registered now (one step); its
        sequence number (0 when nobody else is registered: nothing to deliver)."""
        body = message_params(params)
        reply = await self._do(
            self._accept(
                keys=[self.next_key],
                args=[
                    self.prefix,
                    host_id,
                    caller_ip or "",
                    repr(now),
                    body,
                    queue,
                    self.max_bytes,
                    LOG_LENGTH,
                    SADD_CHUNK,
                ],
            )
        )
        code = reply[0]
        if code == "ok":
            return int(reply[1])
        if code == "notfound":
            raise SatelliteNotFoundError(f"no satellite {host_id[:80]!r} is registered")
        if code == "notowner":
            who = "an anonymous call" if caller_ip is None else f"a caller at {caller_ip}"
            raise RelayNotPermittedError(
                f"{who} may not act for satellite {host_id}: only {reply[1]} may"
            )
        if code == "bytes":
            raise RelayBusyError(
                f"the relay is busy: {reply[1]} bytes of messages are waiting in the fleet's "
                f"Redis (at most {self.max_bytes}); try again later"
            )
        raise RelayBusyError(
            f"the relay is busy: {reply[1]} messages are waiting (--relay-queue) for the "
            "fleet's satellites; try again later"
        )

    async def last_wake(self) -> str:
        """The wake-up stream's last id (where the deliverer starts following it)."""
        last = await self._do(self.client.xrevrange(self.log_key, count=1))
        return str(last[0][0]) if last else "0-0"

    async def wait_wake(self, reader: Client, after: str) -> str:
        """Block until a message is accepted after ``after`` (or WAKE_BLOCK passed)."""
        got = await self._do(
            reader.xread({self.log_key: after}, count=LOG_LENGTH, block=int(WAKE_BLOCK * 1000))
        )
        return str(got[0][1][-1][0]) if got else after

    async def messages(self, after: int, limit: int, max_bytes: int) -> list[Message]:
        """Undelivered messages past seq ``after``, in order, at most ``limit``."""
        seqs = await self._do(
            self.client.zrangebyscore(self.out_key, f"({after}", "+inf", start=0, num=limit)
        )
        if not seqs:
            return []
        pipe = self.client.pipeline(transaction=False)
        for seq in seqs:
            pipe.hgetall(self.message_key(int(seq)))
            pipe.smembers(f"{self.prefix}rl:p:{int(seq)}")
        got = await self._do(pipe.execute())
        out: list[Message] = []
        bad: list[int] = []
        for at, seq_text in enumerate(seqs):
            seq, record, pending = int(seq_text), got[2 * at], got[2 * at + 1]
            if not record:  # finished meanwhile (a former deliverer): nothing left
                continue
            try:
                out.append(message_from_record(seq, record, set(pending), max_bytes=max_bytes))
            except RecordError as exc:
                log.error("relay: stored message cannot be read, deleting it: %s", exc)
                bad.append(seq)
        if bad:
            await self.progress(OutboxChanges(deletes=bad))
        return out

    async def progress(self, changes: OutboxChanges) -> None:
        """The deliverer's progress: recipients done, finished messages deleted."""
        ops: list[Any] = []
        for seq, pending in changes.updates:
            ops += ["u", seq, len(pending), *pending]
        for seq in changes.deletes:
            ops += ["d", seq]
        if ops:
            await self._do(
                self._progress(keys=[self.out_key], args=[self.prefix, SADD_CHUNK, *ops])
            )

    async def held(self) -> tuple[int, int, int]:
        """Messages and bytes in the outbox, and the last sequence number used."""
        pipe = self.client.pipeline(transaction=False)
        pipe.zcard(self.out_key)
        pipe.get(self.bytes_key)
        pipe.get(self.next_key)
        count, size, last = await self._do(pipe.execute())
        return int(count), int(size or 0), int(last or 0)


def _pairs(flat: list[Any]) -> dict[str, str]:
    return {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}
