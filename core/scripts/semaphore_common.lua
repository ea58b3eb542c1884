-- Shared prelude of the semaphore scripts; scripts.go prepends it to each.
--
-- KEYS[1] holders: sorted set, member = permit id, score = lease deadline
--         in ms on the Redis clock
-- KEYS[2] queue:   sorted set, member = waiter id, score = arrival number
-- KEYS[3] places:  sorted set, member = waiter id, score = deadline of the
--         queue place in ms on the Redis clock
-- KEYS[4] info:    hash, fields capacity, expiry_ms, arrivals (counter)
-- ARGV[1] capacity (permits), ARGV[2] expiry (ms), ARGV[3] grant channel;
-- the rest belongs to each script.
--
-- Clock: the Redis server's TIME, read once per call, in whole ms.
-- Every key gets a TTL of expiry + 1 s at each call: live processes call
-- at least every expiry / 3, and once nobody has called for longer than
-- expiry every lease and queue place has run out anyway.

local holders, queue, places, info = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local capacity = tonumber(ARGV[1])
local expiry = tonumber(ARGV[2])
local channel = ARGV[3]

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

-- Drop leases and queue places whose deadline has passed: their owner
-- stopped renewing them (it died, was killed or froze).
local function purge(now)
  redis.call('ZREMRANGEBYSCORE', holders, '-inf', now)
  local gone = redis.call('ZRANGEBYSCORE', places, '-inf', now)
  if #gone > 0 then
    zrem_all(places, gone)
    zrem_all(queue, gone)
  end
end

-- Hand free permits to the head of the queue, in arrival order. Waiters
-- named in own belong to the caller, which reads them from the reply; the
-- others are announced on the channel so that their process wakes them.
local function grant(now, own)
  local granted = {}
  local free = capacity - redis.call('ZCARD', holders)
  if free <= 0 then
    return granted
  end
  local heads = redis.call('ZRANGE', queue, 0, free - 1)
  if #heads == 0 then
    return granted
  end
  local others = {}
  for _, id in ipairs(heads) do
    redis.call('ZADD', holders, now + expiry, id)
    granted[#granted + 1] = id
    if not own[id] then
      others[#others + 1] = id
    end
  end
  zrem_all(queue, heads)
  zrem_all(places, heads)
  if #others > 0 then
    redis.call('PUBLISH', channel, table.concat(others, ' '))
  end
  return granted
end

local function keep()
  for _, key in ipairs(KEYS) do
    redis.call('PEXPIRE', key, expiry + 1000)
  end
end

local function held(id)
  return redis.call('ZSCORE', holders, id) ~= false
end

local function queued(id)
  return redis.call('ZSCORE', queue, id) ~= false
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
