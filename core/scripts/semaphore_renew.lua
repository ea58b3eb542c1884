-- Renew the leases of live holders and the queue lease of the caller,
-- then grant what expired leases freed.
--
-- ARGV[5] "1" when the caller has waiters queued: its queue lease is
--   renewed (or made again, and reported lost); "0": it is dropped, so
--   that its end costs no pass over the queue.
-- ARGV[6..] ids to look up: the caller's holders, whose leases are
--   renewed, and, when it asks (it may have missed an announcement or lost
--   its queue lease), its waiters.
-- Reply: {statuses, granted, wait_ms, lost}: statuses[i] is 1 (holds a
--   permit, lease renewed; for a waiter this means its grant notice was
--   missed), 2 (queued) or 0 (unknown: lease expired, or dropped from the
--   queue). wait_ms is the time until the earliest lease deadline, or -1
--   when no permit is held. lost is 1 when the caller had waiters queued
--   but its queue lease had run out, so that they were dropped: the caller
--   looks its waiters up again.

local now = now_ms()
purge(now)

local lost = 0
if ARGV[5] ~= '1' then
  redis.call('ZREM', places, caller)
elseif redis.call('ZADD', places, now + expiry, caller) == 1 then
  lost = 1
end

local ids = {}
for i = 6, #ARGV do
  ids[#ids + 1] = ARGV[i]
end

-- Memberships are read and leases written in batches, not per id.
local statuses = locate(ids, true)
local leases = {}
for k, id in ipairs(ids) do
  if statuses[k] == 1 then
    leases[#leases + 1] = id
  end
end
local deadline_ms = tostring(now + expiry)
zadd_all(holders, leases, function() return deadline_ms end)

local granted = grant(now, nil, true)
keep(holders, queue, places, info)
return {statuses, granted, first_deadline(now), lost}
