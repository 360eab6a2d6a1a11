"""The job runtime against a real Redis and PostgreSQL: priority, FIFO, tracking, retries
with an injected clock, dead letters, stalled-job recovery, graceful shutdown, wake-up."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from gateway.app import App
from gateway.jobs import DeferJob, PermanentJobError, keys
from gateway.jobs.contracts import Payload
from gateway.jobs.envelope import Job
from gateway.jobs.handlers import HandlerSpec
from gateway.jobs.worker import RUNNING_ROW_AFTER_S, Worker
from tests.daemon import poll

Handler = Callable[[Job], Awaitable[Any]]


class FakeClock:
    """An injectable wall clock (seconds since the epoch)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def job(job_id: str, **fields: Any) -> bytes:
    body: dict[str, Any] = {"id": job_id, "payload": {"tenant_id": "t1", "n": job_id}}
    body.update(fields)
    return json.dumps(body).encode()


@pytest.fixture
async def make_worker(app: App) -> AsyncIterator[Callable[..., Awaitable[Worker]]]:
    """Factory: a started Worker with the given handlers; all stopped at teardown."""
    workers: list[Worker] = []

    async def make(
        handlers: dict[str, Handler],
        *,
        concurrency: dict[str, int] | None = None,
        clock: Callable[[], float] = time.time,
        worker_concurrency: int | None = None,
    ) -> Worker:
        def runner(fn: Handler) -> Any:
            async def run(job: Job, payload: Payload) -> Any:
                return await fn(job)

            return run

        # The runtime's own tests: any payload object is fine (the base model).
        specs = {
            family: HandlerSpec(family, runner(fn), (concurrency or {}).get(family), Payload)
            for family, fn in handlers.items()
        }
        if worker_concurrency is not None:
            app.settings = app.settings.model_copy(
                update={"worker_concurrency": worker_concurrency}
            )
        worker = Worker(app, specs, clock=clock, rng=random.Random(7))
        await worker.start()
        workers.append(worker)
        return worker

    yield make
    loop = asyncio.get_running_loop()
    for w in workers:
        if w.started:
            await w.stop(loop.time() + 5)


async def test_priority_order_and_fifo(app: App, make_worker: Any) -> None:
    """With one slot, higher queues run first and each queue runs oldest first."""
    order: list[str] = []

    async def record(j: Job) -> str:
        order.append(j.id)
        return "ok"

    await app.redis.lpush("queue:email:processing:low", job("low1"), job("low2"))
    await app.redis.lpush("queue:email:processing", job("mid1"), job("mid2"))
    await app.redis.lpush("queue:email:processing:high", job("high1"), job("high2"))
    await app.redis.lpush("queue:bounce:process", job("bounce1"))
    worker = await make_worker({"email-processing": record, "bounce": record}, worker_concurrency=1)
    await worker.run_until_empty(30)
    assert order == ["high1", "high2", "mid1", "mid2", "low1", "low2", "bounce1"]


async def test_completion_is_tracked_in_redis_and_postgres(app: App, make_worker: Any) -> None:
    """A completed job: hash completed with result and TTL; jobs row completed; one
    job_executions success row; the processing list is empty."""

    async def ok(j: Job) -> dict[str, Any]:
        return {"echo": j.payload["n"]}

    await app.redis.lpush("queue:bounce:process", job("j1", idempotency_key="idem-1", extra=1))
    worker = await make_worker({"bounce": ok})
    await worker.run_until_empty(30)
    h = await app.redis.hgetall("job:j1")
    assert h[b"status"] == b"completed"
    assert json.loads(h[b"result"]) == {"echo": "j1"}
    assert h[b"worker_id"].decode() == worker.worker_id
    assert 86000 < await app.redis.ttl("job:j1") <= 86400
    row = await app.db.fetchrow("SELECT * FROM jobs WHERE id='j1'")
    assert row["status"] == "completed"
    assert row["queue_name"] == "queue:bounce:process"
    assert row["result"] == {"echo": "j1"}
    assert row["attempt_count"] == 1
    assert row["idempotency_key"] == "idem-1"
    assert row["tenant_id"] == "t1"
    execs = await app.db.fetch("SELECT * FROM job_executions WHERE job_id='j1'")
    assert [(e["status"], e["attempt"]) for e in execs] == [("success", 1)]
    assert await app.redis.llen(keys.processing_key(worker.worker_id, "queue:bounce:process")) == 0


async def test_finish_survives_an_emptied_script_cache(app: App, make_worker: Any) -> None:
    """SCRIPT FLUSH (as after a Redis restart) while jobs run: FINISH is loaded again and
    every job still completes once."""
    gate, all_started = asyncio.Event(), asyncio.Event()
    started: list[str] = []

    async def handler(j: Job) -> str:
        started.append(j.id)
        if len(started) == 5:
            all_started.set()
        await gate.wait()
        return "ok"

    await app.redis.lpush("queue:bounce:process", *(job(f"s{i}") for i in range(5)))
    worker = await make_worker({"bounce": handler})
    await asyncio.wait_for(all_started.wait(), 10)
    await app.redis.script_flush()
    gate.set()
    await worker.run_until_empty(30)
    statuses = await app.db.fetch("SELECT status FROM jobs WHERE id LIKE 's%'")
    assert sorted(r["status"] for r in statuses) == ["completed"] * 5
    assert await app.redis.llen(keys.processing_key(worker.worker_id, "queue:bounce:process")) == 0


async def test_jobs_stranded_by_a_lost_take_reply_are_adopted(app: App, make_worker: Any) -> None:
    """A job in this live worker's processing list that no task runs (a TAKE whose reply
    was lost) is run once by the worker's check; a job it is running is not run again."""
    gate, started = asyncio.Event(), asyncio.Event()
    calls: list[str] = []

    async def handler(j: Job) -> str:
        calls.append(j.id)
        if j.id == "held":
            started.set()
            await gate.wait()
        return "ok"

    await app.redis.lpush("queue:bounce:process", job("held"))
    worker = await make_worker({"bounce": handler})
    await asyncio.wait_for(started.wait(), 10)
    processing = keys.processing_key(worker.worker_id, "queue:bounce:process")
    await app.redis.lpush(processing, job("lost"))  # moved by a TAKE nobody heard back from
    await worker._adopt_stranded()
    gate.set()
    await worker.run_until_empty(30)
    assert sorted(calls) == ["held", "lost"]
    assert await app.redis.llen(processing) == 0
    statuses = await app.db.fetch("SELECT id, status FROM jobs ORDER BY id")
    assert [(r["id"], r["status"]) for r in statuses] == [
        ("held", "completed"),
        ("lost", "completed"),
    ]


async def test_running_row_only_for_jobs_that_run_long(app: App, make_worker: Any) -> None:
    """A job that ends within RUNNING_ROW_AFTER_S gets one row (completed, start time kept);
    a longer one shows "running" in PostgreSQL while it runs."""
    release = asyncio.Event()

    async def handler(j: Job) -> str:
        if j.id == "long":
            await release.wait()
        return "ok"

    await app.redis.lpush("queue:bounce:process", job("short"), job("long"))
    worker = await make_worker({"bounce": handler})

    async def status(job_id: str) -> Any:
        return await app.db.fetchrow("SELECT status, started_at FROM jobs WHERE id=$1", job_id)

    row = await poll(lambda: status("long"), lambda r: r is not None, RUNNING_ROW_AFTER_S + 5)
    assert row["status"] == "running"
    short = await status("short")
    assert short["status"] == "completed" and short["started_at"] is not None
    release.set()
    await worker.run_until_empty(30)
    done = await status("long")
    assert done["status"] == "completed" and done["started_at"] == row["started_at"]


async def test_retry_backoff_schedule_with_injected_clock(app: App, make_worker: Any) -> None:
    """Failures schedule retries at min(2^n, cap) s + <=10 % jitter on the injected clock,
    promoted when due; after max_attempts the job is dead-lettered with its error."""
    clock = FakeClock()
    attempts: list[int] = []

    async def failing(j: Job) -> None:
        attempts.append(j.attempt)
        raise RuntimeError(f"boom {j.attempt}")

    await app.redis.lpush("queue:warmup:process", job("r1", max_attempts=3, keep="me"))
    worker = await make_worker({"warmup": failing}, clock=clock)
    for n in (1, 2):
        member, due_ms = await _wait_delayed(app)
        delay_s = due_ms / 1000 - clock.now
        assert 2**n <= delay_s <= 2**n * 1.1 + 0.01, (n, delay_s)
        queue, raw = keys.split_delayed_member(member)
        assert queue == "queue:warmup:process"
        assert json.loads(raw)["attempt_count"] == n
        assert json.loads(raw)["keep"] == "me"  # unknown fields preserved
        h = await app.redis.hgetall("job:r1")
        assert h[b"status"] == b"retry_scheduled"
        assert int(h[b"retry_delay"]) == round(delay_s * 1000)
        clock.now += delay_s - 0.5
        assert await worker.promote_once() == 0  # not due yet
        clock.now += 0.6
        assert await worker.promote_once() == 1
    await _wait_for(lambda: app.redis.llen(keys.DEAD), 1)
    letter = json.loads(await app.redis.lindex(keys.DEAD, 0))
    assert letter["id"] == "r1"
    assert letter["error"] == "RuntimeError: boom 3"
    assert letter["queue_name"] == "queue:warmup:process"
    assert letter["failed_at"].endswith("Z")
    assert letter["keep"] == "me"
    assert attempts == [1, 2, 3]
    await _wait_for(lambda: _status(app, "r1"), "failed")
    row = await app.db.fetchrow("SELECT * FROM jobs WHERE id='r1'")
    assert row["last_error"] == "RuntimeError: boom 3"
    assert row["attempt_count"] == 3
    statuses = await app.db.fetch(
        "SELECT status FROM job_executions WHERE job_id='r1' ORDER BY attempt"
    )
    assert [s["status"] for s in statuses] == ["failed", "failed", "failed"]
    assert (await app.redis.hgetall("job:r1"))[b"status"] == b"failed"


def test_backoff_is_capped() -> None:
    """The delay grows 2, 4, 8 ... s and stops at the cap (plus at most 10 % jitter)."""
    from gateway.jobs.envelope import backoff_delay_s

    rng = random.Random(1)
    assert [round(backoff_delay_s(n, jitter=0)) for n in range(1, 11)] == [
        2,
        4,
        8,
        16,
        32,
        64,
        128,
        256,
        300,
        300,
    ]
    for n in range(1, 12):
        d = backoff_delay_s(n, rng=rng)
        assert min(2**n, 300) <= d <= min(2**n, 300) * 1.1


async def test_permanent_error_skips_remaining_attempts(app: App, make_worker: Any) -> None:
    """PermanentJobError dead-letters at once, whatever max_attempts says."""
    calls = 0

    async def bad(j: Job) -> None:
        nonlocal calls
        calls += 1
        raise PermanentJobError("template variable 'name' missing")

    await app.redis.lpush("queue:bounce:process", job("p1", max_attempts=5))
    worker = await make_worker({"bounce": bad})
    await worker.run_until_empty(30)
    assert calls == 1
    letter = json.loads(await app.redis.lindex(keys.DEAD, 0))
    assert "template variable 'name' missing" in letter["error"]
    assert await app.redis.zcard(keys.DELAYED) == 0


async def test_defer_does_not_count_an_attempt(app: App, make_worker: Any) -> None:
    """DeferJob reschedules after its delay with attempt_count unchanged."""
    clock = FakeClock()

    async def defer(j: Job) -> None:
        raise DeferJob(30, "rate limited")

    await app.redis.lpush("queue:bounce:process", job("d1"))
    await make_worker({"bounce": defer}, clock=clock)
    member, due_ms = await _wait_delayed(app)
    assert abs(due_ms / 1000 - clock.now - 30) < 0.01
    assert json.loads(keys.split_delayed_member(member)[1])["attempt_count"] == 0
    assert await app.db.fetchval("SELECT count(*) FROM job_executions WHERE job_id='d1'") == 0


@pytest.mark.parametrize(
    "raw",
    [
        b"not json {",
        b"[1, 2, 3]",
        b'{"payload": {}}',
        b'{"id": "x1"}',
        b'{"id": "x2", "payload": 5}',
    ],
)
async def test_malformed_jobs_are_dead_lettered(app: App, make_worker: Any, raw: bytes) -> None:
    """Malformed jobs go to queue:dead with the parse error; the worker carries on."""
    done: list[str] = []

    async def ok(j: Job) -> None:
        done.append(j.id)

    await app.redis.lpush("queue:bounce:process", raw, job("good"))
    worker = await make_worker({"bounce": ok})
    await worker.run_until_empty(30)
    assert done == ["good"]
    letters = [json.loads(x) for x in await app.redis.lrange(keys.DEAD, 0, -1)]
    assert len(letters) == 1
    assert letters[0]["error"].startswith("malformed job:")
    assert letters[0]["queue_name"] == "queue:bounce:process"
    if raw.startswith(b"not json"):
        assert letters[0]["raw"] == raw.decode()


async def test_stalled_jobs_of_a_dead_worker_return_to_the_head(app: App, make_worker: Any) -> None:
    """A worker that registered, took jobs and died (no heartbeat): the reaper returns its
    jobs to the head of their queue, ahead of newer jobs, and they run."""
    dead = "worker-deadhost-1-abc"
    await app.redis.sadd(keys.WORKERS, dead)
    await app.redis.lpush(keys.processing_key(dead, "queue:bounce:process"), job("s1"), job("s2"))
    await app.redis.lpush("queue:bounce:process", job("newer"))
    order: list[str] = []

    async def ok(j: Job) -> None:
        order.append(j.id)

    worker = await make_worker({"bounce": ok}, worker_concurrency=1)
    assert await worker.reap_once() == 2 or order  # the reaper loop may have won the race
    await worker.run_until_empty(30)
    assert order[:2] == ["s1", "s2"] or order[1:3] == ["s1", "s2"]
    assert sorted(order) == ["newer", "s1", "s2"]
    assert not await app.redis.sismember(keys.WORKERS, dead)
    assert await app.redis.hget("job:s1", "stalls") == b"1"


async def test_a_live_worker_is_never_reaped(app: App, make_worker: Any) -> None:
    """The reaper leaves the jobs of a worker whose heartbeat is alive alone."""
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow(j: Job) -> None:
        started.set()
        await release.wait()

    await app.redis.lpush("queue:bounce:process", job("live1"))
    w1 = await make_worker({"bounce": slow})
    await asyncio.wait_for(started.wait(), 10)
    w2 = Worker(app, {}, rng=random.Random(3))
    assert await w2.reap_once() == 0
    assert await app.redis.llen(keys.processing_key(w1.worker_id, "queue:bounce:process")) == 1
    release.set()


async def test_graceful_stop_returns_unfinished_jobs(app: App, make_worker: Any) -> None:
    """On stop, a job that outlives the grace period is cancelled and put back at the head
    of its queue with its attempt count unchanged; a quick job finishes."""
    started = asyncio.Event()

    async def handler(j: Job) -> str:
        if j.id == "slow":
            started.set()
            await asyncio.sleep(60)
        return "done"

    await app.redis.lpush("queue:bounce:process", job("slow"))
    worker = await make_worker({"bounce": handler})
    await asyncio.wait_for(started.wait(), 10)
    loop = asyncio.get_running_loop()
    await worker.stop(loop.time() + 0.2)
    assert await app.redis.lrange("queue:bounce:process", 0, -1) == [job("slow")]
    h = await app.redis.hgetall("job:slow")
    assert h[b"status"] == b"queued"
    assert h[b"attempt_count"] == b"0"
    row = await app.db.fetchrow("SELECT status, attempt_count FROM jobs WHERE id='slow'")
    assert tuple(row) == ("queued", 0)
    ex = await app.db.fetchval("SELECT status FROM job_executions WHERE job_id='slow'")
    assert ex == "cancelled"
    assert not await app.redis.sismember(keys.WORKERS, worker.worker_id)


async def test_idle_pickup_is_fast_and_does_not_poll(app: App, make_worker: Any) -> None:
    """An idle worker, woken by keyspace notifications, picks a job up in milliseconds,
    and while idle issues no commands but its slow safety check."""
    picked: dict[str, float] = {}

    async def ok(j: Job) -> None:
        picked[j.id] = time.perf_counter()

    worker = await make_worker({"bounce": ok})
    assert worker._notifications
    await asyncio.sleep(0.3)
    before = await _commands_processed(app)
    await asyncio.sleep(2.0)
    idle_commands = await _commands_processed(app) - before
    latencies = []
    for i in range(20):
        t0 = time.perf_counter()
        await app.redis.lpush("queue:bounce:process", job(f"lat{i}"))
        await _wait_for(lambda i=i: _has(picked, f"lat{i}"), True, timeout_s=5)
        latencies.append(picked[f"lat{i}"] - t0)
    latencies.sort()
    assert latencies[len(latencies) // 2] < 0.02, latencies
    # A poll every 50 ms alone would be 40 commands in those two seconds.
    assert idle_commands < 15, idle_commands


async def test_handler_concurrency_limits(app: App, make_worker: Any) -> None:
    """A handler never runs more jobs at once than its declared concurrency."""
    running = 0
    peak = 0

    async def slowish(j: Job) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.02)
        running -= 1

    await app.redis.lpush("queue:import:contacts", *[job(f"i{i}") for i in range(12)])
    worker = await make_worker({"import": slowish})
    await worker.run_until_empty(30)
    assert peak == 2  # imports default to 2


async def test_a_saturated_family_does_not_wait_for_the_idle_poll(
    app: App, make_worker: Any
) -> None:
    """With one family's slots full and another family idle, a freed slot takes the next
    job at once (not at the next safety poll of worker_idle_poll_s)."""

    async def quick(j: Job) -> None:
        await asyncio.sleep(0.005)

    await app.redis.lpush("queue:email:processing", *[job(f"q{i}") for i in range(60)])
    worker = await make_worker(
        {"email-processing": quick, "bounce": quick}, concurrency={"email-processing": 2}
    )
    t0 = time.monotonic()
    await worker.run_until_empty(30)
    # 30 batches of 2 at one per idle poll (1 s) would take 30 s.
    assert time.monotonic() - t0 < 5


async def test_tracking_survives_an_unstorable_payload(app: App, make_worker: Any) -> None:
    """A payload PostgreSQL's jsonb refuses (a NUL escape) does not block tracking."""

    async def ok(j: Job) -> str:
        return "fine"

    bad = json.dumps({"id": "nul1", "payload": {"text": "a\u0000b"}}).encode()
    await app.redis.lpush("queue:bounce:process", bad, job("ok2"))
    worker = await make_worker({"bounce": ok})
    await worker.run_until_empty(30)
    rows = {
        r["id"]: r for r in await app.db.fetch("SELECT id, status, payload FROM jobs ORDER BY id")
    }
    assert rows["ok2"]["status"] == "completed"
    assert rows["nul1"]["status"] == "completed"
    assert "_unstorable" in rows["nul1"]["payload"]


# -- helpers -----------------------------------------------------------------------------------


async def _wait_delayed(app: App, timeout_s: float = 10) -> tuple[bytes, float]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        head = await app.redis.zrange(keys.DELAYED, 0, 0, withscores=True)
        if head:
            return bytes(head[0][0]), float(head[0][1])
        await asyncio.sleep(0.01)
    raise AssertionError("nothing scheduled")


async def _wait_for(probe: Callable[[], Awaitable[Any]], want: Any, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    got = None
    while time.monotonic() < deadline:
        got = await probe()
        if got == want:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"waited for {want!r}, last saw {got!r}")


async def _status(app: App, job_id: str) -> str | None:
    conn: asyncpg.Pool = app.db
    value = await conn.fetchval("SELECT status FROM jobs WHERE id=$1", job_id)
    return str(value) if value is not None else None


async def _has(d: dict[str, float], key: str) -> bool:
    return key in d


async def _commands_processed(app: App) -> int:
    info = await app.redis.info("stats")
    return int(info["total_commands_processed"])


async def test_a_job_past_its_family_timeout_is_a_failed_attempt(
    app: App, make_worker: Any
) -> None:
    """A handler that hangs is cancelled at its family's limit (job_timeouts): the attempt
    counts as failed (a retry is scheduled, the error names the limit), the slot is free
    again, and a job that finishes in time is untouched."""
    app.settings = app.settings.model_copy(update={"job_timeouts": "warmup=1"})
    cancelled = asyncio.Event()

    async def handler(j: Job) -> str:
        if j.id == "hangs":
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                cancelled.set()
                raise
        return "ok"

    await app.redis.lpush("queue:warmup:process", job("hangs"), job("quick"))
    worker = await make_worker({"warmup": handler}, worker_concurrency=1)
    await _wait_delayed(app)
    assert cancelled.is_set()
    tracked = await app.redis.hgetall("job:hangs")
    assert tracked[b"status"] == b"retry_scheduled"
    row = await app.db.fetchrow("SELECT status, last_error FROM jobs WHERE id = 'hangs'")
    assert row["status"] == "retry_scheduled"
    assert "warmup job ran past its 1 s limit" in row["last_error"]
    await _wait_for(lambda: app.db.fetchval("SELECT count(*) FROM jobs WHERE id='quick' AND "
                                            "status='completed'"), 1)  # fmt: skip
    metric = worker.metrics.jobs_timed_out.labels("queue:warmup:process")._value.get()
    assert metric == 1


async def test_keyspace_notifications_are_set_only_when_allowed(
    settings: Any, database_url: str, private_redis: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """On a Redis with notifications off, the worker does not CONFIG SET them unless
    redis_set_notifications allows it; it says once that it polls, and still runs jobs."""
    from gateway.app import Urls, open_app
    from gateway.services import Services

    ran: list[str] = []

    async def handler(j: Job, payload: Payload) -> None:
        ran.append(j.id)

    for allowed in (False, True):
        ran.clear()
        s = settings.model_copy(update={"redis_set_notifications": allowed})
        async with open_app(s, Urls(database_url, private_redis.url)) as app2:
            await app2.redis.config_set("notify-keyspace-events", "")
            worker = Worker(app2, {"warmup": HandlerSpec("warmup", handler, None, Payload)})
            await worker.start()
            try:
                await app2.redis.lpush("queue:warmup:process", job(f"n-{allowed}"))
                await worker.run_until_empty(10)
            finally:
                await worker.stop(asyncio.get_running_loop().time() + 5)
            flags = (await app2.redis.config_get("notify-keyspace-events"))[
                "notify-keyspace-events"
            ]
            assert ran == [f"n-{allowed}"]
            assert (set(flags) >= {"K", "l"}) is allowed, flags
            await Services(app2).aclose()
    said = [r for r in caplog.records if "idle workers poll every 50 ms" in r.getMessage()]
    assert len(said) == 1
