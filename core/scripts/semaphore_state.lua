-- Read a semaphore's state without changing it.
--
-- KEYS as in semaphore_common.lua (this script does not include it).
-- Reply: {capacity, holders, waiters}: the capacity last written by an
--   acquiring process (0 if none), and the live leases and queue places.
--   Clock: the Redis server's TIME, in ms.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local capacity = tonumber(redis.call('HGET', KEYS[4], 'capacity') or '0')
local holders = redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
local waiters = redis.call('ZCOUNT', KEYS[3], '(' .. now, '+inf')
return {capacity, holders, waiters}
