-- A node's beat in one slot group's registry: its deadline moves to now
-- plus its TTL. A node that retires (Close) passes a negative TTL: it
-- leaves the registry if it holds no entry any more, and is otherwise
-- dead at once, for the sweeps to remove what it could not.
--
-- KEYS: the group's registry, the node's set. ARGV: node, TTL (ms).
-- Returns the node's state before (see node_state).

local registry, nodeset = KEYS[1], KEYS[2]
local node, ttl = ARGV[1], tonumber(ARGV[2])

local now = now_ms()
local state = node_state(registry, node, now)
if ttl < 0 then
  if redis.call('SCARD', nodeset) == 0 then
    redis.call('ZREM', registry, node)
  else
    redis.call('ZADD', registry, 0, node)
  end
  return state
end
redis.call('ZADD', registry, int(now + ttl), node)
return state
