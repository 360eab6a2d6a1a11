"""Operator commands of the job runtime, run as the real `mailgate` CLI."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from gateway.app import App
from gateway.jobs import keys
from gateway.settings import Settings
from tests.daemon import cli_argv, cli_env


async def mailgate(
    settings: Settings, *args: str, without_handlers: tuple[str, ...] = ()
) -> tuple[int, str, str]:
    env = cli_env(settings, secret_key="c" * 40)
    proc = await asyncio.create_subprocess_exec(
        *cli_argv(*args, without_handlers=without_handlers),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


BOUNCE_PAYLOAD = {"message_id": "<m@x>", "bounce_type": "hard", "recipient_email": "a@b.test"}


async def test_enqueue_fills_id_and_defaults(app: App, settings: Settings) -> None:
    """`enqueue QUEUE JSON` pushes an envelope with an id, max_attempts 5, attempt_count 0."""
    body = json.dumps(BOUNCE_PAYLOAD)
    code, out, err = await mailgate(settings, "enqueue", "queue:bounce:process", body)
    assert code == 0, err
    job = json.loads(await app.redis.lindex("queue:bounce:process", 0))
    assert job["id"] == out.strip()
    assert job["payload"] == BOUNCE_PAYLOAD
    assert job["max_attempts"] == 5 and job["attempt_count"] == 0
    assert job["queue_name"] == "queue:bounce:process"


async def test_enqueue_an_envelope_from_a_file(app: App, settings: Settings, tmp_path: Any) -> None:
    """`enqueue QUEUE @file` keeps the given id and unknown envelope fields."""
    path = tmp_path / "job.json"
    path.write_text(json.dumps({"id": "given", "payload": BOUNCE_PAYLOAD, "trace": "t-1"}))
    code, out, err = await mailgate(settings, "enqueue", "queue:bounce:process", f"@{path}")
    assert code == 0 and out.strip() == "given", err
    job = json.loads(await app.redis.lindex("queue:bounce:process", 0))
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
        "queue_name": "queue:webhook:process",
    }
    malformed = {"raw": "{oops", "error": "malformed job", "queue_name": "queue:webhook:process"}
    await app.redis.lpush(keys.DEAD, json.dumps(letter), json.dumps(malformed))
    await app.redis.lpush("queue:email-sending", b"{}", b"{}")
    await app.redis.zadd(keys.DELAYED, {keys.delayed_member("queue:email-sending", b"{}"): 1})
    await app.redis.sadd(keys.WORKERS, "w1")
    await app.redis.lpush(keys.processing_key("w1", "queue:email-sending"), b"{}", b"{}", b"{}")
    # As on a host where the webhooks package is not installed: nothing consumes that queue.
    code, out, _ = await mailgate(settings, "queues", "--json", without_handlers=("webhook",))
    depths = json.loads(out)
    assert depths["queues"]["queue:email-sending"] == {
        "waiting": 2,
        "active": 3,
        "delayed": 1,
        "failed": 0,
        "consumed": True,
    }
    assert depths["queues"]["queue:webhook:process"]["consumed"] is False
    assert depths["queues"]["queue:webhook:process"]["failed"] == 2
    assert (depths["dead"], depths["delayed"], depths["processing"]) == (2, 1, 3)
    code, out, _ = await mailgate(settings, "queues", without_handlers=("webhook",))
    assert re.search(r"queue:webhook:process\s+0\s+0\s+0\s+2\s+\(no installed handler\)", out)
    code, out, _ = await mailgate(settings, "dlq", "retry", "dead1")
    assert code == 0 and "retried 1" in out
    revived = json.loads(await app.redis.lindex("queue:webhook:process", 0))
    assert revived["id"] == "dead1" and revived["attempt_count"] == 0
    assert "error" not in revived and "failed_at" not in revived
    code, out, _ = await mailgate(settings, "dlq", "retry", "--all")
    assert "skipped 1 malformed" in out
    assert await app.redis.llen(keys.DEAD) == 1
    await app.redis.lpush(keys.DEAD, json.dumps({**letter, "id": "dead2"}))
    code, out, _ = await mailgate(settings, "dlq", "delete", "dead2")
    assert code == 0 and "deleted 1" in out and await app.redis.llen(keys.DEAD) == 1
    code, out, _ = await mailgate(settings, "dlq", "delete", "dead2")
    assert code == 1 and "no dead letter" in out
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


async def test_workers_exits_1_when_none_is_alive(app: App, settings: Settings) -> None:
    """On an empty Redis `workers` says so and exits 1: usable as a health check."""
    code, out, _ = await mailgate(settings, "workers")
    assert code == 1 and out.strip() == "no live worker (start one with `mailgate run`)"
    code, out, _ = await mailgate(settings, "workers", "--json")
    assert code == 1 and json.loads(out) == []


async def test_empty_lists_say_so(app: App, settings: Settings) -> None:
    """An empty dead-letter queue and an empty job table are said in words."""
    code, out, _ = await mailgate(settings, "dlq", "list")
    assert code == 0 and out.strip() == "dead-letter queue is empty"
    code, out, _ = await mailgate(settings, "jobs", "list")
    assert code == 0 and out.strip() == "no jobs recorded yet"
    code, out, _ = await mailgate(settings, "jobs", "list", "--status", "failed")
    assert out.strip() == "no jobs with status failed"
