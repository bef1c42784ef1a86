-- An enterprise's line and its rolling-window limit, decided together on Redis's clock.
-- See enterprise-line.ts for the glossary and why each rule is what it is.
--
-- KEYS[1] line   sorted set: member = message id, score = message id (the line is in acceptance order)
-- KEYS[2] rate   sorted set: member = send attempt token, score = when the attempt starts counting in
--                the window: its slot + margin, or the end of its call if that is later (while it is in
--                flight: its slot + margin). Attempts count, not messages: WebSMS counts attempts.
-- KEYS[3] turn   string "<message id> <token> <entitled slot ms>": the one send of the enterprise in flight
-- KEYS[4] meta   hash: `c` = ms from a send's slot to the end of its call (median of the last few, in
--                `samples`); `next`/`nextAt` = the head that was told to wake, and when (so its take can
--                measure how late it really was)
-- ARGV[1] operation: join | take | finish | leave | standing | rebuild | head
-- ARGV[2] limit, ARGV[3] window ms, ARGV[4] margin ms, ARGV[5] turn ttl ms, ARGV[6] message id
-- take: ARGV[7] = attempt token. rebuild: ARGV[7..] = message ids to put back in the line.
local line, rate, turnKey, meta = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local op, limit, window, margin, turnTtl, id = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
-- Half-open window: an attempt counting from e counts while now - e < window.
redis.call('ZREMRANGEBYSCORE', rate, '-inf', now - window)

local function parseTurn()
  local value = redis.call('GET', turnKey)
  if not value then return nil end
  local owner, token, entitled = string.match(value, '^(%S+) (%S+) (%S+)$')
  return { id = owner, token = token, entitled = tonumber(entitled) }
end

-- ms from a send's slot to the end of its call: the median of the last few.
local function overheadMs()
  return tonumber(redis.call('HGET', meta, 'c') or '0') or 0
end

-- Slot of the send at `position` (0 = the line's head): when it may take its grant. Computed, never
-- booked, so a cancel or a send that ends early moves everyone behind it forward by itself.
-- Each future send p: s(p) = max(now, end(p-1), e(p-limit) + window), where a send ends c after its slot
-- and counts from e = its slot + max(margin, c). While sends take less than the margin, rounds are
-- exactly window + margin apart, so an expected time stays right however far down the line it is.
local function slotAt(position, turn)
  local c = overheadMs()
  -- A round is window + margin long, or window + c when sends take longer than the margin.
  local step = math.max(margin, c)
  local counts = {}
  local chainEnd = now
  if turn then chainEnd = math.max(now, turn.entitled + c) end
  local scores = redis.call('ZRANGE', rate, -limit, -1, 'WITHSCORES')
  for i = 2, #scores, 2 do
    local e = tonumber(scores[i])
    -- The send in flight counts at least from when it is expected to end.
    if turn and scores[i - 1] == turn.token then e = math.max(e, chainEnd) end
    counts[#counts + 1] = e
  end
  table.sort(counts)
  local n = #counts
  -- Work is bounded by the limit, not by the line: after two rounds of `limit` sends the pattern repeats
  -- with a period of window + step, or limit * c when sends are latency-bound rather than window-bound.
  local explicit = math.min(position, 2 * limit - 1)
  local slots = {}
  local s
  for p = 0, explicit do
    s = math.max(now, chainEnd)
    local back = n + p - limit + 1
    if back >= 1 then
      local e = (back <= n) and counts[back] or (slots[back - n - 1] + step)
      s = math.max(s, e + window)
    end
    slots[p] = s
    chainEnd = s + c
  end
  if position <= explicit then return s, c end
  local period = math.max(window + step, limit * c)
  local rounds = math.floor((position - explicit - 1) / limit) + 1
  return slots[position - rounds * limit] + rounds * period, c
end

-- Expected arrival at WebSMS: half-way through the call that starts at the slot.
local function eta(slot, c) return slot + math.floor(c / 2) end

local function keepAlive()
  -- An idle enterprise costs nothing: every key expires, the line's bookkeeping two windows after its
  -- line drains. A line that expires with messages still in it (a stall of ten minutes and more) is
  -- rebuilt from the rows, which are the truth.
  local ttl = (window + margin) * (math.floor(redis.call('ZCARD', line) / limit) + 2)
  redis.call('PEXPIRE', line, ttl + 600000)
  redis.call('PEXPIRE', meta, ttl)
end

-- The head that must now be woken at its slot (nothing of the enterprise is in flight), else nil.
-- `nextAt` keeps the first time the head was told, so a head that is late stays visibly late.
local function headToWake()
  if redis.call('EXISTS', turnKey) == 1 then return nil end
  local head = redis.call('ZRANGE', line, 0, 0)[1]
  if not head then return nil end
  local slot = slotAt(0, nil)
  if redis.call('HGET', meta, 'next') ~= head then redis.call('HSET', meta, 'next', head, 'nextAt', slot) end
  keepAlive()
  return { head, slot - now }
end

if op == 'join' then
  redis.call('ZADD', line, 'NX', tonumber(id), id)
  local position = redis.call('ZRANK', line, id)
  local turn = parseTurn()
  local slot, c = slotAt(position, turn)
  if position == 0 and not turn then
    redis.call('HSET', meta, 'next', id, 'nextAt', slot)
    keepAlive()
    -- {position, eta, delay until its slot, 1 = it wakes itself}
    return { position, eta(slot, c), slot - now, 1 }
  end
  keepAlive()
  -- 0: the send before it wakes it when it ends.
  return { position, eta(slot, c), slot - now, 0 }
end

if op == 'take' then
  local token = ARGV[7]
  local turn = parseTurn()
  if turn and turn.id ~= id then
    local position = redis.call('ZRANK', line, id)
    if not position then return { 'absent' } end
    local slot, c = slotAt(position, turn)
    -- {'busy', position, eta, delay}: another send is in flight; it wakes the next head when it ends.
    return { 'busy', position, eta(slot, c), slot - now }
  end
  if not turn then
    local position = redis.call('ZRANK', line, id)
    if not position then return { 'absent' } end
    if position > 0 then
      local slot, c = slotAt(position, nil)
      local head = redis.call('ZRANGE', line, 0, 0)[1]
      -- How long the head has been free to go without going; -1: nobody is known to have told it to go
      -- (a rebuild put it there, or that record expired), so the caller makes sure it can go.
      local overdue = -1
      if redis.call('HGET', meta, 'next') == head then overdue = now - tonumber(redis.call('HGET', meta, 'nextAt')) end
      -- {'behind', position, eta, delay, head, ms the head is overdue or -1}
      return { 'behind', position, eta(slot, c), slot - now, head, overdue }
    end
  end
  -- The head, or the owner of the turn coming back (its run ended before the call: no call was made).
  if redis.call('ZCARD', rate) >= limit then
    local slot, c = slotAt(0, nil)
    if slot > now then
      redis.call('HSET', meta, 'next', id, 'nextAt', slot)
      keepAlive()
      return { 'wait', 0, eta(slot, c), slot - now }
    end
  end
  local entitled = now
  if redis.call('HGET', meta, 'next') == id then
    entitled = math.min(now, tonumber(redis.call('HGET', meta, 'nextAt')))
    redis.call('HDEL', meta, 'next', 'nextAt')
  end
  redis.call('ZADD', rate, entitled + margin, token)
  redis.call('PEXPIRE', rate, window + margin + turnTtl)
  redis.call('ZREM', line, id)
  redis.call('SET', turnKey, id .. ' ' .. token .. ' ' .. entitled, 'PX', turnTtl)
  keepAlive()
  return { 'granted', now }
end

if op == 'finish' or op == 'leave' then
  redis.call('ZREM', line, id)
  local turn = parseTurn()
  if turn and turn.id == id then
    redis.call('DEL', turnKey)
    if op == 'finish' then
      -- The attempt counts from its slot + margin, and never from before its call ended: WebSMS received
      -- it at some moment before that, so the window holds as WebSMS sees it whatever the latency was.
      redis.call('ZADD', rate, math.max(turn.entitled + margin, now), turn.token)
      redis.call('PEXPIRE', rate, window + margin)
      -- The median of the last few sends: one slow start (cold connections, a busy machine) must not
      -- shift every expected time down the line.
      local samples = {}
      for value in string.gmatch(redis.call('HGET', meta, 'samples') or '', '[^,]+') do samples[#samples + 1] = tonumber(value) end
      samples[#samples + 1] = math.max(0, math.min(now - turn.entitled, window))
      if #samples > 7 then table.remove(samples, 1) end
      local sorted = {}
      for i, value in ipairs(samples) do sorted[i] = value end
      table.sort(sorted)
      redis.call('HSET', meta, 'samples', table.concat(samples, ','), 'c', sorted[math.floor((#sorted + 1) / 2)])
      keepAlive()
    end
  end
  local wake = headToWake()
  if not wake then return {} end
  -- {next head, delay until its slot}
  return wake
end

if op == 'standing' then
  local turn = parseTurn()
  if turn and turn.id == id then return { 'sending' } end
  local position = redis.call('ZRANK', line, id)
  if not position then return { 'absent' } end
  local slot, c = slotAt(position, turn)
  return { 'waiting', position, eta(slot, c) }
end

if op == 'rebuild' then
  for i = 7, #ARGV do redis.call('ZADD', line, 'NX', tonumber(ARGV[i]), ARGV[i]) end
  keepAlive()
  -- The head may have changed: {head, delay until its slot} when it must be woken.
  return headToWake() or {}
end

if op == 'head' then
  return headToWake() or {}
end

return redis.error_reply('enterprise-line: unknown operation ' .. tostring(op))
