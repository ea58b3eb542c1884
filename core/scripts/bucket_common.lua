-- Shared prelude of the token bucket scripts; scripts.go prepends it.
--
-- KEYS[1] bucket: hash with fields
--   tokens  tokens left; negative when tokens of future refills are
--           already promised to waiters (-3 means three are promised)
--   slot    time of the last refill counted, in us on the Redis clock
--   capacity, refill_amount, refill_us: the parameters last written
--   holes_seq  counter that names holes
-- KEYS[2] holes: sorted set of the promised tokens whose waiter was
--   canceled while another waiter was promised a later one; score = due
--   time (us), member = "due:n". A newcomer takes the earliest hole still
--   to come before asking a later refill: the refill slots keep exactly the
--   tokens they had, so the rate holds, and no waiter is delayed.
-- ARGV[1] capacity (tokens), ARGV[2] refill amount (tokens),
-- ARGV[3] refill period (us); the rest belongs to each script.
--
-- Clock: the Redis server's TIME, in us (exact in a Lua double until the
-- year 2255). A bucket gains refill_amount tokens at slot + k * period for
-- every whole k, never above capacity; one without a key is full.

local bucket, holes = KEYS[1], KEYS[2]
local capacity = tonumber(ARGV[1])
local amount = tonumber(ARGV[2])
local period = tonumber(ARGV[3])

local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- The bucket as it stands at now, refills counted in whole periods so that
-- an idle gap never adds more than capacity.
local function load(now)
  redis.call('ZREMRANGEBYSCORE', holes, '-inf', '(' .. now)
  local v = redis.call('HMGET', bucket, 'tokens', 'slot')
  if not v[1] then
    return capacity, now
  end
  local tokens, slot = tonumber(v[1]), tonumber(v[2])
  if now >= slot + period then
    local n = math.floor((now - slot) / period)
    tokens = math.min(capacity, tokens + n * amount)
    slot = slot + n * period
  end
  return tokens, slot
end

-- When the last token taken (leaving tokens) becomes available: now if the
-- bucket still covered it, else at the refill that pays off the debt.
local function due(tokens, slot, now)
  if tokens >= 0 then
    return now
  end
  return slot + math.ceil(-tokens / amount) * period
end

-- Store the bucket. It may expire once its last promised token is due and
-- it has had time to refill completely: a missing bucket reads as full,
-- which it would then be anyway.
local function save(tokens, slot, now)
  redis.call('HSET', bucket, 'tokens', tokens, 'slot', slot,
    'capacity', capacity, 'refill_amount', amount, 'refill_us', period)
  local refill = math.ceil(capacity / amount) * period
  local ttl = math.ceil((due(tokens, slot, now) - now + refill) / 1000)
  redis.call('PEXPIRE', bucket, ttl + 1000)
  redis.call('PEXPIRE', holes, ttl + 1000)
end
