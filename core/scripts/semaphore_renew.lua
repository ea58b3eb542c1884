-- Renew the leases of live holders and the queue places of live waiters,
-- then grant what expired leases freed.
--
-- ARGV[5..] ids of the caller's holders and waiters.
-- Reply: {statuses, granted, wait_ms}: statuses[i] is 1 (holds a permit,
--   lease renewed; for a waiter this means its grant notice was missed),
--   2 (queued, place renewed) or 0 (unknown: lease or place expired).
--   wait_ms is the time until the earliest lease deadline, or -1 when no
--   permit is held.

local now = now_ms()
purge(now)

local ids = {}
for i = 5, #ARGV do
  ids[#ids + 1] = ARGV[i]
end

-- Memberships are read and leases written in batches, not per id.
local held = members(holders, ids)
local rest = {}
for _, id in ipairs(ids) do
  if not held[id] then
    rest[#rest + 1] = id
  end
end
local queued = {}
if #rest > 0 then
  queued = members(queue, rest)
end
local leases, places_kept = {}, {}
local statuses = {}
for k, id in ipairs(ids) do
  if held[id] then
    leases[#leases + 1] = id
    statuses[k] = 1
  elseif queued[id] then
    places_kept[#places_kept + 1] = id
    statuses[k] = 2
  else
    statuses[k] = 0
  end
end
local deadline_ms = tostring(now + expiry)
local deadline = function() return deadline_ms end
zadd_all(holders, leases, deadline)
zadd_all(places, places_kept, deadline)

local granted = grant(now, nil, true)
keep(holders, queue, places, info)
return {statuses, granted, first_deadline(now)}
