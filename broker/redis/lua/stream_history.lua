-- History: the stream's position and the messages asked for, oldest
-- first. A missing stream is started, so that the position answered stays
-- valid for the messages published afterwards.
--
-- ARGV: ttl (ms), size and a new epoch for a stream started by the query;
-- limit; '1' if a position is given ('0' otherwise), its epoch ('' for
-- the current one), its offset. Returns {epoch, top, id, body, id, body,
-- ...}.

local ttl, size, new_epoch, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local has_since, since_epoch, since = ARGV[5] == '1', ARGV[6], tonumber(ARGV[7])

local epoch, top, _, kept = open(now_ms(), ttl, size, new_epoch, false)
local n = 0
if top > 0 then
  n = redis.call('XLEN', stream)
  if n == 0 then
    -- The messages are gone but the hash is not: continuity is lost.
    epoch, top = restart(ttl, size, new_epoch), 0
  end
end
local out = {epoch, top}
if limit <= 0 or top == 0 then
  return out
end
local first = math.max(top - n + 1, top - kept + 1)
if has_since and (since_epoch == '' or since_epoch == epoch) then
  if since >= top then
    return out
  end
  -- From since+1, or from the oldest kept when since+1 is gone: the
  -- caller sees the gap.
  local entries = redis.call('XRANGE', stream, int(math.max(since + 1, first)), '+', 'COUNT', int(limit))
  for _, e in ipairs(entries) do
    out[#out + 1] = e[1]
    out[#out + 1] = e[2][4]
  end
else
  local entries = redis.call('XREVRANGE', stream, '+', int(first), 'COUNT', int(math.min(limit, top - first + 1)))
  for i = #entries, 1, -1 do
    out[#out + 1] = entries[i][1]
    out[#out + 1] = entries[i][2][4]
  end
end
return out
