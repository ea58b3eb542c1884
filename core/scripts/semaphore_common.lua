-- Shared prelude of the semaphore scripts; scripts.go prepends it to each.
--
-- KEYS[1] holders: sorted set, member = permit id, score = lease deadline
--         in ms on the Redis clock
-- KEYS[2] queue:   sorted set, member = waiter id, score = arrival number
-- KEYS[3] places:  sorted set, member = process token, score = deadline
--         of the queue places of all that process's waiters, in ms on the
--         Redis clock: one lease per process, not per waiter, so that a
--         waiter costs no update of its own when it arrives or leaves, and
--         a renewal does not grow with the waiters
-- KEYS[4] info:    hash, fields capacity, expiry_ms, arrivals (counter)
-- ARGV[1] capacity (permits), ARGV[2] expiry (ms), ARGV[3] the start of
-- the grant channels: a waiter's grant is announced on ARGV[3] .. ':' ..
-- the process token that starts its id (ids are TOKEN:SEQ), so that it
-- wakes only the process it is for; ARGV[4] the caller's own token. The
-- rest belongs to each script.
--
-- Clock: the Redis server's TIME, read once per call, in whole ms.
-- TTLs: a "keep" sets the TTL of the keys to expiry + 1 s. Renewals keep
-- all four keys. A round keeps them all when its process asks (it does so
-- when its own last keep is older than a quarter of a second), and keeps
-- a set it creates (it was empty: its TTL is gone); any other lease or
-- queue place a round adds is due within expiry + 0.25 s of a keep, so
-- covered by its TTL. That spares a round its PEXPIREs, which cost more
-- server time than the work they guard. The info hash (with the arrivals
-- counter that orders the queue) is kept with the queue, so never
-- outlives it. Live processes renew at least every expiry / 3; once
-- nobody has for longer than expiry, every lease and queue place has run
-- out anyway.
--
-- Cost: each redis.call costs a few us of server time whatever it does,
-- so the scripts batch ids into variadic calls and skip calls that could
-- change nothing.

local holders, queue, places, info = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local capacity = tonumber(ARGV[1])
local expiry = tonumber(ARGV[2])
local channel = ARGV[3]
local caller = ARGV[4]

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- ZREM in chunks: unpack() cannot spread more than a few thousand values.
local function zrem_all(key, ids)
  for i = 1, #ids, 1000 do
    redis.call('ZREM', key, unpack(ids, i, math.min(i + 999, #ids)))
  end
end

-- ZADD ids with scores score(k) for the k-th id, in chunks as above;
-- flag is nil or a ZADD flag such as 'NX'.
local function zadd_all(key, ids, score, flag)
  for i = 1, #ids, 500 do
    local args = {}
    if flag then
      args[1] = flag
    end
    for k = i, math.min(i + 499, #ids) do
      args[#args + 1] = score(k)
      args[#args + 1] = ids[k]
    end
    redis.call('ZADD', key, unpack(args))
  end
end

-- The process token that starts a permit or waiter id (TOKEN:SEQ).
local function token_of(id)
  return string.sub(id, 1, (string.find(id, ':', 1, true) or 0) - 1)
end

-- The processes whose queue lease has run out (they died, were killed or
-- froze), and the waiters they still have queued. Only a process's end
-- costs a pass over the queue.
local function dead_waiters(now)
  local dead = redis.call('ZRANGEBYSCORE', places, '-inf', now)
  local gone = {}
  if #dead == 0 then
    return dead, gone
  end
  local is_dead = {}
  for _, token in ipairs(dead) do
    is_dead[token] = true
  end
  for _, id in ipairs(redis.call('ZRANGE', queue, 0, -1)) do
    if is_dead[token_of(id)] then
      gone[#gone + 1] = id
    end
  end
  return dead, gone
end

-- Drop dead processes' queued waiters with their leases, and return how
-- many waiters went.
local function purge_places(now)
  local dead, gone = dead_waiters(now)
  zrem_all(queue, gone)
  zrem_all(places, dead)
  return #gone
end

-- Drop the leases whose deadline has passed, and dead processes' waiters.
local function purge(now)
  redis.call('ZREMRANGEBYSCORE', holders, '-inf', now)
  purge_places(now)
end

-- Hand free permits to the head of the queue, in arrival order. The
-- caller's waiters learn of their grants from the reply; the others are
-- announced on their process's channel, one PUBLISH per process.
-- free is the number of free permits, when the caller has counted them
-- (capacity - free leases are held). kept means the caller keeps the keys
-- itself; otherwise holders is kept here when this call creates it.
local function grant(now, free, kept)
  local granted = {}
  free = free or capacity - redis.call('ZCARD', holders)
  if free <= 0 then
    return granted
  end
  local popped = redis.call('ZPOPMIN', queue, free)
  if #popped == 0 then
    return granted
  end
  local others, tokens = {}, {}
  for i = 1, #popped, 2 do
    local id = popped[i]
    granted[#granted + 1] = id
    local token = token_of(id)
    if token ~= caller then
      if not others[token] then
        others[token] = {}
        tokens[#tokens + 1] = token
      end
      table.insert(others[token], id)
    end
  end
  local deadline = tostring(now + expiry)
  zadd_all(holders, granted, function() return deadline end)
  if not kept and free >= capacity then
    redis.call('PEXPIRE', holders, expiry + 1000)
  end
  for _, token in ipairs(tokens) do
    redis.call('PUBLISH', channel .. ':' .. token, table.concat(others[token], ' '))
  end
  return granted
end

-- Set the TTL of the named keys to expiry + 1 s (see the header).
local function keep(...)
  for _, key in ipairs({...}) do
    redis.call('PEXPIRE', key, expiry + 1000)
  end
end

-- Which of ids are members of key: a table id -> true, read with one
-- ZMSCORE per chunk instead of one ZSCORE per id.
local function members(key, ids)
  local found = {}
  for i = 1, #ids, 1000 do
    local last = math.min(i + 999, #ids)
    local scores = redis.call('ZMSCORE', key, unpack(ids, i, last))
    for k = i, last do
      if scores[k - i + 1] then
        found[ids[k]] = true
      end
    end
  end
  return found
end

-- Where each of ids stands: statuses[k] is 1 when the k-th holds a lease,
-- 2 when it is queued (looked up only with in_queue), 0 when neither. The
-- memberships are read in batches: one ZMSCORE per set and chunk.
local function locate(ids, in_queue)
  local held = members(holders, ids)
  local rest = {}
  for _, id in ipairs(ids) do
    if not held[id] then
      rest[#rest + 1] = id
    end
  end
  local queued = {}
  if in_queue and #rest > 0 then
    queued = members(queue, rest)
  end
  local statuses = {}
  for k, id in ipairs(ids) do
    if held[id] then
      statuses[k] = 1
    elseif queued[id] then
      statuses[k] = 2
    else
      statuses[k] = 0
    end
  end
  return statuses
end

-- Time until the earliest lease deadline, in ms, or -1 when no permit is
-- held: a process with waiters looks again then, in case that holder died.
local function first_deadline(now)
  local first = redis.call('ZRANGE', holders, 0, 0, 'WITHSCORES')
  if #first < 2 then
    return -1
  end
  return math.max(0, tonumber(first[2]) - now)
end
