"""Lua scripts of the session store. Each touches the keys of one session only, which share
the hash tag `{tenant.sid}` (one Redis Cluster slot)."""

from __future__ import annotations

# KEYS: state hash, history list. ARGV: epoch.
# Loads the session and claims it for `epoch`: once a newer owner has read it, an older one
# can no longer write it. Returns {0} missing, {1, e} fenced, {2, version, data, history...}.
LOAD_CLAIM = """
local r = redis.call('HMGET', KEYS[1], 'e', 'v', 'd')
if not r[3] then return {0} end
local e = tonumber(r[1])
local mine = tonumber(ARGV[1])
if mine < e then return {1, e} end
if mine > e then redis.call('HSET', KEYS[1], 'e', ARGV[1]) end
local out = {2, tonumber(r[2]), r[3]}
local hist = redis.call('LRANGE', KEYS[2], 0, -1)
for i = 1, #hist do out[#out + 1] = hist[i] end
return out
"""

# KEYS: state hash, history list. ARGV: epoch, expected version, state json, keep (-1: keep
# all history), the lowest new version allowed, then messages to append. Returns the new
# version (never below that floor: a session written again after Redis lost writes keeps
# counting up from what its writer had, not from what Redis kept), -1 fenced, -2 conflict.
SAVE = """
local r = redis.call('HMGET', KEYS[1], 'e', 'v')
local e = tonumber(r[1] or '0')
local v = tonumber(r[2] or '0')
if tonumber(ARGV[1]) < e then return -1 end
if v ~= tonumber(ARGV[2]) then return -2 end
local keep = tonumber(ARGV[4])
if keep == 0 then redis.call('DEL', KEYS[2])
elseif keep > 0 then redis.call('LTRIM', KEYS[2], 0, keep - 1) end
if #ARGV > 5 then redis.call('RPUSH', KEYS[2], unpack(ARGV, 6)) end
local nv = math.max(v + 1, tonumber(ARGV[5]))
redis.call('HSET', KEYS[1], 'e', ARGV[1], 'v', nv, 'd', ARGV[3])
return nv
"""

# KEYS: state hash, history list. ARGV: epoch, expected version. Deletes the live state.
DELETE = """
local r = redis.call('HMGET', KEYS[1], 'e', 'v')
if not r[2] then return 0 end
if tonumber(ARGV[1]) < tonumber(r[1]) then return -1 end
if tonumber(r[2]) ~= tonumber(ARGV[2]) then return -2 end
redis.call('DEL', KEYS[1], KEYS[2])
return 1
"""
