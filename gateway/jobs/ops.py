"""What operators read and change in the job runtime: queue depths, live workers, dead letters.

One implementation for every surface: the CLI (``mailgate queues``, ``workers``, ``dlq``),
the HTTP API under ``/api/`` and the dashboard that draws it, and ``mailgate status``. So the
dashboard cannot show other counts than ``mailgate queues --json``: both call
:func:`queue_depths`.

Dead letters are moved and deleted by exact value (``LREM`` of the letter's bytes inside a
script): a letter another operator already retried is simply not found (no duplicate job).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from gateway.jobs import keys
from gateway.jobs.contracts import QUEUE_PRIORITY, family_of
from gateway.jobs.envelope import utc_now_iso
from gateway.jobs.handlers import installed_families

# Move one dead letter back to a queue, atomically (no loss, no duplicate).
#   KEYS[1]: queue:dead   KEYS[2]: target queue   ARGV[1]: the letter   ARGV[2]: the job
RETRY_DEAD = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
redis.call('LPUSH', KEYS[2], ARGV[2])
return 1
"""

# Per source queue: members of the delayed set and dead letters, counted inside Redis (only
# the counts cross the network). Reads in chunks of 1,000 and stops after ARGV[1] items of
# each key, so a huge backlog costs a bounded time (the reply says when it stopped).
#   KEYS[1]: queue:delayed   KEYS[2]: queue:dead   ARGV[1]: the most items read per key
# Returns {delayed counts, dead counts, truncated (0/1)}, counts as flat queue, n, ... arrays.
COUNT_BY_QUEUE = """
local cap = tonumber(ARGV[1])
local function flat(t)
  local out = {}
  for q, n in pairs(t) do out[#out + 1] = q; out[#out + 1] = n end
  return out
end
local delayed, dead, truncated = {}, {}, 0
local i = 0
while i < cap do
  local chunk = redis.call('ZRANGE', KEYS[1], i, i + 999)
  if #chunk == 0 then break end
  for _, member in ipairs(chunk) do
    local nl = string.find(member, "\\n", 1, true)
    local q = nl and string.sub(member, 1, nl - 1) or '?'
    delayed[q] = (delayed[q] or 0) + 1
  end
  i = i + #chunk
end
if i >= cap and redis.call('ZCARD', KEYS[1]) > cap then truncated = 1 end
i = 0
while i < cap do
  local chunk = redis.call('LRANGE', KEYS[2], i, i + 999)
  if #chunk == 0 then break end
  for _, raw in ipairs(chunk) do
    local ok, letter = pcall(cjson.decode, raw)
    local q = '?'
    if ok and type(letter) == 'table' and type(letter.queue_name) == 'string' then
      q = letter.queue_name
    end
    dead[q] = (dead[q] or 0) + 1
  end
  i = i + #chunk
end
if i >= cap and redis.call('LLEN', KEYS[2]) > cap then truncated = 1 end
return {flat(delayed), flat(dead), truncated}
"""

COUNT_CAP = 100_000
LETTER_FIELDS = ("error", "failed_at")


def text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _pairs(flat: list[Any]) -> dict[str, int]:
    return {text(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}


async def queue_depths(redis: aioredis.Redis) -> dict[str, Any]:
    """Per queue: jobs ``waiting``, ``active`` (held by a worker), ``delayed`` (retries and
    deferrals), ``failed`` (dead letters from it) and whether an installed handler consumes
    it; overall: jobs ``delayed``, ``dead`` and held by workers (``processing``).

    ``mailgate queues --json``, ``/api/queues`` and the dashboard all show this dict."""
    workers = [text(m) for m in await redis.smembers(keys.WORKERS)]
    async with redis.pipeline(transaction=False) as pipe:
        for q in QUEUE_PRIORITY:
            pipe.llen(q)
        pipe.zcard(keys.DELAYED)
        pipe.llen(keys.DEAD)
        for w in workers:
            for q in QUEUE_PRIORITY:
                pipe.llen(keys.processing_key(w, q))
        pipe.eval(COUNT_BY_QUEUE, 2, keys.DELAYED, keys.DEAD, COUNT_CAP)
        *replies, by_queue = await pipe.execute()
    counts = [int(c) for c in replies]
    n = len(QUEUE_PRIORITY)
    active = dict.fromkeys(QUEUE_PRIORITY, 0)
    for i, held in enumerate(counts[n + 2 :]):
        active[QUEUE_PRIORITY[i % n]] += held
    delayed, dead = _pairs(by_queue[0]), _pairs(by_queue[1])
    consumed = installed_families()
    out: dict[str, Any] = {
        "queues": {
            q: {
                "waiting": counts[i],
                "active": active[q],
                "delayed": delayed.get(q, 0),
                "failed": dead.get(q, 0),
                "consumed": family_of(q).name in consumed,
            }
            for i, q in enumerate(QUEUE_PRIORITY)
        },
        "delayed": counts[n],
        "dead": counts[n + 1],
        "processing": sum(active.values()),
    }
    if int(by_queue[2]):
        out["counts_truncated_at"] = COUNT_CAP
    return out


async def live_workers(
    redis: aioredis.Redis, *, now: dt.datetime | None = None
) -> list[dict[str, Any]]:
    """Every worker whose heartbeat has not expired: its health fields (strings, as the
    worker wrote them) plus ``heartbeat_age_s``."""
    now = now or dt.datetime.now(dt.UTC)
    members = sorted(text(m) for m in await redis.smembers(keys.WORKERS))
    async with redis.pipeline(transaction=False) as pipe:
        for member in members:
            pipe.hgetall(keys.worker_key(member))
        healths = await pipe.execute()
    live = []
    for health in healths:
        if not health:
            continue
        fields: dict[str, Any] = {text(k): text(v) for k, v in health.items()}
        try:
            beat = dt.datetime.fromisoformat(
                fields.get("last_heartbeat", "").replace("Z", "+00:00")
            )
            fields["heartbeat_age_s"] = round(max(0.0, (now - beat).total_seconds()), 1)
        except ValueError:
            fields["heartbeat_age_s"] = None
        live.append(fields)
    return live


# -- dead letters ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Letter:
    """One dead letter: its exact bytes (what LREM matches) and its JSON (None: not JSON)."""

    raw: bytes
    body: dict[str, Any] | None

    @property
    def id(self) -> str | None:
        return None if self.body is None or "id" not in self.body else str(self.body["id"])

    def summary(self) -> dict[str, Any]:
        """What a list shows: id, queue, error, when, attempts (not the payload)."""
        body = self.body or {}
        return {
            "id": self.id,
            "queue": body.get("queue_name"),
            "error": body.get("error") if self.body is not None else "not a JSON object",
            "failed_at": body.get("failed_at"),
            "attempt_count": body.get("attempt_count"),
            "retryable": revive(body) is not None,
        }


def parse_letter(raw: bytes | str) -> Letter:
    data = raw.encode() if isinstance(raw, str) else bytes(raw)
    try:
        body = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    return Letter(data, body if isinstance(body, dict) else None)


async def list_letters(redis: aioredis.Redis, limit: int) -> list[Letter]:
    """The newest ``limit`` dead letters (``limit`` <= 0: all of them)."""
    return [
        parse_letter(r) for r in await redis.lrange(keys.DEAD, 0, limit - 1 if limit > 0 else -1)
    ]


def revive(letter: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The queue and the fresh job for a dead letter; None when it is not a job at all."""
    queue = letter.get("queue_name")
    if queue not in QUEUE_PRIORITY or "id" not in letter or "payload" not in letter:
        return None
    job = {k: v for k, v in letter.items() if k not in LETTER_FIELDS}
    job["attempt_count"] = 0
    job["retried_at"] = utc_now_iso()
    return str(queue), job


@dataclass
class DeadLetterResult:
    """What a retry or delete did: letters ``matched`` (by id, or all), ``done`` (moved or
    deleted), ``skipped`` (malformed: not a job that can run again)."""

    matched: int = 0
    done: int = 0
    skipped: int = 0


async def retry_letters(
    redis: aioredis.Redis,
    job_id: str | None,
    *,
    on_letter: Callable[[], None] | None = None,
) -> DeadLetterResult:
    """Move the dead letter of ``job_id`` (None: every letter) back to its queue with its
    attempts reset; malformed letters stay (``skipped``)."""
    script = redis.register_script(RETRY_DEAD)
    result = DeadLetterResult()
    for letter in await list_letters(redis, 0):
        if on_letter is not None:
            on_letter()
        if letter.body is None or (job_id is not None and letter.id != job_id):
            continue
        result.matched += 1
        revived = revive(letter.body)
        if revived is None:
            result.skipped += 1
            continue
        queue, job = revived
        moved = await script(
            keys=[keys.DEAD, queue], args=[letter.raw, json.dumps(job, separators=(",", ":"))]
        )
        result.done += int(moved)
    return result


async def delete_letters(redis: aioredis.Redis, job_id: str | None) -> DeadLetterResult:
    """Delete the dead letter of ``job_id`` (by its exact bytes), or every letter (None)."""
    if job_id is None:
        async with redis.pipeline(transaction=True) as pipe:
            pipe.llen(keys.DEAD)
            pipe.delete(keys.DEAD)
            count, _ = await pipe.execute()
        return DeadLetterResult(matched=int(count), done=int(count))
    result = DeadLetterResult()
    for letter in await list_letters(redis, 0):
        if letter.id == job_id:
            result.matched += 1
            result.done += int(await redis.lrem(keys.DEAD, 1, letter.raw))  # type: ignore[arg-type]
    return result
