-- Read a semaphore's state without changing it.
--
-- KEYS as in semaphore_common.lua; no ARGV (the prelude's ARGV values are
-- nil here, and unused).
-- Reply: {capacity, holders, waiters}: the capacity last written by an
--   acquiring process (0 if none), the live leases, and the waiters queued
--   by processes whose queue lease is live.
--   Clock: the Redis server's TIME, in ms.

local now = now_ms()
local written = tonumber(redis.call('HGET', info, 'capacity') or '0')
local held = redis.call('ZCOUNT', holders, '(' .. now, '+inf')
local waiters = redis.call('ZCARD', queue)
if waiters > 0 then
  -- Waiters of dead processes stay queued until a call drops them.
  local _, gone = dead_waiters(now)
  waiters = waiters - #gone
end
return {written, held, waiters}
