"""The effect of an unsubscribe, whichever way it came (the RFC 8058 one-click POST to the
HTTP listener, or mail to ``unsubscribe+<token>@<bounce domain>`` through the bounce
listener): one function, so both agree.

The token is the delivery's signed VERP token (:mod:`gateway.verp`): a forged or unknown
token changes nothing. In ONE transaction, each step idempotent:

* the recipient suppressed for the delivery's tenant with reason ``unsubscribe`` (a
  soft-bounce suppression is upgraded; a hard bounce, complaint or manual one is kept);
* the delivery marked (``unsubscribed_at``);
* the campaign's ``unsubscribes`` counted once per delivery;
* one ``email.unsubscribed`` event per delivery.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from gateway.events import EventType, Metric, count, record_event


@dataclass(frozen=True)
class Unsubscribed:
    """What an unsubscribe did: ``new`` False when the delivery had been unsubscribed."""

    delivery_id: str
    tenant_id: str
    recipient: str
    campaign_id: str | None
    new: bool


_SUPPRESS = """
INSERT INTO suppressions (tenant_id, email, reason, source, detail)
VALUES ($1, lower($2), 'unsubscribe', $3, $4)
ON CONFLICT (tenant_id, email) DO UPDATE SET
    reason = 'unsubscribe', source = EXCLUDED.source, detail = EXCLUDED.detail,
    created_at = now(), expires_at = NULL
WHERE suppressions.reason = 'soft_bounce'
"""


async def apply_unsubscribe(
    conn: asyncpg.Connection, delivery_id: str, *, source: str, tenant_id: str | None = None
) -> Unsubscribed | None:
    """Unsubscribe the recipient of ``delivery_id`` (a genuine token's); None when no such
    delivery (for ``tenant_id``, when given). Runs in its own transaction (nested in the
    caller's if there is one)."""
    async with conn.transaction():
        row = await conn.fetchrow(
            "UPDATE email_deliveries SET unsubscribed_at = coalesce(unsubscribed_at, now())"
            " WHERE id = $1 AND ($2::text IS NULL OR tenant_id = $2)"
            " RETURNING tenant_id, campaign_id, recipient_email",
            delivery_id,
            tenant_id,
        )
        if row is None:
            return None
        tenant, campaign, recipient = row["tenant_id"], row["campaign_id"], row["recipient_email"]
        await conn.execute(_SUPPRESS, tenant, recipient, source, f"delivery {delivery_id}")
        if campaign:
            await count(
                conn,
                tenant_id=tenant,
                campaign_id=campaign,
                metric=Metric.UNSUBSCRIBES,
                dedupe_key=f"delivery:{delivery_id}:unsubscribe",
            )
        new = await record_event(
            conn,
            tenant_id=tenant,
            event_type=EventType.UNSUBSCRIBED,
            subject_id=delivery_id,
            payload={
                "delivery_id": delivery_id,
                "campaign_id": campaign,
                "recipient": recipient,
                "source": source,
            },
            dedupe_key=f"unsubscribe:{delivery_id}",
        )
    return Unsubscribed(delivery_id, tenant, recipient, campaign, new)
