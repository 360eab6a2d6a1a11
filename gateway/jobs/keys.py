"""The one place for the job runtime's Redis key schema and Lua contracts.

The queues themselves (names, priority, families, payloads) are the producers' contract and
live in :mod:`gateway.jobs.contracts`. Producers ``LPUSH``; the oldest job is at the right
end, so workers take from the RIGHT.

mailgate's own keys::

    queue:dead                          list   dead letters (the contract's name)
    queue:delayed                       zset   retries and deferrals: member "<queue>\\n<job>",
                                               score = due time (ms since the epoch)
    job:{id}                            hash   tracking (status, worker_id, times, result, ...)
    mailgate:workers                    set    ids of workers that registered
    mailgate:worker:{id}                hash   heartbeat + health fields, TTL = liveness
    mailgate:processing:{id}:{queue}    list   jobs a worker holds, per source queue

The scripts below touch keys they compute from arguments (processing lists, a delayed job's
queue), so the runtime needs a single Redis (or Sentinel), not Redis Cluster.
"""

from __future__ import annotations

from typing import Final

DEAD: Final = "queue:dead"
DELAYED: Final = "queue:delayed"
WORKERS: Final = "mailgate:workers"


def job_key(job_id: str) -> str:
    return f"job:{job_id}"


def worker_key(worker_id: str) -> str:
    return f"mailgate:worker:{worker_id}"


def processing_prefix(worker_id: str) -> str:
    return f"mailgate:processing:{worker_id}:"


def processing_key(worker_id: str, queue: str) -> str:
    return f"{processing_prefix(worker_id)}{queue}"


def delayed_member(queue: str, raw: bytes) -> bytes:
    return queue.encode() + b"\n" + raw


def split_delayed_member(member: bytes) -> tuple[str, bytes]:
    queue, _, raw = member.partition(b"\n")
    return queue.decode(), raw


# -- Lua scripts ------------------------------------------------------------------------------

# TAKE: move up to N jobs, strictly in the order of KEYS (priority), oldest first, from each
# queue into this worker's processing list for that queue, bounded by per-family free
# slots, and mark each one processing in its tracking hash (one round trip per batch).
#   KEYS: the candidate queues, highest priority first
#   ARGV[1]: processing-list prefix ("mailgate:processing:<worker>:")
#   ARGV[2]: total jobs wanted (global free slots)
#   ARGV[3]: worker id   ARGV[4]: now (ISO-8601)
#   ARGV[4+i]: "<family>=<free slots>" for KEYS[i]
# Returns a flat array: queue, raw, stalls, ... (stalls: how often a dead worker held the
# job; -1 when the bytes are not a job object with an id: the worker dead-letters those).
TAKE = """
local prefix = ARGV[1]
local want = tonumber(ARGV[2])
local free = {}
local out = {}
for i, queue in ipairs(KEYS) do
  if want <= 0 then break end
  local fam, slots = string.match(ARGV[4 + i], "^(.*)=(%d+)$")
  if free[fam] == nil then free[fam] = tonumber(slots) end
  while want > 0 and free[fam] > 0 do
    local raw = redis.call('LMOVE', queue, prefix .. queue, 'RIGHT', 'LEFT')
    if not raw then break end
    local stalls = -1
    local ok, job = pcall(cjson.decode, raw)
    if ok and type(job) == 'table' and (type(job.id) == 'string' or type(job.id) == 'number') then
      local key = 'job:' .. tostring(job.id)
      local attempt = (tonumber(job.attempt_count) or 0) + 1
      redis.call('HSET', key, 'status', 'processing', 'worker_id', ARGV[3],
                 'queue_name', queue, 'started_at', ARGV[4], 'updated_at', ARGV[4],
                 'attempt_count', attempt)
      stalls = tonumber(redis.call('HGET', key, 'stalls') or '0')
    end
    out[#out + 1] = queue
    out[#out + 1] = raw
    out[#out + 1] = stalls
    want = want - 1
    free[fam] = free[fam] - 1
  end
end
return out
"""

# FINISH: end the hold of a batch of jobs (one call per batch: a pipeline of one call per
# job cost the worker a reply parse per job). For each job: remove it from its processing
# list, then one of
#   "complete": nothing more;  "retry": ZADD to the delayed set;  "dead": LPUSH dead letter;
#   "release":  RPUSH back to the head of its queue (taken next; no attempt counted).
# and write the tracking hash fields, with a TTL when the job has ended.
#   ARGV: per job, 9 + n items: processing list, job hash (or "" for a malformed job),
#   target (queue:delayed / queue:dead / the source queue; "" for complete), raw job, action,
#   payload for the target (member / dead letter / raw), score (retry only), hash TTL seconds
#   (0 = none), n, then n items: field, value pairs for the hash.
# The keys are computed by the worker, as TAKE's are: single-instance Redis only.
# Returns one integer per job, in order: 1 if the job was still held, 0 if someone else had
# already finished or reaped it (and nothing was changed for it: no duplicate retry or dead
# letter).
FINISH = """
local out = {}
local i = 1
while i <= #ARGV do
  local proc, hash, target, raw = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local action, value, score = ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]
  local ttl, n = tonumber(ARGV[i + 7]), tonumber(ARGV[i + 8])
  local first = i + 9
  i = first + n
  if redis.call('LREM', proc, -1, raw) == 0 then
    out[#out + 1] = 0
  else
    if action == 'retry' then
      redis.call('ZADD', target, tonumber(score), value)
    elseif action == 'dead' then
      redis.call('LPUSH', target, value)
    elseif action == 'release' then
      redis.call('RPUSH', target, value)
    end
    if hash ~= '' and n > 0 then
      redis.call('HSET', hash, unpack(ARGV, first, first + n - 1))
      if ttl > 0 then redis.call('EXPIRE', hash, ttl) else redis.call('PERSIST', hash) end
    end
    out[#out + 1] = 1
  end
end
return out
"""

# PROMOTE: move due members of the delayed set to the head of their queue.
#   KEYS[1]: queue:delayed   ARGV[1]: now (ms)   ARGV[2]: limit
# Returns the number moved.
PROMOTE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  local nl = string.find(member, "\\n", 1, true)
  if nl then
    redis.call('RPUSH', string.sub(member, 1, nl - 1), string.sub(member, nl + 1))
  end
  redis.call('ZREM', KEYS[1], member)
end
return #due
"""

# REAP: if a worker's heartbeat is gone, return every job it holds to the head of its queue
# (oldest ends up taken first), count a stall on each job's hash, and forget the worker.
#   KEYS[1]: mailgate:workers   KEYS[2]: the worker's heartbeat key
#   ARGV[1]: worker id   ARGV[2]: processing-list prefix   ARGV[3..]: queue names
# Returns the number of jobs returned, or -1 when the worker is alive.
REAP = """
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
local moved = 0
for i = 3, #ARGV do
  local queue = ARGV[i]
  local proc = ARGV[2] .. queue
  while true do
    local raw = redis.call('LMOVE', proc, queue, 'LEFT', 'RIGHT')
    if not raw then break end
    moved = moved + 1
    local ok, job = pcall(cjson.decode, raw)
    if ok and type(job) == 'table' and (type(job.id) == 'string' or type(job.id) == 'number') then
      local key = 'job:' .. tostring(job.id)
      redis.call('HINCRBY', key, 'stalls', 1)
      redis.call('HSET', key, 'status', 'queued')
    end
  end
end
redis.call('SREM', KEYS[1], ARGV[1])
return moved
"""
