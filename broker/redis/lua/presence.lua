-- Shared by the presence scripts (presence_add.lua, presence_remove.lua,
-- presence_sweep.lua and presence_beat.lua are appended to this file).
-- Every key a script touches is in one slot group: on Redis Cluster they
-- all carry the group's hash tag {N}, the tag of the group's channels, so
-- a script may also (S)PUBLISH to the channel of any topic of the group.
--
--   PREFIX:pc:{N}:TOPIC  hash conn -> entry, the topic's connections
--   PREFIX:pu:{N}:TOPIC  hash user -> number of the user's connections in
--                        the topic (users other than "" only)
--   PREFIX:pn:{N}:NODE   set of NODE's entries in the group, as
--                        pack(topic, conn)
--   PREFIX:pl:{N}        sorted set of the group's pending leaves,
--                        pack(topic, user), scored by when they are due
--   PREFIX:pr:{N}        sorted set of the nodes that hold (or held)
--                        entries in the group, scored by when they are
--                        dead unless they beat again (Unix ms)
--
-- An entry is a flag ('j' if the topic's latest options of the entry had
-- JoinLeave, '-' otherwise) followed by pack(node, pack(user, info)).
-- pack(a, b) is the decimal length of a, ':', a, then b: topics, users and
-- conns may hold any byte. Times are Redis's clock (TIME), so that the
-- nodes' clocks do not matter.

local function int(n)
  return string.format('%d', n)
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function pack(a, b)
  return #a .. ':' .. a .. b
end

-- unpack_pair splits pack(a, b) into a and b.
local function unpack_pair(s)
  local colon = string.find(s, ':', 1, true)
  local n = tonumber(string.sub(s, 1, colon - 1))
  return string.sub(s, colon + 1, colon + n), string.sub(s, colon + n + 1)
end

local function encode_entry(jl, node, user, info)
  return (jl and 'j' or '-') .. pack(node, pack(user, info))
end

-- decode_entry returns the JoinLeave flag, the node, the user and the
-- info of an entry.
local function decode_entry(e)
  local node, rest = unpack_pair(string.sub(e, 2))
  local user, info = unpack_pair(rest)
  return string.sub(e, 1, 1) == 'j', node, user, info
end

-- json_string quotes s (valid UTF-8) as a JSON string.
local function json_string(s)
  local q = string.gsub(s, '[%c"\\]', function(c)
    if c == '"' then
      return '\\"'
    elseif c == '\\' then
      return '\\\\'
    end
    return string.format('\\u%04x', string.byte(c))
  end)
  return '"' .. q .. '"'
end

-- publish sends a plain message (codec version 1: the byte 1, the id's
-- length as a uvarint, one byte for these ids, the id, the data).
local function publish(channel, sharded, id, data)
  local payload = '\1' .. string.char(#id) .. id .. data
  if sharded then
    redis.call('SPUBLISH', channel, payload)
  else
    redis.call('PUBLISH', channel, payload)
  end
end

local function publish_join(channel, sharded, user, info)
  if info == '' then
    info = '{}'
  end
  publish(channel, sharded, 'firetower join', '{"user":' .. json_string(user) .. ',"info":' .. info .. '}')
end

local function publish_leave(channel, sharded, user)
  publish(channel, sharded, 'firetower leave', '{"user":' .. json_string(user) .. '}')
end

-- user_came counts a connection of user u in topic: the user's first one
-- cancels the user's pending leave if there is one, and otherwise, with
-- JoinLeave, is announced.
local function user_came(users, pending, topic, u, info, jl, channel, sharded)
  if redis.call('HINCRBY', users, u, 1) ~= 1 then
    return
  end
  local cancelled = redis.call('ZREM', pending, pack(topic, u))
  if cancelled == 0 and jl then
    publish_join(channel, sharded, u, info)
  end
end

-- user_went uncounts a connection of user u in topic: after the user's
-- last one, with JoinLeave, the leave is due grace ms from now (at once
-- for 0).
local function user_went(users, pending, topic, u, jl, grace, channel, sharded)
  if redis.call('HINCRBY', users, u, -1) > 0 then
    return
  end
  redis.call('HDEL', users, u)
  if not jl then
    return
  end
  if grace <= 0 then
    publish_leave(channel, sharded, u)
  else
    redis.call('ZADD', pending, int(now_ms() + grace), pack(topic, u))
  end
end

-- node_state is 2 if node is alive in the group's registry, 1 if its
-- deadline passed (other nodes may be removing its entries), 0 if it is
-- not there (never was, was removed as dead, or Redis lost it).
local function node_state(registry, node, now)
  local s = redis.call('ZSCORE', registry, node)
  if not s then
    return 0
  elseif tonumber(s) < now then
    return 1
  end
  return 2
end
