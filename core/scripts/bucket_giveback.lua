-- Give back tokens promised to waiters that were canceled before their
-- token was due.
--
-- ARGV[4..] the due times (us) of the canceled waiters' tokens.
-- Reply: how many tokens were given back. A token comes back only when it
--   is the last one promised (the latest refill slot holds it), so that
--   taking it back is exactly as if it had never been promised; one due
--   earlier stays spent, since a later waiter already counts on the slots
--   after it and the rate would otherwise be exceeded.

local now = now_us()
local tokens, slot = load(now)

local times = {}
for i = 4, #ARGV do
  times[#times + 1] = tonumber(ARGV[i])
end
table.sort(times, function(a, b) return a > b end)

local back = 0
for _, at in ipairs(times) do
  if tokens < 0 and at > now and at == due(tokens, slot, now) then
    tokens = tokens + 1
    back = back + 1
  end
end

if back > 0 then
  save(tokens, slot, now)
end
return back
