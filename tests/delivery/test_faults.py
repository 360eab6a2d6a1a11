"""Delivery under faults, against real peers: `mailgate run` SIGKILLed mid-batch and
restarted (nothing lost, nothing `sent` sent twice, duplicates bounded by the sends in
flight at the kill), and Redis restarted mid-run (every message delivered, none twice)."""

from __future__ import annotations

import asyncio
import collections
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from delivery.jobs import create_handler
from gateway.app import App, Urls, open_app
from gateway.embedded import EmbeddedRedis, free_port
from gateway.jobs.component import WorkerComponent
from gateway.jobs.envelope import new_job
from gateway.services import Services
from gateway.settings import Settings
from tests.daemon import mailgate_env, poll, spawn_mailgate, stop_mailgate
from tests.delivery.conftest import TENANT, seed
from tests.delivery.peer import ScriptedPeer

CONCURRENCY = 20
NO_LIMITS = {
    "delivery_account_per_minute": 0,
    "delivery_account_per_hour": 0,
    "delivery_account_per_day": 0,
    "delivery_domain_per_minute": 0,
    "delivery_domain_concurrency": 0,
    "delivery_tenant_per_minute": 0,
}


@pytest.fixture
async def peer() -> AsyncIterator[ScriptedPeer]:
    """One peer (with PIPELINING) for the fault tests: the both-ways runs of the send
    tests cover the client; these cover crashes and restarts, which are slow."""
    p = await ScriptedPeer().start()
    yield p
    await p.stop()


def _jobs(start: int, stop: int) -> list[str]:
    return [
        json.dumps(
            new_job(
                {
                    "tenant_id": TENANT,
                    "campaign_id": "camp_1",
                    "recipient": f"r{i}@d{i % 7}.example.org",
                    "variables": {"first_name": f"N{i}", "company": "C"},
                },
                id=f"send-{i}",
            )
        )
        for i in range(start, stop)
    ]


def _arrivals(peer: ScriptedPeer) -> collections.Counter[str]:
    return collections.Counter(m.rcpt_tos[0].lower() for m in peer.messages)


def _run_env(settings: Settings) -> dict[str, str]:
    assert settings.secret_key is not None
    return mailgate_env(
        settings,
        free_port(),
        components="worker,delivery",
        stalled_timeout_s="2",
        secret_key=settings.secret_key.get_secret_value(),  # seals the DKIM keys
        bounce_domains="bounces.test",
        delivery_concurrency=str(CONCURRENCY),
        # The restarted run takes over the rows left `sending` after this lease.
        delivery_claim_lease_s="1",
        **{k: str(v) for k, v in NO_LIMITS.items()},
    )


async def _status_counts(app: App) -> dict[str, int]:
    rows = await app.db.fetch(
        "SELECT status, count(*) AS n FROM email_deliveries WHERE tenant_id = $1 GROUP BY status",
        TENANT,
    )
    return {r["status"]: int(r["n"]) for r in rows}


async def test_sigkill_mid_batch_then_restart(
    app: App, settings: Settings, peer: ScriptedPeer, tmp_path: Path
) -> None:
    """1,200 sends; `mailgate run` is SIGKILLed partway and restarted: every recipient gets
    the message, every row ends `sent`, a row `sent` at the kill was never sent again, and
    the duplicates are at most the rows left `sending` (in flight) at the kill."""
    total = 1200
    await seed(app, peer.port)
    await app.redis.lpush("queue:email-sending", *_jobs(0, total))
    env = _run_env(settings)
    log = tmp_path / "run.log"
    proc = spawn_mailgate(env, log)
    try:
        await poll(lambda: _status_counts(app), lambda c: c.get("sent", 0) >= 250, 90)
        proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(proc.wait, 10)
        at_kill = await _status_counts(app)
        sent_at_kill = {
            r["recipient_email"].lower()
            for r in await app.db.fetch(
                "SELECT recipient_email FROM email_deliveries"
                " WHERE tenant_id = $1 AND status = 'sent'",
                TENANT,
            )
        }
        arrived_at_kill = _arrivals(peer)
        assert at_kill.get("sent", 0) < total, "the kill came too late to test anything"
        in_flight = at_kill.get("sending", 0)
        assert in_flight <= CONCURRENCY
        proc = spawn_mailgate(env, log)
        await poll(lambda: _status_counts(app), lambda c: c.get("sent", 0) >= total, 100)
    finally:
        assert await stop_mailgate(proc, log) == 0, log.read_text()[-3000:]
    assert await _status_counts(app) == {"sent": total}
    arrivals = _arrivals(peer)
    assert set(arrivals) == {f"r{i}@d{i % 7}.example.org" for i in range(total)}  # none lost
    for recipient in sent_at_kill:  # nothing `sent` was sent again after the restart
        assert arrivals[recipient] == arrived_at_kill[recipient] == 1, recipient
    duplicates = sum(n - 1 for n in arrivals.values())
    assert duplicates <= in_flight, (duplicates, in_flight)
    completed = await app.db.fetchval(
        "SELECT count(*) FROM jobs WHERE status = 'completed' AND id LIKE 'send-%'"
    )
    assert completed == total


async def test_redis_restarted_mid_run(
    settings: Settings, database_url: str, private_redis: EmbeddedRedis, peer: ScriptedPeer
) -> None:
    """Redis stops and comes back (same data) while sends run: the worker reconnects,
    every recipient gets exactly one message and every row ends `sent`."""
    s = settings.model_copy(
        update={"stalled_timeout_s": 3.0, "delivery_concurrency": CONCURRENCY, **NO_LIMITS}
    )
    async with open_app(s, Urls(database_url, private_redis.url)) as app:
        await seed(app, peer.port)
        await app.redis.lpush("queue:email-sending", *_jobs(0, 300))
        services = Services(app)
        component = WorkerComponent(app, services, {"email-sending": create_handler})
        await component.start()
        try:
            await poll(lambda: _status_counts(app), lambda c: c.get("sent", 0) >= 60, 30)
            await asyncio.to_thread(private_redis.stop, force=True)
            await asyncio.sleep(0.5)  # sends need Redis only to be taken: let some fail
            await asyncio.to_thread(private_redis.start)
            client = aioredis.Redis.from_url(private_redis.url)
            await client.lpush("queue:email-sending", *_jobs(300, 400))
            await client.aclose()
            await poll(lambda: _status_counts(app), lambda c: c.get("sent", 0) >= 400, 60)
        finally:
            await component.stop(asyncio.get_running_loop().time() + 5)
            await services.aclose()
        assert await _status_counts(app) == {"sent": 400}
    arrivals = _arrivals(peer)
    assert set(arrivals) == {f"r{i}@d{i % 7}.example.org" for i in range(400)}
    assert max(arrivals.values()) == 1
