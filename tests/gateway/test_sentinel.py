"""Redis Sentinel: mailgate configured through three sentinels keeps running its jobs when
the primary is killed, each job exactly once; and the URL forms the settings accept."""

from __future__ import annotations

import asyncio
import collections
import json
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.app import Urls, make_redis, open_app, wait_replicas
from gateway.jobs import keys
from gateway.jobs.contracts import Payload
from gateway.jobs.envelope import Job
from gateway.jobs.handlers import HandlerSpec
from gateway.jobs.worker import Worker
from gateway.redisurl import parse_sentinel_url
from gateway.settings import SettingsError, load_settings
from tests.peers.sentinel import SentinelSet

QUEUE = "queue:email:processing"
JOBS = 2000


@pytest.fixture
async def sentinels() -> AsyncIterator[SentinelSet]:
    """A primary, a replica and three sentinels on loopback (Debian's redis-server)."""
    root = Path(tempfile.mkdtemp(prefix="mailgate-sentinel-"))
    try:
        group = SentinelSet(root)
    except FileNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        await asyncio.to_thread(group.start)
        yield group
    finally:
        await asyncio.to_thread(group.stop)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.timeout(180)
async def test_primary_killed_halfway_every_job_completes_exactly_once(
    sentinels: SentinelSet, database_url: str, tmp_path: Path
) -> None:
    """2,000 jobs acknowledged by the replica; the primary is SIGKILLed when about half have
    run; the sentinels promote the replica and the worker, reconnecting through them,
    completes every job exactly once (handler runs, PostgreSQL rows, executions), leaving
    nothing queued, held or dead on the new primary."""
    settings = load_settings(
        database_url=database_url,
        redis_url=sentinels.url,
        data_dir=tmp_path / "data",
        secret_key="s" * 40,
        stalled_timeout_s=30,
        worker_concurrency=20,
        log_format="text",
    )
    assert wait_replicas(settings) == 1
    runs: collections.Counter[str] = collections.Counter()

    async def handler(job: Job, payload: Any) -> dict[str, Any]:
        runs[job.id] += 1
        await asyncio.sleep(0.003)
        return {"n": job.payload["n"]}

    async with open_app(settings, Urls(database_url, sentinels.url)) as app:
        ids = [f"s-{n}" for n in range(JOBS)]
        raws = [json.dumps({"id": i, "payload": {"n": n}}) for n, i in enumerate(ids)]
        async with app.redis.pipeline(transaction=False) as pipe:
            pipe.lpush(QUEUE, *raws)
            pipe.execute_command("WAIT", 1, 5000)
            pushed, acked = await pipe.execute()
        assert (pushed, acked) == (JOBS, 1), "the replica must hold every job before the kill"

        worker = Worker(
            app, {"email-processing": HandlerSpec("email-processing", handler, 20, Payload)}
        )
        await worker.start()
        try:
            deadline = time.monotonic() + 60
            while sum(runs.values()) < JOBS // 2:
                assert time.monotonic() < deadline, f"only {len(runs)} jobs ran"
                await asyncio.sleep(0.01)
            before_kill = len(runs)
            await asyncio.to_thread(sentinels.kill_primary)
            failover_s = await asyncio.to_thread(sentinels.wait_failover)
            deadline = time.monotonic() + 90
            while True:
                completed = await app.db.fetchval(
                    "SELECT count(*) FROM jobs WHERE status = 'completed'"
                )
                if completed >= JOBS and len(runs) >= JOBS:
                    break
                assert time.monotonic() < deadline, f"{completed} completed, {len(runs)} ran"
                await asyncio.sleep(0.05)
            await worker.run_until_empty(30)
        finally:
            await worker.stop(asyncio.get_running_loop().time() + 10)

        print(f"failover {failover_s:.1f} s; {before_kill} jobs had run before the kill")
        assert before_kill < JOBS, "the kill came after the run"
        assert failover_s < 30
        assert set(runs) == set(ids)
        assert [i for i, n in runs.items() if n != 1] == []
        executions = await app.db.fetch(
            "SELECT job_id, count(*) AS n FROM job_executions WHERE status = 'success' "
            "GROUP BY job_id"
        )
        assert len(executions) == JOBS and {r["n"] for r in executions} == {1}
        # The worker's client now talks to the promoted replica.
        info = await app.redis.info("server")
        assert int(info["tcp_port"]) == sentinels.replica_port
        assert await app.redis.llen(QUEUE) == 0
        assert await app.redis.llen(keys.DEAD) == 0
        held = [k async for k in app.redis.scan_iter(match="mailgate:processing:*")]
        assert [await app.redis.llen(k) for k in held] == [0] * len(held)


def test_sentinel_urls_are_parsed_and_checked() -> None:
    """redis+sentinel:// names sentinels, service and db; a malformed one is refused with
    the setting named; the PostgreSQL URL takes several hosts."""
    parsed = parse_sentinel_url("redis+sentinel://:pw@10.0.0.1:26379,[::1]:26380,h3/mymaster/2")
    assert parsed.sentinels == (("10.0.0.1", 26379), ("::1", 26380), ("h3", 26379))
    assert (parsed.service, parsed.db, parsed.password) == ("mymaster", 2, "pw")
    assert "pw" not in parsed.where
    ok = load_settings(redis_url="redis+sentinel://a:1,b:2/svc")
    assert ok.redis_url is not None
    for bad, words in (
        ("redis+sentinel://a:1,b:2", "no service"),
        ("redis+sentinel:///svc/0", "no sentinel"),
        ("redis+sentinel://a:x/svc", "port"),
        ("redis+sentinel://a:1/svc/db", "/service_name/db"),
        ("redis+sentinel://a:1/svc?timeout=3", "unknown option"),
    ):
        with pytest.raises(SettingsError, match="redis_url") as err:
            load_settings(redis_url=bad)
        assert words in str(err.value), (bad, str(err.value))
    multi = "postgresql://u:p@h1:5432,h2:5433/db?target_session_attrs=read-write"
    assert load_settings(database_url=multi).database_url is not None
    with pytest.raises(SettingsError, match="database_url"):
        load_settings(database_url="postgresql://u:p@h1:5432,h2:x/db")
    assert load_settings(redis_url="redis://h:1/0", redis_wait_replicas=None).redis_url
    assert wait_replicas(load_settings(redis_url="redis://h:1/0")) == 0


async def test_sentinel_client_reaches_the_primary(sentinels: SentinelSet) -> None:
    """make_redis on a sentinel URL writes to the primary the sentinels name."""
    settings = load_settings(redis_url=sentinels.url)
    client = make_redis(sentinels.url, settings)
    try:
        await client.set("k", "v")
        assert int((await client.info("server"))["tcp_port"]) == sentinels.primary_port
    finally:
        await client.aclose()


async def test_postgres_url_with_several_hosts_reaches_the_one_that_answers(
    database_url: str,
) -> None:
    """A DSN naming a dead host first and the real server second, with
    target_session_attrs=read-write, is accepted by the settings and mailgate's pool reaches
    the real (writable) server through it."""
    from urllib.parse import urlsplit

    from gateway.embedded import free_port
    from gateway.storage import create_pool

    parts = urlsplit(database_url)
    creds, _, real = parts.netloc.rpartition("@")
    multi = (
        f"postgresql://{creds}@127.0.0.1:{free_port()},{real}{parts.path}"
        "?target_session_attrs=read-write"
    )
    settings = load_settings(database_url=multi)
    assert settings.database_url is not None
    pool = await create_pool(settings.database_url.get_secret_value(), min_size=1, max_size=1)
    try:
        assert await pool.fetchval("SELECT pg_is_in_recovery()") is False
        assert await pool.fetchval("SELECT inet_server_port()") == parts.port
    finally:
        await pool.close()
