-- Renew the leases of live holders and the queue places of live waiters,
-- then grant what expired leases freed.
--
-- ARGV[4..] ids of the caller's holders and waiters.
-- Reply: {statuses, granted, wait_ms}: statuses[i] is 1 (holds a permit,
--   lease renewed; for a waiter this means its grant notice was missed),
--   2 (queued, place renewed) or 0 (unknown: lease or place expired).
--   wait_ms is the time until the earliest lease deadline, or -1 when no
--   permit is held.

local now = now_ms()
purge(now)

local own = {}
local statuses = {}
for i = 4, #ARGV do
  local id = ARGV[i]
  own[id] = true
  if held(id) then
    redis.call('ZADD', holders, now + expiry, id)
    statuses[#statuses + 1] = 1
  elseif queued(id) then
    redis.call('ZADD', places, now + expiry, id)
    statuses[#statuses + 1] = 2
  else
    statuses[#statuses + 1] = 0
  end
end

local granted = grant(now, own)
keep(holders, queue, places, info)
return {statuses, granted, first_deadline(now)}
