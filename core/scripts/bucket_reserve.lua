-- Reserve one token for each waiter, in the order given: a token
-- available now, else the earliest hole left by a canceled waiter, else
-- one of the next refill that has tokens left to promise.
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
  local hole = nil
  if at > now then
    local first = redis.call('ZRANGE', holes, 0, 0, 'WITHSCORES')
    if #first == 2 then
      hole, at = first[1], tonumber(first[2])
    end
  end
  if limit >= 0 and at - now > limit then
    reply[#reply + 1] = -1
  elseif hole then
    redis.call('ZREM', holes, hole)
    reply[#reply + 1] = at
  else
    tokens = tokens - 1
    reply[#reply + 1] = at
  end
end

save(tokens, slot, now)
return reply
