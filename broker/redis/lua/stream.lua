-- Shared by the stream scripts (stream_publish.lua and stream_history.lua
-- are appended to this file). A topic's stream is two keys in the slot of
-- the topic's channel:
--
--   KEYS[1]  hash: e = epoch, top = offset of the newest message (0 before
--            the first), ttl = the TTL in ms of the last publish
--   KEYS[2]  Redis Stream of the kept messages, oldest first: entry id
--            OFFSET-0, fields t = publish time (Unix ms, Redis's clock) and
--            m = the message's body (uvarint id length, id, data)
--
-- The stream holds the offsets top-n+1 .. top (n = XLEN) with no hole:
-- entries are only ever appended and trimmed from the oldest.

local meta, stream = KEYS[1], KEYS[2]

-- int formats n without an exponent (Lua's tostring switches to one at
-- 1e14).
local function int(n)
  return string.format('%d', n)
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- time_of returns the publish time of the entry at offset o, nil if there
-- is none.
local function time_of(o)
  local e = redis.call('XRANGE', stream, int(o), int(o))
  if #e == 0 then
    return nil
  end
  return tonumber(e[1][2][2])
end

-- expire drops the entries published before cutoff and returns how many
-- remain. Publish times grow with the offset, so the expired entries are
-- the oldest: a binary search over the offsets finds the first one kept,
-- in O(log n) lookups, and only when the oldest has expired.
local function expire(top, cutoff)
  local n = redis.call('XLEN', stream)
  if n == 0 then
    return 0
  end
  local first = top - n + 1
  local t = time_of(first)
  if t and t >= cutoff then
    return n
  end
  t = time_of(top)
  if not t or t < cutoff then
    redis.call('DEL', stream)
    return 0
  end
  local lo, hi = first, top -- lo has expired, hi is kept
  while hi - lo > 1 do
    local mid = math.floor((lo + hi) / 2)
    t = time_of(mid)
    if t and t >= cutoff then
      hi = mid
    else
      lo = mid
    end
  end
  redis.call('XTRIM', stream, 'MINID', int(hi))
  return top - hi + 1
end

-- open returns the stream's epoch and top. A stream that is missing, or
-- whose every message is older than its TTL (no publish for that long:
-- it has lost its continuity), starts again, empty, in new_epoch at top 0,
-- expiring after ttl unless published to. cut_ttl, if not nil, replaces
-- the stream's own TTL for dropping the expired messages.
local function open(now, ttl, new_epoch, cut_ttl)
  local m = redis.call('HMGET', meta, 'e', 'top', 'ttl')
  local epoch, top = m[1], tonumber(m[2])
  if epoch and top then
    if top == 0 then
      return epoch, 0
    end
    if expire(top, now - (cut_ttl or tonumber(m[3]) or ttl)) > 0 then
      return epoch, top
    end
  end
  -- A stream left without its hash (evicted, or deleted by hand) holds
  -- the offsets of a lost epoch.
  redis.call('DEL', stream)
  redis.call('HSET', meta, 'e', new_epoch, 'top', 0, 'ttl', int(ttl))
  redis.call('PEXPIRE', meta, int(ttl))
  return new_epoch, 0
end
