"""The fleet's atomic steps: Redis Functions libraries (Lua), loaded by every hub.

``smartget1`` (the registry), ``smartget_drains1`` (the steps that hold drained nodes
at status 0: the console's drains, the fleet's), ``smartget_touch1`` (liveness of the
heartbeats a hub answered from its mirror) and ``smartget_reports1`` (the status
collector). A library cannot call another's local functions, so the helpers they share
are one Lua text put in each (``_HELPERS``), and a step both have is one template.

Each function is one atomic step on the server: no other client's command runs in
between, so two hubs never hand out the same last slot. Every key a function touches
carries the fleet's hash tag (``sg:{fleet}:``, see :mod:`keys`), so under Redis Cluster
each call runs on the one master that owns that slot. ``KEYS[1]`` is always a key of
that slot (the cluster client routes by it); ``ARGV[1]`` is the key prefix.

Functions (not ``EVAL`` scripts) because Redis keeps them in its AOF and RDB: after a
restart every hub's ``FCALL`` still finds them, with no ``NOSCRIPT`` retry on the hot
path. Time is Redis's own (``TIME``): hubs on different machines agree on liveness.

The replies are tables whose first element says what happened (``ok``, ``exists``,
``notfound``, ``notowner``, ``toomany``, ``stranger``, ``zombie``; ``held`` for a
drained node's heartbeat); the hub turns them into the
:mod:`smartget.errors` tree (``redisengine.py``). A node record is
``id, a, p, nm, s, z, bt, api, files``.
"""

from __future__ import annotations

from string import Template
from typing import Final

__all__ = [
    "DRAINS_LIBRARY",
    "DRAINS_LIBRARY_NAME",
    "LIBRARY",
    "LIBRARY_NAME",
    "MAX_DRAINED",
    "REPORTS_LIBRARY",
    "REPORTS_LIBRARY_NAME",
    "TOUCH_LIBRARY",
    "TOUCH_LIBRARY_NAME",
]

LIBRARY_NAME: Final = "smartget1"

# The helpers every library of the registry's steps carries (a library cannot call
# another's local functions): they are Lua text, composed below.
# Redis's clock in ms: every library's (hubs on several machines agree on liveness).
_NOW: Final = r"""
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

_HELPERS: Final = (
    _NOW
    + r"""
local function record(P, id)
  local v = redis.call('HMGET', P .. 'n:' .. id, 'a', 'p', 'nm', 's', 'z', 'bt', 'api', 'files')
  return {tostring(id), v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8]}
end

local function append(out, rec)
  for _, x in ipairs(rec) do out[#out + 1] = x end
end

-- Tell every hub's mirror that this node changed (a capped stream); with its new
-- status when that is all that changed (the mirror then needs no read of the node).
local function note(P, id, status)
  if status then
    redis.call('XADD', P .. 'log', 'MAXLEN', '~', '100000', '*', 'n', id, 's', status)
  else
    redis.call('XADD', P .. 'log', 'MAXLEN', '~', '100000', '*', 'n', id)
  end
end

local function unfree(P, m, zone)
  if m then
    redis.call('ZREM', P .. 'free', m)
    if zone and zone ~= '' then redis.call('ZREM', P .. 'free:z:' .. zone, m) end
  end
end

-- Into the free sets at the end of its status's turn; returns the member.
local function refree(P, id, status, zone)
  local seq = redis.call('INCR', P .. 'seq')
  local m = string.format('%016.0f', seq) .. ':' .. id
  redis.call('ZADD', P .. 'free', -status, m)
  if zone and zone ~= '' then redis.call('ZADD', P .. 'free:z:' .. zone, -status, m) end
  return m
end

local function change(P, id, old, new, zone, m)
  local k = P .. 'n:' .. id
  if old > 0 then unfree(P, m, zone) end
  local slots = math.max(new, 0) - math.max(old, 0)  -- one call for the free slots
  if slots ~= 0 then redis.call('HINCRBY', P .. 'stat', 'slots', slots) end
  if new > 0 then
    redis.call('HSET', k, 's', new, 'm', refree(P, id, new, zone))
  else
    redis.call('HSET', k, 's', new)
    if m then redis.call('HDEL', k, 'm') end
  end
  note(P, id, new)
end

local function remove(P, id)
  local k = P .. 'n:' .. id
  local rec = record(P, id)
  local v = redis.call('HMGET', k, 'a', 'p', 's', 'z', 'm')
  local s = tonumber(v[3])
  if s > 0 then
    unfree(P, v[5], v[4])
    redis.call('HINCRBY', P .. 'stat', 'slots', -s)
  end
  redis.call('HDEL', P .. 'ap', v[1] .. ' ' .. v[2])
  redis.call('SREM', P .. 'ip:' .. v[1], id)
  redis.call('ZREM', P .. 'all', id)
  redis.call('ZREM', P .. 'alive', id)
  redis.call('ZREM', P .. 'zomb', id)
  redis.call('DEL', k)
  note(P, id)
  return rec
end

-- The heartbeat: 'ok', 'notfound' or 'notowner IP'.
local function setstatus(P, id, status, owner, now)
  local v = redis.call('HMGET', P .. 'n:' .. id, 'a', 's', 'z', 'm')
  if not v[1] then return 'notfound' end
  if owner ~= '' and v[1] ~= owner then return 'notowner ' .. v[1] end
  local old = tonumber(v[2])
  if status == -1 then
    if old ~= -1 then
      redis.call('ZREM', P .. 'alive', id)
      redis.call('ZADD', P .. 'zomb', now, id)
      change(P, id, old, -1, v[3], v[4])
    end
  else
    if old == -1 then redis.call('ZREM', P .. 'zomb', id) end
    redis.call('ZADD', P .. 'alive', now, id)
    if old ~= status then change(P, id, old, status, v[3], v[4]) end
  end
  return 'ok'
end
"""
)

_REGISTER: Final = r"""
-- KEYS: next; ARGV: P, ip, port, max per ip (0: any), status, name, zone, bt, api, files
redis.register_function('sg_register', function(keys, args)
  local P, addr, port = args[1], args[2], args[3]
  local ap = addr .. ' ' .. port
  local existing = redis.call('HGET', P .. 'ap', ap)
  if existing then return {'exists', existing} end
  local most = tonumber(args[4])
  if most > 0 then
    local taken = redis.call('SCARD', P .. 'ip:' .. addr)
    if taken >= most then return {'toomany', tostring(taken)} end
  end
  local id = redis.call('INCR', keys[1])
  redis.call('HSET', P .. 'n:' .. id, 'a', addr, 'p', port, 'nm', args[6], 's', 0,
             'z', args[7], 'bt', args[8], 'api', args[9], 'files', args[10])
  redis.call('HSET', P .. 'ap', ap, id)
  redis.call('SADD', P .. 'ip:' .. addr, id)
  redis.call('ZADD', P .. 'all', id, id)
  redis.call('ZADD', P .. 'alive', now_ms(), id)
  local status = tonumber(args[5])
  if status > 0 then change(P, id, 0, status, args[7], false) else note(P, id) end
  local out = {'ok'}
  append(out, record(P, id))
  return out
end)
"""

# Templates ($name: string.Template): the same step in both libraries, with the
# drain-aware helpers in DRAINS_LIBRARY.
_DEREGISTER: Final = Template(r"""
-- KEYS: next; ARGV: P, id ('' : by ip and port), ip, port, owner ip ('' : anyone)
redis.register_function('$deregister', function(keys, args)
  local P, id = args[1], args[2]
  if id == '' then
    id = redis.call('HGET', P .. 'ap', args[3] .. ' ' .. args[4])
    if not id then return {'notfound'} end
  elseif redis.call('EXISTS', P .. 'n:' .. id) == 0 then
    return {'notfound'}
  end
  if args[5] ~= '' then
    local a = redis.call('HGET', P .. 'n:' .. id, 'a')
    if a ~= args[5] then return {'notowner', a} end
  end
  local out = {'ok'}
  append(out, $remove(P, id))
  return out
end)
""")

_SETSTATUS: Final = Template(r"""
-- The heartbeat. KEYS: next; ARGV: P, id, status, owner ip ('' : anyone), '1' for the record
redis.register_function('$setstatus', function(keys, args)
  local P, id = args[1], args[2]
  local code = $beat(P, id, tonumber(args[3]), args[4], now_ms())
  if code == 'notfound' then return {'notfound'} end
  if code ~= 'ok' and code ~= 'held' then return {'notowner', string.sub(code, 10)} end
  if args[5] ~= '1' then return {'ok'} end
  local out = {'ok'}
  append(out, record(P, id))
  return out
end)

-- Many heartbeats in one call, in order (the text protocol's hot path: a hub merges
-- the setstatus commands that follow each other in one batch). KEYS: next; ARGV: P,
-- then id, status, owner ip for each. Returns one code each: ok, notfound, notowner IP
-- (and held: a drained node's heartbeat, in $setstatus_many).
redis.register_function('$setstatus_many', function(keys, args)
  local P, now, out = args[1], now_ms(), {}
  -- whether any node is drained, asked once for the whole call (none: no HEXISTS each)
  local drains = redis.call('EXISTS', P .. 'drained') == 1
  for i = 2, #args, 3 do
    out[#out + 1] = $beat(P, args[i], tonumber(args[i + 1]), args[i + 2], now, drains)
  end
  return out
end)
""")

_REQUEST_UPDATE: Final = r"""
-- Hand out up to n nodes, lowering each one's status by one: the zone's nodes first,
-- most free first, ties in turn; never the requester's nodes nor the excluded ids.
-- KEYS: next; ARGV: P, n, zone, requester ip ('' : an operator), '1' if the requester
-- may ask without a node of its own, excluded ids...
redis.register_function('sg_requestnodes', function(keys, args)
  local P, n, zone, addr = args[1], tonumber(args[2]), args[3], args[4]
  local skip, nskip = {}, 0
  if addr ~= '' then
    local mine = redis.call('SMEMBERS', P .. 'ip:' .. addr)
    if #mine == 0 and args[5] ~= '1' then return {'stranger'} end
    table.sort(mine, function(x, y) return tonumber(x) < tonumber(y) end)
    zone = ''
    for _, id in ipairs(mine) do
      skip[id] = true
      nskip = nskip + 1
      if zone == '' then zone = redis.call('HGET', P .. 'n:' .. id, 'z') or '' end
    end
  end
  for i = 6, #args do
    if not skip[args[i]] then
      skip[args[i]] = true
      nskip = nskip + 1
    end
  end
  local chosen = {}
  local sources = {}
  if zone ~= '' then sources[#sources + 1] = P .. 'free:z:' .. zone end
  sources[#sources + 1] = P .. 'free'
  for _, src in ipairs(sources) do
    if #chosen >= n then break end
    -- At most nskip + #chosen members of the window are passed over: O(log N + k).
    local window = redis.call('ZRANGE', src, 0, n + nskip + #chosen - 1)
    for _, m in ipairs(window) do
      if #chosen >= n then break end
      local id = string.match(m, ':(%d+)$')
      if not skip[id] then
        skip[id] = true
        chosen[#chosen + 1] = id
      end
    end
  end
  local out = {'ok'}
  for _, id in ipairs(chosen) do
    local v = redis.call('HMGET', P .. 'n:' .. id, 's', 'z', 'm')
    local s = tonumber(v[1])
    change(P, id, s, s - 1, v[2], v[3])
    append(out, record(P, id))
  end
  if #chosen > 0 then redis.call('HINCRBY', P .. 'stat', 'handed', #chosen) end
  return out
end)

-- KEYS: next; ARGV: P, id, field, value, ... (nm, z, bt, api, files)
redis.register_function('sg_update', function(keys, args)
  local P, id = args[1], args[2]
  local k = P .. 'n:' .. id
  local v = redis.call('HMGET', k, 'a', 's', 'z', 'm')
  if not v[1] then return {'notfound'} end
  local zone = v[3]
  for i = 3, #args, 2 do
    if args[i] == 'z' then zone = args[i + 1] end
    redis.call('HSET', k, args[i], args[i + 1])
  end
  local s = tonumber(v[2])
  if s > 0 then
    unfree(P, v[4], v[3])
    redis.call('HSET', k, 'm', refree(P, id, s, zone))
  end
  note(P, id)
  local out = {'ok'}
  append(out, record(P, id))
  return out
end)
"""

_SWEEP: Final = Template(r"""
-- Liveness, run by the hub holding the sweep lease: nodes silent for ttl ms become
-- zombies, zombies older than grace ms are removed; at most limit of each per call.
-- KEYS: next; ARGV: P, ttl ms, grace ms, limit. Returns {zombie records, removed records}.
redis.register_function('$sweep', function(keys, args)
  local P, ttl, grace, limit = args[1], tonumber(args[2]), tonumber(args[3]), tonumber(args[4])
  local now = now_ms()
  local zombies, removed = {}, {}
  local due = redis.call('ZRANGEBYSCORE', P .. 'alive', '-inf', now - ttl, 'LIMIT', 0, limit)
  for _, id in ipairs(due) do
    local v = redis.call('HMGET', P .. 'n:' .. id, 's', 'z', 'm')
    redis.call('ZREM', P .. 'alive', id)
    redis.call('ZADD', P .. 'zomb', now, id)
    change(P, id, tonumber(v[1]), -1, v[2], v[3])
    append(zombies, record(P, id))
  end
  local gone = redis.call('ZRANGEBYSCORE', P .. 'zomb', '-inf', now - grace, 'LIMIT', 0, limit)
  for _, id in ipairs(gone) do append(removed, $remove(P, id)) end
  return {zombies, removed}
end)
""")

_HUBS: Final = r"""
-- Take or renew a lease. KEYS: the lease; ARGV: holder, ms. 1: held by the caller.
redis.register_function('sg_lease', function(keys, args)
  local holder = redis.call('GET', keys[1])
  if holder == args[1] then
    redis.call('PEXPIRE', keys[1], args[2])
    return 1
  end
  if not holder then
    redis.call('SET', keys[1], args[1], 'PX', args[2])
    return 1
  end
  return 0
end)

-- Give a lease back if the caller holds it. KEYS: the lease; ARGV: holder.
redis.register_function('sg_release', function(keys, args)
  if redis.call('GET', keys[1]) == args[1] then return redis.call('DEL', keys[1]) end
  return 0
end)

-- A hub's heartbeat. KEYS: hubs; ARGV: P, hub id, json, ttl ms ('0': the hub leaves).
redis.register_function('sg_hub_beat', function(keys, args)
  local P, id, ttl = args[1], args[2], tonumber(args[4])
  local now = now_ms()
  if ttl > 0 then
    redis.call('SET', P .. 'hub:' .. id, args[3], 'PX', ttl)
    redis.call('ZADD', keys[1], now + ttl, id)
  else
    redis.call('DEL', P .. 'hub:' .. id)
    redis.call('ZREM', keys[1], id)
  end
  redis.call('ZREMRANGEBYSCORE', keys[1], '-inf', now)
  return now
end)

-- The hubs whose heartbeat is current: their JSON. KEYS: hubs; ARGV: P.
redis.register_function{function_name = 'sg_hubs', flags = {'no-writes'},
  callback = function(keys, args)
    local ids = redis.call('ZRANGEBYSCORE', keys[1], now_ms(), '+inf')
    local out = {}
    for _, id in ipairs(ids) do
      local info = redis.call('GET', args[1] .. 'hub:' .. id)
      if info then out[#out + 1] = info end
    end
    return out
  end}
"""

LIBRARY: Final = (
    "#!lua name=smartget1\n"
    + _HELPERS
    + _REGISTER
    + _DEREGISTER.substitute(deregister="sg_deregister", remove="remove")
    + _SETSTATUS.substitute(
        setstatus="sg_setstatus", setstatus_many="sg_setstatus_many", beat="setstatus"
    )
    + _REQUEST_UPDATE
    + _SWEEP.substitute(sweep="sg_sweep", remove="remove")
    + _HUBS
)

# Drains (issue 13: the console's drained nodes, the fleet's). A library of its own,
# with the steps that must know drains under names of their own (sg_setstatus2, ...):
# ``smartget1`` stays as it was, so a hub of an older version that loads it with
# REPLACE neither fails (a function name may live in one library only) nor takes these
# away. (That older hub's own heartbeats, through ``sg_setstatus``, do not hold a
# drained node at 0: a fleet of mixed versions holds drains on its newer hubs only.)
DRAINS_LIBRARY_NAME: Final = "smartget_drains1"
MAX_DRAINED: Final = 100_000  # drained nodes in the fleet at most (sg_drain refuses more)

_DRAIN_HELPERS: Final = r"""
-- A drained node (P drained: id -> the status its heartbeats last asked for) is held
-- at 0, so out of the free sets: no hub hands it out. Its heartbeats are liveness all
-- the same (a drained node is alive, not a zombie); -1 (a node leaving) is taken as is.
local function held(P, id, status, owner, now, drains)
  local dk = P .. 'drained'
  if status ~= -1 and drains ~= false and redis.call('HEXISTS', dk, id) == 1 then
    local code = setstatus(P, id, 0, owner, now)
    if code ~= 'ok' then return code end
    redis.call('HSET', dk, id, status)  -- after the check of who may set it
    return 'held'
  end
  return setstatus(P, id, status, owner, now)
end

-- A node removed (deregistered, swept) is forgotten by the drains too.
local function forget(P, id)
  if redis.call('HDEL', P .. 'drained', id) == 1 then redis.call('INCR', P .. 'drainv') end
  return remove(P, id)
end
"""

_DRAINS: Final = r"""
-- Take a node out of rotation: status 0 until sg_undrain, whatever its heartbeats ask
-- (it counts as one: liveness). KEYS: next; ARGV: P, id, most drained nodes.
-- Returns {'ok', record}, {'notfound'}, {'zombie'} or {'toomany', how many}.
redis.register_function('sg_drain', function(keys, args)
  local P, id = args[1], args[2]
  local s = redis.call('HGET', P .. 'n:' .. id, 's')
  if not s then return {'notfound'} end
  s = tonumber(s)
  if s == -1 then return {'zombie'} end
  local dk = P .. 'drained'
  local wanted = redis.call('HGET', dk, id)
  if wanted then
    wanted = math.max(tonumber(wanted), s)
  else
    local count = redis.call('HLEN', dk)
    if count >= tonumber(args[3]) then return {'toomany', tostring(count)} end
    redis.call('INCR', P .. 'drainv')
    wanted = s
  end
  redis.call('HSET', dk, id, wanted)
  setstatus(P, id, 0, '', now_ms())
  local out = {'ok'}
  append(out, record(P, id))
  return out
end)

-- Back in rotation, at once, with the status its last heartbeat asked for (a zombie
-- stays one: it is silent). KEYS: next; ARGV: P, id. Returns {'ok', record} (the node
-- as it was if it was not drained) or {'notfound'}.
redis.register_function('sg_undrain', function(keys, args)
  local P, id = args[1], args[2]
  local s = redis.call('HGET', P .. 'n:' .. id, 's')
  if not s then return {'notfound'} end
  local dk = P .. 'drained'
  local wanted = redis.call('HGET', dk, id)
  if wanted then
    redis.call('HDEL', dk, id)
    redis.call('INCR', P .. 'drainv')
    if tonumber(s) ~= -1 then setstatus(P, id, tonumber(wanted), '', now_ms()) end
  end
  local out = {'ok'}
  append(out, record(P, id))
  return out
end)

-- The drained ids, unless they are as the caller last saw them (P drainv changes with
-- the set, not with a drained node's heartbeat). KEYS: drained; ARGV: P, the version
-- seen. Returns {version} when unchanged, else {version, id, ...}.
redis.register_function{function_name = 'sg_drained', flags = {'no-writes'},
  callback = function(keys, args)
    local version = redis.call('GET', args[1] .. 'drainv') or '0'
    if version == args[2] then return {version} end
    local out = {version}
    for _, id in ipairs(redis.call('HKEYS', keys[1])) do out[#out + 1] = id end
    return out
  end}
"""

DRAINS_LIBRARY: Final = (
    "#!lua name=smartget_drains1\n"
    + _HELPERS
    + _DRAIN_HELPERS
    + _DEREGISTER.substitute(deregister="sg_deregister2", remove="forget")
    + _SETSTATUS.substitute(
        setstatus="sg_setstatus2", setstatus_many="sg_setstatus_many2", beat="held"
    )
    + _SWEEP.substitute(sweep="sg_sweep2", remove="forget")
    + _DRAINS
)

# Liveness for the heartbeats a hub answered from its mirror (the status unchanged,
# nothing to make durable): each hub sends their ids every fraction of the node TTL.
# A library of its own, so a hub of an older version (REPLACE) leaves it in place.
TOUCH_LIBRARY_NAME: Final = "smartget_touch1"

TOUCH_LIBRARY: Final = (
    "#!lua name=smartget_touch1\n"
    + _NOW
    + r"""
-- The nodes' turn in P alive is now (Redis's time). XX: a node removed or made a zombie
-- since is not brought back; its next heartbeat goes through sg_setstatus_many2.
-- KEYS: next; ARGV: P, ids... Returns how many were touched.
redis.register_function('sg_touch', function(keys, args)
  local now, key, touched = now_ms(), args[1] .. 'alive', 0
  for first = 2, #args, 256 do
    local zadd = {'XX', 'CH'}
    for i = first, math.min(#args, first + 255) do
      zadd[#zadd + 1] = now
      zadd[#zadd + 1] = args[i]
    end
    touched = touched + redis.call('ZADD', key, unpack(zadd))
  end
  return touched
end)
"""
)

# The status collector's steps (seed 003 reports), a library of their own: a hub of an
# older version that loads ``smartget1`` with REPLACE does not take them away.
REPORTS_LIBRARY_NAME: Final = "smartget_reports1"

REPORTS_LIBRARY: Final = (
    "#!lua name=smartget_reports1\n"
    + _NOW
    + r"""
-- seed 003: a NodeID is ZONE_IP
local function ip_of(node)
  return string.match(node, '[^_]*$')
end

-- Forget every report on one torrent; tell the hubs. Returns how many there were.
local function drop(P, sha1, loglen)
  local rk = P .. 'r:' .. sha1
  local nodes = redis.call('HKEYS', rk)
  for _, node in ipairs(nodes) do
    local nk = P .. 'rn:' .. node
    redis.call('SREM', nk, sha1)
    if redis.call('SCARD', nk) == 0 then redis.call('SREM', P .. 'ri:' .. ip_of(node), node) end
  end
  redis.call('DEL', rk)
  redis.call('ZREM', P .. 'rt', sha1)
  if #nodes > 0 then
    redis.call('DECRBY', P .. 'rc', #nodes)
    redis.call('XADD', P .. 'rlog', 'MAXLEN', '~', loglen, '*', 'k', 'f', 's', sha1)
  end
  return #nodes
end

-- Take a node's report. The caller (the hub) has checked that the node id names the
-- address it came from; here: that address has a registered node, the caps, and a
-- "done" is not undone by a late "downloading". KEYS: P rq; ARGV: P, nodeid, ip, sha1,
-- done ('1' or '0'), entry (JSON), most node ids per address, most torrents per node
-- id, most node ids per torrent, most reports in all, change log length.
-- Returns {'ok', seq}, {'stale'}, {'stranger'} or {'toomany', what, how many}.
redis.register_function('sg_report', function(keys, args)
  local P, node, ip, sha1, done = args[1], args[2], args[3], args[4], args[5]
  if redis.call('SCARD', P .. 'ip:' .. ip) == 0 then return {'stranger'} end
  local rk = P .. 'r:' .. sha1
  local old = redis.call('HGET', rk, node)
  if old then
    if done == '0' and string.sub(old, 1, 1) == '1' then return {'stale'} end
  else
    local count = tonumber(redis.call('GET', P .. 'rc') or '0')
    if count >= tonumber(args[10]) then return {'toomany', 'all', tostring(count)} end
    local on_sha1 = redis.call('HLEN', rk)
    if on_sha1 >= tonumber(args[9]) then return {'toomany', 'torrent', tostring(on_sha1)} end
    local nk = P .. 'rn:' .. node
    local on_node = redis.call('SCARD', nk)
    if on_node >= tonumber(args[8]) then return {'toomany', 'node', tostring(on_node)} end
    local ik = P .. 'ri:' .. ip
    if redis.call('SISMEMBER', ik, node) == 0 then
      local at_ip = redis.call('SCARD', ik)
      if at_ip >= tonumber(args[7]) then return {'toomany', 'address', tostring(at_ip)} end
      redis.call('SADD', ik, node)
    end
    redis.call('SADD', nk, sha1)
    redis.call('INCR', P .. 'rc')
  end
  local now = now_ms()
  local entry = done .. '|' .. now .. '|' .. args[6]
  redis.call('HSET', rk, node, entry)
  redis.call('ZADD', P .. 'rt', now, sha1)
  local seq = redis.call('INCR', keys[1])
  redis.call('XADD', P .. 'rlog', 'MAXLEN', '~', args[11], '*',
             'q', seq, 'k', 'r', 's', sha1, 'n', node, 'v', entry)
  return {'ok', seq}
end)

-- DELETE /api/progress/SHA1. KEYS: P rq; ARGV: P, sha1, change log length.
redis.register_function('sg_report_forget', function(keys, args)
  return drop(args[1], args[2], args[3])
end)

-- Torrents with no report for ttl ms are forgotten, at most limit per call (run by the
-- hub holding the sweep lease). KEYS: P rq; ARGV: P, ttl ms, limit, change log length.
redis.register_function('sg_report_expire', function(keys, args)
  local P = args[1]
  local old = redis.call('ZRANGEBYSCORE', P .. 'rt', '-inf', now_ms() - tonumber(args[2]),
                         'LIMIT', 0, tonumber(args[3]))
  local dropped = 0
  for _, sha1 in ipairs(old) do dropped = dropped + drop(P, sha1, args[4]) end
  return {#old, dropped}
end)
"""
)
