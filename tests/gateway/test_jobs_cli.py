"""Operator commands of the job runtime, run as the real `mailgate` CLI."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from gateway.app import App
from gateway.jobs import keys
from gateway.settings import Settings
from tests.daemon import cli_env


async def mailgate(settings: Settings, *args: str) -> tuple[int, str, str]:
    env = cli_env(settings, secret_key="c" * 40)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.cli",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_enqueue_fills_id_and_defaults(app: App, settings: Settings) -> None:
    """`enqueue QUEUE JSON` pushes an envelope with an id, max_attempts 5, attempt_count 0."""
    code, out, _ = await mailgate(settings, "enqueue", "queue:bounce:process", '{"x": 1}')
    assert code == 0
    job = json.loads(await app.redis.lindex("queue:bounce:process", 0))
    assert job["id"] == out.strip()
    assert job["payload"] == {"x": 1}
    assert job["max_attempts"] == 5 and job["attempt_count"] == 0
    assert job["queue_name"] == "queue:bounce:process"
    code, _, _ = await mailgate(settings, "enqueue", "queue:nosuch", "{}")
    assert code == 2


async def test_enqueue_an_envelope_from_a_file(app: App, settings: Settings, tmp_path: Any) -> None:
    """`enqueue QUEUE @file` keeps the given id and unknown fields."""
    path = tmp_path / "job.json"
    path.write_text(json.dumps({"id": "given", "payload": {"a": 1}, "trace": "t-1"}))
    code, out, _ = await mailgate(settings, "enqueue", "queue:webhook:process", f"@{path}")
    assert code == 0 and out.strip() == "given"
    job = json.loads(await app.redis.lindex("queue:webhook:process", 0))
    assert job["trace"] == "t-1" and job["max_attempts"] == 5


async def test_queues_and_dlq_retry_and_purge(app: App, settings: Settings) -> None:
    """`queues --json` reports depths; `dlq retry ID` moves a letter back to its queue
    with attempt_count 0; malformed letters are skipped; `dlq purge --yes` empties it."""
    letter = {
        "id": "dead1",
        "payload": {"k": 1},
        "attempt_count": 5,
        "error": "boom",
        "failed_at": "2026-01-01T00:00:00Z",
        "queue_name": "queue:warmup:process",
    }
    malformed = {"raw": "{oops", "error": "malformed job", "queue_name": "queue:warmup:process"}
    await app.redis.lpush(keys.DEAD, json.dumps(letter), json.dumps(malformed))
    await app.redis.lpush("queue:email-sending", b"{}", b"{}")
    code, out, _ = await mailgate(settings, "queues", "--json")
    depths = json.loads(out)
    assert depths["queue:email-sending"] == 2 and depths[keys.DEAD] == 2
    code, out, _ = await mailgate(settings, "dlq", "retry", "dead1")
    assert code == 0 and "retried 1" in out
    revived = json.loads(await app.redis.lindex("queue:warmup:process", 0))
    assert revived["id"] == "dead1" and revived["attempt_count"] == 0
    assert "error" not in revived and "failed_at" not in revived
    code, out, _ = await mailgate(settings, "dlq", "retry", "--all")
    assert "skipped 1 malformed" in out
    assert await app.redis.llen(keys.DEAD) == 1
    code, _, _ = await mailgate(settings, "dlq", "purge")
    assert code == 2 and await app.redis.llen(keys.DEAD) == 1
    code, out, _ = await mailgate(settings, "dlq", "purge", "--yes")
    assert code == 0 and await app.redis.llen(keys.DEAD) == 0


async def test_jobs_show_and_list(app: App, settings: Settings) -> None:
    """`jobs show ID` prints Redis and PostgreSQL tracking; `jobs list --status` filters."""
    await app.db.execute(
        "INSERT INTO jobs (id, queue_name, status, payload) VALUES "
        "('j-done', 'queue:bounce:process', 'completed', '{}'),"
        "('j-fail', 'queue:bounce:process', 'failed', '{}')"
    )
    await app.redis.hset("job:j-done", mapping={"status": "completed", "worker_id": "w1"})
    code, out, _ = await mailgate(settings, "jobs", "show", "j-done")
    shown = json.loads(out)
    assert code == 0 and shown["redis"]["status"] == "completed"
    assert shown["postgres"]["status"] == "completed"
    code, out, _ = await mailgate(settings, "jobs", "list", "--status", "failed")
    assert "j-fail" in out and "j-done" not in out
    code, _, _ = await mailgate(settings, "jobs", "show", "nope")
    assert code == 1


async def test_workers_lists_live_workers(app: App, settings: Settings) -> None:
    """`workers --json` shows registered workers whose heartbeat is alive, with health."""
    await app.redis.sadd(keys.WORKERS, "w-live", "w-dead")
    await app.redis.hset(
        keys.worker_key("w-live"),
        mapping={"worker_id": "w-live", "status": "healthy", "jobs_processed": 3},
    )
    code, out, _ = await mailgate(settings, "workers", "--json")
    assert code == 0
    live = json.loads(out)
    assert [w["worker_id"] for w in live] == ["w-live"]
    assert live[0]["jobs_processed"] == "3"
