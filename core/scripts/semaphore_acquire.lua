-- Enqueue new waiters at the back of the queue and grant what is free.
--
-- ARGV[4..] pairs (id, wait): wait "1" keeps the waiter queued until a
--   permit comes, "0" takes a permit only if one is free for it at once.
--   Each id is new to Redis: the dispatcher sends an id once, or again
--   only after Redis reported it unknown (its queue place had expired).
-- Reply: {statuses, granted, wait_ms}: statuses[i] is 1 (granted), 0
--   (queued) or -1 (refused: wait was "0" and no permit was free); granted
--   lists every id granted by this call, the caller's and others'; wait_ms
--   is the time until the earliest lease deadline, or -1 if none is held.

local now = now_ms()
purge(now)
redis.call('HSET', info, 'capacity', capacity, 'expiry_ms', expiry)

local ids, own = {}, {}
for i = 4, #ARGV, 2 do
  ids[#ids + 1] = ARGV[i]
  own[ARGV[i]] = true
end

-- When nobody waits, the first free ids take their permits at once and
-- never touch the queue: FIFO holds, since nobody came before them.
local free = capacity - redis.call('ZCARD', holders)
local granted, rest = {}, ids
if free > 0 and redis.call('ZCARD', queue) == 0 then
  rest = {}
  for k, id in ipairs(ids) do
    if k <= free then
      granted[#granted + 1] = id
    elseif ARGV[2 * k + 3] == '1' then
      rest[#rest + 1] = id
    end
  end
  if #granted > 0 then
    zadd_all(holders, granted, function() return now + expiry end)
    keep(holders)
  end
  free = free - #granted
end

-- The others join the back of the queue in one batch, numbered by the
-- shared arrivals counter, then the head of the queue gets what is free.
if #rest > 0 then
  local last = redis.call('HINCRBY', info, 'arrivals', #rest)
  local first = last - #rest
  zadd_all(queue, rest, function(k) return first + k end, 'NX')
  zadd_all(places, rest, function() return now + expiry end)
  keep(queue, places)
  for _, id in ipairs(grant(now, own, free)) do
    granted[#granted + 1] = id
  end
end
keep(info)

-- A waiter that would not wait and got nothing leaves the queue again.
local got, queued = {}, {}
for _, id in ipairs(granted) do
  got[id] = true
end
for _, id in ipairs(rest) do
  queued[id] = true
end
local statuses, refused = {}, {}
for k, id in ipairs(ids) do
  if got[id] then
    statuses[k] = 1
  elseif ARGV[2 * k + 3] == '0' then
    if queued[id] then
      refused[#refused + 1] = id
    end
    statuses[k] = -1
  else
    statuses[k] = 0
  end
end
if #refused > 0 then
  zrem_all(queue, refused)
  zrem_all(places, refused)
end

return {statuses, granted, first_deadline(now)}
