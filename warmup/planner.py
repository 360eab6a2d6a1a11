"""The warmup planner: every ``warmup_tick_s``, plan each active account's sends that are
due and queue their ``outbound`` steps. A daemon component (entry point ``warmup``) of which
one instance is active at a time (a Redis lease, taken and renewed each tick), and the
``mailgate warmup tick`` command (``--now-all``: today's whole remaining quota at once).

Per sender, in ONE transaction under a row lock on its config (:func:`store.lock_config`):
count today's planned rows, compare with the due part of today's schedule
(:func:`warmup.plan.schedule`), and insert what is missing, each with a receiver from the
pool and a reply decision. The quota can therefore not be exceeded by two instances, a CLI
tick and the daemon together, or by a restart: the count is in PostgreSQL. Jobs are queued
after the commit; a row whose job was lost (a crash between the two) is queued again by a
later tick once it is ``REQUEUE_AFTER_S`` old and still unclaimed.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from delivery.compose import domain_of
from gateway.app import App
from gateway.events import EventType, record_event
from gateway.jobs.contracts import WARMUP, encode_job
from gateway.services import Services
from gateway.tasks import cancel_and_wait
from gateway.warmupmark import WarmupMarker
from warmup import content, plan, store
from warmup.steps import outbound_payload

log = logging.getLogger(__name__)

LEASE_KEY = "mailgate:warmup:planner"  # not tenant data: the one active planner's lease
REQUEUE_AFTER_S = 600.0


@dataclass(frozen=True)
class Planned:
    """A row just planned: what its outbound job names."""

    tenant_id: str
    id: str
    from_account_id: str


def pool_members(sender: store.Config, configs: list[store.Config]) -> list[plan.Member]:
    """The sender's pool out of every config (see :func:`store.pool_of`), in memory."""
    if sender.pool == "network":
        chosen = [c for c in configs if c.pool == "network"]
    else:
        chosen = [c for c in configs if c.tenant_id == sender.tenant_id]
    return [c.member for c in chosen if c.active and c.has_imap]


def _times(app: App, cfg: store.Config, day: dt.date) -> list[dt.datetime]:
    account_limit = app.settings.delivery_account_per_day or None
    quota = plan.quota(cfg.ramp, day, account_limit)
    return plan.schedule(quota, day, cfg.window, f"{cfg.tenant_id}:{cfg.account_id}")


async def plan_sender(
    app: App,
    cfg: store.Config,
    now: dt.datetime,
    *,
    all_now: bool,
    limit: int | None = None,
    rng: random.Random | None = None,
    members: list[plan.Member] | None = None,
) -> list[Planned]:
    """Plan the sender's due sends (all of today's with ``all_now``), at most ``limit``,
    in one transaction under the lock on its config row; the new rows (their outbound jobs
    are queued by the caller, after the commit). ``members``: the pool, when the caller
    has it already."""
    rng = rng or random.Random()
    day = cfg.window.local_day(now)
    times = _times(app, cfg, day)
    if members is None:
        members = [c.member for c in await store.pool_of(app.db, cfg)]
    marker = WarmupMarker(app.secret_key)
    domain = domain_of(cfg.address)
    values: list[tuple[object, ...]] = []
    async with app.db.acquire() as conn, conn.transaction():
        if not await store.lock_config(conn, cfg.tenant_id, cfg.account_id):
            return []
        planned = await store.planned_on(conn, cfg.tenant_id, cfg.account_id, day)
        count = plan.to_plan(times, planned, now, all_now)
        if limit is not None:
            count = min(count, limit)
        if count <= 0:
            return []
        last = await store.last_receiver(conn, cfg.tenant_id, cfg.account_id)
        threads = await store.threads_to_continue(conn, cfg.tenant_id, cfg.account_id)
        for k in range(planned, planned + count):
            to = plan.pick_receiver(cfg.member, members, last, rng)
            if to is None:
                break
            row_id = store.new_row_id()
            message_id = marker.mint(domain)
            thread = threads.pop((to.tenant_id, to.account_id), None)
            if thread is not None:
                # Continue the conversation the receiver last answered (a thread).
                draft = content.reply_to(
                    row_id,
                    cfg.address,
                    to.address,
                    message_id,
                    thread.subject,
                    thread.message_id,
                    thread.references,
                )
            else:
                draft = content.new_message(row_id, cfg.address, to.address, message_id)
            values.append(
                (row_id, cfg.tenant_id, cfg.account_id, to.tenant_id, to.account_id,
                 message_id, None, 0, day, draft.subject, draft.in_reply_to, draft.references,
                 plan.reply_planned(k, to.reply_rate))
            )  # fmt: skip
            last = to.account_id
        await store.insert_many(conn, values)
    return [Planned(cfg.tenant_id, str(v[0]), cfg.account_id) for v in values]


@dataclass
class TickResult:
    """What one tick did, per account: rows planned (and requeued)."""

    planned: dict[str, int] = field(default_factory=dict)
    requeued: int = 0
    paused: int = 0

    @property
    def total(self) -> int:
        return sum(self.planned.values())


async def tick(
    app: App,
    *,
    now: dt.datetime | None = None,
    all_now: bool = False,
    tenant_id: str | None = None,
    rng: random.Random | None = None,
) -> TickResult:
    """Plan and queue every send due now (every active account of one tenant or all)."""
    now = now or dt.datetime.now(dt.UTC)
    result = TickResult()
    result.paused = await pause_bounced(app)
    configs = await store.configs(app.db, tenant_id)
    if tenant_id is not None:  # a network pool reaches beyond the tenant
        configs += [c for c in await store.configs(app.db) if c.pool == "network"]
        configs = list({(c.tenant_id, c.account_id): c for c in configs}.values())
    counts = await store.planned_counts(app.db, tenant_id, now.date() - dt.timedelta(days=1))
    made: list[Planned] = []
    for cfg in configs:
        if not cfg.active or not cfg.has_imap:
            continue  # warmup goes both ways: an account without IMAP takes no part
        if tenant_id is not None and cfg.tenant_id != tenant_id:
            continue
        day = cfg.window.local_day(now)
        already = counts.get((cfg.tenant_id, cfg.account_id, day), 0)
        if plan.to_plan(_times(app, cfg, day), already, now, all_now) <= 0:
            continue  # nothing due: no transaction (the locked recount decides otherwise)
        rows = await plan_sender(
            app, cfg, now, all_now=all_now, rng=rng, members=pool_members(cfg, configs)
        )
        made += rows
        if rows:
            result.planned[cfg.account_id] = len(rows)
    await enqueue_many(app, [(r.tenant_id, r.id, r.from_account_id) for r in made])
    result.requeued = await requeue_lost(app, now, tenant_id)
    return result


# Bounce processing records a report about mail it has no delivery for as an unattributed
# event naming the bounced Message-ID; a hard bounce or a complaint about a warmup message
# pauses its sender. The cursor (the last event id looked at) is not tenant data.
CURSOR_KEY = "mailgate:warmup:bounce-cursor"
_BOUNCED = """
SELECT e.id, e.tenant_id, m.from_account_id, e.payload ->> 'kind' AS kind,
       coalesce(e.payload ->> 'reason', e.payload ->> 'status', '') AS reason
FROM events e
JOIN warmup_messages m ON m.tenant_id = e.tenant_id
 AND m.message_id IN (e.payload ->> 'original_message_id',
                      '<' || (e.payload ->> 'original_message_id') || '>')
WHERE e.type = $1 AND e.id > $2 AND e.id <= $3
  AND (e.payload ->> 'kind' = 'complaint' OR e.payload ->> 'bounce_type' = 'hard')
ORDER BY e.id LIMIT 500
"""


async def pause_bounced(app: App) -> int:
    """Pause the senders of warmup mail that hard-bounced or drew a complaint since the
    last look; how many accounts were paused."""
    cursor = int(await app.redis.get(CURSOR_KEY) or 0)
    top: int | None = await app.db.fetchval(
        "SELECT max(id) FROM events WHERE type = $1", EventType.BOUNCE_UNATTRIBUTED.value
    )
    if top is None or top <= cursor:
        return 0
    paused = 0
    rows = await app.db.fetch(_BOUNCED, EventType.BOUNCE_UNATTRIBUTED.value, cursor, top)
    for r in rows:
        what = "complaint" if r["kind"] == "complaint" else "hard bounce"
        async with app.db.acquire() as conn, conn.transaction():
            if await store.pause(
                conn, r["tenant_id"], r["from_account_id"], f"{what} {r['reason']}".strip()
            ):
                paused += 1
                await record_event(
                    conn,
                    tenant_id=r["tenant_id"],
                    event_type=EventType.WARMUP_PAUSED,
                    subject_id=r["from_account_id"],
                    payload={"account": r["from_account_id"], "reason": what, "event": r["id"]},
                    dedupe_key=f"warmup:paused:event:{r['id']}",
                )
    last = rows[-1]["id"] if len(rows) == 500 else top
    await app.redis.set(CURSOR_KEY, last)
    return paused


async def requeue_lost(app: App, now: dt.datetime, tenant_id: str | None) -> int:
    """Queue again the outbound step of rows planned long ago (since yesterday), never
    claimed or sent, of senders still active (a paused account's rows wait for it)."""
    rows = await app.db.fetch(
        "SELECT m.tenant_id, m.id, m.from_account_id FROM warmup_messages m "
        "JOIN warmup_configs c ON c.tenant_id = m.tenant_id "
        "AND c.email_account_id = m.from_account_id AND c.enabled AND c.paused_at IS NULL "
        "WHERE ($1::text IS NULL OR m.tenant_id = $1) AND m.sent_at IS NULL "
        "AND m.send_claimed_at IS NULL AND m.missing_at IS NULL AND m.depth = 0 "
        "AND m.planned_at < $2 AND m.quota_day >= $3 LIMIT 500",
        tenant_id,
        now - dt.timedelta(seconds=REQUEUE_AFTER_S),
        now.date() - dt.timedelta(days=1),
    )
    await enqueue_many(app, [(r["tenant_id"], r["id"], r["from_account_id"]) for r in rows])
    return len(rows)


async def enqueue_many(app: App, rows: list[tuple[str, str, str]]) -> None:
    """Queue the outbound step of each (tenant, row id, sender) in one round trip."""
    if not rows:
        return
    jobs = [
        encode_job(
            WARMUP, outbound_payload(tenant, row_id, account), id=f"warmup-outbound-{row_id}"
        )
        for tenant, row_id, account in rows
    ]
    await app.redis.lpush(WARMUP, *jobs)


class PlannerComponent:
    """The daemon's planner loop; one instance plans at a time (a Redis lease)."""

    name = "warmup"
    needs = ()

    def __init__(self, app: App, *, clock: Callable[[], float] = time.time) -> None:
        self.app = app
        self.clock = clock
        self.holder = f"planner-{secrets.token_hex(6)}"
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.ticks = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="warmup-planner")

    async def stop(self, deadline: float) -> None:
        self._stop.set()
        if self._task is not None:
            await cancel_and_wait([self._task])
        with contextlib.suppress(Exception):
            if await self.app.redis.get(LEASE_KEY) == self.holder.encode():
                await self.app.redis.delete(LEASE_KEY)

    def ready(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _leader(self, ttl_s: float) -> bool:
        redis = self.app.redis
        ms = int(ttl_s * 1000)
        if await redis.set(LEASE_KEY, self.holder, nx=True, px=ms):
            return True
        if await redis.get(LEASE_KEY) == self.holder.encode():
            await redis.pexpire(LEASE_KEY, ms)
            return True
        return False

    async def _loop(self) -> None:
        period = self.app.settings.warmup_tick_s
        while not self._stop.is_set():
            try:
                if await self._leader(period * 3):
                    result = await tick(
                        self.app, now=dt.datetime.fromtimestamp(self.clock(), dt.UTC)
                    )
                    self.ticks += 1
                    if result.total or result.requeued:
                        log.info(
                            "warmup planned",
                            extra={"planned": result.total, "requeued": result.requeued},
                        )
            except Exception:  # logged; the next tick tries again
                log.exception("warmup planner tick failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), period)


def create(app: App, services: Services) -> PlannerComponent:
    return PlannerComponent(app)
