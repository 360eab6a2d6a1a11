"""The job worker as a daemon component (entry point ``worker``)."""

from __future__ import annotations

import logging

from gateway.app import App
from gateway.jobs.handlers import HandlerFactory, build, discover
from gateway.jobs.worker import Worker

log = logging.getLogger(__name__)


class WorkerComponent:
    """Starts one :class:`Worker` for every installed handler; none installed, no worker."""

    name = "worker"

    def __init__(self, app: App, factories: dict[str, HandlerFactory] | None = None):
        self.app = app
        self._factories = factories
        self.worker: Worker | None = None
        self._started = False

    async def start(self) -> None:
        specs = build(self.app, self._factories if self._factories is not None else discover())
        if specs:
            self.worker = Worker(self.app, specs)
            await self.worker.start()
        else:
            log.warning("no job handlers installed: no queue is consumed")
        self._started = True

    async def stop(self, deadline: float) -> None:
        if self.worker is not None:
            await self.worker.stop(deadline)

    def ready(self) -> bool:
        return self._started and (self.worker is None or self.worker.ready())


def create(app: App) -> WorkerComponent:
    return WorkerComponent(app)
