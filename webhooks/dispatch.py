"""The outbox reader: events, in order, fanned out to the endpoints subscribed to them as
``queue:webhook:process`` jobs (a daemon component, entry point ``webhooks``).

One round, in ONE transaction: take the oldest undispatched events (``dispatched_at IS
NULL``, by id, ``FOR UPDATE SKIP LOCKED`` so several instances share the outbox without
taking the same event), find the tenants' enabled endpoints that want each type, push one
job per endpoint and run of up to :data:`EVENTS_PER_JOB` of its events (LPUSH in event
order: the worker takes the oldest first), mark the events dispatched and move each tenant's
outbox cursor, then commit.

No ``webhook_deliveries`` row is written here: the handler writes a delivery's row with its
first attempt (or when it drops or fails it), so a queued delivery not yet attempted has no
row, and a delivered one is never sent again. Writing a 'pending' row per (event, endpoint)
at dispatch cost a write per event that nothing read (bench/webhooks.py).

A job per batch rather than per (event, endpoint): the job runtime's cost of a job (take,
validate, tracking, finish: about one bare POST of CPU) is then paid once per batch, not per
event (bench/webhooks.py). The handler POSTs each event of the batch on its own (Standard
Webhooks: one event per request, its own ``webhook-id``); an event that fails continues as
a one-event job of its own, so retries, dead letters and metrics stay per event.

The push happens before the commit: a process killed in between leaves the events
undispatched, and the next round pushes their jobs again, with the same ``webhook-id`` per
event (at least once); a job finding a delivery already delivered sends nothing for it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

from gateway.app import App
from gateway.jobs.contracts import WEBHOOK, WebhookPayload, encode_jobs
from gateway.services import Service, Services
from gateway.tasks import cancel_and_wait
from webhooks.sender import SENDER

log = logging.getLogger(__name__)

# Events of one endpoint per job: enough that the runtime's per-job cost is small beside
# the POSTs, few enough that a batch ends well within the family's time limit (the handler
# also hands what it has not started by then to one-event jobs).
EVENTS_PER_JOB = 100

_TAKE = """
SELECT id, tenant_id, type, created_at FROM events WHERE dispatched_at IS NULL
ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
"""
_ENDPOINTS = """
SELECT id, tenant_id, event_types, created_at FROM webhook_endpoints
WHERE enabled AND tenant_id = ANY($1::text[]) ORDER BY created_at, id
"""

_CURSOR = """
INSERT INTO outbox_cursor (tenant_id, name, last_event_id)
SELECT t, 'webhooks', e FROM unnest($1::text[], $2::bigint[]) AS v(t, e)
ON CONFLICT (tenant_id, name) DO UPDATE
    SET last_event_id = greatest(outbox_cursor.last_event_id, EXCLUDED.last_event_id),
        updated_at = now()
"""


def batch_job_id(event_ids: list[int], endpoint_id: str) -> str:
    """The job of a batch: its first and last events and its size name it, so a round
    pushed again after a crash (the same events) gets the same id."""
    return f"whb-{event_ids[0]}-{event_ids[-1]}-{len(event_ids)}-{endpoint_id}"


def batches(pairs: list[tuple[int, str, str]], size: int) -> list[tuple[str, str, list[int]]]:
    """(tenant, endpoint id, event ids) per run of up to ``size`` events of one endpoint,
    ordered by their first event (pure; ``pairs`` in event order, as :func:`fan_out`
    gives them)."""
    open_: dict[tuple[str, str], list[int]] = {}
    out: list[tuple[str, str, list[int]]] = []
    for event_id, tenant, endpoint_id in pairs:
        key = (tenant, endpoint_id)
        ids = open_.get(key)
        if ids is None or len(ids) >= size:
            ids = open_[key] = []
            out.append((tenant, endpoint_id, ids))
        ids.append(event_id)
    return out


def fan_out(
    events: list[tuple[int, str, str, dt.datetime]],
    endpoints: list[tuple[str, str, list[str], dt.datetime]],
) -> list[tuple[int, str, str]]:
    """(event id, tenant, endpoint id) for each endpoint of the event's tenant that wants
    its type and existed when it was recorded (an endpoint added later does not receive
    older events; ``mailgate webhooks replay`` sends them), in event order (pure)."""
    by_tenant: dict[str, list[tuple[str, list[str], dt.datetime]]] = {}
    for endpoint_id, tenant, types, added in endpoints:
        by_tenant.setdefault(tenant, []).append((endpoint_id, types, added))
    out = []
    for event_id, tenant, event_type, recorded in events:
        for endpoint_id, types, added in by_tenant.get(tenant, ()):
            if ("*" in types or event_type in types) and recorded >= added:
                out.append((event_id, tenant, endpoint_id))
    return out


class Dispatcher:
    """Reads the outbox until stopped; :meth:`dispatch_once` is one round (tests call it)."""

    name = "webhooks"
    needs: tuple[Service[Any], ...] = (SENDER,)

    def __init__(self, app: App, max_attempts: int):
        self.app = app
        self.batch = app.settings.webhook_dispatch_batch
        self.idle_s = app.settings.webhook_dispatch_idle_s
        self.max_attempts = max_attempts
        self.events_per_job = EVENTS_PER_JOB
        self._task: asyncio.Task[None] | None = None
        self._started = False
        self.dispatched = 0

    async def dispatch_once(self) -> int:
        """One round; returns how many events it took."""
        async with self.app.db.acquire() as conn, conn.transaction():
            rows = await conn.fetch(_TAKE, self.batch)
            if not rows:
                return 0
            events = [(r["id"], r["tenant_id"], r["type"], r["created_at"]) for r in rows]
            tenants = sorted({e[1] for e in events})
            endpoints = [
                (r["id"], r["tenant_id"], list(r["event_types"]), r["created_at"])
                for r in await conn.fetch(_ENDPOINTS, tenants)
            ]
            pairs = fan_out(events, endpoints)
            ids = [e[0] for e in events]
            await conn.execute(
                "UPDATE events SET dispatched_at = now() WHERE id = ANY($1::bigint[])", ids
            )
            highest: dict[str, int] = {}
            for event_id, tenant, _, _ in events:
                highest[tenant] = max(highest.get(tenant, 0), event_id)
            await conn.execute(_CURSOR, list(highest), list(highest.values()))
            if pairs:
                await self.app.redis.lpush(WEBHOOK, *self.jobs(pairs))
        self.dispatched += len(pairs)
        return len(rows)

    def jobs(self, pairs: list[tuple[int, str, str]]) -> list[bytes]:
        """The round's jobs, one per endpoint and batch of its events, in event order."""
        return encode_jobs(
            WEBHOOK,
            [
                (
                    batch_job_id(ids, endpoint_id),
                    WebhookPayload(
                        tenant_id=tenant, endpoint_id=endpoint_id, event_ids=[str(e) for e in ids]
                    ),
                )
                for tenant, endpoint_id, ids in batches(pairs, self.events_per_job)
            ],
            max_attempts=self.max_attempts,
        )

    async def _loop(self) -> None:
        while True:
            try:
                taken = await self.dispatch_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # logged; the next round tries again
                log.exception("webhook dispatch round failed")
                taken = 0
            if taken < self.batch:
                await asyncio.sleep(self.idle_s)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="webhook-dispatch")
        self._started = True

    async def stop(self, deadline: float) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])
            self._task = None

    def ready(self) -> bool:
        return self._started and self._task is not None and not self._task.done()


def create(app: App, services: Services) -> Dispatcher:
    """Entry point (group ``mailgate.components``)."""
    return Dispatcher(app, services.get(SENDER).max_attempts)
