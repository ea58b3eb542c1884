-- Reserve one token for each waiter, in the order given.
--
-- ARGV[4..] the longest wait each waiter accepts, in us; -1 for no limit.
-- Reply: {now, due_1, due_2, ...}: the Redis time (us) and, per waiter,
--   the time its token is due (us; equal to now when it is available at
--   once), or -1 when the wait would pass its limit: then nothing was taken.

local now = now_us()
local tokens, slot = load(now)

local reply = {now}
for i = 4, #ARGV do
  local limit = tonumber(ARGV[i])
  local at = due(tokens - 1, slot, now)
  if limit >= 0 and at - now > limit then
    reply[#reply + 1] = -1
  else
    tokens = tokens - 1
    reply[#reply + 1] = at
  end
end

save(tokens, slot, now)
return reply
