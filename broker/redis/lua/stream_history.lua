-- History: the stream's position and the messages asked for, oldest
-- first. A missing stream is started, so that the position answered stays
-- valid for the messages published afterwards.
--
-- ARGV: ttl (ms) and a new epoch for a stream started by the query, limit,
-- '1' if a position is given ('0' otherwise), its epoch ('' for the
-- current one), its offset. Returns {epoch, top, id, body, id, body, ...}.

local ttl, new_epoch, limit = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local since_epoch, since = ARGV[5], tonumber(ARGV[6])
local has_since = ARGV[4] == '1'

local epoch, top = open(now_ms(), ttl, new_epoch, nil)
local out = {epoch, top}
if limit <= 0 or top == 0 then
  return out
end
local entries
if has_since and (since_epoch == '' or since_epoch == epoch) then
  if since >= top then
    return out
  end
  -- From since+1, or from the oldest kept when since+1 is gone: the
  -- caller sees the gap.
  entries = redis.call('XRANGE', stream, int(since + 1), '+', 'COUNT', int(limit))
  for _, e in ipairs(entries) do
    out[#out + 1] = e[1]
    out[#out + 1] = e[2][4]
  end
else
  entries = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', int(limit))
  for i = #entries, 1, -1 do
    out[#out + 1] = entries[i][1]
    out[#out + 1] = entries[i][2][4]
  end
end
return out
