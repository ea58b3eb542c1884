-- Read a token bucket's state without changing it.
--
-- ARGV as in bucket_common.lua.
-- Reply: {tokens, promised}: the tokens available now, and how many
--   tokens of future refills are promised to waiters (holes left by
--   canceled waiters are not counted).

local now = now_us()
local tokens = load(now)
local open = redis.call('ZCOUNT', holes, now, '+inf')
return {math.max(tokens, 0), math.max(-tokens - open, 0)}
