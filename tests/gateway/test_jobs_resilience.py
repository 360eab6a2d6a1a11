"""The job runtime under faults: `mailgate run` killed with SIGKILL mid-batch and restarted,
Redis restarted mid-run, PostgreSQL unreachable for a while. Nothing is lost or doubled."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from gateway.app import App, Urls, open_app
from gateway.embedded import EmbeddedRedis, free_port
from gateway.jobs import keys
from gateway.jobs.component import WorkerComponent
from gateway.services import Services
from gateway.settings import Settings
from ingest.jobs import create_handler
from tests.daemon import mailgate_env, poll, spawn_mailgate, stop_mailgate
from tests.gateway.seedjobs import email_payload, envelope

QUEUES = ("queue:email:processing:high", "queue:email:processing", "queue:email:processing:low")


async def test_sigkill_mid_batch_then_restart(app: App, settings: Settings, tmp_path: Path) -> None:
    """3,000 seed jobs over :high, normal and :low plus 3 malformed ones; `mailgate run` is
    SIGKILLed partway and restarted: every job completed once, 3,000 distinct messages with
    their attachments, the malformed ones on queue:dead, job hashes say completed."""
    ids: list[str] = []
    for q_index, queue in enumerate(QUEUES):
        batch = []
        for n in range(1000):
            seq = q_index * 1000 + n
            raw = envelope(email_payload(seq, attachment=seq % 10 == 0), id=f"job-{seq}")
            ids.append(f"job-{seq}")
            batch.append(raw)
        await app.redis.lpush(queue, *batch)
    await app.redis.lpush("queue:email:processing", b"{broken", b'{"id": "nopayload"}', b"[]")
    env = mailgate_env(settings, free_port(), components="worker", stalled_timeout_s="2")
    log = tmp_path / "run.log"
    proc = spawn_mailgate(env, log)
    try:
        done = await poll(
            lambda: app.db.fetchval("SELECT count(*) FROM jobs WHERE status='completed'"),
            lambda n: n >= 600,
            90,
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert done < 3000, "the kill came too late to test anything"
        proc = spawn_mailgate(env, log)
        await poll(
            lambda: app.db.fetchval("SELECT count(*) FROM jobs WHERE status='completed'"),
            lambda n: n >= 3000,
            120,
        )
    finally:
        assert await stop_mailgate(proc, log) == 0, log.read_text()[-3000:]
    rows = await app.db.fetch("SELECT id, status FROM jobs")
    assert sorted(r["id"] for r in rows if r["status"] == "completed") == sorted(ids)
    assert await app.db.fetchval("SELECT count(*) FROM email_messages") == 3000
    assert await app.db.fetchval("SELECT count(DISTINCT dedupe_key) FROM email_messages") == 3000
    assert await app.db.fetchval("SELECT count(*) FROM attachments") == 300
    dead = [json.loads(x) for x in await app.redis.lrange(keys.DEAD, 0, -1)]
    assert len(dead) == 3
    assert all(d["error"].startswith("malformed job") for d in dead)
    for job_id in ("job-0", "job-1500", "job-2999"):
        assert await app.redis.hget(f"job:{job_id}", "status") == b"completed"
    remaining = sum(
        [await app.redis.llen(k) for k in await app.redis.keys("mailgate:processing:*")]
    )
    assert remaining == 0


async def test_redis_restarted_mid_run(
    settings: Settings, database_url: str, private_redis: EmbeddedRedis
) -> None:
    """Redis stops and comes back (same data, append-only file): the worker reconnects,
    re-subscribes and finishes every job, none twice (jobs a TAKE moved just before Redis
    went away, its reply lost, are adopted by the worker)."""
    s = settings.model_copy(update={"stalled_timeout_s": 3.0})
    async with open_app(s, Urls(database_url, private_redis.url)) as app:
        await app.redis.lpush(
            "queue:email:processing", *[envelope(email_payload(i), id=f"r{i}") for i in range(200)]
        )
        component = WorkerComponent(app, Services(app), {"email-processing": create_handler})
        await component.start()
        try:
            await poll(
                lambda: app.db.fetchval("SELECT count(*) FROM jobs WHERE status='completed'"),
                lambda n: n >= 50,
                30,
            )
            await asyncio.to_thread(private_redis.stop, force=True)
            await asyncio.sleep(0.5)
            await asyncio.to_thread(private_redis.start)
            client = aioredis.Redis.from_url(private_redis.url)
            await client.lpush(
                "queue:email:processing",
                *[envelope(email_payload(i), id=f"r{i}") for i in range(200, 300)],
            )
            await client.aclose()
            await poll(
                lambda: app.db.fetchval("SELECT count(*) FROM jobs WHERE status='completed'"),
                lambda n: n >= 300,
                60,
            )
            assert await app.db.fetchval("SELECT count(*) FROM email_messages") == 300
        finally:
            await component.stop(asyncio.get_running_loop().time() + 5)


async def test_postgres_unreachable_for_a_while(
    settings: Settings, database_url: str, redis_url: str, tcp_proxy: Any
) -> None:
    """PostgreSQL becomes unreachable (connections cut, new ones refused) while jobs run:
    attempts fail and are retried, tracking waits, and once it is back every message is
    stored exactly once and every job completes."""
    host_port = database_url.split("@", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    proxy = await tcp_proxy(host, int(port))
    proxied = database_url.replace(host_port, f"127.0.0.1:{proxy.port}")
    async with open_app(settings, Urls(proxied, redis_url)) as app:
        component = WorkerComponent(app, Services(app), {"email-processing": create_handler})
        await component.start()
        await app.redis.lpush(
            "queue:email:processing",
            *[envelope(email_payload(i), id=f"p{i}", max_attempts=10) for i in range(100)],
        )
        proxy.pause()
        proxy.cut()
        await app.redis.lpush(
            "queue:email:processing",
            *[envelope(email_payload(i), id=f"p{i}", max_attempts=10) for i in range(100, 200)],
        )
        await asyncio.sleep(2.0)
        proxy.resume()
        direct = await asyncpg.connect(database_url)
        try:
            await poll(
                lambda: direct.fetchval("SELECT count(*) FROM jobs WHERE status='completed'"),
                lambda n: n >= 200,
                90,
            )
            assert await direct.fetchval("SELECT count(*) FROM email_messages") == 200
            assert await direct.fetchval("SELECT count(*) FROM jobs WHERE status='failed'") == 0
        finally:
            await direct.close()
        await component.stop(asyncio.get_running_loop().time() + 5)
