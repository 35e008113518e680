"""Every Redis key the worker and its producers touch, and every Lua script, as named functions.

Key names build on the wire vocabulary of `contracts.wire` (lane streams, result streams, the
dead-letter stream), adding the worker's own: the consumer group, exactly-once markers, heartbeats,
and the replay markers of signed entries (`worker.signing`).
Each script makes one stream operation a single atomic step on the server; the functions below take
keyword arguments and build the script's KEYS and ARGV in one place.

Out of memory: `enqueue` is declared with flags (a shebang), so a server over `maxmemory` refuses
it whole before it runs and a chunk is queued all or nothing. `finish` and `requeue` are declared
`allow-oom`: each deletes the lane entry it answers, which frees more than its result or copy takes
(a 25 KB fraud request against a 300-byte result), so they still run on a full server and are the
way out of it; without the flag the marker's SET was refused and the XDEL that frees memory never ran.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final, NamedTuple, Protocol

from contracts.wire import (
    CLIENT_RESULTS_PREFIX,
    DEADLETTER_STREAM,
    KEY_PREFIX,
    LANES,
    RESULT_MESSAGE,
    RESULT_STATUS,
    RESULT_TASK_ID,
    queue_stream,
    results_stream,
)
from worker.errors import UnknownLane

__all__ = [
    "CONSUMER_GROUP",
    "DEADLETTER_STREAM",
    "FIELD_ORIGIN",
    "FIELD_PRIOR_DELIVERIES",
    "done_key",
    "queue_stream",
    "replay_key",
    "results_stream",
    "usage_key",
    "worker_key",
]

CONSUMER_GROUP: Final = "inferq-workers"
DONE_PREFIX: Final = KEY_PREFIX + "done:"
WORKER_PREFIX: Final = KEY_PREFIX + "worker:"
REPLAY_PREFIX: Final = KEY_PREFIX + "sig:"
USAGE_PREFIX: Final = KEY_PREFIX + "usage:"
_SIG_HEX: Final = re.compile(r"[0-9a-f]{64}")

# Set on a copy put back at a graceful stop, so that its queue time and delivery count carry over.
FIELD_ORIGIN: Final = "origin"  # entry id of the first copy
FIELD_PRIOR_DELIVERIES: Final = "prior_deliveries"  # deliveries before the copy was made


def done_key(task_id: str) -> str:
    """Exactly-once marker of one task id."""
    return DONE_PREFIX + task_id


def worker_key(name: str) -> str:
    """Heartbeat hash of one worker."""
    return WORKER_PREFIX + name


def replay_key(sig_hex: str) -> str:
    """Marker that remembers an accepted entry signature (`inferq:sig:{sig}`), holding the entry that carried it."""
    if not _SIG_HEX.fullmatch(sig_hex):
        raise ValueError("a signature is 64 lower-case hex digits")
    return REPLAY_PREFIX + sig_hex


def usage_key(day: str) -> str:
    """Usage hash of one UTC day (YYYY-MM-DD): inferences and compute time per tenant and kind (`worker.usage`)."""
    return USAGE_PREFIX + day


def lane_streams() -> list[str]:
    """Every lane stream, realtime first."""
    return [queue_stream(lane) for lane in LANES]


def expires_with_results(stream: str) -> bool:
    """A producer client's reply stream expires with the results it holds; shared streams do not."""
    return stream.startswith(CLIENT_RESULTS_PREFIX)


class ScriptRunner(Protocol):
    """A registered script (redis-py `Script`), called on a client or a pipeline."""

    def __call__(self, keys: Sequence[Any] | None = ..., args: Sequence[Any] | None = ..., client: Any = ...) -> Any:
        ...


class ScriptHost(Protocol):
    """What registers scripts: a redis-py client, sync or asyncio."""

    def register_script(self, script: str) -> Any: ...


# ---------------------------------------------------------------------------------------------
# ENQUEUE: all entries of one call, or none when a lane would go over its limit.

_ENQUEUE: Final = """#!lua
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


class EnqueueCall:
    """KEYS and ARGV of one ENQUEUE: entries ((lane, fields) pairs) under per-lane limits.

    ARGV: each lane's limit, then how many entries go to each lane, then every entry as its lane's
    index, its field count and its field/value pairs. XLEN counts waiting and in-flight tasks alike
    because `finish` deletes an entry when it acks it. The reply is {1, id, ...} with the new entry
    ids in order, or {0, lane index} without adding anything when a lane would go over its limit.
    """

    def __init__(self, entries: Sequence[tuple[str, Mapping[str, str]]], limits: Mapping[str, int]) -> None:
        self.lanes = list(dict.fromkeys(lane for lane, _ in entries))
        for lane in self.lanes:
            if lane not in LANES:
                # A stream no worker reads: its tasks would never be answered.
                raise UnknownLane(f"{lane!r} is not a lane; lanes are {', '.join(LANES)}")
        self.limits = {lane: limits[lane] for lane in self.lanes}
        counts = {lane: 0 for lane in self.lanes}
        body: list[str | int] = []
        for lane, fields in entries:
            counts[lane] += 1
            body += [self.lanes.index(lane) + 1, len(fields), *(part for pair in fields.items() for part in pair)]
        self.keys = [queue_stream(lane) for lane in self.lanes]
        self.args: list[str | int] = [*(self.limits[lane] for lane in self.lanes),
                                      *(counts[lane] for lane in self.lanes), *body]

    def full_lane(self, reply: Sequence[Any]) -> str | None:
        """The lane that was full, or None when the entries went in."""
        return None if int(reply[0]) == 1 else self.lanes[int(reply[1]) - 1]

    @staticmethod
    def entry_ids(reply: Sequence[Any]) -> list[str]:
        return [e.decode() if isinstance(e, bytes) else str(e) for e in reply[1:]]


def enqueue_script(host: ScriptHost) -> ScriptRunner:
    """The ENQUEUE script registered on `host`; call it with an `EnqueueCall`'s keys and args."""
    runner: ScriptRunner = host.register_script(_ENQUEUE)
    return runner


# ---------------------------------------------------------------------------------------------
# FINISH: every outcome of a delivery, in one atomic step.

# KEYS: lane stream, done marker, result stream, dead-letter stream, usage hash of the day
# ARGV: group, entry id, result JSON ('' for none), task id, status, result ttl (s), result stream
#       maxlen, 1 when the result stream expires with its results, dead-letter maxlen, usage field
#       prefix ('' for none: nothing metered), inferences to add, compute microseconds to add, usage
#       ttl (s), then the dead-letter entry's field/value pairs (none: no dead letter)
# Returns 1 when this call posted the result, 0 otherwise (none to post, or the id was answered),
# 2 when it posted the result but could not meter it (the usage key is of another type).
# Usage is added only together with the result it meters, so a redelivery or a retried call never
# counts twice; its writes are pcalls, so a usage key of another type never holds back a result.
# The marker's SET NX comes first: a task id is answered once, whichever delivery gets there, and
# the lane entry is acked and deleted in every case (ack-only for an id already answered).
# Returns -1, having written nothing, when the result stream is a key of another type: its XADD
# would fail after the marker's SET, leaving the id marked answered with no result and the entry
# pending, and every retry of the publisher failing the same way (`Publisher` dead-letters it).
_FINISH: Final = f"""#!lua flags=allow-oom
local posted = 0
if #ARGV > 13 then
  local found = redis.call('TYPE', KEYS[4])['ok']
  if found ~= 'none' and found ~= 'stream' then
    return -2
  end
end
if ARGV[3] ~= '' then
  local found = redis.call('TYPE', KEYS[3])['ok']
  if found ~= 'none' and found ~= 'stream' then
    return -1
  end
  if redis.call('SET', KEYS[2], KEYS[3], 'NX', 'EX', ARGV[6]) then
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], '*',
               '{RESULT_TASK_ID}', ARGV[4], '{RESULT_STATUS}', ARGV[5], '{RESULT_MESSAGE}', ARGV[3])
    if ARGV[8] == '1' then
      redis.call('EXPIRE', KEYS[3], ARGV[6])
    end
    posted = 1
    if ARGV[10] ~= '' then
      local a = redis.pcall('HINCRBY', KEYS[5], ARGV[10] .. '|inferences', ARGV[11])
      local b = redis.pcall('HINCRBY', KEYS[5], ARGV[10] .. '|compute_us', ARGV[12])
      if type(a) == 'table' and a['err'] or type(b) == 'table' and b['err'] then
        posted = 2
      else
        redis.call('EXPIRE', KEYS[5], ARGV[13])
      end
    end
  end
end
if #ARGV > 13 then
  -- Only while the entry is still pending: a copy that another delivery already finished (a worker
  -- stalled past a takeover, a retried script whose reply was lost) adds no second dead letter.
  local held = redis.pcall('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
  if type(held) == 'table' and held[1] then
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[9], '*', unpack(ARGV, 14))
  end
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return posted
"""


# FINISH's reply when the result stream named is a key of another type; nothing was written.
NOT_A_STREAM: Final = -1
# FINISH's reply when it posted the result but the usage hash is a key of another type (not metered).
POSTED_NOT_METERED: Final = 2
# FINISH's reply when the dead-letter stream is a key of another type: nothing was written and the
# entry stays pending (its raw bytes must not be lost); the worker logs it at error level until an
# operator moves that key away. The other outcomes of the chunk are written.
DEADLETTER_NOT_A_STREAM: Final = -2


class UsageCall(NamedTuple):
    """What FINISH adds to the usage hash of `day` (YYYY-MM-DD) under the fields `{prefix}|...`."""

    day: str
    prefix: str  # `{tenant}|{kind}` (`worker.usage.usage_prefix`)
    inferences: int
    compute_us: int
    ttl_s: int


class Scripts:
    """The worker's scripts, registered once on its client; each call may go through a pipeline."""

    def __init__(self, host: ScriptHost) -> None:
        self._finish: ScriptRunner = host.register_script(_FINISH)
        self._requeue: ScriptRunner = host.register_script(_REQUEUE)
        self._requeue_signed: ScriptRunner = host.register_script(_REQUEUE_SIGNED)
        self._check_replays: ScriptRunner = host.register_script(_CHECK_REPLAYS)
        self._touch: ScriptRunner = host.register_script(_TOUCH)

    def finish(
        self,
        pipe: Any,
        *,
        lane: str,
        entry_id: str,
        task_id: str,
        result_stream: str | None,
        result: str | None,
        status: str,
        result_ttl_s: int,
        maxlen: int,
        deadletter: Sequence[str | bytes] = (),
        usage: UsageCall | None = None,
    ) -> None:
        """Post `result` once per task id (none: ack only), dead-letter the entry if asked, ack, delete;
        with `usage`, add it to the day's usage hash in the same step, only when the result is posted.

        The script replies 1 (posted), 0 (nothing to post, or the id was answered before),
        POSTED_NOT_METERED (posted; the usage key is of another type) or NOT_A_STREAM (the result
        stream is a key of another type; nothing was written).
        """
        stream = result_stream or DEADLETTER_STREAM  # named but untouched when there is no result
        metered = usage if usage is not None and result else None
        keys = [queue_stream(lane), done_key(task_id), stream, DEADLETTER_STREAM,
                usage_key(metered.day) if metered else usage_key("none")]
        args: list[str | bytes | int] = [
            CONSUMER_GROUP, entry_id, result or "", task_id, status, result_ttl_s, maxlen,
            "1" if expires_with_results(stream) else "0", maxlen,
            metered.prefix if metered else "", metered.inferences if metered else 0,
            metered.compute_us if metered else 0, metered.ttl_s if metered else 0, *deadletter,
        ]
        self._finish(keys=keys, args=args, client=pipe)

    def requeue(self, pipe: Any, *, lane: str, entry_id: str, fields: Sequence[str | bytes]) -> None:
        """Append a copy of an unstarted entry (`fields`, flat pairs) and ack and delete the original."""
        self._requeue(keys=[queue_stream(lane)], args=[CONSUMER_GROUP, entry_id, *fields], client=pipe)

    def requeue_signed(
        self, pipe: Any, *, lane: str, entry_id: str, replay: str, marker: str, replay_ttl_ms: int,
        fields: Sequence[str | bytes],
    ) -> None:
        """`requeue` for a signed entry: only when its signature's replay marker (`replay`, a
        `replay_key`) is free or already holds `marker` (this entry); nil, nothing done, when it is a replay."""
        self._requeue_signed(keys=[queue_stream(lane), replay],
                             args=[CONSUMER_GROUP, entry_id, marker, replay_ttl_ms, *fields], client=pipe)

    def check_replays(self, client: Any, *, markers: Sequence[tuple[str, str]], replay_ttl_ms: int) -> list[bool]:
        """Record accepted signatures, (`replay_key`, entry marker) pairs, in one step; which were replays.

        A marker is set where it is free (expiring after `replay_ttl_ms`) and left where it holds the same
        entry (a redelivery); one holding another entry makes that signature's entry a replay.
        """
        if not markers:
            return []
        keys = [key for key, _ in markers]
        replies = self._check_replays(keys=keys, args=[replay_ttl_ms, *(marker for _, marker in markers)],
                                      client=client)
        return [int(reply) == 1 for reply in replies]

    def touch(self, pipe: Any, *, lane: str, consumer: str, entry_ids: Sequence[str]) -> None:
        """Restart the idle clock of the entries `consumer` still holds; replies how many it held."""
        self._touch(keys=[queue_stream(lane)], args=[CONSUMER_GROUP, consumer, *entry_ids], client=pipe)


# KEYS: lane stream
# ARGV: group, entry id, then the copy's field/value pairs
# Returns the copy's entry id. The copy is appended, so any worker's next read takes it at once
# instead of waiting for the claim idle time to pass. Only an entry still pending is copied: a retry
# after a connection dropped with the first attempt applied returns nil and adds no second copy.
_REQUEUE: Final = """#!lua flags=allow-oom
if not redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)[1] then
  return false
end
local copy = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 3))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return copy
"""

# KEYS: lane stream, replay marker of the entry's signature (`replay_key`)
# ARGV: group, entry id, marker value (lane and entry id), marker ttl (ms), then the copy's field/value pairs
# REQUEUE for a signed entry that the worker re-signs: the copy carries a new signature, so the old one's
# replay check happens here, in the same step (SET NX GET, as the preparer does it). A marker that holds
# another entry makes this entry a replay: nothing is copied or acked, and it stays pending, so that a
# peer claims it and refuses it `replayed`. Returns the copy's entry id, or nil for a replay.
_REQUEUE_SIGNED: Final = """#!lua flags=allow-oom
if not redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)[1] then
  return false
end
local held = redis.call('SET', KEYS[2], ARGV[3], 'NX', 'PX', ARGV[4], 'GET')
if held and held ~= ARGV[3] then
  return false
end
local copy = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 5))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return copy
"""

# KEYS: the replay markers (`replay_key`) of signatures a worker accepted
# ARGV: marker ttl (ms), then each marker's value (lane and entry id), in KEYS order
# Returns, per key, 1 when the marker already holds another entry (a replay), else 0 (set now, or holding
# this very entry: a redelivery). One script rather than a pipeline of SETs: a fetched group of 256 costs
# one command to send and parse (0.8 ms against 2.9 ms), and `allow-oom` lets a full server still take
# the small markers of the entries whose answers will free it.
_CHECK_REPLAYS: Final = """#!lua flags=allow-oom
local replayed = {}
for i = 1, #KEYS do
  local held = redis.call('SET', KEYS[i], ARGV[i + 1], 'NX', 'PX', ARGV[1], 'GET')
  if held and held ~= ARGV[i + 1] then
    replayed[i] = 1
  else
    replayed[i] = 0
  end
end
return replayed
"""

# KEYS: lane stream
# ARGV: group, consumer, then entry ids
# Returns how many of the ids this consumer still held; their idle time restarts at zero, so no
# other worker takes them over while they wait in this worker's batches. Ids another consumer
# has claimed in the meantime stay with it, and delivery counts do not change (JUSTID).
_TOUCH: Final = """#!lua flags=allow-oom
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


# ---------------------------------------------------------------------------------------------
# BRIDGE_LISTS: messages of stock Celery producers (kombu's Redis transport: LPUSH of a JSON message
# onto a list named after the queue) moved into lane streams, each popped and added in one step.

# KEYS: realtime stream, batch stream, then the lists, grouped per queue (its priority lists in the
#       order kombu serves them)
# ARGV: realtime limit, batch limit, most messages this call moves, number of queues, then per
#       queue: its lane (1 realtime, 2 batch, 0 each task to its kind's default lane) and its key count
# Returns per queue: messages moved, why one of its lists stopped (0 none: emptied, or the call's
# budget spent; 1 lane at its limit; 2 a message that is not an inferq task at the head of a list
# bridged by kind; 3 a key that is not a list), and the messages left in its lists. (An ACL user
# that may not touch the lists has the whole call refused, NOPERM, before it runs.) Each list is its
# own queue: the oldest message (the right end) goes first, and one that stops a list stops only that
# list. A message is popped only when it will be added, so a lane at its limit leaves it in place, and
# the pop and the XADD are one step: a worker killed around them loses or doubles nothing. The entry
# holds the message as `payload`, Celery's argsrepr/kwargsrepr headers replaced (they repeat the
# request), and `task`/`id` beside it. A message that is not a JSON object is moved as it is (only
# from a queue with a fixed lane): the worker dead-letters it.
BRIDGE_LISTS: Final = """#!lua
local limits = {tonumber(ARGV[1]), tonumber(ARGV[2])}
local budget = tonumber(ARGV[3])
local lane_of_task = {['inferq.fraud'] = 1, ['inferq.triage'] = 2}
local replies = {}
local key = 3
for q = 1, tonumber(ARGV[4]) do
  local mode = tonumber(ARGV[3 + 2 * q])
  local nkeys = tonumber(ARGV[4 + 2 * q])
  local moved, why, left = 0, 0, 0
  for k = key, key + nkeys - 1 do
    local stop = 0
    while stop == 0 and budget > 0 do
      local raw = redis.pcall('LINDEX', KEYS[k], -1)
      if type(raw) == 'table' and raw['err'] then
        stop = 3
        break
      end
      if not raw then
        break
      end
      local ok, message = pcall(cjson.decode, raw)
      local headers = nil
      if ok and type(message) == 'table' and type(message['headers']) == 'table' then
        headers = message['headers']
      end
      local task = headers and headers['task']
      local id = headers and headers['id']
      local lane = mode
      if mode == 0 then
        lane = type(task) == 'string' and lane_of_task[task] or nil
      end
      if not lane then
        stop = 2
        break
      end
      if redis.call('XLEN', KEYS[lane]) >= limits[lane] then
        stop = 1
        break
      end
      redis.call('RPOP', KEYS[k])
      local payload = raw
      if headers then
        for _, name in ipairs({'argsrepr', 'kwargsrepr'}) do
          if headers[name] ~= nil then
            headers[name] = '<omitted>'
          end
        end
        local encoded, text = pcall(cjson.encode, message)
        if encoded then
          payload = text
        end
      end
      local fields = {}
      if type(task) == 'string' then
        fields[#fields + 1] = 'task'
        fields[#fields + 1] = task
      end
      if type(id) == 'string' and id ~= '' then
        fields[#fields + 1] = 'id'
        fields[#fields + 1] = id
      end
      fields[#fields + 1] = 'payload'
      fields[#fields + 1] = payload
      redis.call('XADD', KEYS[lane], '*', unpack(fields))
      moved = moved + 1
      budget = budget - 1
    end
    if stop ~= 0 then
      why = stop
    end
    local size = redis.pcall('LLEN', KEYS[k])
    if type(size) == 'number' then
      left = left + size
    end
  end
  replies[#replies + 1] = moved
  replies[#replies + 1] = why
  replies[#replies + 1] = left
  key = key + nkeys
end
return replies
"""
