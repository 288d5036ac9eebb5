-- PublishStream: assigns the next offset, appends, trims, renews the TTL
-- and publishes, in one step, so that offsets have no gap or reuse and the
-- subscribers get the messages in offset order.
--
-- ARGV: channel, body, size, ttl (ms), a new epoch should the stream
-- start again, '1' for SPUBLISH (Redis Cluster; the channel is in the
-- keys' slot) or '0' for PUBLISH. Returns {epoch, offset}.

local channel, body = ARGV[1], ARGV[2]
local size, ttl, new_epoch, sharded = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5], ARGV[6] == '1'

local function uvarint(n)
  local b = {}
  while n >= 128 do
    b[#b + 1] = string.char(n % 128 + 128)
    n = math.floor(n / 128)
  end
  b[#b + 1] = string.char(n)
  return table.concat(b)
end

local now = now_ms()
local epoch, top, exp = open(now, ttl, size, new_epoch, true)
-- XADD comes before the other writes: it is the command that can fail
-- (out of memory), and a script's writes before an error stay.
local added = false
if top > 0 then
  added = redis.call('XADD', stream, 'NOMKSTREAM', 'MAXLEN', '~', int(size), int(top + 1), 't', int(now), 'm', body)
  if not added then
    -- The messages are gone but the hash is not (evicted, or deleted by
    -- hand): continuity is lost.
    epoch, top, exp = restart(ttl, size, new_epoch), 0, 0
  end
end
if not added then
  redis.call('XADD', stream, 'MAXLEN', '~', int(size), int(top + 1), 't', int(now), 'm', body)
end
local offset = top + 1
if exp == 0 then
  exp = now + ttl -- the message is the oldest
end
redis.call('HSET', meta, 'top', int(offset), 'ttl', int(ttl), 'size', int(size), 'exp', int(exp))
redis.call('PEXPIRE', meta, int(ttl))
redis.call('PEXPIRE', stream, int(ttl))
local payload = '\2' .. uvarint(offset) .. uvarint(#epoch) .. epoch .. body
if sharded then
  redis.call('SPUBLISH', channel, payload)
else
  redis.call('PUBLISH', channel, payload)
end
return {epoch, offset}
