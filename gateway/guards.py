"""Deliverability guards: pause an account or a campaign before its reputation burns.

Three guards, each over a rolling window of the latest deliveries that got an answer
(``sent``, ``bounced``, ``complained``, ``failed``) of the account, and of the campaign:

* ``hard_bounce_rate``: hard bounces among the last ``guard_bounce_window`` sends (200)
  at or over ``guard_bounce_rate`` (5 %);
* ``complaint_rate``: complaints among the last ``guard_complaint_window`` (1,000) at or
  over ``guard_complaint_rate`` (0.3 %, Gmail's threshold);
* ``policy_blocks`` (accounts): the last ``guard_policy_blocks`` sends to one destination
  domain all refused with a 5xx policy reason (blocked, spam, policy, authentication).

A window with fewer sends than its size counts as full (the rate's denominator is the
window size), so a young account needs as many bounces as a full window would (10 of
200) and one early bounce never pauses it. After a resume, only sends made since count.

Who calls what: bounce processing calls :func:`check` after it records a bounce or a
complaint (the moment a rate moves); delivery reads :func:`pause_of` before each send and
holds (defers) the sends of a paused account or campaign, which are kept, not lost;
``mailgate accounts resume`` and ``mailgate campaigns resume`` call :func:`resume` (with
``force`` when a rate is still over its threshold) and bring the held sends forward.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import asyncpg
from prometheus_client import CollectorRegistry, Counter
from redis.asyncio import Redis

from gateway.events import EventType, record_event
from gateway.settings import Settings

log = logging.getLogger(__name__)

GUARDS = ("hard_bounce_rate", "complaint_rate", "policy_blocks")
#: Reasons (bounce classification's vocabulary) that say "refused by policy", not "no such
#: mailbox": a run of them from one domain is a block of the sender, not of a recipient.
POLICY_REASONS = frozenset(
    {"blocked", "policyviolation", "spamdetected", "securityerror", "authfailure", "requireptr"}
)
ANSWERED = ("sent", "bounced", "complained", "failed")


@dataclass(frozen=True)
class Thresholds:
    bounce_window: int
    bounce_rate: float
    complaint_window: int
    complaint_rate: float
    policy_blocks: int

    @classmethod
    def of(cls, s: Settings) -> Thresholds:
        return cls(
            s.guard_bounce_window,
            s.guard_bounce_rate,
            s.guard_complaint_window,
            s.guard_complaint_rate,
            s.guard_policy_blocks,
        )


@dataclass(frozen=True)
class Window:
    """What the latest deliveries of an account or campaign say."""

    bounce_sends: int = 0
    hard_bounces: int = 0
    complaint_sends: int = 0
    complaints: int = 0
    policy_run: int = 0  # consecutive latest policy refusals from one domain
    policy_domain: str | None = None


@dataclass(frozen=True)
class Trip:
    guard: str
    rate: float
    reason: str


def decide(window: Window, t: Thresholds, *, policy: bool = True) -> Trip | None:
    """The first guard the window trips, or None (pure)."""
    hard = window.hard_bounces / max(window.bounce_sends, t.bounce_window)
    if window.hard_bounces and hard >= t.bounce_rate:
        return Trip(
            "hard_bounce_rate",
            hard,
            f"hard-bounce rate {hard:.1%} over the last {max(window.bounce_sends, t.bounce_window)}"
            f" sends ({window.hard_bounces} hard bounces; threshold {t.bounce_rate:.1%})",
        )
    complaint = window.complaints / max(window.complaint_sends, t.complaint_window)
    if window.complaints and complaint >= t.complaint_rate:
        return Trip(
            "complaint_rate",
            complaint,
            f"complaint rate {complaint:.2%} over the last "
            f"{max(window.complaint_sends, t.complaint_window)} sends ({window.complaints} "
            f"complaints; threshold {t.complaint_rate:.2%})",
        )
    if policy and window.policy_run >= t.policy_blocks:
        return Trip(
            "policy_blocks",
            float(window.policy_run),
            f"{window.policy_run} consecutive 5xx policy blocks from {window.policy_domain}",
        )
    return None


_COLUMN = {"account": "email_account_id", "campaign": "campaign_id"}

# The latest answered deliveries of one account or campaign since its last resume: the
# hard bounces among the first $4, the complaints among the first $5.
_WINDOW = """
WITH recent AS (
    SELECT status, bounce_type, row_number() OVER (ORDER BY created_at DESC) AS n
    FROM email_deliveries d
    WHERE d.tenant_id = $1 AND d.{column} = $2 AND d.status = ANY($6::text[])
      AND d.created_at > coalesce($3::timestamptz, '-infinity'::timestamptz)
    ORDER BY created_at DESC LIMIT greatest($4::int, $5::int)
)
SELECT count(*) FILTER (WHERE n <= $4::int) AS bounce_sends,
       count(*) FILTER (WHERE n <= $4::int AND bounce_type = 'hard') AS hard_bounces,
       count(*) FILTER (WHERE n <= $5::int) AS complaint_sends,
       count(*) FILTER (WHERE n <= $5::int AND status = 'complained') AS complaints
FROM recent
"""
_WINDOW_SQL = {scope: _WINDOW.format(column=col) for scope, col in _COLUMN.items()}

_POLICY_RUN = """
SELECT status, smtp_code, bounce_reason FROM email_deliveries
WHERE tenant_id = $1 AND email_account_id = $2 AND status = ANY($6::text[])
  AND lower(split_part(recipient_email, '@', 2)) = $3
  AND created_at > coalesce($4::timestamptz, '-infinity'::timestamptz)
ORDER BY created_at DESC LIMIT $5::int
"""


async def window_of(
    conn: asyncpg.Connection | asyncpg.Pool,
    t: Thresholds,
    tenant: str,
    scope: str,
    subject_id: str,
    *,
    domain: str | None = None,
) -> Window:
    """The rolling window of an account or campaign (since its last resume)."""
    since = await conn.fetchval(
        "SELECT resumed_at FROM sending_pauses WHERE tenant_id = $1 AND scope = $2"
        " AND subject_id = $3",
        tenant,
        scope,
        subject_id,
    )
    row = await conn.fetchrow(
        _WINDOW_SQL[scope],
        tenant,
        subject_id,
        since,
        t.bounce_window,
        t.complaint_window,
        list(ANSWERED),
    )
    run = 0
    if scope == "account" and domain:
        rows = await conn.fetch(
            _POLICY_RUN, tenant, subject_id, domain.lower(), since, t.policy_blocks, list(ANSWERED)
        )
        for r in rows:
            if (
                r["status"] in ("bounced", "failed")
                and (r["bounce_reason"] or "") in POLICY_REASONS
            ):
                run += 1
            else:
                break
    return Window(
        int(row["bounce_sends"]),
        int(row["hard_bounces"]),
        int(row["complaint_sends"]),
        int(row["complaints"]),
        run,
        domain,
    )


class GuardMetrics:
    """One counter per guard (trips, by scope)."""

    def __init__(self, registry: CollectorRegistry):
        self.trips = {
            guard: Counter(
                f"guard_{guard}_trips_total",
                f"Accounts and campaigns paused by the {guard.replace('_', ' ')} guard.",
                ["scope"],
                registry=registry,
            )
            for guard in GUARDS
        }


_METRICS: dict[int, GuardMetrics] = {}


def metrics_for(registry: CollectorRegistry) -> GuardMetrics:
    """The guard counters on ``registry`` (made once per registry)."""
    found = _METRICS.get(id(registry))
    if found is None:
        found = _METRICS[id(registry)] = GuardMetrics(registry)
    return found


_PAUSE = """
INSERT INTO sending_pauses (tenant_id, scope, subject_id, guard, reason, rate, previous_status)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (tenant_id, scope, subject_id) DO UPDATE SET
    paused = true, guard = EXCLUDED.guard, reason = EXCLUDED.reason, rate = EXCLUDED.rate,
    paused_at = now(), previous_status = EXCLUDED.previous_status
WHERE NOT sending_pauses.paused
RETURNING 1
"""


async def pause(
    conn: asyncpg.Connection, tenant: str, scope: str, subject_id: str, trip: Trip
) -> bool:
    """Pause an account or campaign with its reason and event; False if already paused."""
    async with conn.transaction():
        previous = None
        if scope == "campaign":
            previous = await conn.fetchval(
                "SELECT status FROM campaigns WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
                tenant,
                subject_id,
            )
        done = await conn.fetchval(
            _PAUSE, tenant, scope, subject_id, trip.guard, trip.reason, trip.rate, previous
        )
        if done is None:
            return False
        stamp = int(time.time() * 1000)
        if scope == "campaign":
            await conn.execute(
                "UPDATE campaigns SET status = 'paused', updated_at = now()"
                " WHERE tenant_id = $1 AND id = $2",
                tenant,
                subject_id,
            )
            await record_event(
                conn,
                tenant_id=tenant,
                event_type=EventType.CAMPAIGN_STATUS,
                subject_id=subject_id,
                payload={
                    "campaign_id": subject_id,
                    "status": "paused",
                    "previous_status": previous,
                    "guard": trip.guard,
                    "reason": trip.reason,
                },
                dedupe_key=f"guard:campaign:{subject_id}:paused:{stamp}",
            )
        else:
            await record_event(
                conn,
                tenant_id=tenant,
                event_type=EventType.ACCOUNT_PAUSED,
                subject_id=subject_id,
                payload={
                    "email_account_id": subject_id,
                    "guard": trip.guard,
                    "reason": trip.reason,
                },
                dedupe_key=f"guard:account:{subject_id}:paused:{stamp}",
            )
    log.warning("%s %s paused: %s", scope, subject_id, trip.reason, extra={"tenant_id": tenant})
    return True


async def check(
    conn: asyncpg.Connection,
    settings: Settings,
    tenant: str,
    *,
    account_id: str | None,
    campaign_id: str | None,
    domain: str | None,
    registry: CollectorRegistry | None = None,
) -> list[tuple[str, str, Trip]]:
    """Evaluate the guards of an account and a campaign; pause what trips. Returns the
    pauses made now as (scope, id, trip)."""
    t = Thresholds.of(settings)
    made = []
    for scope, subject in (("account", account_id), ("campaign", campaign_id)):
        if not subject:
            continue
        window = await window_of(conn, t, tenant, scope, subject, domain=domain)
        trip = decide(window, t, policy=scope == "account")
        if trip is not None and await pause(conn, tenant, scope, subject, trip):
            made.append((scope, subject, trip))
            if registry is not None:
                metrics_for(registry).trips[trip.guard].labels(scope).inc()
    return made


@dataclass(frozen=True)
class Pause:
    scope: str
    subject_id: str
    guard: str
    reason: str


async def pause_of(
    conn: asyncpg.Connection | asyncpg.Pool,
    tenant: str,
    account_id: str | None,
    campaign_id: str | None,
) -> Pause | None:
    """The pause that holds a send of this account or campaign, if any."""
    row = await conn.fetchrow(
        "SELECT scope, subject_id, guard, reason FROM sending_pauses WHERE tenant_id = $1"
        " AND paused AND ((scope = 'account' AND subject_id = $2)"
        " OR (scope = 'campaign' AND subject_id = $3)) ORDER BY scope LIMIT 1",
        tenant,
        account_id,
        campaign_id,
    )
    return Pause(**dict(row)) if row else None


class StillOverThreshold(Exception):
    """A resume without force while a guard would still trip."""


async def resume(
    conn: asyncpg.Connection,
    settings: Settings,
    tenant: str,
    scope: str,
    subject_id: str,
    *,
    force: bool,
) -> Pause | None:
    """Resume a paused account or campaign; None when it was not paused. Raises
    :class:`StillOverThreshold` when a guard still trips and ``force`` is not given."""
    async with conn.transaction():
        row = await conn.fetchrow(
            "SELECT scope, subject_id, guard, reason, previous_status FROM sending_pauses"
            " WHERE tenant_id = $1 AND scope = $2 AND subject_id = $3 AND paused FOR UPDATE",
            tenant,
            scope,
            subject_id,
        )
        if row is None:
            return None
        if not force:
            t = Thresholds.of(settings)
            window = await window_of(conn, t, tenant, scope, subject_id)
            trip = decide(window, t, policy=False)
            if trip is not None:
                raise StillOverThreshold(trip.reason)
        await conn.execute(
            "UPDATE sending_pauses SET paused = false, resumed_at = now()"
            " WHERE tenant_id = $1 AND scope = $2 AND subject_id = $3",
            tenant,
            scope,
            subject_id,
        )
        stamp = int(time.time() * 1000)
        if scope == "campaign":
            status = row["previous_status"] or "active"
            await conn.execute(
                "UPDATE campaigns SET status = $3, updated_at = now()"
                " WHERE tenant_id = $1 AND id = $2 AND status = 'paused'",
                tenant,
                subject_id,
                status,
            )
            event, payload = (
                EventType.CAMPAIGN_STATUS,
                {"campaign_id": subject_id, "status": status, "previous_status": "paused"},
            )
        else:
            event, payload = EventType.ACCOUNT_RESUMED, {"email_account_id": subject_id}
        await record_event(
            conn,
            tenant_id=tenant,
            event_type=event,
            subject_id=subject_id,
            payload={**payload, "forced": force},
            dedupe_key=f"guard:{scope}:{subject_id}:resumed:{stamp}",
        )
    return Pause(row["scope"], row["subject_id"], row["guard"], row["reason"])


async def release_held(
    redis: Redis, queues: tuple[str, ...], tenant: str, *, now_s: float | None = None
) -> int:
    """Bring the tenant's held sends (deferred in ``queue:delayed``) forward to now, so a
    resume takes effect at once; a send still paused is held again. Returns how many."""
    from gateway.jobs import keys

    now_ms = int((now_s if now_s is not None else time.time()) * 1000)
    moved = 0
    cursor = 0
    while True:
        cursor, members = await redis.zscan(keys.DELAYED, cursor, count=500)
        for member, score in members:
            if not isinstance(member, bytes) or float(score) <= now_ms:
                continue
            queue, raw = keys.split_delayed_member(member)
            if queue not in queues or not _tenant_is(raw, tenant):
                continue
            changed: Any = await redis.zadd(keys.DELAYED, {member: now_ms}, xx=True, ch=True)
            moved += int(changed or 0)
        if cursor == 0:
            return moved


def _tenant_is(raw: bytes, tenant: str) -> bool:
    try:
        job: Any = json.loads(raw)
    except ValueError:
        return False
    payload = job.get("payload") if isinstance(job, dict) else None
    return isinstance(payload, dict) and payload.get("tenant_id") == tenant
