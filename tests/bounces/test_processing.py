"""Bounce processing against a real PostgreSQL and Redis: attribution (VERP, Message-ID,
recipient), delivery/metrics/suppression effects, idempotence, soft-bounce limit,
complaints, delayed DSNs, auto-replies, unknown deliveries, bad payloads."""

from __future__ import annotations

import json
import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from bounces.intake import UNATTRIBUTED_TENANT, Intake, SmtpEnvelope
from bounces.model import BounceResult
from bounces.processing import (
    BounceRequest,
    Delivery,
    create_handler,
    match_deliveries,
    outcome_of,
    parse_request,
    report_key,
)
from gateway.app import App
from gateway.jobs import keys
from gateway.jobs.contracts import BOUNCE, BouncePayload, PayloadInvalid, encode_job, family_of
from gateway.jobs.envelope import new_job
from gateway.jobs.worker import Worker
from gateway.messages import MessageRecord, store_message
from gateway.services import Services
from gateway.verp import Verp

# -- message builders (shared with test_listener) ------------------------------------------


def make_dsn(
    recipient: str,
    *,
    action: str = "failed",
    status: str = "5.1.1",
    diagnostic: str = "smtp; 550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown",
    original_message_id: str = "<orig-1@sender.test>",
    to: str = "b+x@bounces.test",
    salt: str = "",
) -> bytes:
    """An RFC 3464 multipart/report DSN about ``recipient``, as Postfix writes them."""
    diag = diagnostic.format(rcpt=recipient)
    return (
        "Return-Path: <>\r\n"
        "From: MAILER-DAEMON@mx.rcpt.test (Mail Delivery System)\r\n"
        f"To: {to}\r\n"
        f"Subject: Undelivered Mail Returned to Sender{salt}\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="BND"\r\n'
        "\r\n"
        "--BND\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"
        "This is the mail system at host mx.rcpt.test.\r\n"
        "I'm sorry to have to inform you that your message could not\r\n"
        "be delivered to one or more recipients.\r\n"
        "\r\n"
        "--BND\r\n"
        "Content-Type: message/delivery-status\r\n"
        "\r\n"
        "Reporting-MTA: dns; mx.rcpt.test\r\n"
        "\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\n"
        f"Action: {action}\r\n"
        f"Status: {status}\r\n"
        f"Diagnostic-Code: {diag}\r\n"
        "\r\n"
        "--BND\r\n"
        "Content-Type: text/rfc822-headers\r\n"
        "\r\n"
        "From: Sales <sales@sender.test>\r\n"
        f"To: {recipient}\r\n"
        "Subject: Hello\r\n"
        f"Message-ID: {original_message_id}\r\n"
        "\r\n"
        "--BND--\r\n"
    ).encode()


def make_arf(recipient: str, original_message_id: str = "<orig-2@sender.test>") -> bytes:
    """An RFC 5965 abuse report about mail sent to ``recipient``."""
    return (
        "From: feedback@provider.test\r\n"
        "To: abuse@sender.test\r\n"
        "Subject: Abuse report\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="ARF"\r\n'
        "\r\n"
        "--ARF\r\n"
        "Content-Type: text/plain\r\n"
        "\r\n"
        "This is an email abuse report.\r\n"
        "\r\n"
        "--ARF\r\n"
        "Content-Type: message/feedback-report\r\n"
        "\r\n"
        "Feedback-Type: abuse\r\n"
        "User-Agent: provider-fbl/1.0\r\n"
        "Version: 1\r\n"
        f"Original-Rcpt-To: {recipient}\r\n"
        "\r\n"
        "--ARF\r\n"
        "Content-Type: message/rfc822\r\n"
        "\r\n"
        "From: sales@sender.test\r\n"
        f"To: {recipient}\r\n"
        "Subject: Offer\r\n"
        f"Message-ID: {original_message_id}\r\n"
        "\r\n"
        "Buy now.\r\n"
        "\r\n"
        "--ARF--\r\n"
    ).encode()


def make_autoreply() -> bytes:
    """An RFC 3834 vacation reply."""
    return (
        b"From: Jane <jane@corp.test>\r\n"
        b"To: b+x@bounces.test\r\n"
        b"Subject: Out of office: Hello\r\n"
        b"Auto-Submitted: auto-replied\r\n"
        b"Message-ID: <ooo-1@corp.test>\r\n"
        b"\r\n"
        b"I am out of the office until Monday.\r\n"
    )


async def add_delivery(
    app: App,
    delivery_id: str,
    *,
    tenant: str = "t1",
    campaign: str | None = "c1",
    recipient: str = "nobody@rcpt.test",
    message_id: str | None = None,
    status: str = "sent",
) -> None:
    """Insert a sent delivery row, as the delivery engine leaves it."""
    await app.db.execute(
        "INSERT INTO email_deliveries (id, tenant_id, campaign_id, recipient_email,"
        " idempotency_key, message_id, status, sent_at) VALUES ($1,$2,$3,$4,$5,$6,$7,now())",
        delivery_id,
        tenant,
        campaign,
        recipient,
        f"idem-{delivery_id}",
        message_id,
        status,
    )


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture
async def run_jobs(app: App, services: Services) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """``await run_jobs()``: a real Worker with the bounce handler drains the queue."""
    worker = Worker(app, {"bounce": create_handler(app, services)}, rng=random.Random(3))
    await worker.start()

    async def run() -> None:
        await worker.run_until_empty(30)

    yield run
    await worker.stop(worker_deadline())


def worker_deadline() -> float:
    import asyncio

    return asyncio.get_running_loop().time() + 5


async def push(app: App, payload: dict[str, Any]) -> str:
    job = new_job(payload, queue_name=BOUNCE)
    await app.redis.lpush(BOUNCE, json.dumps(job))
    return str(job["id"])


async def delivery(app: App, delivery_id: str) -> Any:
    return await app.db.fetchrow("SELECT * FROM email_deliveries WHERE id = $1", delivery_id)


async def metrics_row(app: App, tenant: str = "t1", campaign: str = "c1") -> Any:
    return await app.db.fetchrow(
        "SELECT * FROM campaign_metrics WHERE tenant_id = $1 AND campaign_id = $2",
        tenant,
        campaign,
    )


async def suppression(app: App, email: str, tenant: str = "t1") -> Any:
    return await app.db.fetchrow(
        "SELECT * FROM suppressions WHERE tenant_id = $1 AND email = $2", tenant, email
    )


def counter(app: App, name: str, **labels: str) -> float:
    value = app.metrics.registry.get_sample_value(name, labels)
    return value or 0.0


# -- the seed's payload ---------------------------------------------------------------------


async def test_seed_hard_bounce_by_message_id_is_idempotent(app: App, run_jobs: Any) -> None:
    """A seed payload (no tenant) finds the delivery by Message-ID: bounced, hard,
    suppressed, counted, one event; the same payload again changes nothing."""
    await add_delivery(app, "d1", message_id="<m1@sender.test>")
    payload = {
        "message_id": "<m1@sender.test>",
        "bounce_type": "hard",
        "bounce_reason": "userunknown",
        "recipient_email": "nobody@rcpt.test",
    }
    job_id = await push(app, payload)
    await run_jobs()
    row = await delivery(app, "d1")
    assert (row["status"], row["bounce_type"], row["bounce_reason"]) == (
        "bounced",
        "hard",
        "userunknown",
    )
    assert row["bounced_at"] is not None
    assert (await suppression(app, "nobody@rcpt.test"))["reason"] == "hard_bounce"
    assert (await metrics_row(app))["bounced_hard"] == 1
    assert counter(app, "bounces_total", kind="dsn", bounce_type="hard", reason="userunknown") == 1
    h = await app.redis.hgetall(keys.job_key(job_id))
    assert h[b"status"] == b"completed"

    await push(app, payload)
    await run_jobs()
    assert (await metrics_row(app))["bounced_hard"] == 1
    events = await app.db.fetch("SELECT type FROM events WHERE tenant_id = 't1'")
    assert [e["type"] for e in events] == ["email.bounced"]
    assert await app.db.fetchval("SELECT count(*) FROM bounce_reports") == 1
    assert counter(app, "bounces_total", kind="dsn", bounce_type="hard", reason="userunknown") == 1


async def test_soft_bounces_suppress_at_the_limit(app: App, run_jobs: Any) -> None:
    """Soft bounces are counted per recipient; the third within 30 days suppresses."""
    for n in range(3):
        await add_delivery(
            app, f"s{n}", message_id=f"<s{n}@sender.test>", recipient="Full@Rcpt.test"
        )
    for n in range(3):
        await push(
            app,
            {
                "tenant_id": "t1",
                "message_id": f"<s{n}@sender.test>",
                "bounce_type": "soft",
                "bounce_reason": "mailboxfull",
                "recipient_email": "full@rcpt.test",
            },
        )
        await run_jobs()
        assert (await delivery(app, f"s{n}"))["bounce_type"] == "soft"
        found = await suppression(app, "full@rcpt.test")
        if n < 2:
            assert found is None, n
        else:
            assert found["reason"] == "soft_bounce"
    assert (await metrics_row(app))["bounced_soft"] == 3


async def test_unknown_delivery_is_kept_and_reported(app: App, run_jobs: Any) -> None:
    """A bounce for a delivery that does not exist completes (no retry loop), is recorded
    as unattributed with an event, and changes nothing else."""
    job_id = await push(
        app,
        {"message_id": "<nope@x>", "bounce_type": "hard", "recipient_email": "a@b.test"},
    )
    await run_jobs()
    assert (await app.redis.hgetall(keys.job_key(job_id)))[b"status"] == b"completed"
    report = await app.db.fetchrow("SELECT * FROM bounce_reports")
    assert (report["tenant_id"], report["outcome"]) == (UNATTRIBUTED_TENANT, "unattributed")
    event = await app.db.fetchrow("SELECT * FROM events")
    assert event["type"] == "bounce.unattributed"
    assert await app.db.fetchval("SELECT count(*) FROM suppressions") == 0
    assert await app.redis.llen(keys.DEAD) == 0


async def test_bad_payload_is_dead_lettered_at_once(app: App, run_jobs: Any) -> None:
    """A payload that can never be processed goes to the dead letters without retries."""
    await push(app, {"message_id": "<m@x>", "bounce_type": "sideways"})
    await run_jobs()
    letter = json.loads(await app.redis.lindex(keys.DEAD, 0))
    assert "bounce_type" in letter["error"]
    assert await app.redis.zcard(keys.DELAYED) == 0


# -- messages stored by the listener (through Intake, no socket) ----------------------------


async def intake(app: App, raw: bytes, delivery_id: str | None, forged: bool = False) -> str:
    verp = Verp(app.secret_key)
    rcpt = verp.address(delivery_id, "bounces.test") if delivery_id else "postmaster@bounces.test"
    if forged:
        local, _, domain = rcpt.partition("@")
        rcpt = f"{local[:-2]}{'aa' if local[-2:] != 'aa' else 'bb'}@{domain}"
    stored = await Intake(app).accept(SmtpEnvelope("", (rcpt,), "127.0.0.1"), raw)
    assert len(stored) == 1
    return stored[0][1]


async def test_verp_dsn_hard_bounce(app: App, run_jobs: Any) -> None:
    """A stored DSN to a genuine VERP address bounces its delivery and records the
    classification on the stored message."""
    await add_delivery(app, "v1")
    key = await intake(app, make_dsn("nobody@rcpt.test"), "v1")
    msg = await app.db.fetchrow("SELECT * FROM email_messages WHERE storage_key = $1", key)
    assert (msg["tenant_id"], msg["source"], msg["direction"]) == ("t1", "smtp", "inbound")
    assert msg["delivery_id"] == "v1"
    await run_jobs()
    row = await delivery(app, "v1")
    assert (row["status"], row["bounce_type"], row["bounce_status"]) == ("bounced", "hard", "5.1.1")
    msg = await app.db.fetchrow("SELECT * FROM email_messages WHERE storage_key = $1", key)
    assert (msg["message_type"], msg["status"]) == ("bounce", "processed")
    receipt = await app.db.fetchrow("SELECT * FROM bounce_receipts WHERE storage_key = $1", key)
    assert receipt["processed_at"] is not None
    assert (await suppression(app, "nobody@rcpt.test"))["reason"] == "hard_bounce"


async def test_forged_token_changes_nothing(app: App, run_jobs: Any) -> None:
    """A DSN to a forged VERP address is stored and reported, nothing else changes."""
    await add_delivery(app, "v2")
    key = await intake(app, make_dsn("nobody@rcpt.test"), "v2", forged=True)
    await run_jobs()
    assert (await delivery(app, "v2"))["status"] == "sent"
    receipt = await app.db.fetchrow("SELECT * FROM bounce_receipts WHERE storage_key = $1", key)
    assert (receipt["tenant_id"], receipt["verp_status"]) == (UNATTRIBUTED_TENANT, "forged")
    assert await app.db.fetchval("SELECT count(*) FROM suppressions") == 0
    assert await app.db.fetchval("SELECT count(*) FROM campaign_metrics") == 0
    report = await app.db.fetchrow("SELECT * FROM bounce_reports")
    assert report["outcome"] == "unattributed"
    assert counter(app, "bounces_unattributed_total", cause="forged") == 1
    assert counter(app, "bounces_total", kind="dsn", bounce_type="hard", reason="userunknown") == 0


async def test_complaint_suppresses(app: App, run_jobs: Any) -> None:
    """An ARF complaint marks the delivery complained, counts and suppresses."""
    await add_delivery(app, "v3", recipient="annoyed@provider.test")
    key = await intake(app, make_arf("annoyed@provider.test"), "v3")
    await run_jobs()
    msg_type = await app.db.fetchval(
        "SELECT message_type FROM email_messages WHERE storage_key = $1", key
    )
    assert msg_type == "complaint"
    assert (await delivery(app, "v3"))["status"] == "complained"
    assert (await suppression(app, "annoyed@provider.test"))["reason"] == "complaint"
    assert (await metrics_row(app))["complaints"] == 1
    assert await app.db.fetchval("SELECT type FROM events") == "email.complained"


async def test_delayed_dsn_is_recorded_not_counted(app: App, run_jobs: Any) -> None:
    """A delayed DSN is recorded with an event but is no bounce: no status change, no
    counter, no suppression."""
    await add_delivery(app, "v4", recipient="slow@rcpt.test")
    await intake(
        app,
        make_dsn("slow@rcpt.test", action="delayed", status="4.4.1", diagnostic="x"),
        "v4",
    )
    await run_jobs()
    assert (await delivery(app, "v4"))["status"] == "sent"
    assert await app.db.fetchval("SELECT outcome FROM bounce_reports") == "delayed"
    assert await app.db.fetchval("SELECT type FROM events") == "email.deferred"
    assert await app.db.fetchval("SELECT count(*) FROM suppressions") == 0
    assert await metrics_row(app) is None


async def test_auto_reply_is_not_a_bounce(app: App, run_jobs: Any) -> None:
    """An auto-reply to a VERP address is recorded as such; the delivery stays sent."""
    await add_delivery(app, "v5", recipient="jane@corp.test")
    key = await intake(app, make_autoreply(), "v5")
    committed_type = await app.db.fetchval(
        "SELECT message_type FROM email_messages WHERE storage_key = $1", key
    )
    assert committed_type == "auto_reply"  # from the headers, before classification
    await run_jobs()
    assert (await delivery(app, "v5"))["status"] == "sent"
    assert await app.db.fetchval("SELECT outcome FROM bounce_reports") == "auto_reply"
    msg_type = await app.db.fetchval(
        "SELECT message_type FROM email_messages WHERE storage_key = $1", key
    )
    assert msg_type == "auto_reply"


async def test_valid_token_for_missing_delivery(app: App, run_jobs: Any) -> None:
    """A genuine token naming no existing delivery is kept as unknown_delivery."""
    key = await intake(app, make_dsn("nobody@rcpt.test"), "gone")
    await run_jobs()
    receipt = await app.db.fetchrow("SELECT * FROM bounce_receipts WHERE storage_key = $1", key)
    assert receipt["verp_status"] == "unknown_delivery"
    assert await app.db.fetchval("SELECT outcome FROM bounce_reports") == "unattributed"


async def test_same_message_twice_is_processed_once(app: App, run_jobs: Any) -> None:
    """A sender retrying after a lost 250 stores nothing new; both jobs run, one report."""
    await add_delivery(app, "v6")
    raw = make_dsn("nobody@rcpt.test")
    first = await intake(app, raw, "v6")
    second = await intake(app, raw, "v6")
    assert first == second
    await run_jobs()
    assert await app.db.fetchval("SELECT count(*) FROM email_messages") == 1
    assert await app.db.fetchval("SELECT count(*) FROM bounce_reports") == 1
    assert (await metrics_row(app))["bounced_hard"] == 1


async def test_requeue_finds_unprocessed_receipts(app: App) -> None:
    """A receipt whose job was lost is queued again by the sweep."""
    await add_delivery(app, "v7")
    key = await intake(app, make_dsn("nobody@rcpt.test"), "v7")
    await app.redis.delete(BOUNCE)  # the job is lost
    await app.db.execute(
        "UPDATE bounce_receipts SET received_at = now() - interval '1 hour',"
        " enqueued_at = now() - interval '1 hour'"
    )
    assert await Intake(app).requeue(60) == 1
    job = json.loads(await app.redis.lindex(BOUNCE, 0))
    assert job["payload"]["storage_key"] == key
    assert await Intake(app).requeue(60) == 0


# -- a bounce found in a mailbox ------------------------------------------------------------


async def test_mailbox_bounce_attributed_by_message_id(app: App, run_jobs: Any) -> None:
    """A DSN stored by ingest (no receipt) is attributed by the original Message-ID."""
    await add_delivery(app, "m1", recipient="gone@rcpt.test", message_id="<orig-9@sender.test>")
    raw = make_dsn("gone@rcpt.test", original_message_id="<orig-9@sender.test>")
    async with app.db.acquire() as conn:
        stored = await store_message(
            conn,
            MessageRecord(tenant_id="t1", dedupe_key="imap:a:INBOX:1:7", raw=raw, source="imap"),
        )
    await push(
        app,
        {
            "tenant_id": "t1",
            "storage_key": stored.storage_key,
            "message_id": "<dsn@mx>",
            "bounce_type": "hard",
            "bounce_reason": "userunknown",
            "recipient_email": "gone@rcpt.test",
        },
    )
    await run_jobs()
    assert (await delivery(app, "m1"))["status"] == "bounced"
    report = await app.db.fetchrow("SELECT * FROM bounce_reports")
    assert (report["attribution"], report["source"]) == ("message_id", "mailbox")


async def test_recipient_alone_only_names_a_candidate(app: App, run_jobs: Any) -> None:
    """Without VERP or a matching Message-ID, a report naming a recipient we mailed changes
    nothing: it is recorded unattributed with the recipient's latest send as candidate."""
    await add_delivery(app, "r1", recipient="late@rcpt.test")
    await push(
        app,
        {"tenant_id": "t1", "bounce_type": "soft", "recipient_email": "LATE@rcpt.test"},
    )
    await run_jobs()
    row = await delivery(app, "r1")
    assert (row["status"], row["bounce_type"]) == ("sent", None)
    report = await app.db.fetchrow("SELECT * FROM bounce_reports")
    assert (report["outcome"], report["attribution"], report["candidate_delivery_id"]) == (
        "unattributed",
        "none",
        "r1",
    )
    event = await app.db.fetchrow("SELECT type, payload FROM events")
    assert event["type"] == "bounce.unattributed"
    assert event["payload"]["candidate_delivery_id"] == "r1"
    assert counter(app, "bounces_unattributed_total", cause="no_evidence") == 1


async def test_tenant_scoping(app: App, run_jobs: Any) -> None:
    """A job for tenant t2 never touches t1's delivery with the same Message-ID."""
    await add_delivery(app, "x1", tenant="t1", message_id="<shared@x>")
    await push(
        app,
        {
            "tenant_id": "t2",
            "message_id": "<shared@x>",
            "bounce_type": "hard",
            "recipient_email": "nobody@rcpt.test",
        },
    )
    await run_jobs()
    assert (await delivery(app, "x1"))["status"] == "sent"


# -- pure parts -------------------------------------------------------------------------------


def _request(payload: dict[str, Any]) -> Any:
    return parse_request(family_of(BOUNCE).validate(payload))


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"storage_key": "k"}, "tenant_id is required with storage_key"),
        ({"bounce_type": "hard"}, "storage_key, delivery_id, message_id or recipient_email"),
        ({"message_id": "m", "bounce_type": "HARDER"}, "bounce_type"),
        ({"message_id": {"x": 1}, "bounce_type": "hard"}, "message_id"),
        ({"message_id": "m"}, "bounce_type is required"),
    ],
)
def test_bad_payloads_name_the_rule(payload: dict[str, Any], field: str) -> None:
    """The family's model refuses a payload that can never be processed, naming why."""
    with pytest.raises(PayloadInvalid, match=re.escape(field)):
        _request(payload)


def test_parse_request_sources_and_case() -> None:
    """A stored message keeps its source (smtp, else mailbox); the type is case-blind."""
    assert _request({"tenant_id": "t", "storage_key": "k", "source": "smtp"}).source == "smtp"
    assert _request({"tenant_id": "t", "storage_key": "k"}).source == "mailbox"
    assert _request({"message_id": "m", "bounce_type": "Soft"}).bounce_type == "soft"
    assert _request({"message_id": "m", "bounce_type": "Soft"}).source == "job"


def test_outcomes() -> None:
    """Kinds and actions map to outcomes; a failed DSN without a type uses its status."""
    assert outcome_of(BounceResult("dsn", action="failed", bounce_type="hard")) == "bounced_hard"
    assert outcome_of(BounceResult("dsn", action="failed", status="4.2.2")) == "bounced_soft"
    assert outcome_of(BounceResult("dsn", action="failed", status="5.0.0")) == "bounced_hard"
    assert outcome_of(BounceResult("dsn", action="delayed", bounce_type="soft")) == "delayed"
    assert outcome_of(BounceResult("dsn", action="delivered")) == "ignored"
    assert outcome_of(BounceResult("complaint")) == "complaint"
    assert outcome_of(BounceResult("auto_reply")) == "auto_reply"
    assert outcome_of(BounceResult("not_bounce")) == "ignored"


def test_match_deliveries_prefers_recipient() -> None:
    """Results pair with VERP deliveries by recipient, then leftovers to the first result."""
    d1 = Delivery("d1", "t", None, "a@x.test")
    d2 = Delivery("d2", "t", None, "b@x.test")
    results = [BounceResult("dsn", recipient="B@x.test"), BounceResult("dsn", recipient="z@y")]
    assert match_deliveries(results, [d1, d2]) == [d2, d1]
    assert match_deliveries([BounceResult("not_bounce")], [d1]) == [None]


def test_report_key_ignores_kind_and_position() -> None:
    """The report key depends on the stored message and recipient only."""
    req = BounceRequest(source="smtp", tenant_id="t", storage_key="k")
    a = report_key(req, BounceResult("dsn", recipient="A@x"))
    assert a == report_key(req, BounceResult("complaint", recipient="a@x"))
    seed = BounceRequest(source="job", message_id="m", bounce_type="hard")
    assert report_key(seed, BounceResult("dsn")) == report_key(seed, BounceResult("dsn"))


async def test_a_bounce_job_from_delivery_is_attributed_to_its_delivery(
    app: App, run_jobs: Callable[[], Awaitable[None]]
) -> None:
    """Delivery's own 5xx names its delivery_id: processing uses it directly (not the
    Message-ID or recipient, which here point at another delivery), with the reply's status
    and diagnostic, and counts it once however often the job runs."""
    await add_delivery(app, "dx", recipient="gone@rcpt.test", message_id="<dx@m>")
    await add_delivery(app, "other", recipient="gone@rcpt.test", message_id="<other@m>")
    payload = BouncePayload(
        tenant_id="t1",
        delivery_id="dx",
        message_id="<other@m>",
        recipient_email="gone@rcpt.test",
        bounce_type="hard",
        bounce_reason="userunknown",
        status="5.1.1",
        smtp_code=550,
        diagnostic="550 5.1.1 no such user",
        source="smtp_reply",
    )
    for _ in range(2):
        await app.redis.lpush(BOUNCE, encode_job(BOUNCE, payload))
        await run_jobs()
    row = await delivery(app, "dx")
    assert row["status"] == "bounced" and row["bounce_status"] == "5.1.1"
    assert (await delivery(app, "other"))["status"] == "sent"
    report = await app.db.fetchrow("SELECT attribution, diagnostic FROM bounce_reports")
    assert report["attribution"] == "delivery" and "no such user" in report["diagnostic"]
    assert (await metrics_row(app))["bounced_hard"] == 1
