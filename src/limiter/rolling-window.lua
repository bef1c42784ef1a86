-- Rolling-window limiter: one sorted set per enterprise; member = the send attempt's token, score = grant time.
-- KEYS[1] = the enterprise's key. ARGV[1] = limit, ARGV[2] = window in ms (margin included),
-- ARGV[3] = the attempt's token, or absent to only look (a peek never records anything).
-- Returns {1, grantedAtMs} (a peek: {1, 0}) or {0, msUntilASlotFrees}.
local key, limit, window, token = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
-- Redis's clock, not the callers': workers on different machines disagree about the time, one clock does not.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
-- Half-open window: a grant at g counts while now - g < window, so a slot frees exactly at g + window.
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local count = redis.call('ZCARD', key)
if count < limit then
  if not token then return {1, 0} end
  redis.call('ZADD', key, now, token)
  -- The newest grant stops counting after `window`, and with it the whole key: idle enterprises cost no memory.
  redis.call('PEXPIRE', key, window)
  return {1, now}
end
-- Full: a slot frees when the (count - limit + 1)-th oldest grant leaves (the oldest, unless the limit was lowered).
local blocking = redis.call('ZRANGE', key, count - limit, count - limit, 'WITHSCORES')
return {0, tonumber(blocking[2]) + window - now}
