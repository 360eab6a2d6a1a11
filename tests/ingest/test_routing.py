"""Routing after commit: replies linked to platform deliveries with an event, auto-replies
not counted as replies, bounces and complaints handed to queue:bounce:process."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from gateway.app import App
from tests.ingest.helpers import add, count, message, new_mailbox, poll
from tests.peers.dovecot import Dovecot

DSN = (
    b"From: MAILER-DAEMON@mx.example.test\r\nTo: me@ingest.test\r\n"
    b"Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <dsn1@mx.example.test>\r\n"
    b"Auto-Submitted: auto-replied\r\nX-Failed-Recipients: gone@example.test\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: multipart/report; report-type=delivery-status; boundary=B\r\n\r\n"
    b"--B\r\nContent-Type: text/plain\r\n\r\nThe mail could not be delivered.\r\n"
    b"--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n"
    b"Final-Recipient: rfc822; gone@example.test\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
    b"--B--\r\n"
)


async def test_reply_auto_reply_and_bounce(
    app: App, dovecot: Dovecot, ingest: Callable[..., Any]
) -> None:
    """A reply to a platform delivery is linked with a reply.received event and counted; an
    out-of-office answer is auto_reply (its own event, not a reply); a DSN is a bounce with a
    queue:bounce:process job naming its storage key; another tenant's delivery never matches."""
    await app.db.execute(
        "INSERT INTO email_deliveries (id, tenant_id, campaign_id, recipient_email, "
        "idempotency_key, message_id, status, sent_at) VALUES "
        "('dlv1', 't1', 'camp1', 'bob@example.test', 'k1', '<d1@platform.test>', 'sent', now()),"
        "('dlv9', 'other', 'camp9', 'bob@example.test', 'k9', '<d9@platform.test>', 'sent', now())"
    )
    box = new_mailbox(dovecot)
    account = await add(app, dovecot, box)
    dovecot.deliver(box.address, message(1, In_Reply_To="<d1@platform.test>", Subject="Re: hi"))
    dovecot.deliver(
        box.address,
        message(
            2,
            References="<x@y> <d1@platform.test>",
            Subject="Automatic reply: hi",
            Auto_Submitted="auto-replied",
        ),
    )
    dovecot.deliver(box.address, DSN)
    dovecot.deliver(box.address, message(4, In_Reply_To="<d9@platform.test>"))
    await ingest()
    await poll(lambda: count(app, account.id), lambda n: n == 4)
    await poll(
        lambda: app.db.fetchval("SELECT count(*) FROM email_messages WHERE routed_at IS NULL"),
        lambda n: n == 0,
    )
    rows = {
        r["uid"]: r
        for r in await app.db.fetch(
            "SELECT uid, message_type, delivery_id, storage_key FROM email_messages"
        )
    }
    assert (rows[1]["message_type"], rows[1]["delivery_id"]) == ("reply", "dlv1")
    assert (rows[2]["message_type"], rows[2]["delivery_id"]) == ("auto_reply", "dlv1")
    assert rows[3]["message_type"] == "bounce"
    assert (rows[4]["message_type"], rows[4]["delivery_id"]) == ("email", None)
    events = await app.db.fetch("SELECT type, subject_id FROM events ORDER BY type")
    assert [(e["type"], e["subject_id"]) for e in events] == [
        ("email.auto_replied", "dlv1"),
        ("email.replied", "dlv1"),
    ]
    metrics = await app.db.fetchrow("SELECT * FROM campaign_metrics WHERE campaign_id='camp1'")
    assert (metrics["replies"], metrics["auto_replies"]) == (1, 1)
    jobs = [json.loads(j) for j in await app.redis.lrange("queue:bounce:process", 0, -1)]
    assert len(jobs) == 1
    assert jobs[0]["payload"] == {
        "tenant_id": "t1",
        "storage_key": rows[3]["storage_key"],
        "source": "mailbox",
        "recipient_email": "gone@example.test",
    }
