"""The job worker as a daemon component (entry point ``worker``)."""

from __future__ import annotations

import logging

from gateway.app import App
from gateway.jobs.handlers import HandlerFactory, build, discover
from gateway.jobs.worker import Worker
from gateway.services import Service, Services

log = logging.getLogger(__name__)


class WorkerComponent:
    """Starts one :class:`Worker` for every installed handler; none installed, no worker."""

    name = "worker"
    # The handlers name what they use when they are built (at start).
    needs: tuple[Service[object], ...] = ()

    def __init__(
        self,
        app: App,
        services: Services,
        factories: dict[str, HandlerFactory] | None = None,
    ):
        self.app = app
        self.services = services
        self._factories = factories
        self.worker: Worker | None = None
        self._started = False

    async def start(self) -> None:
        factories = self._factories if self._factories is not None else discover()
        specs = build(self.app, self.services, factories)
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


def create(app: App, services: Services) -> WorkerComponent:
    return WorkerComponent(app, services)
