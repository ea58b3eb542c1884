-- Release permits and withdraw waiters, then grant what became free.
--
-- ARGV[4..] ids: each gives back its permit, or leaves the queue.
-- Reply: {statuses, granted}: statuses[i] is 1 (the id held a permit, now
--   released), 2 (the id was queued and left) or 0 (unknown: its lease or
--   place had expired; nothing is given back, so a permit that may have
--   passed to another holder is never counted twice).

local now = now_ms()
purge(now)

local own = {}
local statuses = {}
for i = 4, #ARGV do
  local id = ARGV[i]
  own[id] = true
  if redis.call('ZREM', holders, id) == 1 then
    statuses[#statuses + 1] = 1
  elseif redis.call('ZREM', queue, id) == 1 then
    redis.call('ZREM', places, id)
    statuses[#statuses + 1] = 2
  else
    statuses[#statuses + 1] = 0
  end
end

-- Only removals so far: the TTLs still cover what is left (grant keeps
-- the holders it adds).
return {statuses, grant(now, own)}
