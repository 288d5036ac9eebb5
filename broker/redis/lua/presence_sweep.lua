-- The sweep of one slot group, which every node runs: it publishes the
-- pending leaves that are due (of users still without a connection), then
-- removes entries of dead nodes (nodes whose deadline in the registry
-- passed), publishing at once the leaves of the users left without a
-- connection. It handles at most batch leaves and entries, so that one
-- call never blocks Redis for long; Redis runs it alone, so each leave is
-- published by one node once.
--
-- KEYS: the group's pending leaves and registry.
-- ARGV: the prefixes of the group's entries, users, nodes' sets and
-- channels, '1' for SPUBLISH, batch. Returns {leaves published, entries
-- removed, 1 if the batch ran out (there may be more)}.

local pending, registry = KEYS[1], KEYS[2]
local entries_prefix, users_prefix, set_prefix, channel_prefix = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local sharded, budget = ARGV[5] == '1', tonumber(ARGV[6])

local now = now_ms()
local leaves, removed = 0, 0

local due = redis.call('ZRANGEBYSCORE', pending, '-inf', int(now), 'LIMIT', 0, budget)
for _, m in ipairs(due) do
  redis.call('ZREM', pending, m)
  local topic, u = unpack_pair(m)
  if redis.call('HEXISTS', users_prefix .. topic, u) == 0 then
    publish_leave(channel_prefix .. topic, sharded, u)
    leaves = leaves + 1
  end
end
budget = budget - #due

if budget > 0 then
  local dead = redis.call('ZRANGEBYSCORE', registry, '-inf', int(now), 'LIMIT', 0, 16)
  for _, node in ipairs(dead) do
    if budget <= 0 then
      break
    end
    local set = set_prefix .. node
    local members = redis.call('SPOP', set, budget)
    for _, m in ipairs(members) do
      local topic, conn = unpack_pair(m)
      local entries = entries_prefix .. topic
      local e = redis.call('HGET', entries, conn)
      if e then
        local jl, owner, u = decode_entry(e)
        if owner == node then
          redis.call('HDEL', entries, conn)
          removed = removed + 1
          if u ~= '' then
            local users = users_prefix .. topic
            if redis.call('HINCRBY', users, u, -1) <= 0 then
              redis.call('HDEL', users, u)
              if jl then
                -- The node was silent for its TTL already: no grace.
                publish_leave(channel_prefix .. topic, sharded, u)
                leaves = leaves + 1
              end
            end
          end
        end
      end
    end
    budget = budget - #members
    if redis.call('SCARD', set) == 0 then
      redis.call('ZREM', registry, node)
    end
  end
end
return {leaves, removed, budget <= 0 and 1 or 0}
