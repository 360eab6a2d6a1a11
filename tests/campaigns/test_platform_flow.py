"""The platform's jobs end to end through the real worker and the installed handlers (entry
points), real PostgreSQL and Redis, and an SMTP sink behind MAILGATE_DELIVERY_RELAY:
import → campaign.process twice (and killed halfway) → every valid contact gets one
message → the campaign ends ``sent`` → counters and analytics equal the deliveries →
export has the imported rows; paused/cancelled campaigns; the aggregate by hand."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from campaigns.analytics import aggregate_day
from campaigns.fanout import Fanout, state_key
from campaigns.schedule import Scheduler
from gateway.app import App
from gateway.jobs import DeferJob
from gateway.jobs.contracts import (
    ANALYTICS,
    CAMPAIGN,
    EMAIL_SENDING,
    EXPORT,
    IMPORT,
    MAINTENANCE,
    CampaignPayload,
    ExportPayload,
    ImportPayload,
    encode_job,
)
from gateway.jobs.handlers import build, discover
from gateway.jobs.keys import job_key
from gateway.jobs.worker import Worker
from gateway.services import Services
from tests.campaigns.conftest import TENANT, seed_campaign, write_csv
from tests.delivery.peer import ScriptedPeer


@pytest.fixture
async def worker(app: App, services: Services) -> AsyncIterator[Worker]:
    """A started worker running every installed handler (the daemon's set)."""
    app.settings = app.settings.model_copy(update={"campaign_complete_poll_s": 0.2})
    specs = build(app, services, discover())
    w = Worker(app, specs)
    await w.start()
    yield w
    await w.stop(asyncio.get_running_loop().time() + 5)


async def result_of(app: App, job_id: str) -> dict[str, object]:
    raw = await app.redis.hget(job_key(job_id), "result")
    assert raw is not None, f"job {job_id} has no result"
    parsed: dict[str, object] = json.loads(raw)
    return parsed


async def test_import_campaign_twice_exports_and_counts(
    app: App, worker: Worker, sink: ScriptedPeer, tmp_path: Path
) -> None:
    """Done-when, in one process: every valid, unsuppressed contact gets exactly one
    message though the campaign was processed twice; it ends `sent`; campaign_metrics.sent
    and today's analytics_daily equal the deliveries; the export has the imported rows."""
    path = tmp_path / "list.csv"
    valid, invalid, duplicates = write_csv(path, 1200)
    await app.redis.lpush(
        IMPORT,
        encode_job(
            IMPORT,
            ImportPayload(
                file_url=path.as_uri(),
                tenant_id=TENANT,
                mapping={"Email": "email", "Name": "name"},
                list_id="list_1",
                has_header=True,
            ),
            id="imp",
        ),
    )
    await worker.run_until_empty(30)
    imported = await result_of(app, "imp")
    assert imported["invalid"] == invalid and imported["duplicates"] == duplicates
    await seed_campaign(app)
    suppressed = sorted(valid)[:5]
    for address in suppressed:
        await app.db.execute(
            "INSERT INTO suppressions (tenant_id, email, reason) VALUES ($1, $2, 'manual')",
            TENANT,
            address,
        )
    for job_id in ("cp-1", "cp-2"):
        await app.redis.lpush(
            CAMPAIGN,
            encode_job(
                CAMPAIGN, CampaignPayload(campaign_id="camp_1", tenant_id=TENANT), id=job_id
            ),
        )
    await worker.run_until_empty(60)
    expected = valid - set(suppressed)
    recipients = [r for m in sink.messages for r in m.rcpt_tos]
    assert sorted(recipients) == sorted(expected)
    assert await app.db.fetchval("SELECT status FROM campaigns WHERE id = 'camp_1'") == "sent"
    first, second = await result_of(app, "cp-1"), await result_of(app, "cp-2")
    assert first["status"] == second["status"] == "sent"
    assert first["pushed"] == len(expected) and first["suppressed"] == 5
    metrics = await app.db.fetchrow(
        "SELECT sent, delivered FROM campaign_metrics WHERE campaign_id = 'camp_1'"
    )
    assert metrics["sent"] == metrics["delivered"] == len(expected)
    providers = await app.db.fetch(
        "SELECT provider, count(*) FROM email_deliveries GROUP BY provider"
    )
    assert [(r["provider"], r["count"]) for r in providers] == [("relay", len(expected))]
    today = dt.datetime.now(dt.UTC).date()
    # No aggregate queued here: the campaign's end queued yesterday's and today's.
    await app.redis.lpush(
        EXPORT,
        encode_job(
            EXPORT,
            ExportPayload(tenant_id=TENANT, kind="contacts", list_id="list_1", format="csv"),
            id="exp",
        ),
    )
    await worker.run_until_empty(30)
    sums = await app.db.fetchrow(
        "SELECT sum(sent) AS sent, sum(delivered) AS delivered FROM analytics_daily"
        " WHERE tenant_id = $1 AND day >= $2",
        TENANT,
        today - dt.timedelta(days=1),
    )
    assert sums["sent"] == sums["delivered"] == len(expected)
    exported = await result_of(app, "exp")
    out = Path(str(exported["path"]))
    assert out.parent == app.settings.data_dir / "exports" / TENANT
    data = await asyncio.to_thread(out.read_bytes)
    assert exported["bytes"] == len(data)
    assert exported["sha256"] == hashlib.sha256(data).hexdigest()
    rows = list(csv.DictReader(data.decode().splitlines()))
    assert exported["rows"] == len(rows) == len(valid)
    assert {r["email"] for r in rows} == valid
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]


async def test_fanout_killed_halfway_then_rerun_pushes_each_contact_once(app: App) -> None:
    """A fan-out cancelled between batches (a crash), then run again and again: one send
    job per contact, stable ids; the campaign is `sending` until the sends are final."""
    await seed_campaign(app)
    async with app.db.acquire() as conn:
        await conn.execute(
            "INSERT INTO contact_lists (id, tenant_id) VALUES ('list_1', $1)", TENANT
        )
        await conn.executemany(
            "INSERT INTO contacts (id, tenant_id, email) VALUES ($1, $2, $3)",
            [(f"c{i:05d}", TENANT, f"p{i}@example.net") for i in range(3000)],
        )
        await conn.execute(
            "INSERT INTO contact_list_members (tenant_id, list_id, contact_id)"
            " SELECT tenant_id, 'list_1', id FROM contacts"
        )

    class Crash(Exception):
        pass

    calls = 0
    real_execute = None

    fan = Fanout(app, "cp-a", CampaignPayload(campaign_id="camp_1", tenant_id=TENANT), batch=500)
    pipeline = app.redis.pipeline

    def crashing_pipeline(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        pipe = pipeline(*args, **kwargs)  # type: ignore[arg-type]
        nonlocal real_execute
        real_execute = pipe.execute

        async def execute() -> object:
            nonlocal calls
            calls += 1
            if calls == 3:  # the third batch's push never happens: the process died
                raise Crash
            return await real_execute()  # type: ignore[misc]

        pipe.execute = execute  # type: ignore[method-assign]
        return pipe

    app.redis.pipeline = crashing_pipeline  # type: ignore[method-assign]
    try:
        with pytest.raises(Crash):
            await fan.run()
    finally:
        app.redis.pipeline = pipeline  # type: ignore[method-assign]
    assert await app.redis.llen(EMAIL_SENDING) == 1000
    for job_id in ("cp-a", "cp-b"):
        with pytest.raises(DeferJob):
            await Fanout(app, job_id, CampaignPayload(campaign_id="camp_1", tenant_id=TENANT)).run()
    raw = await app.redis.lrange(EMAIL_SENDING, 0, -1)
    ids = [json.loads(r)["id"] for r in raw]
    assert len(ids) == len(set(ids)) == 3000
    assert set(ids) == {f"camp_1:c{i:05d}" for i in range(3000)}
    assert await app.db.fetchval("SELECT status FROM campaigns WHERE id = 'camp_1'") == "sending"
    state = await app.redis.hgetall(state_key(TENANT, "camp_1"))
    assert state[b"pushed"] == b"3000" and state[b"done"] == b"1"


async def test_paused_and_cancelled_campaigns_push_and_send_nothing(
    app: App, worker: Worker, sink: ScriptedPeer
) -> None:
    """A paused campaign pushes nothing; sends already queued wait while it is paused and
    are skipped (no delivery row) once it is cancelled."""
    await seed_campaign(app, status="paused")
    await app.db.execute("INSERT INTO contact_lists (id, tenant_id) VALUES ('list_1', $1)", TENANT)
    result = await Fanout(app, "cp", CampaignPayload(campaign_id="camp_1", tenant_id=TENANT)).run()
    assert result["status"] == "paused" and result["pushed"] == 0
    assert await app.redis.llen(EMAIL_SENDING) == 0
    send = {
        "tenant_id": TENANT,
        "campaign_id": "camp_1",
        "recipient": "queued@example.net",
    }
    await app.redis.lpush(
        EMAIL_SENDING, json.dumps({"id": "camp_1:queued", "payload": send}).encode()
    )
    for _ in range(200):
        if await app.redis.zcard("queue:delayed") == 1:
            break
        await asyncio.sleep(0.02)
    assert await app.redis.zcard("queue:delayed") == 1  # deferred while paused
    await app.db.execute("UPDATE campaigns SET status = 'cancelled' WHERE id = 'camp_1'")
    # Bring the deferred send back now instead of in five minutes.
    await app.redis.zadd(
        "queue:delayed", dict.fromkeys(await app.redis.zrange("queue:delayed", 0, -1), 0)
    )
    await worker.run_until_empty(30)
    assert (await result_of(app, "camp_1:queued"))["status"] == "cancelled"
    assert sink.messages == []
    assert await app.db.fetchval("SELECT count(*) FROM email_deliveries") == 0


async def test_aggregate_equals_a_hand_count_and_rerunning_changes_nothing(app: App) -> None:
    """A seeded day (sends, a failure, bounces, a complaint, a reply, an auto-reply, an
    unsubscribe, and facts on the days around it): the rows equal a hand count; a rerun,
    and a rerun after a stale row was planted, give the same rows."""
    day = dt.date(2026, 11, 3)
    at = dt.datetime(2026, 11, 3, 12, tzinfo=dt.UTC)
    before, after = at - dt.timedelta(days=1), at + dt.timedelta(days=1)
    async with app.db.acquire() as conn:
        rows = [
            ("d1", "camp_1", "acct_1", "sent", at),
            ("d2", "camp_1", "acct_1", "sent", at),
            ("d3", "camp_1", "acct_2", "bounced", at),
            ("d4", "camp_2", "acct_1", "sent", before),
            ("d5", "camp_2", "acct_1", "sent", after),
        ]
        for did, camp, acct, status, sent_at in rows:
            await conn.execute(
                "INSERT INTO email_deliveries (id, tenant_id, campaign_id, recipient_email,"
                " email_account_id, idempotency_key, status, sent_at, created_at)"
                " VALUES ($1, $2, $3, $1 || '@x.test', $4, $1, $5, $6, $6)",
                did,
                TENANT,
                camp,
                acct,
                status,
                sent_at,
            )
        await conn.execute(
            "INSERT INTO email_deliveries (id, tenant_id, campaign_id, recipient_email,"
            " email_account_id, idempotency_key, status, created_at)"
            " VALUES ('d6', $1, 'camp_1', 'f@x.test', 'acct_1', 'd6', 'failed', $2)",
            TENANT,
            at,
        )
        for key, outcome, did in (
            ("r1", "bounced_hard", "d3"),
            ("r2", "bounced_soft", "d1"),
            ("r3", "complaint", "d2"),
            ("r4", "delayed", "d2"),
        ):
            await conn.execute(
                "INSERT INTO bounce_reports (tenant_id, report_key, source, delivery_id,"
                " kind, outcome, attribution, created_at) VALUES ($1, $2, 'smtp', $3, 'dsn',"
                " $4, 'verp', $5)",
                TENANT,
                key,
                did,
                outcome,
                at,
            )
        for key, kind in (("m1", "reply"), ("m2", "auto_reply"), ("m3", "email")):
            await conn.execute(
                "INSERT INTO email_content (storage_key, tenant_id) VALUES ($1, $2)", key, TENANT
            )
            await conn.execute(
                "INSERT INTO email_messages (storage_key, tenant_id, email_account_id,"
                " direction, message_type, delivery_id, dedupe_key, created_at)"
                " VALUES ($1, $2, 'acct_1', 'inbound', $3, 'd1', $1, $4)",
                key,
                TENANT,
                kind,
                at,
            )
        await conn.execute(
            "INSERT INTO suppressions (tenant_id, email, reason, created_at)"
            " VALUES ($1, 'u@x.test', 'unsubscribe', $2)",
            TENANT,
            at,
        )

    async def snapshot() -> list[tuple[object, ...]]:
        got = await app.db.fetch(
            "SELECT campaign_id, email_account_id, sent, delivered, failed, bounced_hard,"
            " bounced_soft, complaints, replies, auto_replies, unsubscribes"
            " FROM analytics_daily WHERE day = $1 ORDER BY 1, 2",
            day,
        )
        return [tuple(r) for r in got]

    hand = [
        ("", "", 0, 0, 0, 0, 0, 0, 0, 0, 1),
        ("camp_1", "acct_1", 2, 2, 1, 0, 1, 1, 1, 1, 0),
        ("camp_1", "acct_2", 1, 1, 0, 1, 0, 0, 0, 0, 0),
    ]
    await aggregate_day(app, day, None)
    assert await snapshot() == hand
    await app.db.execute(
        "INSERT INTO analytics_daily (tenant_id, day, campaign_id, sent) VALUES ($1, $2, 'x', 9)",
        TENANT,
        day,
    )
    await aggregate_day(app, day, TENANT)
    assert await snapshot() == hand


async def test_scheduler_enqueues_once_across_instances(app: App) -> None:
    """Two instances ticking in the same hour: yesterday's and today's aggregate and the
    day's cleanup are enqueued once; the next hour enqueues the aggregates again."""
    now = dt.datetime(2026, 12, 6, 10, 30, tzinfo=dt.UTC)
    a, b = Scheduler(app, clock=lambda: now), Scheduler(app, clock=lambda: now)
    first, second = await a.tick(), await b.tick()
    assert sorted(first) == [
        "analytics:2026-12-05:2026-12-06T10",
        "analytics:2026-12-06:2026-12-06T10",
        "cleanup:2026-12-06",
    ]
    assert second == []
    assert await app.redis.llen(ANALYTICS) == 2 and await app.redis.llen(MAINTENANCE) == 1
    later = Scheduler(app, clock=lambda: now + dt.timedelta(hours=1))
    assert len(await later.tick()) == 2
