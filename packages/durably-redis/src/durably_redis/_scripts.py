"""The Lua scripts: every conditional or multi-key write is one script (one atomic step).

Redis runs a script to completion before it serves any other command, so the reads at
the top of a script (the lease epoch, the checkpoint's existence or version) and the
writes at its end happen with nothing in between: that is the whole atomicity
argument. Each script does its checks first and returns a status without writing
when one fails, so a rejected write leaves the data exactly as it was.

Timestamps come from the server (``TIME``), one clock for every client. Versions and
epochs come from one counter (``INCR <prefix>:counter``) that is never reset, so a
version or an epoch is never handed out twice, not even after delete_execution, and
versions and epochs are ordered with each other the way the scripts ran.

On Redis >= 7 the scripts start with a ``#!lua`` shebang: Redis then checks before
running a script whether a write may proceed (out of memory, read-only replica,
failed RDB snapshot), instead of failing at its first write.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

__all__ = ["SCRIPTS", "Script"]

_NOW = """
local function server_time()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000,
         t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
end
"""

_FENCE = """
local function fenced(lease_key, epoch, owner)
  if epoch == '' then return nil end
  local current = redis.call('HMGET', lease_key, 'epoch', 'owner')
  if current[1] ~= epoch or current[2] ~= owner then
    return {'fenced', current[1] or '', current[2] or ''}
  end
  return nil
end
"""

_REINDEX = """
local function is_open(checkpoint_key)
  local m = redis.call('HGET', checkpoint_key, 'm')
  if not m or m == '' then return true end
  local ok, decoded = pcall(cjson.decode, m)
  if not ok or type(decoded) ~= 'table' then return true end
  local status = decoded['durably.status']
  return status ~= 'completed' and status ~= 'failed'
end
local function reindex(seqs_key, checkpoint_base, open_key, execution_id)
  local top = redis.call('ZREVRANGEBYLEX', seqs_key, '+', '-', 'LIMIT', 0, 1)
  if #top > 0 and is_open(checkpoint_base .. top[1]) then
    redis.call('ZADD', open_key, 0, execution_id)
    return 1
  end
  redis.call('ZREM', open_key, execution_id)
  return 0
end
"""

_FORGET_IF_EMPTY = """
local function forget_if_empty(seqs_key, blobs_key, lease_key, index_key, execution_id)
  if redis.call('EXISTS', seqs_key, blobs_key, lease_key) == 0 then
    redis.call('ZREM', index_key, execution_id)
  end
end
"""

SAVE = (
    _NOW
    + _FENCE
    + _REINDEX
    + """
-- KEYS: checkpoint, seqs, lease, executions, counter, open
-- ARGV: mode (create|overwrite|expect), expected version, lease epoch ('' = unfenced),
--       lease owner, stored bytes, metadata, seq member, execution id, checkpoint base
local refused = fenced(KEYS[3], ARGV[3], ARGV[4])
if refused then return refused end
local mode = ARGV[1]
if mode == 'create' then
  if redis.call('EXISTS', KEYS[1]) == 1 then
    return {'exists', redis.call('HGET', KEYS[1], 'v') or ''}
  end
elseif mode == 'expect' then
  local current = redis.call('HGET', KEYS[1], 'v')
  if current ~= ARGV[2] then return {'mismatch', current or ''} end
end
local version = string.format('%d', redis.call('INCR', KEYS[5]))
local _, at = server_time()
redis.call('HSET', KEYS[1], 'd', ARGV[5], 'v', version, 't', at, 'm', ARGV[6])
redis.call('ZADD', KEYS[2], 0, ARGV[7])
redis.call('ZADD', KEYS[4], 0, ARGV[8])
reindex(KEYS[2], ARGV[9], KEYS[6], ARGV[8])
return {'ok', version, at}
"""
)

LATEST = """
-- KEYS: seqs.  ARGV: checkpoint key base ('<prefix>:x:<id>:c:')
local top = redis.call('ZREVRANGEBYLEX', KEYS[1], '+', '-', 'LIMIT', 0, 1)
if #top == 0 then return false end
local r = redis.call('HMGET', ARGV[1] .. top[1], 'd', 'v', 't', 'm')
return {top[1], r[1], r[2], r[3], r[4]}
"""

LIST = """
-- KEYS: seqs.  ARGV: lower bound ('-' or '(<member>'), count, checkpoint key base
local members = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[1], '+', 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, member in ipairs(members) do
  local key = ARGV[3] .. member
  local r = redis.call('HMGET', key, 'v', 't', 'm')
  out[#out + 1] = member
  out[#out + 1] = r[1]
  out[#out + 1] = r[2]
  out[#out + 1] = r[3]
  out[#out + 1] = redis.call('HSTRLEN', key, 'd')
end
return out
"""

DELETE = (
    _FENCE
    + _FORGET_IF_EMPTY
    + _REINDEX
    + """
-- KEYS: seqs, lease, executions, blobs, open, checkpoint keys...
-- ARGV: lease epoch ('' = unfenced), lease owner, execution id, checkpoint base,
--       seq members...
local refused = fenced(KEYS[2], ARGV[1], ARGV[2])
if refused then return refused end
local out = {'ok'}
for i = 6, #KEYS do
  local member = ARGV[i - 1]
  if redis.call('UNLINK', KEYS[i]) == 1 then out[#out + 1] = member end
  redis.call('ZREM', KEYS[1], member)
end
if #out > 1 then
  forget_if_empty(KEYS[1], KEYS[4], KEYS[2], KEYS[3], ARGV[3])
  reindex(KEYS[1], ARGV[4], KEYS[5], ARGV[3])
end
return out
"""
)

CLAIM = (
    _NOW
    + """
-- KEYS: lease, executions, counter.  ARGV: owner, ttl seconds, execution id,
-- and for a take-over the dead owner's epoch and owner (else '' and '')
local now = server_time()
local cur = redis.call('HMGET', KEYS[1], 'owner', 'epoch', 'expires', 'released')
local replaced = ARGV[4] ~= '' and cur[2] == ARGV[4] and cur[1] == ARGV[5]
if cur[2] and cur[4] ~= '1' and cur[1] ~= ARGV[1] and tonumber(cur[3]) > now
    and not replaced then
  return {'held', cur[1], cur[3]}
end
local epoch = string.format('%d', redis.call('INCR', KEYS[3]))
local expires = string.format('%.6f', now + tonumber(ARGV[2]))
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'epoch', epoch, 'expires', expires,
           'released', '0')
redis.call('ZADD', KEYS[2], 0, ARGV[3])
return {'ok', epoch, expires}
"""
)

RENEW = (
    _NOW
    + _FENCE
    + """
-- KEYS: lease.  ARGV: epoch, owner, ttl seconds
local refused = fenced(KEYS[1], ARGV[1], ARGV[2])
if refused then return refused end
local now = server_time()
local expires = string.format('%.6f', now + tonumber(ARGV[3]))
redis.call('HSET', KEYS[1], 'expires', expires, 'released', '0')
return {'ok', expires}
"""
)

RELEASE = (
    _NOW
    + _FENCE
    + """
-- KEYS: lease.  ARGV: epoch, owner
if fenced(KEYS[1], ARGV[1], ARGV[2]) then return 0 end
local now = server_time()
local expires = tonumber(redis.call('HGET', KEYS[1], 'expires'))
if expires == nil or now < expires then expires = now end
redis.call('HSET', KEYS[1], 'released', '1', 'expires', string.format('%.6f', expires))
return 1
"""
)

PUT_BLOB = (
    _NOW
    + """
-- KEYS: blob, blobs, executions.  ARGV: stored bytes, digest, execution id
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local _, at = server_time()
redis.call('HSET', KEYS[1], 'd', ARGV[1], 't', at)
redis.call('ZADD', KEYS[2], 0, ARGV[2])
redis.call('ZADD', KEYS[3], 0, ARGV[3])
return 1
"""
)

PUT_BLOBS = (
    _NOW
    + """
-- KEYS: blobs, executions, then one blob key per blob.
-- ARGV: execution id, then the digest and stored bytes of each blob (in KEYS order).
-- Returns the digests it wrote.
local _, at = server_time()
local written = {}
for i = 3, #KEYS do
  local digest = ARGV[2 * (i - 2)]
  if redis.call('EXISTS', KEYS[i]) == 0 then
    redis.call('HSET', KEYS[i], 'd', ARGV[2 * (i - 2) + 1], 't', at)
    redis.call('ZADD', KEYS[1], 0, digest)
    written[#written + 1] = digest
  end
end
if #written > 0 then redis.call('ZADD', KEYS[2], 0, ARGV[1]) end
return written
"""
)

LIST_BLOBS = """
-- KEYS: blobs.  ARGV: lower bound, count, blob key base ('<prefix>:x:<id>:b:')
local digests = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[1], '+', 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, digest in ipairs(digests) do
  local key = ARGV[3] .. digest
  out[#out + 1] = digest
  out[#out + 1] = redis.call('HGET', key, 't')
  out[#out + 1] = redis.call('HSTRLEN', key, 'd')
end
return out
"""

DELETE_BLOB = (
    _FORGET_IF_EMPTY
    + """
-- KEYS: blob, blobs, seqs, lease, executions.  ARGV: digest, execution id
local gone = redis.call('UNLINK', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if gone == 1 then forget_if_empty(KEYS[3], KEYS[2], KEYS[4], KEYS[5], ARGV[2]) end
return gone
"""
)

DELETE_EXECUTION = """
-- KEYS: seqs, blobs, lease, executions, open
-- ARGV: execution key base ('<prefix>:x:<id>:'), execution id, batch size
-- Deletes up to a batch of checkpoints and blobs; the last call (nothing left) also
-- deletes the lease and the index entry. Returns {existed, more}.
local existed = 0
if redis.call('EXISTS', KEYS[1], KEYS[2], KEYS[3]) > 0
   or redis.call('ZSCORE', KEYS[4], ARGV[2]) then
  existed = 1
end
local budget = tonumber(ARGV[3])
local seqs = redis.call('ZRANGE', KEYS[1], 0, budget - 1)
for _, member in ipairs(seqs) do redis.call('UNLINK', ARGV[1] .. 'c:' .. member) end
if #seqs > 0 then redis.call('ZREM', KEYS[1], unpack(seqs)) end
budget = budget - #seqs
if budget > 0 then
  local digests = redis.call('ZRANGE', KEYS[2], 0, budget - 1)
  for _, digest in ipairs(digests) do redis.call('UNLINK', ARGV[1] .. 'b:' .. digest) end
  if #digests > 0 then redis.call('ZREM', KEYS[2], unpack(digests)) end
end
if redis.call('EXISTS', KEYS[1], KEYS[2]) == 0 then
  redis.call('UNLINK', KEYS[3])
  redis.call('ZREM', KEYS[4], ARGV[2])
  redis.call('ZREM', KEYS[5], ARGV[2])
  return {existed, 0}
end
return {existed, 1}
"""


REINDEX = (
    _REINDEX
    + """
-- KEYS: seqs, open.  ARGV: checkpoint base, execution id
-- Brings one execution's open-index entry up to date. Returns {was listed, is listed}.
local was = redis.call('ZSCORE', KEYS[2], ARGV[2]) and 1 or 0
return {was, reindex(KEYS[1], ARGV[1], KEYS[2], ARGV[2])}
"""
)


@dataclass(frozen=True, slots=True)
class Script:
    """A Lua script in the two forms sent to servers before and since Redis 7."""

    name: str
    body: str
    flags: str = ""
    """Redis 7 script flags: ``no-writes`` for reads (they then run on an out-of-memory
    server and on replicas), ``allow-oom`` for the deleting scripts (deleting is how
    memory is freed)."""

    def text(self, shebang: bool) -> str:
        """The source for a server that does (Redis >= 7) or does not know shebangs.

        With the ``#!lua`` shebang, Redis decides before the script runs whether it
        may write (memory, replica role, failed snapshots), instead of failing at its
        first write.
        """
        if not shebang:
            return self.body
        flags = f" flags={self.flags}" if self.flags else ""
        return f"#!lua{flags}\n{self.body}"

    def sha(self, shebang: bool) -> str:
        """The SHA1 digest EVALSHA names the script by."""
        return hashlib.sha1(self.text(shebang).encode()).hexdigest()


SCRIPTS: dict[str, Script] = {
    script.name: script
    for script in (
        Script("save", SAVE),
        Script("latest", LATEST, "no-writes"),
        Script("list", LIST, "no-writes"),
        Script("delete", DELETE, "allow-oom"),
        Script("claim", CLAIM),
        Script("renew", RENEW),
        Script("release", RELEASE, "allow-oom"),
        Script("put_blob", PUT_BLOB),
        Script("put_blobs", PUT_BLOBS),
        Script("list_blobs", LIST_BLOBS, "no-writes"),
        Script("delete_blob", DELETE_BLOB, "allow-oom"),
        Script("delete_execution", DELETE_EXECUTION, "allow-oom"),
        Script("reindex", REINDEX, "allow-oom"),
    )
}
"""Every script, by name."""
