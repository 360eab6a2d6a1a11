"""After the commit: link replies to platform mail, record events, hand bounces on.

* Before storing, :func:`find_delivery` looks up the In-Reply-To/References ids in the
  tenant's ``email_deliveries.message_id`` (with and without angle brackets); a match makes
  the message a ``reply`` (an auto-reply stays ``auto_reply``) with ``delivery_id`` set.
* After the commit, :func:`route` records an ``events`` row (``email.replied`` or
  ``email.auto_replied``, deduplicated by the storage key) and counts it once in
  ``campaign_metrics``; a ``bounce``/``complaint`` becomes a ``queue:bounce:process`` job
  ``{tenant_id, storage_key, message_id, recipient_email}`` (the bounces package's
  contract: it loads the stored message and classifies it). Then ``routed_at`` is set.
* A crash between commit and routing leaves ``routed_at`` NULL: :func:`sweep` routes such
  messages again (events are deduplicated, a repeated bounce job is a no-op downstream).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from gateway.events import EventType, Metric, count, record_event
from gateway.jobs.contracts import BOUNCE, BouncePayload, encode_job

log = logging.getLogger(__name__)

REPLY_TYPES = {"reply": EventType.REPLIED, "auto_reply": EventType.AUTO_REPLIED}
METRIC_COLUMN = {"reply": Metric.REPLIES, "auto_reply": Metric.AUTO_REPLIES}


@dataclass(frozen=True)
class Delivery:
    id: str
    campaign_id: str | None


@dataclass(frozen=True)
class Routable:
    """What routing needs of a stored message."""

    tenant_id: str
    storage_key: str
    account_id: str | None
    kind: str
    delivery: Delivery | None
    message_id: str | None
    original_message_id: str | None
    from_email: str | None
    failed_recipient: str | None


def _candidates(in_reply_to: str | None, references: tuple[str, ...]) -> list[str]:
    ids = [i for i in [in_reply_to, *reversed(references)] if i][:50]
    out: list[str] = []
    for i in ids:
        out.extend([i, i.strip("<>")])
    return list(dict.fromkeys(out))


async def find_delivery(
    conn: asyncpg.Connection, tenant_id: str, in_reply_to: str | None, references: tuple[str, ...]
) -> Delivery | None:
    """The platform delivery this message answers, if any (tenant-scoped)."""
    ids = _candidates(in_reply_to, references)
    if not ids:
        return None
    row = await conn.fetchrow(
        "SELECT id, campaign_id FROM email_deliveries "
        "WHERE tenant_id = $1 AND message_id = ANY($2) "
        "ORDER BY sent_at DESC NULLS LAST LIMIT 1",
        tenant_id,
        ids,
    )
    return Delivery(row["id"], row["campaign_id"]) if row is not None else None


async def route(db: asyncpg.Pool, redis: aioredis.Redis, msg: Routable) -> None:
    """Follow-up work for one committed message (idempotent)."""
    if msg.kind in ("bounce", "complaint"):
        payload = BouncePayload(
            tenant_id=msg.tenant_id,
            storage_key=msg.storage_key,
            source="mailbox",
            message_id=msg.original_message_id or None,
            recipient_email=msg.failed_recipient or None,
        )
        job = encode_job(BOUNCE, payload, idempotency_key=f"ingest:{msg.storage_key}")
        await redis.lpush(BOUNCE, job)
    async with db.acquire() as conn, conn.transaction():
        if msg.delivery is not None and msg.kind in REPLY_TYPES:
            await _record_event(conn, msg, msg.delivery)
        await conn.execute(
            "UPDATE email_messages SET routed_at = now() WHERE tenant_id = $1 AND storage_key = $2",
            msg.tenant_id,
            msg.storage_key,
        )


async def _record_event(conn: asyncpg.Connection, msg: Routable, delivery: Delivery) -> None:
    key = f"ingest:{msg.kind}:{msg.storage_key}"
    await record_event(
        conn,
        tenant_id=msg.tenant_id,
        event_type=REPLY_TYPES[msg.kind],
        subject_id=delivery.id,
        payload={
            "storage_key": msg.storage_key,
            "delivery_id": delivery.id,
            "campaign_id": delivery.campaign_id,
            "email_account_id": msg.account_id,
            "message_id": msg.message_id,
            "from_email": msg.from_email,
        },
        dedupe_key=key,
    )
    if delivery.campaign_id:
        await count(
            conn,
            tenant_id=msg.tenant_id,
            campaign_id=delivery.campaign_id,
            metric=METRIC_COLUMN[msg.kind],
            dedupe_key=key,
        )


def failed_recipient(headers: dict[str, Any]) -> str | None:
    for key, value in headers.items():
        if key.lower() == "x-failed-recipients":
            text = str(value[0] if isinstance(value, list) else value)
            first = text.split(",")[0].strip()
            return first[:320] or None
    return None


async def sweep(
    db: asyncpg.Pool, redis: aioredis.Redis, older_than_s: float, limit: int = 200
) -> int:
    """Route again the messages whose routing never finished; the number routed."""
    rows = await db.fetch(
        """SELECT m.tenant_id, m.storage_key, m.email_account_id, m.message_type, m.delivery_id,
                  d.campaign_id, m.message_id, m.in_reply_to, m."references", m.from_email,
                  c.headers
           FROM email_messages m
           JOIN email_content c ON c.storage_key = m.storage_key
           LEFT JOIN email_deliveries d ON d.tenant_id = m.tenant_id AND d.id = m.delivery_id
           WHERE m.source = 'imap' AND m.routed_at IS NULL
             AND m.created_at < now() - make_interval(secs => $1)
           ORDER BY m.created_at LIMIT $2""",
        older_than_s,
        limit,
    )
    for r in rows:
        refs = tuple(r["references"] or ())
        await route(
            db,
            redis,
            Routable(
                tenant_id=r["tenant_id"],
                storage_key=r["storage_key"],
                account_id=r["email_account_id"],
                kind=r["message_type"],
                delivery=Delivery(r["delivery_id"], r["campaign_id"]) if r["delivery_id"] else None,
                message_id=r["message_id"],
                original_message_id=r["in_reply_to"] or (refs[-1] if refs else None),
                from_email=r["from_email"],
                failed_recipient=failed_recipient(r["headers"] or {}),
            ),
        )
    return len(rows)
