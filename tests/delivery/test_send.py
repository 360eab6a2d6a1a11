"""The email-sending handler end to end against a scriptable aiosmtpd peer, real
PostgreSQL and Redis: rendering, DKIM, VERP, suppression, replies by class, idempotency."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
from typing import Any

import dkim
import pytest

from delivery.jobs import create_handler
from delivery.service import SendDeferred
from gateway.jobs import DeferJob, PermanentJobError
from gateway.jobs.envelope import Job
from gateway.verp import Verp
from tests.delivery.conftest import DOMAIN, TENANT, World


async def run(world: World, job: Job) -> dict[str, Any]:
    handler = create_handler(world.app, world.services)
    result: dict[str, Any] = await handler.run(job, handler.parse(job.payload))
    return result


async def delivery_row(world: World, job: Job) -> dict[str, Any]:
    row = await world.app.db.fetchrow(
        "SELECT * FROM email_deliveries WHERE tenant_id = $1 AND idempotency_key = $2",
        TENANT,
        job.idempotency_key or job.id,
    )
    assert row is not None
    return dict(row)


async def test_sent_message_is_signed_personalised_and_recorded(world: World) -> None:
    """A 250 records `sent`; the message verifies with both DKIM keys and carries VERP,
    Message-ID on the sending domain and RFC 8058 unsubscribe headers."""
    job = world.job(world.payload("ada@example.net"))
    result = await run(world, job)
    assert result["status"] == "sent" and result["smtp_code"] == 250
    [got] = world.peer.messages
    assert got.rcpt_tos == ["ada@example.net"]
    d = dkim.DKIM(got.content)
    assert d.verify(idx=0, dnsfunc=world.dns) and d.verify(idx=1, dnsfunc=world.dns)
    msg = email.message_from_bytes(got.content, policy=email.policy.default)
    assert msg["Subject"] == "Hello Ada"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "<mailto:unsubscribe@sender.test?subject=unsubscribe%20" in msg["List-Unsubscribe"]
    assert "<https://sender.test/unsubscribe/" in msg["List-Unsubscribe"]
    assert msg["Message-ID"].endswith(f"@{DOMAIN}>")
    html = msg.get_body(("html",)).get_content()
    assert "Hi Ada at Analytical" in html
    assert "Hi Ada at Analytical" in msg.get_body(("plain",)).get_content()
    row = await delivery_row(world, job)
    assert row["status"] == "sent" and row["message_id"] == msg["Message-ID"]
    assert row["sent_at"] is not None and row["provider_response"].startswith("250")
    assert Verp(world.app.secret_key).verify(got.mail_from).delivery_id == row["id"]
    assert got.mail_from.endswith("@bounces.test")


async def test_job_run_again_sends_nothing_twice(world: World) -> None:
    """A job run a second time (a redelivery) finds its delivery `sent` and sends nothing."""
    job = world.job(world.payload("ada@example.net"))
    await run(world, job)
    again = await run(world, job)
    assert again["status"] == "sent" and len(world.peer.messages) == 1


async def test_delivery_claimed_by_another_live_run_is_deferred(world: World) -> None:
    """A job handed out again while its first run may still be sending (its worker was
    reaped alive) finds the row `sending` inside the claim lease: it is deferred, nothing
    is sent; once the lease lapsed the re-run sends it, once."""
    from delivery.store import NewDelivery

    job = world.job(world.payload("ada@example.net"))
    first = NewDelivery(
        tenant_id=TENANT,
        idempotency_key=job.idempotency_key or job.id,
        campaign_id="camp_1",
        recipient_id=None,
        recipient_email="ada@example.net",
        email_account_id="acct_1",
        job_id=job.id,
    )
    claim = await world.sender.deliveries.claim(first, expired=False)
    assert claim.send  # the "other run" holds it now
    with pytest.raises(DeferJob) as deferred:
        await run(world, job)
    lease = world.app.settings.delivery_claim_lease_s
    assert lease - 5 < deferred.value.delay_s <= lease + 1
    assert world.peer.messages == []
    await world.app.db.execute(
        "UPDATE email_deliveries SET updated_at = now() - make_interval(secs => $1) WHERE id = $2",
        lease,
        claim.delivery_id,
    )
    assert (await run(world, job))["status"] == "sent"
    assert len(world.peer.messages) == 1


async def test_failure_before_smtp_gives_the_claim_back(world: World) -> None:
    """An account with no SMTP route and no relay: the job is dead-lettered, nothing is
    sent, and the row is `deferred` (not left `sending` under a claim lease)."""
    await world.app.db.execute("UPDATE email_accounts SET smtp_host = NULL")
    job = world.job(world.payload("ada@example.net"))
    with pytest.raises(PermanentJobError, match="relay"):
        await run(world, job)
    row = await delivery_row(world, job)
    assert row["status"] == "deferred" and row["provider_response"].startswith("not sent:")
    assert world.peer.messages == []


async def test_seed_000_shape_is_accepted(world: World) -> None:
    """The seed 000 payload (campaign_id, recipient_id, email_template, personalizations)."""
    job = world.job(
        {
            "campaign_id": "camp_1",
            "recipient_id": "ct_1",
            "email_template": "tpl_1",
            "personalizations": {"email": "ada@example.net", "first_name": "Ada"},
        }
    )
    result = await run(world, job)
    assert result["status"] == "sent"
    msg = email.message_from_bytes(world.peer.messages[0].content, policy=email.policy.default)
    assert "Hi Ada at Engines" in msg.get_body(("html",)).get_content()  # company from contact


async def test_missing_variable_is_a_permanent_error_naming_it(world: World) -> None:
    """A template variable nobody supplies fails the job permanently, naming the variable."""
    payload = world.payload("bob@example.org", variables={"company": "X"})
    with pytest.raises(PermanentJobError, match="first_name"):
        await run(world, world.job(payload))
    assert world.peer.messages == []


async def test_suppressed_recipient_is_not_sent(world: World) -> None:
    """A suppressed address is recorded `suppressed` and never reaches SMTP."""
    await world.app.db.execute(
        "INSERT INTO suppressions (tenant_id, email, reason)"
        " VALUES ($1, 'ada@example.net', 'unsubscribe')",
        TENANT,
    )
    job = world.job(world.payload("Ada@Example.net"))
    result = await run(world, job)
    assert result["status"] == "suppressed" and world.peer.messages == []
    assert (await delivery_row(world, job))["status"] == "suppressed"


async def test_5xx_fails_and_queues_a_bounce_job(world: World) -> None:
    """A 550 at RCPT records `failed` (hard, userunknown) and queues queue:bounce:process."""
    world.peer.script.rcpt["nobody@example.org"] = "550 5.1.1 <nobody@example.org>: no such user"
    job = world.job(world.payload("nobody@example.org"))
    result = await run(world, job)
    assert result["status"] == "failed" and result["smtp_code"] == 550
    row = await delivery_row(world, job)
    assert (row["bounce_type"], row["bounce_reason"], row["enhanced_status"]) == (
        "hard",
        "userunknown",
        "5.1.1",
    )
    [raw] = await world.app.redis.lrange("queue:bounce:process", 0, -1)
    bounce = json.loads(raw)
    assert bounce["payload"]["delivery_id"] == row["id"]
    assert (
        bounce["payload"]["source"] == "smtp_reply" and bounce["payload"]["bounce_type"] == "hard"
    )
    assert bounce["payload"]["status"] == "5.1.1" and bounce["payload"]["smtp_code"] == 550


async def test_4xx_with_hint_defers_and_then_sends(world: World) -> None:
    """A 451 saying "try again in 7 seconds" defers the job 7 s; the next run sends."""
    world.peer.script.rcpt["slow@example.org"] = "451 4.7.1 greylisted, try again in 7 seconds"
    job = world.job(world.payload("slow@example.org"))
    with pytest.raises(DeferJob) as info:
        await run(world, job)
    assert info.value.delay_s == 7
    assert (await delivery_row(world, job))["status"] == "deferred"
    del world.peer.script.rcpt["slow@example.org"]
    assert (await run(world, job))["status"] == "sent"


async def test_4xx_without_hint_is_retried_with_backoff(world: World) -> None:
    """A 452 with no hint raises a temporary error (the runtime's backoff), and the last
    attempt records the delivery `failed` as a soft bounce."""
    world.peer.script.data["full@example.org"] = "452 4.2.2 mailbox busy"
    with pytest.raises(SendDeferred):
        await run(world, world.job(world.payload("full@example.org")))
    last = world.job(world.payload("full@example.org"), attempt_count=4, max_attempts=5)
    result = await run(world, last)
    assert result["status"] == "failed"
    assert (await delivery_row(world, last))["bounce_type"] == "soft"


async def test_dropped_connection_is_retried_then_sent(world: World) -> None:
    """A connection cut at DATA is a temporary failure; the retry sends on a new connection."""
    world.peer.script.data["drop@example.org"] = "drop"
    job = world.job(world.payload("drop@example.org"))
    with pytest.raises(SendDeferred):
        await run(world, job)
    del world.peer.script.data["drop@example.org"]
    assert (await run(world, job))["status"] == "sent"
    assert world.peer.dropped == 1 and world.peer.connections == 2


async def test_421_closes_the_connection(world: World) -> None:
    """A 421 defers the send and the pooled connection is not reused."""
    world.peer.script.rcpt["shut@example.org"] = "421 4.3.2 service shutting down"
    with pytest.raises(SendDeferred):
        await run(world, world.job(world.payload("shut@example.org")))
    await run(world, world.job(world.payload("ada@example.net")))
    assert world.peer.connections == 2


async def test_connections_are_reused(world: World) -> None:
    """Several sends in a row share one pooled connection."""
    for n in range(5):
        await run(world, world.job(world.payload(f"r{n}@example.org")))
    assert len(world.peer.messages) == 5 and world.peer.connections == 1


async def test_expired_job_is_recorded_not_sent(world: World) -> None:
    """A job older than max_age (3 days) records `expired` and sends nothing."""
    old = (dt.datetime.now(dt.UTC) - dt.timedelta(days=4)).isoformat()
    job = world.job(world.payload("late@example.org"), created_at=old)
    assert (await run(world, job))["status"] == "expired"
    assert world.peer.messages == []


async def test_domain_rate_limit_defers_until_it_fits(world: World) -> None:
    """Over the per-domain minute limit, a send is deferred (not failed) for the rest of
    the window, and nothing is sent."""
    world.app.settings = world.app.settings.model_copy(
        update={"delivery_domain_limits": "limited.org=2/5"}
    )
    for n in range(2):
        await run(world, world.job(world.payload(f"u{n}@limited.org")))
    with pytest.raises(DeferJob) as info:
        await run(world, world.job(world.payload("u3@limited.org")))
    assert 55 < info.value.delay_s <= 61
    assert len(world.peer.messages) == 2
    sender = world.sender
    scraped = world.app.metrics.render().decode()
    assert 'rate_limited_total{scope="domain"} 1.0' in scraped
    assert sender.pool.open_connections == 1


async def test_warmup_ramp_caps_the_day(world: World) -> None:
    """An enabled warmup config caps the account's day at start + increment x days."""
    await world.app.db.execute(
        "INSERT INTO warmup_configs (id, tenant_id, email_account_id, daily_start, daily_increment,"
        " daily_max, started_on) VALUES ('w1', $1, 'acct_1', 1, 1, 10, CURRENT_DATE - 1)",
        TENANT,
    )
    for n in range(2):
        await run(world, world.job(world.payload(f"w{n}@example.org")))
    with pytest.raises(DeferJob):
        await run(world, world.job(world.payload("w9@example.org")))
    assert len(world.peer.messages) == 2
