"""The worker: one per ``mailgate run`` process, consuming every queue that has a handler.

Taking: the TAKE script moves jobs atomically from the queues (strict priority, oldest
first, bounded by free slots per handler and overall) into this worker's processing lists.
A worker killed at any instant loses nothing: what it held stays in its processing lists
until the reaper of any instance sees its heartbeat gone and returns the jobs to the head of
their queues.

Waiting: an idle worker blocks on Redis keyspace notifications for the queue keys, so a job
pushed by a producer is picked up within a millisecond or two, and an idle worker costs
Redis nothing but one subscription. The notifications must be on (``notify-keyspace-events
Kl``; the embedded Redis has them); the worker sets them itself only when
``redis_set_notifications`` allows, since CONFIG SET changes a Redis the platform may share.
A slow safety check every ``worker_idle_poll_s`` covers a missed notification; without
notifications the worker polls every 50 ms and says so once.

Failing: an exception schedules a retry after ``min(2^n s, cap)`` plus up to 10 % jitter in
the ``queue:delayed`` sorted set; every instance's promoter moves due jobs back. Nobody sleeps
on a backoff. After ``max_attempts``, or on :class:`~gateway.jobs.PermanentJobError`, the job
goes to ``queue:dead`` with ``error``, ``failed_at`` and ``queue_name``.

Stopping: stop taking, let in-flight jobs finish until the deadline, cancel the rest and put
them back at the head of their queue without counting an attempt.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import json
import logging
import os
import random
import resource
import socket
import time
import traceback
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError, ResponseError

from gateway.app import App, wait_replicas
from gateway.jobs import DeferJob, PermanentJobError, RetryJob, keys
from gateway.jobs.contracts import QUEUE_FAMILY, QUEUE_PRIORITY, PayloadInvalid
from gateway.jobs.envelope import Job, MalformedJob, backoff_delay_s, parse_job, utc_now_iso
from gateway.jobs.handlers import HandlerSpec
from gateway.jobs.tracking import (
    Execution,
    Finisher,
    JobRow,
    Outcome,
    ReplicaWait,
    result_json,
)
from gateway.logs import bind
from gateway.settings import job_timeouts
from gateway.tasks import cancel_and_wait

log = logging.getLogger(__name__)

FALLBACK_POLL_S = 0.05
# A job's PostgreSQL row says "running" only once it has run this long: most jobs end
# sooner, and then one upsert (the final state, start time included) replaces two.
RUNNING_ROW_AFTER_S = 1.0
ERROR_TEXT_LIMIT = 4000
DEADLINE_SWEEP_S = 1.0


class JobTimedOut(Exception):
    """An attempt ran past its family's limit and was cancelled (a failed attempt)."""


def make_worker_id() -> str:
    """``worker-{hostname}-{pid}-{random}`` (design §2)."""
    return f"worker-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:9]}"


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text[:ERROR_TEXT_LIMIT]


@dataclass
class WorkerStats:
    """The seed's health fields (getWorkerHealth), kept in memory and in the heartbeat."""

    started_monotonic: float = field(default_factory=time.monotonic)
    processed: int = 0
    failed: int = 0
    total_ms: float = 0.0

    def record(self, duration_ms: float, ok: bool) -> None:
        self.processed += 1
        self.total_ms += duration_ms
        if not ok:
            self.failed += 1

    @property
    def average_ms(self) -> float:
        return self.total_ms / self.processed if self.processed else 0.0


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Worker:
    """Takes, runs and finishes jobs for the handlers it is given."""

    def __init__(
        self,
        app: App,
        handlers: dict[str, HandlerSpec],
        *,
        worker_id: str | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ):
        settings = app.settings
        self.app = app
        self.redis = app.redis
        self.handlers = handlers
        self.worker_id = worker_id or make_worker_id()
        self.clock = clock
        self.rng = rng or random.Random()
        self.concurrency = settings.worker_concurrency
        self.stalled_timeout_s = settings.stalled_timeout_s
        self.job_ttl_s = settings.job_ttl_s
        self.retry_cap_s = settings.job_retry_max_delay_s
        self.idle_poll_s = settings.worker_idle_poll_s
        self.timeouts_s = job_timeouts(settings.job_timeouts)
        self.heartbeat_interval_s = max(0.2, self.stalled_timeout_s / 6)
        self.stats = WorkerStats()
        self.metrics = app.metrics
        # Consumed queues in priority order, and the handler for each.
        self.queues = tuple(q for q in QUEUE_PRIORITY if QUEUE_FAMILY[q] in handlers)
        self._take = self.redis.register_script(keys.TAKE)
        self._promote = self.redis.register_script(keys.PROMOTE)
        self._reap = self.redis.register_script(keys.REAP)
        self.replica_wait = ReplicaWait(
            self.redis, wait_replicas(settings), settings.redis_wait_timeout_ms
        )
        self.finisher = Finisher(app.db, self.redis, replica_wait=self.replica_wait)
        self._busy: dict[str, int] = dict.fromkeys(handlers, 0)
        self._in_flight: dict[asyncio.Task[None], Job] = {}
        # Per-attempt deadlines (loop time), checked by one sweep a second: cheaper than a
        # timer per job, and a limit of minutes needs no finer precision.
        self._deadlines: dict[asyncio.Task[None], float] = {}
        self._timed_out: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._promote_wake = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._cancelling = False
        self._notifications = False
        self._polling_said = False
        self._tasks: list[asyncio.Task[None]] = []
        self._taking: asyncio.Task[None] | None = None
        self.started = False

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Register, start the helpers (heartbeat, reaper, promoter, notifications) and
        begin taking jobs."""
        await self._heartbeat_once()
        self.finisher.start()
        self._notifications = await self._enable_notifications()
        background = [
            (self._heartbeat_loop(), "heartbeat"),
            (self._reaper_loop(), "reaper"),
            (self._promoter_loop(), "promoter"),
            (self._deadline_loop(), "deadlines"),
        ]
        self.metrics.add_refresher(self.refresh_depths)
        if self._notifications:
            background.append((self._notification_loop(), "notifications"))
        self._tasks = [asyncio.create_task(c, name=f"worker-{n}") for c, n in background]
        self._taking = asyncio.create_task(self._take_loop(), name="worker-take")
        self.started = True
        log.info(
            "worker started",
            extra={
                "worker_id": self.worker_id,
                "queues": list(self.queues),
                "wakeup": "keyspace notifications" if self._notifications else "polling",
            },
        )

    def ready(self) -> bool:
        return self.started and self._taking is not None and not self._taking.done()

    async def stop(self, deadline: float) -> None:
        """Stop taking; drain until ``deadline`` (loop time); release what is left."""
        loop = asyncio.get_running_loop()
        self._stopping.set()
        self._wake.set()
        try:
            if self._taking is not None:
                # The take loop ends at the stop request unless it is inside a Redis call
                # that hangs; then the deadline ends it (what it took is reaped later).
                done, _ = await asyncio.wait(
                    {self._taking}, timeout=max(0.0, deadline - loop.time())
                )
                if not done:
                    log.warning("the take loop did not stop by the deadline; cancelled")
                    await cancel_and_wait([self._taking])
            pending = set(self._in_flight)
            if pending:
                log.info("draining in-flight jobs", extra={"jobs": len(pending)})
                _, pending = await asyncio.wait(pending, timeout=max(0.0, deadline - loop.time()))
        except asyncio.CancelledError:
            pending = set(self._in_flight)
            await self._release(pending)
            raise
        await self._release(pending)
        await self.finisher.stop()
        self.metrics.remove_refresher(self.refresh_depths)
        await cancel_and_wait(self._tasks)
        with contextlib.suppress(RedisError, OSError):
            await self.redis.delete(keys.worker_key(self.worker_id))
            await self.redis.srem(keys.WORKERS, self.worker_id)
        log.info("worker stopped", extra={"worker_id": self.worker_id})

    async def _release(self, tasks: Iterable[asyncio.Task[None]]) -> None:
        """Cancel unfinished jobs; each puts itself back on its queue (no attempt counted)."""
        tasks = list(tasks)
        if not tasks:
            return
        log.warning("cancelling unfinished jobs at shutdown", extra={"jobs": len(tasks)})
        self._cancelling = True
        # A second cancel only after 5 s: a job returning itself to its queue on the first
        # one must not be interrupted; one whose cancel was lost gets another.
        await cancel_and_wait(tasks, within=30.0, every=5.0)

    async def run_until_empty(self, timeout_s: float = 60.0) -> None:
        """Test and benchmark helper: wait until the queues, the delayed set and this
        worker's in-flight set are all empty."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self._in_flight and await self._queues_empty():
                return
            await asyncio.sleep(0.01)
        raise TimeoutError("queues not empty")

    async def _queues_empty(self) -> bool:
        async with self.redis.pipeline(transaction=False) as pipe:
            for q in self.queues:
                pipe.llen(q)
                pipe.llen(keys.processing_key(self.worker_id, q))
            pipe.zcard(keys.DELAYED)
            counts = await pipe.execute()
        return not any(counts)

    # -- taking -------------------------------------------------------------------------

    def _free_slots(self) -> tuple[int, list[str], list[str]]:
        total = self.concurrency - len(self._in_flight)
        queues: list[str] = []
        caps: list[str] = []
        for queue in self.queues:
            family = QUEUE_FAMILY[queue]
            free = self.handlers[family].slots - self._busy[family]
            if free > 0:
                queues.append(queue)
                caps.append(f"{family}={free}")
        return total, queues, caps

    async def _take_loop(self) -> None:
        failures = 0
        check_stranded = False
        while not self._stopping.is_set():
            if check_stranded:
                try:
                    await self._adopt_stranded()
                    check_stranded = False
                except (RedisError, OSError) as exc:
                    log.warning("cannot check for stranded jobs", extra={"error": _error_text(exc)})
            total, queues, caps = self._free_slots()
            if total <= 0 or not queues:
                self._slot_freed.clear()
                await self._wait_for(self._slot_freed, None)
                continue
            self._wake.clear()
            try:
                flat = await self._take_batch(queues, total, caps)
                failures = 0
            except (RedisError, OSError) as exc:
                failures += 1
                check_stranded = True  # the TAKE may have moved jobs before its reply was lost
                delay = min(0.1 * 2**failures, 5.0)
                log.warning(
                    "cannot take jobs; retrying",
                    extra={"error": _error_text(exc), "retry_in_s": delay},
                )
                await self._wait_for(self._stopping, delay)
                continue
            if not flat:
                poll = self.idle_poll_s if self._notifications else FALLBACK_POLL_S
                await self._wait_for(self._wake, poll)
                continue
            taken = [
                (flat[i].decode(), bytes(flat[i + 1]), int(flat[i + 2]))
                for i in range(0, len(flat), 3)
            ]
            await self._begin(taken)

    async def _take_batch(self, queues: list[str], total: int, caps: list[str]) -> Any:
        prefix = keys.processing_prefix(self.worker_id)
        args: list[str | int] = [prefix, total, self.worker_id, utc_now_iso(), *caps]
        replicas = await self.replica_wait.replicas()
        if not replicas:
            return await self._take(keys=queues, args=args)
        # Behind Sentinel: the jobs taken are on the replicas before they run (WAIT on the
        # same connection), so a promoted replica holds them in this worker's processing
        # lists instead of offering them again. A failure here means "not taken": what the
        # script moved is found by _adopt_stranded, or is still in its queue.
        async with self.redis.pipeline(transaction=False) as pipe:
            await self._take(keys=queues, args=args, client=pipe)
            pipe.execute_command("WAIT", replicas, self.replica_wait.timeout_ms)
            flat, acked = await pipe.execute()
        if flat:
            self.replica_wait.check(int(acked), replicas, "take")
        return flat

    async def _adopt_stranded(self) -> None:
        """Run the jobs in this worker's processing lists that no task of it runs.

        A TAKE whose reply is lost (Redis went away just after moving the jobs) leaves them
        in this live worker's lists, where the reaper, which only empties dead workers'
        lists, would never look. Jobs still running here are matched by their bytes."""
        known = collections.Counter(job.raw for job in self._in_flight.values())
        stranded: list[tuple[str, bytes, int]] = []
        for queue in self.queues:
            held: list[Any] = await self.redis.lrange(
                keys.processing_key(self.worker_id, queue), 0, -1
            )
            for item in held:
                raw = item.encode() if isinstance(item, str) else bytes(item)
                if known[raw] > 0:
                    known[raw] -= 1
                else:
                    stranded.append((queue, raw, 0))
        if stranded:
            log.warning("running jobs stranded by a lost TAKE reply", extra={"jobs": len(stranded)})
            await self._begin(stranded)

    async def _wait_for(self, event: asyncio.Event, limit_s: float | None) -> None:
        """Wait for ``event`` or a stop request, at most ``timeout`` seconds."""
        waits = {asyncio.ensure_future(event.wait()), asyncio.ensure_future(self._stopping.wait())}
        try:
            await asyncio.wait(waits, timeout=limit_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    async def _begin(self, taken: list[tuple[str, bytes, int]]) -> None:
        """Start a task per job taken (TAKE already marked them processing)."""
        started = self._now_dt()
        for queue, raw, stalls in taken:
            try:
                job = parse_job(raw, queue)
            except MalformedJob as exc:
                await self._dead_letter_malformed(queue, raw, exc)
                continue
            family = QUEUE_FAMILY[job.queue]
            self._busy[family] += 1
            task = asyncio.create_task(self._run(job, max(stalls, 0)), name=f"job-{job.id}")
            self._in_flight[task] = job
            self._deadlines[task] = self._loop_time() + self.timeouts_s[family]
            self.finisher.note(
                JobRow(job, "running", self.worker_id, job.attempt, started_at=started),
                after_s=RUNNING_ROW_AFTER_S,
            )

    # -- running ------------------------------------------------------------------------

    async def _run(self, job: Job, stalls: int) -> None:
        family = QUEUE_FAMILY[job.queue]
        spec = self.handlers[family]
        t0 = time.perf_counter()
        try:
            with bind(job_id=job.id, queue=job.queue, tenant_id=job.tenant_id):
                await self._run_and_finish(spec, job, stalls, t0)
        except Exception:  # logged; the job stays held for the reaper
            log.exception("job outcome not recorded; it stays in the processing list")
        finally:
            self._busy[family] -= 1
            task = asyncio.current_task()
            if task is not None:
                self._in_flight.pop(task, None)
                self._deadlines.pop(task, None)
                self._timed_out.discard(task)
            self._slot_freed.set()
            # The take loop may be idling on the queues of other, unsaturated families
            # while this family's queue is full of work: a freed slot is a reason to look.
            self._wake.set()

    async def _run_and_finish(self, spec: HandlerSpec, job: Job, stalls: int, t0: float) -> None:
        if stalls >= job.max_attempts:
            error = f"the worker running it died {stalls} times"
            await self._finish_dead(job, error, t0, attempt_counted=False)
            return
        try:
            payload = spec.parse(job.payload)
        except PayloadInvalid as exc:
            # A producer pushed a payload its family's model refuses: it can never run.
            await self._finish_dead(job, str(exc), t0)
            return
        try:
            result = await self._call(spec, job, payload)
        except asyncio.CancelledError:
            if asyncio.current_task() in self._timed_out:
                # Past its family's limit (cancelled by the deadline sweep): a failed
                # attempt, retried or dead-lettered, so a hung handler cannot hold a slot.
                self.metrics.jobs_timed_out.labels(job.queue).inc()
                limit_s = self.timeouts_s[spec.family]
                timed_out = JobTimedOut(
                    f"{spec.family} job ran past its {limit_s:g} s limit (job_timeouts)"
                )
                await self._finish_failure(job, timed_out, t0)
                return
            if not self._cancelling:
                raise
            await self._finish_release(job, t0)
            return
        except DeferJob as deferral:
            await self._finish_retry(job, deferral.delay_s, str(deferral), t0, counted=False)
            return
        except PermanentJobError as exc:
            await self._finish_dead(job, _error_text(exc), t0)
            return
        except RetryJob as exc:
            await self._finish_failure(job, exc, t0, delay_s=exc.delay_s)
            return
        except Exception as exc:  # noqa: BLE001 - any handler error is a failed attempt
            await self._finish_failure(job, exc, t0)
            return
        await self._finish_complete(job, result, t0)

    async def _call(self, spec: HandlerSpec, job: Job, payload: Any) -> Any:
        """The handler, under its deadline: once it returns or raises, the deadline sweep
        no longer concerns this task (finishing the job is never cut short)."""
        try:
            return await spec.run(job, payload)
        finally:
            task = asyncio.current_task()
            if task is not None:
                self._deadlines.pop(task, None)

    def _duration_ms(self, t0: float) -> float:
        return (time.perf_counter() - t0) * 1000.0

    def _now_dt(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock(), dt.UTC)

    async def _finish_complete(self, job: Job, result: Any, t0: float) -> None:
        ms = self._duration_ms(t0)
        now = utc_now_iso()
        result_text = result_json(result)
        outcome = Outcome(
            processing_key=keys.processing_key(self.worker_id, job.queue),
            raw=job.raw,
            action="complete",
            job_hash=keys.job_key(job.id),
            ttl_s=self.job_ttl_s,
            fields={
                "status": "completed",
                "completed_at": now,
                "updated_at": now,
                "result": result_text,
                "attempt_count": str(job.attempt),
                "worker_id": self.worker_id,
            },
            row=JobRow(
                job,
                "completed",
                self.worker_id,
                job.attempt,
                completed_at=self._now_dt(),
                result=json.loads(result_text),
            ),
            execution=Execution(
                job.id, job.tenant_id, job.attempt, "success", None, ms, self.worker_id
            ),
        )
        await self.finisher.submit(outcome)
        self.stats.record(ms, ok=True)
        self.metrics.jobs_completed.labels(job.queue).inc()
        self.metrics.job_duration.labels(job.queue).observe(ms / 1000.0)

    async def _finish_failure(
        self, job: Job, exc: Exception, t0: float, *, delay_s: float | None = None
    ) -> None:
        error = _error_text(exc)
        log.warning(
            "job failed",
            extra={"attempt": job.attempt, "max_attempts": job.max_attempts, "error": error},
        )
        log.debug("job failure traceback:\n%s", "".join(traceback.format_exception(exc)))
        if job.attempt >= job.max_attempts:
            await self._finish_dead(job, error, t0)
            return
        if delay_s is None:
            delay_s = backoff_delay_s(job.attempt, cap_s=self.retry_cap_s, rng=self.rng)
        await self._finish_retry(job, delay_s, error, t0, counted=True)

    async def _finish_retry(
        self, job: Job, delay_s: float, error: str, t0: float, *, counted: bool
    ) -> None:
        ms = self._duration_ms(t0)
        attempts = job.attempt if counted else job.attempt_count
        due_ms = (self.clock() + delay_s) * 1000.0
        now = utc_now_iso()
        member = keys.delayed_member(job.queue, job.encode(attempt_count=attempts))
        outcome = Outcome(
            processing_key=keys.processing_key(self.worker_id, job.queue),
            raw=job.raw,
            action="retry",
            job_hash=keys.job_key(job.id),
            target=keys.DELAYED,
            target_value=member,
            score=due_ms,
            fields={
                "status": "retry_scheduled",
                "updated_at": now,
                "attempt_count": str(attempts),
                "retry_delay": str(round(delay_s * 1000)),
                "error": error,
            },
            row=JobRow(job, "retry_scheduled", self.worker_id, attempts, last_error=error),
            execution=(
                Execution(job.id, job.tenant_id, job.attempt, "failed", error, ms, self.worker_id)
                if counted
                else None
            ),
        )
        await self.finisher.submit(outcome)
        self._promote_wake.set()
        if counted:
            self.stats.record(ms, ok=False)
            self.metrics.jobs_failed.labels(job.queue).inc()
            self.metrics.jobs_retried.labels(job.queue).inc()
            self.metrics.job_duration.labels(job.queue).observe(ms / 1000.0)

    async def _finish_dead(
        self, job: Job, error: str, t0: float, *, attempt_counted: bool = True
    ) -> None:
        ms = self._duration_ms(t0)
        now = utc_now_iso()
        attempts = job.attempt if attempt_counted else job.attempt_count
        dead = job.encode(attempt_count=attempts, error=error, failed_at=now, queue_name=job.queue)
        outcome = Outcome(
            processing_key=keys.processing_key(self.worker_id, job.queue),
            raw=job.raw,
            action="dead",
            job_hash=keys.job_key(job.id),
            target=keys.DEAD,
            target_value=dead,
            ttl_s=self.job_ttl_s,
            fields={
                "status": "failed",
                "updated_at": now,
                "completed_at": now,
                "attempt_count": str(attempts),
                "error": error,
            },
            row=JobRow(
                job,
                "failed",
                self.worker_id,
                attempts,
                completed_at=self._now_dt(),
                last_error=error,
            ),
            execution=Execution(
                job.id, job.tenant_id, job.attempt, "failed", error, ms, self.worker_id
            ),
        )
        await self.finisher.submit(outcome)
        log.error("job dead-lettered", extra={"error": error, "attempts": attempts})
        self.stats.record(ms, ok=False)
        self.metrics.jobs_failed.labels(job.queue).inc()
        self.metrics.jobs_dead.labels(job.queue).inc()

    async def _finish_release(self, job: Job, t0: float) -> None:
        now = utc_now_iso()
        outcome = Outcome(
            processing_key=keys.processing_key(self.worker_id, job.queue),
            raw=job.raw,
            action="release",
            job_hash=keys.job_key(job.id),
            target=job.queue,
            target_value=job.raw,
            fields={"status": "queued", "updated_at": now, "attempt_count": str(job.attempt_count)},
            row=JobRow(job, "queued", self.worker_id, job.attempt_count),
            execution=Execution(
                job.id,
                job.tenant_id,
                job.attempt,
                "cancelled",
                "cancelled at shutdown; returned to its queue",
                self._duration_ms(t0),
                self.worker_id,
            ),
        )
        await self.finisher.submit(outcome)

    async def _dead_letter_malformed(self, queue: str, raw: bytes, exc: MalformedJob) -> None:
        """A malformed job goes straight to queue:dead with the parse error (never lost)."""
        now = utc_now_iso()
        error = f"malformed job: {exc}"
        try:
            obj = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            obj = None
        if isinstance(obj, dict):
            letter = {**obj, "error": error, "failed_at": now, "queue_name": queue}
        else:
            letter = {
                "raw": raw.decode("utf-8", "replace"),
                "error": error,
                "failed_at": now,
                "queue_name": queue,
            }
        job_id = obj.get("id") if isinstance(obj, dict) else None
        outcome = Outcome(
            processing_key=keys.processing_key(self.worker_id, queue),
            raw=raw,
            action="dead",
            job_hash=keys.job_key(str(job_id)) if isinstance(job_id, str | int) else "",
            target=keys.DEAD,
            target_value=json.dumps(letter, separators=(",", ":")).encode(),
            ttl_s=self.job_ttl_s,
            fields={"status": "failed", "updated_at": now, "completed_at": now, "error": error},
        )
        log.error("malformed job dead-lettered", extra={"queue": queue, "error": error})
        await self.finisher.submit(outcome)
        self.metrics.jobs_dead.labels(queue).inc()

    # -- background loops ---------------------------------------------------------------

    async def _heartbeat_once(self) -> None:
        key = keys.worker_key(self.worker_id)
        ttl_ms = int(self.stalled_timeout_s * 750)  # 0.75 x the stalled timeout
        health: dict[Any, Any] = {
            "worker_id": self.worker_id,
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "status": "stopping" if self._stopping.is_set() else "healthy",
            "uptime_s": round(time.monotonic() - self.stats.started_monotonic, 1),
            "memory_rss_bytes": _rss_bytes(),
            "jobs_processed": self.stats.processed,
            "jobs_failed": self.stats.failed,
            "average_processing_time_ms": round(self.stats.average_ms, 3),
            "in_flight": len(self._in_flight),
            "queues": ",".join(self.queues),
            "last_heartbeat": utc_now_iso(),
        }
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=health)
            pipe.pexpire(key, ttl_ms)
            pipe.sadd(keys.WORKERS, self.worker_id)
            await pipe.execute()

    def _loop_time(self) -> float:
        return asyncio.get_running_loop().time()

    async def _deadline_loop(self) -> None:
        """Once a second: cancel the jobs that ran past their family's limit."""
        while True:
            await asyncio.sleep(DEADLINE_SWEEP_S)
            now = self._loop_time()
            for task, deadline in list(self._deadlines.items()):
                if deadline <= now and task not in self._timed_out and not task.done():
                    self._timed_out.add(task)
                    task.cancel()

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval_s)
            try:
                await self._heartbeat_once()
            except (RedisError, OSError) as exc:
                log.warning("heartbeat failed", extra={"error": _error_text(exc)})

    async def reap_once(self) -> int:
        """Return the jobs of every registered worker whose heartbeat is gone."""
        returned = 0
        members = await self.redis.smembers(keys.WORKERS)
        for member in members:
            other = member.decode() if isinstance(member, bytes) else str(member)
            if other == self.worker_id:
                continue
            moved = int(
                await self._reap(
                    keys=[keys.WORKERS, keys.worker_key(other)],
                    args=[other, keys.processing_prefix(other), *QUEUE_PRIORITY],
                )
            )
            if moved > 0:
                log.warning(
                    "returned the jobs of a dead worker",
                    extra={"dead_worker": other, "jobs": moved},
                )
                self._wake.set()
            returned += max(moved, 0)
        return returned

    async def _reaper_loop(self) -> None:
        interval = max(0.1, self.stalled_timeout_s / 12)
        while True:
            await asyncio.sleep(interval * (0.8 + 0.4 * self.rng.random()))
            try:
                await self.reap_once()
            except (RedisError, OSError) as exc:
                log.warning("reaper failed", extra={"error": _error_text(exc)})

    async def promote_once(self) -> int:
        """Move due retries back to their queues; returns how many."""
        return int(await self._promote(keys=[keys.DELAYED], args=[int(self.clock() * 1000), 1000]))

    async def _promoter_loop(self) -> None:
        while True:
            try:
                moved = await self.promote_once()
                if moved >= 1000:
                    continue
                head = await self.redis.zrange(keys.DELAYED, 0, 0, withscores=True)
            except (RedisError, OSError) as exc:
                log.warning("promoter failed", extra={"error": _error_text(exc)})
                await asyncio.sleep(1.0)
                continue
            # Nothing scheduled: look again in a while (this instance's own retries wake
            # it at once). Something scheduled: sleep until it is due, at most a second.
            wait = self.idle_poll_s * 5
            if head:
                wait = min(1.0, max(0.005, float(head[0][1]) / 1000.0 - self.clock()))
            self._promote_wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._promote_wake.wait(), wait)

    async def refresh_depths(self) -> dict[str, int]:
        """Queue depths (including delayed and dead) into the queue_depth gauge."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for q in QUEUE_PRIORITY:
                pipe.llen(q)
            pipe.zcard(keys.DELAYED)
            pipe.llen(keys.DEAD)
            counts = await pipe.execute()
        names = [*QUEUE_PRIORITY, keys.DELAYED, keys.DEAD]
        depths = dict(zip(names, (int(c) for c in counts), strict=True))
        for name, depth in depths.items():
            self.metrics.queue_depth.labels(name).set(depth)
        return depths

    # -- keyspace notifications -------------------------------------------------------------

    async def _enable_notifications(self) -> bool:
        """Whether list events on keyspace channels are on (K + l, or A). The worker turns
        them on itself (CONFIG SET) only when ``redis_set_notifications`` allows it: the
        Redis may be the platform's, and CONFIG SET changes it for every client."""
        try:
            reply: dict[Any, Any] = await self.redis.config_get("notify-keyspace-events")
            current: Any = reply.get("notify-keyspace-events") or reply.get(
                b"notify-keyspace-events", b""
            )
            flags = set(current.decode() if isinstance(current, bytes) else str(current))
            if "K" in flags and ("l" in flags or "A" in flags):
                return True
            if not self.app.settings.redis_set_notifications:
                self._say_polling(
                    "keyspace notifications are off on this Redis; idle workers poll every "
                    "50 ms (set notify-keyspace-events Kl on the server, or "
                    "MAILGATE_REDIS_SET_NOTIFICATIONS=true to let mailgate set it)"
                )
                return False
            await self.redis.config_set(
                "notify-keyspace-events", "".join(sorted(flags | {"K", "l"}))
            )
            return True
        except ResponseError as exc:
            self._say_polling(
                "Redis refused CONFIG for keyspace notifications; idle workers will poll "
                f"every 50 ms (enable notify-keyspace-events Kl on the server): {exc}"
            )
            return False

    def _say_polling(self, message: str) -> None:
        """Once per worker: why it polls."""
        if not self._polling_said:
            self._polling_said = True
            log.warning(message)

    async def _notification_loop(self) -> None:
        db = int(self.redis.connection_pool.connection_kwargs.get("db", 0) or 0)
        pattern = f"__keyspace@{db}__:queue:*"
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(pattern)
                # Events may have been missed while (re)subscribing.
                self._wake.set()
                while True:
                    message = await pubsub.get_message(timeout=30.0)
                    if message is not None:
                        self._wake.set()
            except (RedisError, OSError) as exc:
                log.warning(
                    "keyspace subscription lost; resubscribing", extra={"error": _error_text(exc)}
                )
                await asyncio.sleep(0.5)
                with contextlib.suppress(RedisError, OSError):
                    await self._enable_notifications()
            finally:
                with contextlib.suppress(RedisError, OSError, RuntimeError):
                    await pubsub.aclose()
