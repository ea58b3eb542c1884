-- Enqueue new waiters at the back of the queue and grant what is free.
--
-- ARGV[4..] pairs (id, wait): wait "1" keeps the waiter queued until a
--   permit comes, "0" takes a permit only if one is free for it at once.
-- Reply: {statuses, granted, wait_ms}: statuses[i] is 1 (granted), 0
--   (queued) or -1 (refused: wait was "0" and no permit was free); granted
--   lists every id granted by this call, the caller's and others'; wait_ms
--   is the time until the earliest lease deadline, or -1 if none is held.

local now = now_ms()
purge(now)
redis.call('HSET', info, 'capacity', capacity, 'expiry_ms', expiry)

local own = {}
for i = 4, #ARGV, 2 do
  local id = ARGV[i]
  own[id] = true
  if not held(id) and not queued(id) then
    local arrival = redis.call('HINCRBY', info, 'arrivals', 1)
    redis.call('ZADD', queue, arrival, id)
    redis.call('ZADD', places, now + expiry, id)
  end
end

local granted = grant(now, own)

local statuses = {}
for i = 4, #ARGV, 2 do
  local id = ARGV[i]
  if held(id) then
    statuses[#statuses + 1] = 1
  elseif ARGV[i + 1] == '0' then
    redis.call('ZREM', queue, id)
    redis.call('ZREM', places, id)
    statuses[#statuses + 1] = -1
  else
    statuses[#statuses + 1] = 0
  end
end

keep()
return {statuses, granted, first_deadline(now)}
