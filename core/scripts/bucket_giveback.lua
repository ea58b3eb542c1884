-- Give back tokens promised to waiters that were canceled before their
-- token was due.
--
-- ARGV[4..] the due times (us) of the canceled waiters' tokens.
-- Reply: how many tokens went back to the bucket. The last token promised
--   goes back, exactly as if it had never been promised (and so do holes
--   that this makes last). One due earlier cannot: a later waiter already
--   counts on the refills after it, and handing it to the bucket would let
--   a refill pass more than its share. It becomes a hole instead, for the
--   next newcomer to take at its due time. Tokens already due stay spent.

local now = now_us()
local tokens, slot = load(now)

local times = {}
for i = 4, #ARGV do
  times[#times + 1] = tonumber(ARGV[i])
end
table.sort(times, function(a, b) return a > b end)

-- A hole due at the new last promised time is the last token too.
local function take_hole(at)
  local same = redis.call('ZRANGEBYSCORE', holes, at, at, 'LIMIT', 0, 1)
  if #same == 0 then
    return false
  end
  redis.call('ZREM', holes, same[1])
  return true
end

local back = 0
for _, at in ipairs(times) do
  if at > now then
    if tokens < 0 and at == due(tokens, slot, now) then
      tokens = tokens + 1
      back = back + 1
      while tokens < 0 and take_hole(due(tokens, slot, now)) do
        tokens = tokens + 1
        back = back + 1
      end
    else
      local n = redis.call('HINCRBY', bucket, 'holes_seq', 1)
      redis.call('ZADD', holes, at, at .. ':' .. n)
    end
  end
end

save(tokens, slot, now)
return back
