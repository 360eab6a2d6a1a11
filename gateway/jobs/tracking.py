"""Recording what happened to jobs: PostgreSQL first (batched), then Redis.

Every end of a job's hold (completed, retry scheduled, dead-lettered, released at shutdown)
is an :class:`Outcome`. The :class:`Finisher` collects outcomes for a few milliseconds,
writes their ``jobs`` upserts and ``job_executions`` rows in one transaction, and only then
runs the Redis FINISH script once for the batch, which removes each job from the worker's
processing list. So a job Redis reports ``completed`` is completed in
PostgreSQL too; a crash between the two leaves the job in the processing list, the reaper
returns it, and it runs again (handlers are idempotent; the ``jobs`` upsert is too).

When PostgreSQL is down the batch is retried with backoff and the jobs stay held: nothing is
lost, and the worker stops taking new jobs once its slots are full of unfinished outcomes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

from gateway.groupcommit import GroupCommit
from gateway.jobs import keys
from gateway.jobs.envelope import Job
from gateway.storage import is_transient

log = logging.getLogger(__name__)

# A job row's update: the latest state wins, except that a late "running" never overwrites
# "completed"; what producers or earlier attempts set is kept where the new row has none.
_UPSERT_SET = """
ON CONFLICT (id) DO UPDATE SET
    tenant_id = coalesce(EXCLUDED.tenant_id, jobs.tenant_id),
    queue_name = EXCLUDED.queue_name,
    status = EXCLUDED.status,
    payload = EXCLUDED.payload,
    attempt_count = EXCLUDED.attempt_count,
    max_attempts = EXCLUDED.max_attempts,
    worker_id = EXCLUDED.worker_id,
    idempotency_key = coalesce(EXCLUDED.idempotency_key, jobs.idempotency_key),
    started_at = coalesce(EXCLUDED.started_at, jobs.started_at),
    completed_at = EXCLUDED.completed_at,
    updated_at = now(),
    result = coalesce(EXCLUDED.result, jobs.result),
    last_error = EXCLUDED.last_error
WHERE NOT (jobs.status = 'completed' AND EXCLUDED.status = 'running')
"""

UPSERT_JOB = (
    """
INSERT INTO jobs AS jobs (id, tenant_id, queue_name, status, payload, attempt_count, max_attempts,
                  worker_id, idempotency_key, created_at, started_at, completed_at,
                  updated_at, result, last_error)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, coalesce($10, now()), $11, $12, now(), $13, $14)
"""
    + _UPSERT_SET
)

INSERT_EXECUTION = """
INSERT INTO job_executions (job_id, tenant_id, attempt, status, error, duration_ms, worker_id, at)
VALUES ($1, $2, $3, $4, $5, $6, $7, now())
"""


# The same two writes for a whole batch, one statement each (one executor run instead of one
# per row: PostgreSQL CPU per job about halves). A batch holds one row per job (``_write``
# keeps the last), as ON CONFLICT DO UPDATE must not meet a row twice.
UPSERT_JOBS = (
    """
INSERT INTO jobs AS jobs (id, tenant_id, queue_name, status, payload, attempt_count,
                  max_attempts, worker_id, idempotency_key, created_at, started_at,
                  completed_at, updated_at, result, last_error)
SELECT id, tenant_id, queue_name, status, payload, attempt_count, max_attempts, worker_id,
       idempotency_key, coalesce(created_at, now()), started_at, completed_at, now(), result,
       last_error
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::int[],
            $7::int[], $8::text[], $9::text[], $10::timestamptz[], $11::timestamptz[],
            $12::timestamptz[], $13::jsonb[], $14::text[])
    AS v(id, tenant_id, queue_name, status, payload, attempt_count, max_attempts, worker_id,
         idempotency_key, created_at, started_at, completed_at, result, last_error)
"""
    + _UPSERT_SET
)

INSERT_EXECUTIONS = """
INSERT INTO job_executions (job_id, tenant_id, attempt, status, error, duration_ms, worker_id, at)
SELECT job_id, tenant_id, attempt, status, error, duration_ms, worker_id, now()
FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::text[], $6::float8[],
            $7::text[]) AS v(job_id, tenant_id, attempt, status, error, duration_ms, worker_id)
"""


def columns(rows: Sequence[tuple[Any, ...]]) -> list[list[Any]]:
    """Row tuples (at least one) as one list per column: the unnest statements' arguments."""
    return [list(col) for col in zip(*rows, strict=True)]


def parse_time(value: str | None) -> dt.datetime | None:
    """An ISO-8601 time from a producer, or None when absent or unreadable."""
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


@dataclass
class JobRow:
    """The ``jobs`` row as an upsert (the last one for a job in a batch wins)."""

    job: Job
    status: str
    worker_id: str
    attempt_count: int
    started_at: dt.datetime | None = None
    completed_at: dt.datetime | None = None
    result: Any = None
    last_error: str | None = None

    def args(self) -> tuple[Any, ...]:
        j = self.job
        return (
            j.id,
            j.tenant_id,
            j.queue,
            self.status,
            j.payload,
            self.attempt_count,
            j.max_attempts,
            self.worker_id,
            j.idempotency_key,
            parse_time(j.created_at),
            self.started_at,
            self.completed_at,
            None if self.result is None else self.result,
            self.last_error,
        )


@dataclass
class Execution:
    """One ``job_executions`` row: an attempt and how it ended."""

    job_id: str
    tenant_id: str | None
    attempt: int
    status: str  # success / failed / cancelled
    error: str | None
    duration_ms: float
    worker_id: str

    def args(self) -> tuple[Any, ...]:
        return (
            self.job_id,
            self.tenant_id,
            self.attempt,
            self.status,
            self.error,
            self.duration_ms,
            self.worker_id,
        )


@dataclass
class Outcome:
    """The end of a job's hold: what to write, then which FINISH action to run in Redis."""

    processing_key: str
    raw: bytes
    action: str  # complete / retry / dead / release
    job_hash: str = ""
    target: str = ""
    target_value: bytes = b""
    score: float = 0.0
    ttl_s: int = 0
    fields: dict[str, str] = field(default_factory=dict)
    row: JobRow | None = None
    execution: Execution | None = None

    def script_args(self, out: list[Any]) -> None:
        """Append this job's group of FINISH arguments (see :data:`keys.FINISH`)."""
        out.extend(
            (
                self.processing_key,
                self.job_hash,
                self.target,
                self.raw,
                self.action,
                self.target_value,
                self.score,
                self.ttl_s,
                2 * len(self.fields),
            )
        )
        for item in self.fields.items():
            out.extend(item)


class Finisher:
    """Batches outcomes: one PostgreSQL transaction, then one Redis script call per batch
    (a :class:`~gateway.groupcommit.GroupCommit`; a batch never fails one item alone: an
    outage is retried inside, data PostgreSQL refuses is written row by row inside)."""

    def __init__(
        self,
        db: asyncpg.Pool,
        redis: aioredis.Redis,
        *,
        max_batch: int = 500,
        linger_s: float = 0.002,
        replica_wait: ReplicaWait | None = None,
    ):
        self._db = db
        self._redis = redis
        self._replica_wait = replica_wait or ReplicaWait(redis, 0)
        self._finish = redis.register_script(keys.FINISH)
        self._group: GroupCommit[Outcome | JobRow, bool | None] = GroupCommit(
            "job-tracking", self._write, max_items=max_batch, linger_s=linger_s
        )
        self._deferred: dict[str, tuple[asyncio.TimerHandle, JobRow]] = {}

    @property
    def batches(self) -> int:
        return self._group.batches

    def start(self) -> None:
        """Nothing to start: batches run as outcomes arrive."""

    async def stop(self) -> None:
        """Flush everything submitted so far, then stop."""
        for handle, _ in self._deferred.values():
            handle.cancel()
        self._deferred.clear()
        await self._group.join()

    def note(self, row: JobRow, after_s: float = 0.0) -> None:
        """Queue a tracking-only upsert (e.g. ``running``); nobody waits for it.

        With ``after_s``, only if no outcome for the job is submitted before then: a job
        that ends sooner gets one upsert (its final state, with the start time carried
        over) instead of two. Redis holds the job meanwhile, so nothing depends on it.
        """
        if after_s <= 0:
            self._group.push(row)
            return
        job_id = row.job.id
        handle = asyncio.get_running_loop().call_later(after_s, self._note_now, job_id)
        self._deferred[job_id] = (handle, row)

    def _note_now(self, job_id: str) -> None:
        found = self._deferred.pop(job_id, None)
        if found is not None:
            self._group.push(found[1])

    async def submit(self, outcome: Outcome) -> bool:
        """Record ``outcome``; returns once it is in PostgreSQL and Redis (False when the
        job was no longer held: another instance had reaped it)."""
        if outcome.row is not None:
            found = self._deferred.pop(outcome.row.job.id, None)
            if found is not None:
                found[0].cancel()
                if outcome.row.started_at is None:
                    outcome.row.started_at = found[1].started_at
        # A cancelled submitter cancels only its own wait; the outcome is written anyway.
        # An exception here (not an outage: those are retried inside _write) leaves the job
        # held in its processing list, so nothing is lost; the worker logs it.
        return bool(await self._group.submit(outcome))

    async def _write(self, batch: Sequence[Outcome | JobRow]) -> list[bool | None]:
        rows: dict[str, JobRow] = {}
        executions: list[Execution] = []
        outcomes: list[Outcome] = []
        for item in batch:
            if isinstance(item, JobRow):
                rows[item.job.id] = item
                continue
            outcomes.append(item)
            if item.row is not None:
                rows[item.row.job.id] = item.row
            if item.execution is not None:
                executions.append(item.execution)
        await self._retry("PostgreSQL", lambda: self._write_db(list(rows.values()), executions))
        held = iter(await self._retry("Redis", lambda: self._write_redis(outcomes)) or ())
        return [bool(next(held, 0)) if isinstance(item, Outcome) else None for item in batch]

    async def _retry(self, what: str, op: Any) -> Any:
        delay = 0.1
        while True:
            try:
                return await op()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, RedisError) as exc:
                if isinstance(exc, asyncpg.PostgresError) and not is_transient(exc):
                    # Not retryable (the row-by-row fallback already kept what it could).
                    log.exception("job tracking write refused", extra={"backend": what})
                    return None
                log.warning(
                    "job tracking write failed; retrying",
                    extra={"backend": what, "error": f"{type(exc).__name__}: {exc}"[:300]},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _write_db(self, rows: list[JobRow], executions: list[Execution]) -> None:
        if not rows and not executions:
            return
        try:
            async with self._db.acquire() as conn, conn.transaction():
                if rows:
                    await conn.execute(UPSERT_JOBS, *columns([r.args() for r in rows]))
                if executions:
                    await conn.execute(INSERT_EXECUTIONS, *columns([e.args() for e in executions]))
        except asyncpg.PostgresError as exc:
            if is_transient(exc):
                raise
            # A statement or data error (e.g. a payload jsonb refuses): write row by row so
            # one bad job cannot block the tracking of every other job.
            await self._write_db_one_by_one(rows, executions, exc)

    async def _write_db_one_by_one(
        self, rows: list[JobRow], executions: list[Execution], cause: Exception
    ) -> None:
        log.warning("job tracking batch refused; writing row by row", extra={"error": str(cause)})
        async with self._db.acquire() as conn:
            for row in rows:
                args = row.args()
                try:
                    await conn.execute(UPSERT_JOB, *args)
                except asyncpg.PostgresError as exc:
                    if is_transient(exc):
                        raise
                    # Keep the row, without what PostgreSQL refuses to store.
                    unstorable = {"_unstorable": f"{type(exc).__name__}: {exc}"[:500]}
                    await conn.execute(
                        UPSERT_JOB, *args[:4], unstorable, *args[5:12], None, args[13]
                    )
            for execution in executions:
                await conn.execute(INSERT_EXECUTION, *execution.args())

    async def _write_redis(self, outcomes: list[Outcome]) -> list[Any]:
        if not outcomes:
            return []
        # One EVALSHA for the batch. Not a Script object: that asks SCRIPT EXISTS first on
        # every call (one more round trip). After a Redis restart the script cache is empty:
        # load it and send the batch again (nothing of it ran).
        args: list[Any] = []
        for outcome in outcomes:
            outcome.script_args(args)
        for _ in range(2):
            try:
                held = await self._finish_batch(args)
            except NoScriptError:
                await self._redis.script_load(keys.FINISH)
                continue
            if not isinstance(held, list) or len(held) != len(outcomes):
                raise RedisError(f"FINISH answered {str(held)[:100]} for {len(outcomes)} jobs")
            return held
        raise RedisError("FINISH script missing right after loading it")

    async def _finish_batch(self, args: list[Any]) -> Any:
        wait = self._replica_wait
        replicas = await wait.replicas()
        if not replicas:
            return await self._redis.evalsha(self._finish.sha, 0, *args)
        # WAIT on the same connection: the batch's end is on the replicas before the worker
        # counts the jobs done, so a promoted replica does not hand them out again.
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.evalsha(self._finish.sha, 0, *args)
            pipe.execute_command("WAIT", replicas, wait.timeout_ms)
            held, acked = await pipe.execute()
        wait.check(int(acked), replicas, "finish")
        return held


class ReplicaWait:
    """How many replicas a job runtime write waits for (Redis WAIT): ``redis_wait_replicas``,
    but never more than the primary has connected (read from INFO at most once a second), so
    a primary left alone after a failover is not slowed by a WAIT no replica can answer; a
    primary with no replica cannot fail over, so nothing is lost by not waiting then."""

    RECHECK_S = 1.0
    WARN_EVERY_S = 30.0

    def __init__(self, redis: aioredis.Redis, wanted: int, timeout_ms: int = 1000):
        self._redis = redis
        self.wanted = wanted
        self.timeout_ms = timeout_ms
        self._connected = wanted
        self._checked = -float("inf")
        self._warned = -float("inf")

    async def replicas(self) -> int:
        """Replicas to WAIT for now (0: do not wait)."""
        if not self.wanted:
            return 0
        now = time.monotonic()
        if now - self._checked >= self.RECHECK_S:
            self._checked = now
            try:
                info = await self._redis.info("replication")
                self._connected = int(info.get("connected_slaves", 0))
            except (RedisError, OSError):
                self._connected = self.wanted  # unknown: wait for what was asked
        return min(self.wanted, self._connected)

    def check(self, acked: int, wanted: int, step: str) -> None:
        """Log (at most every 30 s) when fewer replicas acknowledged a write in time."""
        if acked >= wanted:
            return
        self._checked = -float("inf")  # look at the replicas again before the next wait
        now = time.monotonic()
        if now - self._warned >= self.WARN_EVERY_S:
            self._warned = now
            log.warning(
                "Redis replicas did not acknowledge the job runtime's write in time; a "
                "failover now could run these jobs again",
                extra={"step": step, "acknowledged": acked, "wanted": wanted},
            )


def result_json(result: Any) -> str:
    """A handler's result as JSON text for the tracking hash (never fails)."""
    return json.dumps(result, default=str, separators=(",", ":"))
