"""``campaign.process``: a campaign's list, minus suppressed addresses, becomes ``email.send``
jobs; then the campaign is watched until every send is final and marked ``sent``.

Exactly once, across re-runs and crashes:

- each send job has a stable id and idempotency key ``<campaign>:<contact>``, so even a job
  pushed twice sends once (the delivery row is unique per key);
- the list is streamed in contact-id order through a server-side cursor, and each batch's
  LPUSH and the fan-out cursor (``mailgate:fanout:<tenant>:<campaign>``: last contact id,
  pushed count, done) are written in one Redis MULTI: a crash between batches resumes after
  the last batch pushed, a crash inside one loses the whole batch's push and redoes it.

Only ``draft``, ``scheduled`` and ``sending`` campaigns are processed; any other status
(``paused``, ``cancelled``, ``sent``, ...) makes the job return at once.
Status: ``draft``/``scheduled`` → ``sending`` when fan-out starts; ``sending`` → ``sent``
once every delivery of the campaign is final and every pushed job has a final delivery or
was dead-lettered. Until then the job defers itself (:class:`~gateway.jobs.DeferJob`, no
attempt counted) and looks again. ``paused`` and ``cancelled`` campaigns push nothing (a
pause seen between batches stops the push; a later run resumes where it stopped), and the
send handler skips sends already queued for them.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any, Final

import asyncpg

from campaigns import CampaignJobError
from gateway.app import App
from gateway.events import EventType, record_event
from gateway.jobs import DeferJob
from gateway.jobs.contracts import (
    ANALYTICS,
    EMAIL_SENDING,
    AnalyticsPayload,
    CampaignPayload,
    EmailSendPayload,
    Payload,
    encode_job,
    encode_jobs,
)
from gateway.jobs.keys import job_key

log = logging.getLogger(__name__)

PUSH_BATCH: Final = 2000
FINAL_STATUSES: Final = ("sent", "failed", "bounced", "suppressed", "expired", "complained")
STOPPED: Final = ("paused", "cancelled")
STARTABLE: Final = ("draft", "scheduled")
STATE_TTL_S: Final = 90 * 86400

_MEMBERS = """
SELECT m.contact_id, c.email,
       EXISTS (SELECT 1 FROM suppressions s WHERE s.tenant_id = $1 AND s.email = lower(c.email)
               AND (s.expires_at IS NULL OR s.expires_at > now())) AS suppressed
FROM contact_list_members m
JOIN contacts c ON c.tenant_id = m.tenant_id AND c.id = m.contact_id
WHERE m.tenant_id = $1 AND m.list_id = $2 AND m.contact_id > $3
ORDER BY m.contact_id
"""

_PROGRESS = """
SELECT count(*) FILTER (WHERE status = ANY($3::text[])) AS final, count(*) AS total
FROM email_deliveries WHERE tenant_id = $1 AND campaign_id = $2
"""

_DEAD = """
SELECT count(*) FROM jobs WHERE tenant_id = $1 AND status = 'failed'
  AND queue_name LIKE 'queue:email-sending%' AND payload ->> 'campaign_id' = $2
"""


def state_key(tenant: str, campaign: str) -> str:
    return f"mailgate:fanout:{tenant}:{campaign}"


def send_job_id(campaign: str, contact: str) -> str:
    return f"{campaign}:{contact}"


@dataclass
class FanoutState:
    cursor: str = ""
    pushed: int = 0
    suppressed: int = 0
    done: bool = False

    @classmethod
    def parse(cls, raw: dict[Any, Any]) -> FanoutState:
        def get(name: str) -> str:
            value = raw.get(name.encode(), b"")
            return value.decode() if isinstance(value, bytes) else str(value)

        return cls(
            cursor=get("cursor"),
            pushed=int(get("pushed") or 0),
            suppressed=int(get("suppressed") or 0),
            done=get("done") == "1",
        )


class Fanout:
    """One ``campaign.process`` run."""

    def __init__(self, app: App, job_id: str, payload: CampaignPayload, batch: int = PUSH_BATCH):
        self.app = app
        self.job_id = job_id
        self.tenant = payload.tenant_id
        self.campaign = payload.campaign_id
        self.batch = batch
        self.key = state_key(self.tenant, self.campaign)

    async def _status(self, conn: asyncpg.Connection) -> tuple[str, str | None]:
        row = await conn.fetchrow(
            "SELECT status, list_id FROM campaigns WHERE tenant_id = $1 AND id = $2",
            self.tenant,
            self.campaign,
        )
        if row is None:
            raise CampaignJobError(
                f"campaign {self.campaign!r} does not exist for tenant {self.tenant!r}"
            )
        return str(row["status"]), row["list_id"]

    async def _move(self, conn: asyncpg.Connection, frm: tuple[str, ...], to: str) -> bool:
        async with conn.transaction():
            moved = await conn.fetchval(
                "UPDATE campaigns SET status = $4, updated_at = now()"
                " WHERE tenant_id = $1 AND id = $2 AND status = ANY($3::text[]) RETURNING 1",
                self.tenant,
                self.campaign,
                list(frm),
                to,
            )
            if moved:
                await record_event(
                    conn,
                    tenant_id=self.tenant,
                    event_type=EventType.CAMPAIGN_STATUS,
                    subject_id=self.campaign,
                    payload={"campaign_id": self.campaign, "status": to},
                    dedupe_key=f"campaign:{self.campaign}:{to}",
                )
        return moved is not None

    async def run(self) -> dict[str, Any]:
        async with self.app.db.acquire() as conn:
            status, list_id = await self._status(conn)
            state = FanoutState.parse(await self.app.redis.hgetall(self.key))
            if status not in (*STARTABLE, "sending"):
                # paused, cancelled, already sent, or a status the platform uses for
                # something else: nothing to push, nothing to wait for.
                return self._result(status, state)
            if list_id is None:
                raise CampaignJobError(
                    f"campaign {self.campaign!r} has no list (set campaigns.list_id)"
                )
            if status in STARTABLE:
                await self._move(conn, STARTABLE, "sending")
                status = "sending"
            if not state.done:
                state, status = await self._push(conn, list_id, state)
                if status in STOPPED:
                    return self._result(status, state)
            if status != "sent" and await self._complete(conn, state):
                if await self._move(conn, ("sending",), "sent"):
                    await self._refresh_analytics()
                status = "sent"
        if status != "sent":
            raise DeferJob(
                self.app.settings.campaign_complete_poll_s,
                "waiting for the campaign's sends to finish",
            )
        return self._result(status, state)

    async def _refresh_analytics(self) -> None:
        """A finished campaign's figures need not wait for the hourly aggregate: queue
        yesterday's and today's for the tenant now (stable ids: queued once)."""
        today = dt.datetime.now(dt.UTC).date()
        for day in (today - dt.timedelta(days=1), today):
            job_id = f"analytics:{self.tenant}:{day.isoformat()}:{self.campaign}"
            payload = AnalyticsPayload(tenant_id=self.tenant, day=day)
            await self.app.redis.lpush(ANALYTICS, encode_job(ANALYTICS, payload, id=job_id))

    def _result(self, status: str, state: FanoutState) -> dict[str, Any]:
        return {
            "campaign_id": self.campaign,
            "status": status,
            "pushed": state.pushed,
            "suppressed": state.suppressed,
        }

    async def _push(
        self, conn: asyncpg.Connection, list_id: str, state: FanoutState
    ) -> tuple[FanoutState, str]:
        """Stream the list after the cursor and push it, batch by batch."""
        status = "sending"
        async with conn.transaction(readonly=True, isolation="repeatable_read"):
            cursor = await conn.cursor(_MEMBERS, self.tenant, list_id, state.cursor)
            while True:
                rows = await cursor.fetch(self.batch)
                if not rows:
                    break
                sends: list[tuple[str, Payload]] = []
                suppressed = 0
                for row in rows:
                    if row["suppressed"]:
                        suppressed += 1
                        continue
                    payload = EmailSendPayload(
                        tenant_id=self.tenant,
                        campaign_id=self.campaign,
                        recipient_id=row["contact_id"],
                        recipient=row["email"],
                    )
                    sends.append((send_job_id(self.campaign, row["contact_id"]), payload))
                jobs = encode_jobs(EMAIL_SENDING, sends)
                state.cursor = rows[-1]["contact_id"]
                state.pushed += len(jobs)
                state.suppressed += suppressed
                pipe = self.app.redis.pipeline(transaction=True)
                if jobs:
                    pipe.lpush(EMAIL_SENDING, *jobs)
                pipe.hset(
                    self.key,
                    mapping={
                        "cursor": state.cursor,
                        "pushed": state.pushed,
                        "suppressed": state.suppressed,
                    },
                )
                pipe.expire(self.key, STATE_TTL_S)
                pipe.hset(job_key(self.job_id), mapping={"progress": state.pushed})
                await pipe.execute()
                # A pause or cancel stops the push between batches (a fresh read).
                current = await self.app.db.fetchval(
                    "SELECT status FROM campaigns WHERE tenant_id = $1 AND id = $2",
                    self.tenant,
                    self.campaign,
                )
                if current in STOPPED:
                    return state, str(current)
        state.done = True
        await self.app.redis.hset(self.key, mapping={"done": 1})
        return state, status

    async def _complete(self, conn: asyncpg.Connection, state: FanoutState) -> bool:
        """Every delivery final, and every pushed job accounted for."""
        row = await conn.fetchrow(_PROGRESS, self.tenant, self.campaign, list(FINAL_STATUSES))
        if row["final"] != row["total"]:
            return False
        dead = await conn.fetchval(_DEAD, self.tenant, self.campaign)
        return int(row["final"]) + int(dead) >= state.pushed
