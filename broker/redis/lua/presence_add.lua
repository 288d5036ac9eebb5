-- AddPresence, for one topic: records the entry (replacing the one of the
-- same conn, which may be another node's), counts the user's connection,
-- announces a join or cancels a pending leave, and keeps the node alive
-- in the group's registry.
--
-- KEYS: the topic's entries and users, the node's set, the group's
-- pending leaves and registry.
-- ARGV: topic, conn, user, info, node, '1' for JoinLeave, grace (ms), the
-- node's TTL (ms), the topic's channel, '1' for SPUBLISH, the prefix of
-- the nodes' sets. Returns the node's state in the registry before.

local entries, users, nodeset, pending, registry = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local topic, conn, user, info, node = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local jl, grace, ttl = ARGV[6] == '1', tonumber(ARGV[7]), tonumber(ARGV[8])
local channel, sharded, set_prefix = ARGV[9], ARGV[10] == '1', ARGV[11]

local now = now_ms()
local state = node_state(registry, node, now)
redis.call('ZADD', registry, int(now + ttl), node)

local member = pack(topic, conn)
local old = redis.call('HGET', entries, conn)
redis.call('HSET', entries, conn, encode_entry(jl, node, user, info))
redis.call('SADD', nodeset, member)
local old_user = nil
if old then
  local _, old_node, u = decode_entry(old)
  if old_node ~= node then
    redis.call('SREM', set_prefix .. old_node, member)
  end
  old_user = u
end
if old_user ~= user then
  if old_user and old_user ~= '' then
    user_went(users, pending, topic, old_user, jl, grace, channel, sharded)
  end
  if user ~= '' then
    user_came(users, pending, topic, user, info, jl, channel, sharded)
  end
end
return state
