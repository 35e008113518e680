"""Lua scripts that make each stream operation one atomic step on the Redis server.

Every script names all the keys it touches in KEYS, so it stays valid on a cluster when the
keys share a hash slot and on a single server as is.
"""

from typing import Final

from worker.constants import RESULT_MESSAGE, RESULT_STATUS, RESULT_TASK_ID

_RESULT_FIELDS: Final = (
    f"'{RESULT_TASK_ID}', ARGV[5], '{RESULT_STATUS}', ARGV[6], '{RESULT_MESSAGE}', ARGV[7]"
)

# KEYS: the lane streams the entries go to, each once
# ARGV: for each key its limit, then for each key how many entries go to it, then the entries,
#       each as: key index, field count, field/value pairs
# Returns {1, id, id, ...} with the new entry ids in order, or {0, key index} without adding
# anything when a lane would go over its limit. XLEN counts waiting and in-flight tasks alike
# because the publisher deletes an entry when it acks it.
ENQUEUE: Final = """
local nkeys = #KEYS
for i = 1, nkeys do
  if redis.call('XLEN', KEYS[i]) + tonumber(ARGV[nkeys + i]) > tonumber(ARGV[i]) then
    return {0, i}
  end
end
local ids = {1}
local pos = 2 * nkeys + 1
while pos <= #ARGV do
  local key = KEYS[tonumber(ARGV[pos])]
  local last = pos + 1 + 2 * tonumber(ARGV[pos + 1])
  ids[#ids + 1] = redis.call('XADD', key, '*', unpack(ARGV, pos + 2, last))
  pos = last + 1
end
return ids
"""

# KEYS: done marker, result stream, lane stream
# ARGV: group, entry id, result ttl (s), result stream maxlen, task id, status, result JSON,
#       1 when the result stream is a client's reply stream (it expires with the result ttl)
# Returns 1 when this call posted the result, 0 when the task id had already been answered.
# The lane entry is acked and deleted in both cases: a duplicate needs no further work.
PUBLISH: Final = f"""
local posted = redis.call('SET', KEYS[1], KEYS[2], 'NX', 'EX', ARGV[3])
if posted then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*',
             {_RESULT_FIELDS})
  if ARGV[8] == '1' then
    redis.call('EXPIRE', KEYS[2], ARGV[3])
  end
end
redis.call('XACK', KEYS[3], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[3], ARGV[2])
if posted then return 1 end
return 0
"""

# KEYS: dead-letter stream, lane stream, done marker, result stream
# ARGV: group, entry id, dead-letter maxlen, result ttl (s), result stream maxlen, task id,
#       result JSON, 1 when the result stream is a client's reply stream, 1 when a result is
#       to be posted at all, then the dead-letter entry's field/value pairs
# Returns 1 when the failed result was posted, 0 otherwise (already answered, or no result).
DEADLETTER: Final = f"""
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, 10))
local posted = false
if ARGV[9] == '1' then
  posted = redis.call('SET', KEYS[3], KEYS[4], 'NX', 'EX', ARGV[4])
  if posted then
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*',
               '{RESULT_TASK_ID}', ARGV[6], '{RESULT_STATUS}', 'failed', '{RESULT_MESSAGE}', ARGV[7])
    if ARGV[8] == '1' then
      redis.call('EXPIRE', KEYS[4], ARGV[4])
    end
  end
end
redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[2], ARGV[2])
if posted then return 1 end
return 0
"""

# KEYS: lane stream
# ARGV: group, entry id, then the copy's field/value pairs
# Returns the copy's entry id. The copy is appended, so any worker's next read takes it at once
# instead of waiting for the claim idle time to pass.
REQUEUE: Final = """
local copy = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 3))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return copy
"""

# KEYS: lane stream
# ARGV: group, consumer, then entry ids
# Returns how many of the ids this consumer still held; their idle time restarts at zero, so no
# other worker takes them over while they wait in this worker's batches. Ids another consumer
# has claimed in the meantime stay with it, and delivery counts do not change (JUSTID).
TOUCH: Final = """
local kept = 0
for i = 3, #ARGV do
  local held = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
  if held[1] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    kept = kept + 1
  end
end
return kept
"""
