//! The Lua scripts of the Redis Streams carrier (each one atomic step).

use std::sync::LazyLock;

use redis::Script;

/// KEYS: stream, dedup key. ARGV: body, dedup flag ("1"), window ms.
/// Returns 1 when added, 0 for a duplicate.
pub(crate) static ENQUEUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if ARGV[2] == '1' then
  if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[3]) then return 0 end
end
redis.call('XADD', KEYS[1], '*', 'task', ARGV[1], 'prior', '0')
return 1
",
    )
});

/// Is entry ARGV[1] pending for consumer ARGV[3] of group ARGV[2] on stream KEYS[1]?
const OWNED: &str = r"
local function owned()
  local p = redis.call('XPENDING', KEYS[1], ARGV[2], ARGV[1], ARGV[1], 1, ARGV[3])
  return #p > 0
end
local function body_of(id)
  local e = redis.call('XRANGE', KEYS[1], id, id)
  if #e == 0 then return nil end
  local f = e[1][2]
  for i = 1, #f, 2 do if f[i] == 'task' then return f[i + 1] end end
  return nil
end
";

/// KEYS: stream, delayed zset, held hash. ARGV: id, group, consumer, delay ms, new prior.
/// Moves an owned entry back to the queue (now, or into the delayed set).
pub(crate) static REQUEUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{OWNED}
if not owned() then return 0 end
local body = body_of(ARGV[1])
redis.call('XACK', KEYS[1], ARGV[2], ARGV[1])
redis.call('XDEL', KEYS[1], ARGV[1])
if not body then return 0 end
local delay = tonumber(ARGV[4])
if delay <= 0 then
  redis.call('XADD', KEYS[1], '*', 'task', body, 'prior', ARGV[5])
else
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZADD', KEYS[2], now + delay, ARGV[1])
  redis.call('HSET', KEYS[3], ARGV[1] .. ':b', body, ARGV[1] .. ':p', ARGV[5])
end
return 1
"
    ))
});

/// KEYS: stream, dead-letter stream. ARGV: id, group, consumer, letter.
pub(crate) static DEAD_LETTER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{OWNED}
if not owned() then return 0 end
redis.call('XADD', KEYS[2], '*', 'letter', ARGV[4])
redis.call('XACK', KEYS[1], ARGV[2], ARGV[1])
redis.call('XDEL', KEYS[1], ARGV[1])
return 1
"
    ))
});

/// KEYS: stream. ARGV: id, group, consumer. Resets the idle time of an owned entry.
pub(crate) static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{OWNED}
if not owned() then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[2], ARGV[3], 0, ARGV[1], 'JUSTID')
return 1
"
    ))
});

/// KEYS: stream, delayed zset, held hash. ARGV: max. Moves due delayed tasks into the stream.
pub(crate) static PROMOTE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, uid in ipairs(due) do
  local b = redis.call('HGET', KEYS[3], uid .. ':b')
  local p = redis.call('HGET', KEYS[3], uid .. ':p') or '0'
  if b then redis.call('XADD', KEYS[1], '*', 'task', b, 'prior', p) end
  redis.call('HDEL', KEYS[3], uid .. ':b', uid .. ':p')
  redis.call('ZREM', KEYS[2], uid)
end
return #due
",
    )
});
