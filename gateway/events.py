"""The one writer of facts: ``events`` (the outbox webhooks read) and ``campaign_metrics``.

Every component that records something happened calls :func:`record_event`, and every
campaign counter moves through :func:`count`. Both take a dedupe key naming the fact
(``bounce:<report>``, ``ingest:reply:<storage key>``, ...): a fact recorded twice (a
replayed report, a job run again after a crash) lands once, and a counter counts it once
(:data:`metric_facts` keeps the keys counted). Both run on the caller's connection, inside
its transaction, so the fact and the change it describes commit together.

Event types are the names webhooks deliver (:class:`EventType`); payloads are JSON objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Any

import asyncpg

from gateway.storage import jsonable


class EventType(StrEnum):
    """What ``events.type`` may say (the webhook event names)."""

    RECEIVED = "email.received"
    REPLIED = "email.replied"
    AUTO_REPLIED = "email.auto_replied"
    SENT = "email.sent"
    DELIVERED = "email.delivered"
    DEFERRED = "email.deferred"
    BOUNCED = "email.bounced"
    COMPLAINED = "email.complained"
    UNSUBSCRIBED = "email.unsubscribed"
    CAMPAIGN_STATUS = "campaign.status_changed"
    ACCOUNT_PAUSED = "account.paused"
    ACCOUNT_RESUMED = "account.resumed"
    IMPORT_COMPLETED = "import.completed"
    EXPORT_COMPLETED = "export.completed"
    WARMUP_PLACEMENT = "warmup.placement"
    WARMUP_PAUSED = "warmup.paused"
    # A webhook endpoint disabled (410 Gone, or failing for days), and why.
    WEBHOOK_DISABLED = "webhook.endpoint_disabled"
    # Kept for operators and audits; not facts about a delivery.
    BOUNCE_IGNORED = "bounce.ignored"
    BOUNCE_UNATTRIBUTED = "bounce.unattributed"


class Metric(StrEnum):
    """The counters of ``campaign_metrics`` (one column each)."""

    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"
    BOUNCED_HARD = "bounced_hard"
    BOUNCED_SOFT = "bounced_soft"
    COMPLAINTS = "complaints"
    REPLIES = "replies"
    AUTO_REPLIES = "auto_replies"
    UNSUBSCRIBES = "unsubscribes"
    SUPPRESSED = "suppressed"


_INSERT_EVENT = """
INSERT INTO events (tenant_id, type, subject_id, payload, dedupe_key)
VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, dedupe_key) DO NOTHING RETURNING id
"""


async def record_event(
    conn: asyncpg.Connection,
    *,
    tenant_id: str,
    event_type: EventType,
    subject_id: str | None,
    payload: dict[str, Any],
    dedupe_key: str,
) -> bool:
    """Add an event to the outbox once per (tenant, dedupe key); True when it is new."""
    inserted = await conn.fetchval(
        _INSERT_EVENT, tenant_id, event_type.value, subject_id, jsonable(payload), dedupe_key
    )
    return inserted is not None


_INSERT_EVENTS = """
INSERT INTO events (tenant_id, type, subject_id, payload, dedupe_key)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[], $5::text[])
ON CONFLICT (tenant_id, dedupe_key) DO NOTHING
"""


async def record_events(
    conn: asyncpg.Connection | asyncpg.Pool,
    events: Sequence[tuple[str, EventType, str | None, dict[str, Any], str]],
) -> None:
    """Many events in one statement (a batch of sends): each ``(tenant, type, subject,
    payload, dedupe key)``, once per (tenant, dedupe key) like :func:`record_event`."""
    if not events:
        return
    await conn.execute(
        _INSERT_EVENTS,
        [e[0] for e in events],
        [e[1].value for e in events],
        [e[2] for e in events],
        [jsonable(e[3]) for e in events],
        [e[4] for e in events],
    )


# One statement: the fact row, and the counter only if the fact was new. The column name
# comes from Metric (a fixed set), never from input.
_COUNT = """
WITH fact AS (
    INSERT INTO metric_facts (tenant_id, dedupe_key, campaign_id, metric)
    VALUES ($1, $2, $3, '{column}') ON CONFLICT DO NOTHING RETURNING 1
)
INSERT INTO campaign_metrics (tenant_id, campaign_id, {column})
SELECT $1, $3, $4 FROM fact
ON CONFLICT (tenant_id, campaign_id) DO UPDATE
    SET {column} = campaign_metrics.{column} + EXCLUDED.{column}, updated_at = now()
RETURNING 1
"""
_COUNT_SQL = {m: _COUNT.format(column=m.value) for m in Metric}


async def count(
    conn: asyncpg.Connection,
    *,
    tenant_id: str,
    campaign_id: str,
    metric: Metric,
    dedupe_key: str,
    by: int = 1,
) -> bool:
    """Add ``by`` to one campaign counter once per (tenant, dedupe key); True if counted."""
    counted = await conn.fetchval(_COUNT_SQL[metric], tenant_id, dedupe_key, campaign_id, by)
    return counted is not None


_RECENT = """
SELECT coalesce(payload ->> $2, 'unknown') AS value, count(*) AS n FROM events
WHERE type = $1 AND created_at > now() - make_interval(secs => $3)
  AND ($4::text IS NULL OR tenant_id = $4)
GROUP BY 1 ORDER BY 2 DESC LIMIT 50
"""


async def recent_counts(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    event_type: EventType,
    field: str,
    since_s: float,
    tenant_id: str | None = None,
) -> dict[str, int]:
    """Events of one type in the last ``since_s`` seconds, counted by a payload field
    (every tenant, or one): what the dashboard shows of, e.g., warmup placement."""
    rows = await conn.fetch(_RECENT, event_type.value, field, since_s, tenant_id)
    return {str(r["value"]): int(r["n"]) for r in rows}
