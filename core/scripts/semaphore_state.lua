-- Read a semaphore's state without changing it.
--
-- KEYS as in semaphore_common.lua (this script does not include it).
-- Reply: {capacity, holders, waiters}: the capacity last written by an
--   acquiring process (0 if none), the live leases, and the waiters queued
--   by processes whose queue lease is live.
--   Clock: the Redis server's TIME, in ms.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local capacity = tonumber(redis.call('HGET', KEYS[4], 'capacity') or '0')
local holders = redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
local waiters = redis.call('ZCARD', KEYS[2])
local dead = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
if waiters > 0 and #dead > 0 then
  -- Waiters of dead processes still queued until a call drops them.
  local is_dead = {}
  for _, token in ipairs(dead) do
    is_dead[token] = true
  end
  for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
    if is_dead[string.sub(id, 1, (string.find(id, ':', 1, true) or 0) - 1)] then
      waiters = waiters - 1
    end
  end
end
return {capacity, holders, waiters}
