-- RemovePresence, for one topic: deletes the node's entry of conn, if the
-- entry is the node's, and uncounts its user, whose leave is then due
-- after the grace.
--
-- KEYS: the topic's entries and users, the node's set, the group's
-- pending leaves.
-- ARGV: topic, conn, node, '1' for JoinLeave, grace (ms), the topic's
-- channel, '1' for SPUBLISH. Returns 1 if an entry was deleted.

local entries, users, nodeset, pending = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local topic, conn, node = ARGV[1], ARGV[2], ARGV[3]
local jl, grace, channel, sharded = ARGV[4] == '1', tonumber(ARGV[5]), ARGV[6], ARGV[7] == '1'

redis.call('SREM', nodeset, pack(topic, conn))
local old = redis.call('HGET', entries, conn)
if not old then
  return 0
end
local _, old_node, u = decode_entry(old)
if old_node ~= node then
  return 0 -- another node added the conn since: the entry is that node's
end
redis.call('HDEL', entries, conn)
if u ~= '' then
  user_went(users, pending, topic, u, jl, grace, channel, sharded)
end
return 1
