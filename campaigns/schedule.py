"""The platform jobs' scheduler (component ``schedule``): every hour, yesterday's and
today's analytics aggregate; every day, the retention cleanup. Once across all instances:
each instance ticks every minute, and a tick enqueues a period's jobs only if it is the one
that sets that period's Redis key (``SET NX`` with a TTL longer than the period), so two
instances, or one restarted within the hour, enqueue nothing twice."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable

from gateway.app import App
from gateway.jobs.contracts import (
    ANALYTICS,
    MAINTENANCE,
    AnalyticsPayload,
    MaintenancePayload,
    encode_job,
)
from gateway.services import Services
from gateway.tasks import cancel_and_wait

log = logging.getLogger(__name__)

TICK_S = 60.0


def analytics_key(hour: str) -> str:
    return f"mailgate:schedule:analytics:{hour}"


def cleanup_key(day: str) -> str:
    return f"mailgate:schedule:cleanup:{day}"


class Scheduler:
    name = "schedule"
    needs = ()

    def __init__(self, app: App, clock: Callable[[], dt.datetime] | None = None):
        self.app = app
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._task: asyncio.Task[None] | None = None

    async def tick(self) -> list[str]:
        """Enqueue what is due now and not yet enqueued by any instance; the job ids."""
        now = self.clock()
        hour = now.strftime("%Y-%m-%dT%H")
        pushed: list[str] = []
        redis = self.app.redis
        if await redis.set(analytics_key(hour), "1", nx=True, ex=3 * 3600):
            for day in (now.date() - dt.timedelta(days=1), now.date()):
                job_id = f"analytics:{day.isoformat()}:{hour}"
                await redis.lpush(
                    ANALYTICS, encode_job(ANALYTICS, AnalyticsPayload(day=day), id=job_id)
                )
                pushed.append(job_id)
        day_s = now.date().isoformat()
        if await redis.set(cleanup_key(day_s), "1", nx=True, ex=2 * 86400):
            job_id = f"cleanup:{day_s}"
            await redis.lpush(MAINTENANCE, encode_job(MAINTENANCE, MaintenancePayload(), id=job_id))
            pushed.append(job_id)
        return pushed

    async def _loop(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:  # logged; the next tick tries again
                log.exception("scheduler tick failed")
            await asyncio.sleep(TICK_S)

    async def start(self) -> None:
        if self.app.settings.analytics_schedule:
            self._task = asyncio.create_task(self._loop(), name="schedule")

    async def stop(self, deadline: float) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])
            self._task = None

    def ready(self) -> bool:
        return True


def create(app: App, services: Services) -> Scheduler:
    return Scheduler(app)
