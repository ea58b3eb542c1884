-- One dispatcher round of a process: release permits and withdraw waiters,
-- then enqueue new waiters, and grant what is free in arrival order.
--
-- ARGV[5] "1" to keep every key and write info (see the header on TTLs),
--   else "0".
-- ARGV[6] "1" when the caller has waiters queued by earlier calls, "0"
--   when not, "x" when it is closing: its queue lease is dropped.
-- ARGV[7] n, how many ids leave; ARGV[8 .. 7+n] those ids: each gives back
--   its permit, or leaves the queue.
-- ARGV[8+n ..] pairs (id, wait) of new waiters: wait "1" keeps the waiter
--   queued until a permit comes, "0" takes a permit only if one is free
--   for it at once. Each id is new to Redis: the dispatcher sends an id
--   once, or again only after Redis reported it unknown (its queue place
--   had expired).
-- Reply: {left, statuses, granted, wait_ms, lost}:
--   left[i] for the i-th leaving id is 1 (it held a permit, now released),
--   2 (it was queued and left) or 0 (unknown: its lease or place had
--   expired; nothing is given back, so a permit that may have passed to
--   another holder is never counted twice);
--   statuses[i] for the i-th new waiter is 1 (granted), 0 (queued) or -1
--   (refused: wait was "0" and no permit was free);
--   granted lists every id granted by this call, the caller's and others';
--   wait_ms is the time until the earliest lease deadline while anyone is
--   queued, else -1;
--   lost is 1 when the caller's queue lease had run out and its earlier
--   waiters were dropped from the queue (it was frozen for longer than
--   expiry), else 0: they must queue again.
--
-- Every redis.call costs a few us of server time, so each step below
-- skips the calls that could change nothing.

local now = now_ms()
local deadline = tostring(now + expiry) -- of the leases and places added
local refresh = ARGV[5] == '1'
local had_queued = ARGV[6] == '1'
local n = tonumber(ARGV[7])
local lost = 0

-- Expired leases always go (they decide what is free); dead processes'
-- waiters only matter, so only cost a call, when someone is queued.
redis.call('ZREMRANGEBYSCORE', holders, '-inf', now)
local waiting = redis.call('ZCARD', queue)
if waiting > 0 and purge_places(now) > 0 then
  waiting = redis.call('ZCARD', queue)
end

-- Each leaving id gives back its permit, or else its queue place. A lone
-- id learns which from ZREM's count; a batch reads the memberships first,
-- so that every removal is one call.
local left = {}
local leaving = {}
for i = 8, 7 + n do
  leaving[#leaving + 1] = ARGV[i]
end
if n == 1 then
  local id = leaving[1]
  if redis.call('ZREM', holders, id) == 1 then
    left[1] = 1
  elseif waiting > 0 and redis.call('ZREM', queue, id) == 1 then
    left[1] = 2
    waiting = waiting - 1
  else
    left[1] = 0
  end
elseif n > 1 then
  left = locate(leaving, waiting > 0)
  local released, gone = {}, {}
  for k, id in ipairs(leaving) do
    if left[k] == 1 then
      released[#released + 1] = id
    elseif left[k] == 2 then
      gone[#gone + 1] = id
    end
  end
  zrem_all(holders, released)
  zrem_all(queue, gone)
  waiting = waiting - #gone
end

-- Permits freed by the releases go to the head of the queue first. From
-- here on, free = capacity minus the leases held.
local granted, free = {}, nil
if n > 0 and waiting > 0 then
  free = capacity - redis.call('ZCARD', holders)
  granted = grant(now, free, refresh)
  free = free - #granted
  waiting = waiting - #granted
end

local ids = {}
for i = 8 + n, #ARGV, 2 do
  ids[#ids + 1] = ARGV[i]
end
local statuses = {}
if #ids > 0 then
  free = free or capacity - redis.call('ZCARD', holders)

  -- When nobody waits, the first free ids take their permits at once and
  -- never touch the queue: FIFO holds, since nobody came before them.
  local direct, rest = {}, ids
  if free > 0 and waiting == 0 then
    rest = {}
    for k, id in ipairs(ids) do
      if k <= free then
        direct[#direct + 1] = id
      elseif ARGV[7 + n + 2 * k] == '1' then
        rest[#rest + 1] = id
      end
    end
    if #direct > 0 then
      zadd_all(holders, direct, function() return deadline end)
      if not refresh and free >= capacity then
        keep(holders)
      end
    end
    free = free - #direct
  end

  -- The others join the back of the queue in one batch, numbered by the
  -- shared arrivals counter, then the head of the queue gets what is free.
  local queued_now = {}
  if #rest > 0 then
    local last = redis.call('HINCRBY', info, 'arrivals', #rest)
    local first = last - #rest
    zadd_all(queue, rest, function(k) return first + k end, 'NX')
    -- A lease of the caller's that is new while it had waiters queued
    -- means those were dropped with its old one.
    if redis.call('ZADD', places, deadline, caller) == 1 and had_queued then
      lost = 1
    end
    if not refresh and waiting == 0 then
      keep(queue, places, info)
    end
    waiting = waiting + #rest
    for _, id in ipairs(rest) do
      queued_now[id] = true
    end
    local heads = grant(now, free, refresh)
    waiting = waiting - #heads
    for _, id in ipairs(heads) do
      granted[#granted + 1] = id
    end
  end
  for _, id in ipairs(direct) do
    granted[#granted + 1] = id
  end

  -- A waiter that would not wait and got nothing leaves the queue again.
  local got = {}
  for _, id in ipairs(granted) do
    got[id] = true
  end
  local refused = {}
  for k, id in ipairs(ids) do
    if got[id] then
      statuses[k] = 1
    elseif ARGV[7 + n + 2 * k] == '0' then
      if queued_now[id] then
        refused[#refused + 1] = id
      end
      statuses[k] = -1
    else
      statuses[k] = 0
    end
  end
  if #refused > 0 then
    zrem_all(queue, refused)
    waiting = waiting - #refused
  end
end

if ARGV[6] == 'x' then
  redis.call('ZREM', places, caller)
end
if refresh then
  redis.call('HSET', info, 'capacity', capacity, 'expiry_ms', expiry)
  keep(holders, queue, places, info)
end

local wait_ms = -1
if waiting > 0 then
  wait_ms = first_deadline(now)
end
return {left, statuses, granted, wait_ms, lost}
