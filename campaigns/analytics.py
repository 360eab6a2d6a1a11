"""``analytics:daily-aggregate``: one UTC day's ``analytics_daily`` rows recomputed from the
facts, idempotently (the day's rows are deleted and inserted again in one transaction, so
the same facts give the same rows whatever ran before).

What counts where (per tenant, day, campaign, sending account; ``''`` for none):

- ``sent``, ``delivered``: deliveries the next hop accepted (2xx; ``sent_at`` that day).
  ``delivered`` means accepted by the next hop: a later bounce is counted in
  ``bounced_*`` without being taken out of ``delivered``.
- ``failed``: deliveries that ended ``failed`` (created that day).
- ``bounced_hard``, ``bounced_soft``, ``complaints``: ``bounce_reports`` of that day.
- ``replies``, ``auto_replies``: ``email_messages`` of type ``reply`` / ``auto_reply``
  stored that day, attributed through their delivery.
- ``unsubscribes``: ``suppressions`` with reason ``unsubscribe`` created that day (no
  campaign: they count under ``''``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from gateway.app import App
from gateway.jobs.contracts import AnalyticsPayload

_AGGREGATE = """
WITH bounds AS (SELECT $1::date::timestamptz AS lo, ($1::date + 1)::timestamptz AS hi),
facts AS (
    SELECT d.tenant_id, coalesce(d.campaign_id, '') AS campaign_id,
           coalesce(d.email_account_id, '') AS account,
           1 AS sent, 1 AS delivered, 0 AS failed, 0 AS bh, 0 AS bs, 0 AS co, 0 AS re,
           0 AS ar, 0 AS un
    FROM email_deliveries d, bounds
    WHERE d.sent_at IS NOT NULL
      AND coalesce(d.sent_at, d.created_at) >= bounds.lo
      AND coalesce(d.sent_at, d.created_at) < bounds.hi
      AND ($2::text IS NULL OR d.tenant_id = $2)
    UNION ALL
    SELECT d.tenant_id, coalesce(d.campaign_id, ''), coalesce(d.email_account_id, ''),
           0, 0, 1, 0, 0, 0, 0, 0, 0
    FROM email_deliveries d, bounds
    WHERE d.status = 'failed' AND d.sent_at IS NULL
      AND coalesce(d.sent_at, d.created_at) >= bounds.lo
      AND coalesce(d.sent_at, d.created_at) < bounds.hi
      AND ($2::text IS NULL OR d.tenant_id = $2)
    UNION ALL
    SELECT b.tenant_id, coalesce(b.campaign_id, d.campaign_id, ''),
           coalesce(d.email_account_id, ''),
           0, 0, 0, (b.outcome = 'bounced_hard')::int, (b.outcome = 'bounced_soft')::int,
           (b.outcome = 'complaint')::int, 0, 0, 0
    FROM bounce_reports b CROSS JOIN bounds
    LEFT JOIN email_deliveries d ON d.tenant_id = b.tenant_id AND d.id = b.delivery_id
    WHERE b.created_at >= bounds.lo AND b.created_at < bounds.hi
      AND b.outcome IN ('bounced_hard', 'bounced_soft', 'complaint')
      AND ($2::text IS NULL OR b.tenant_id = $2)
    UNION ALL
    SELECT m.tenant_id, coalesce(d.campaign_id, ''),
           coalesce(d.email_account_id, m.email_account_id, ''),
           0, 0, 0, 0, 0, 0, (m.message_type = 'reply')::int,
           (m.message_type = 'auto_reply')::int, 0
    FROM email_messages m CROSS JOIN bounds
    LEFT JOIN email_deliveries d ON d.tenant_id = m.tenant_id AND d.id = m.delivery_id
    WHERE m.created_at >= bounds.lo AND m.created_at < bounds.hi
      AND m.message_type IN ('reply', 'auto_reply') AND m.direction = 'inbound'
      AND ($2::text IS NULL OR m.tenant_id = $2)
    UNION ALL
    SELECT s.tenant_id, '', '', 0, 0, 0, 0, 0, 0, 0, 0, 1
    FROM suppressions s, bounds
    WHERE s.reason = 'unsubscribe' AND s.created_at >= bounds.lo AND s.created_at < bounds.hi
      AND ($2::text IS NULL OR s.tenant_id = $2)
)
INSERT INTO analytics_daily (tenant_id, day, campaign_id, email_account_id, sent, delivered,
    failed, bounced_hard, bounced_soft, complaints, replies, auto_replies, unsubscribes)
SELECT tenant_id, $1::date, campaign_id, account, sum(sent), sum(delivered), sum(failed),
       sum(bh), sum(bs), sum(co), sum(re), sum(ar), sum(un)
FROM facts GROUP BY tenant_id, campaign_id, account
"""


def default_day(now: dt.datetime | None = None) -> dt.date:
    """Yesterday, UTC."""
    return ((now or dt.datetime.now(dt.UTC)) - dt.timedelta(days=1)).date()


async def aggregate_day(app: App, day: dt.date, tenant_id: str | None) -> dict[str, Any]:
    """Recompute ``day`` (for one tenant, or all); the number of rows written."""
    async with app.db.acquire() as conn, conn.transaction():
        # One aggregate of a day at a time: two concurrent runs would both delete, then
        # both insert (a unique violation for the second).
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('analytics:' || $1))", str(day))
        await conn.execute(
            "DELETE FROM analytics_daily WHERE day = $1 AND ($2::text IS NULL OR tenant_id = $2)",
            day,
            tenant_id,
        )
        status = await conn.execute(_AGGREGATE, day, tenant_id)
    rows = int(status.split()[-1])
    return {"day": day.isoformat(), "tenant_id": tenant_id, "rows": rows}


async def run_aggregate(app: App, payload: AnalyticsPayload) -> dict[str, Any]:
    return await aggregate_day(app, payload.day or default_day(), payload.tenant_id)
