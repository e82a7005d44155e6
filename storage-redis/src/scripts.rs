//! The Lua scripts: each reads, checks and writes one key atomically on the server (on a
//! cluster, on the master owning the key's slot). Loaded once and run with `EVALSHA`.

/// Conditional write. ARGV: mode (`n` = only if absent, `v` = only if the stored value's
/// SHA-1 is ARGV[2]), expected version, value, TTL in ms (0 = none), largest value. Returns 1
/// when written, minus the stored length when the stored value is longer than the largest
/// (it is neither copied nor hashed), else the current version (`''` when absent). The version
/// is computed from the stored bytes here, so records written by anyone (mcp-agent,
/// redis-cli) take part in CAS.
pub(crate) const WRITE: &str = r"
local len = redis.call('STRLEN', KEYS[1])
if len > tonumber(ARGV[5]) then return -len end
local cur = redis.call('GET', KEYS[1])
if ARGV[1] == 'n' then
  if cur then return redis.sha1hex(cur) end
else
  if not cur then return '' end
  local ver = redis.sha1hex(cur)
  if ver ~= ARGV[2] then return ver end
end
local ttl = tonumber(ARGV[4])
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ttl)
else
  redis.call('SET', KEYS[1], ARGV[3])
end
return 1
";

/// Conditional delete, same modes as [`WRITE`], ARGV[3] the largest value. Returns 1 deleted /
/// 0 nothing there (mode `n`), minus the stored length when it is over the largest, else the
/// current version (`''` when absent).
pub(crate) const REMOVE: &str = r"
local len = redis.call('STRLEN', KEYS[1])
if len > tonumber(ARGV[3]) then return -len end
local cur = redis.call('GET', KEYS[1])
if ARGV[1] == 'n' then
  if cur then return redis.sha1hex(cur) end
  return 0
end
if not cur then return '' end
local ver = redis.sha1hex(cur)
if ver ~= ARGV[2] then return ver end
redis.call('DEL', KEYS[1])
return 1
";

/// A bounded read that tells an absent key from an empty value, which `GETRANGE` alone
/// cannot: nil when absent, else at most ARGV[1] + 1 bytes (the GETRANGE end is inclusive).
/// Only run after a `GETRANGE` answered `""`.
pub(crate) const READ_EMPTY: &str = r"
local v = redis.call('GETRANGE', KEYS[1], 0, ARGV[1])
if v == '' and redis.call('EXISTS', KEYS[1]) == 0 then return false end
return v
";
