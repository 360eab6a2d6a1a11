"""The bounce listener as a daemon component (entry point ``bounces``).

Runs the SMTP :class:`~bounces.listener.Listener` and, beside it, the sweep that queues
again any received message whose processing has not finished after
``bounce_requeue_after_s`` (its job was lost, e.g. Redis failed right after the commit).
Processing itself is the job handler :func:`bounces.processing.create_handler`, run by the
worker component.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from bounces.errors import BounceError
from bounces.intake import Intake
from bounces.listener import Listener
from bounces.metrics import METRICS
from gateway.app import App
from gateway.services import Services
from gateway.tasks import cancel_and_wait

log = logging.getLogger(__name__)


class BounceComponent:
    """Listener plus requeue sweep."""

    name = "bounces"
    needs = (METRICS,)

    def __init__(self, app: App, services: Services):
        self.app = app
        self.intake = Intake(app)
        self.listener = Listener(app, self.intake, services.get(METRICS))
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.listener.start()
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="bounce-requeue")

    async def _sweep_loop(self) -> None:
        after_s = self.app.settings.bounce_requeue_after_s
        interval_s = min(60.0, after_s / 2)
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.intake.requeue(after_s)
            except BounceError as exc:
                log.warning("bounce requeue sweep failed: %s", exc)

    async def stop(self, deadline: float) -> None:
        if self._sweeper is not None:
            await cancel_and_wait([self._sweeper])
        await self.listener.stop(deadline)

    def ready(self) -> bool:
        return self.listener.serving

    def status(self) -> dict[str, Any]:
        """For `mailgate status` and the dashboard (gateway.status reads it)."""
        return {"sessions_open": len(self.listener.sessions), "serving": self.listener.serving}


def create(app: App, services: Services) -> BounceComponent:
    return BounceComponent(app, services)
