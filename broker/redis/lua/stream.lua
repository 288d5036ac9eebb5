-- Shared by the stream scripts (stream_publish.lua and stream_history.lua
-- are appended to this file). A topic's stream is two keys in the slot of
-- the topic's channel:
--
--   KEYS[1]  hash: e = epoch; top = offset of the newest message (0 before
--            the first); size and ttl (ms) = how the latest publish keeps
--            the stream; exp = when the oldest message kept expires (Unix
--            ms, Redis's clock), or earlier; 0 with no message
--   KEYS[2]  Redis Stream of the messages, oldest first: entry id
--            OFFSET-0, fields t = publish time (Unix ms, Redis's clock) and
--            m = the message's body (uvarint id length, id, data)
--
-- The Redis Stream holds the offsets top-n+1 .. top (n = XLEN) with no
-- hole: entries are only appended, and trimmed from the oldest. XADD trims
-- it approximately (whole nodes of the Redis Stream, cheaper than one
-- entry at a time), so it may hold a node's worth (at most 100 entries or
-- about 4 KB) more than size: the stream's messages are the newest size of
-- them.

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

-- restart starts the stream again, empty, in new_epoch, expiring after
-- ttl unless published to, and returns the epoch.
local function restart(ttl, size, new_epoch)
  redis.call('DEL', stream)
  redis.call('HSET', meta, 'e', new_epoch, 'top', 0, 'ttl', int(ttl), 'size', int(size), 'exp', 0)
  redis.call('PEXPIRE', meta, int(ttl))
  return new_epoch
end

-- expire drops the messages published before cutoff, first being the
-- oldest offset of the stream, and returns the publish time of the oldest
-- one left, nil if none is. Publish times grow with the offset, so the
-- expired messages are the oldest: a binary search over the offsets finds
-- the first one kept, in O(log n) lookups.
local function expire(top, first, cutoff)
  local t = time_of(first)
  if t and t >= cutoff then
    return t
  end
  local hi_t = time_of(top)
  if not hi_t or hi_t < cutoff then
    redis.call('DEL', stream)
    return nil
  end
  local lo, hi = first, top -- lo has expired, hi is kept
  while hi - lo > 1 do
    local mid = math.floor((lo + hi) / 2)
    t = time_of(mid)
    if t and t >= cutoff then
      hi, hi_t = mid, t
    else
      lo = mid
    end
  end
  redis.call('XTRIM', stream, 'MINID', int(hi))
  return hi_t
end

-- open returns the stream's epoch, top, exp and size. A publish passes
-- its ttl and size, which apply from now on; a query passes those of a
-- stream it starts, and the stream's own apply. A stream whose hash is
-- missing, or whose every message is older than its TTL (no publish for
-- that long: it lost its continuity), starts again in new_epoch. The
-- expired messages are dropped when exp says some may be, which is about
-- once per TTL.
local function open(now, ttl, size, new_epoch, publishing)
  local m = redis.call('HMGET', meta, 'e', 'top', 'ttl', 'size', 'exp')
  local epoch, top = m[1], tonumber(m[2])
  if not (epoch and top) then
    return restart(ttl, size, new_epoch), 0, 0, size
  end
  local kept_ttl, kept_size, exp = tonumber(m[3]) or ttl, tonumber(m[4]) or size, tonumber(m[5]) or 0
  if not publishing then
    ttl, size = kept_ttl, kept_size
  end
  if top == 0 then
    return epoch, 0, 0, size
  end
  -- exp holds for the messages and the TTL of the last look. A new TTL
  -- moves every expiry; a new size may bring older messages, which XADD
  -- had not trimmed yet, back into the stream.
  if exp > 0 and now < exp and ttl == kept_ttl and size == kept_size then
    return epoch, top, exp, size
  end
  local n = redis.call('XLEN', stream)
  local oldest = n > 0 and expire(top, math.max(top - n + 1, top - size + 1), now - ttl)
  if not oldest then
    return restart(ttl, size, new_epoch), 0, 0, size
  end
  exp = oldest + ttl
  if not publishing then
    redis.call('HSET', meta, 'exp', int(exp))
  end
  return epoch, top, exp, size
end
