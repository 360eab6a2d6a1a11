"""``mailgate run``: the daemon's lifecycle on one asyncio loop.

Start order: embedded servers (when URLs are unset) → migrations → pools → HTTP endpoint →
components (each after the services it needs are built) → status reports in Redis
(:mod:`gateway.status`) → systemd READY=1. Stop order
(first SIGTERM/SIGINT, or :meth:`Daemon.request_stop`): STOPPING=1 → every component stops
intake and drains in-flight work until the shared deadline (``shutdown_grace_s``) → what is
left is cancelled (components return unfinished jobs to their queue) → HTTP endpoint →
services (the SMTP pool, the DKIM signer) → pools → embedded servers. A second signal forces:
the deadline becomes now. A stop requested while components are still starting (a slow
start under systemd's TimeoutStartSec, say) cancels the start and stops what did start.

SIGUSR1 logs the stack of every asyncio task (one WARNING record): what a daemon that does
not stop, or does not make progress, is waiting on.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import logging
import signal
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from gateway.app import App, open_app, open_urls
from gateway.components import Component, ComponentFactory, discover, select
from gateway.http import HttpEndpoint, discover_routes
from gateway.metrics import Metrics
from gateway.services import Services
from gateway.settings import Settings
from gateway.status import StatusReporter
from gateway.storage import connect, migrate
from gateway.systemd import Notifier

log = logging.getLogger(__name__)


# Young-generation threshold once running (CPython's default is 700): a job allocates a few
# hundred container objects, nearly all freed by reference counting, so at 700 the young
# collection ran every job or two, each time walking the state of every job in flight.
GC_YOUNG_THRESHOLD = 10_000


def settle_heap() -> None:
    """Once started: freeze what start-up built out of the cyclic collector and collect the
    young generation less often.

    Modules, settings, pools and compiled templates live as long as the process; frozen,
    they are no longer walked by every full collection. Measured with ``bench/delivery.py``
    (b): the worker's CPU per message 0.39-0.40 ms before, 0.375 frozen, 0.36-0.37 frozen
    with this threshold. The older generations keep CPython's thresholds (10 young
    collections each); cycles are still collected, only less often.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 10, 10)


def mailgate_version() -> str:
    try:
        return version("mailgate")
    except PackageNotFoundError:
        return "0+unknown"


class Daemon:
    """One mailgate process. ``run()`` returns the exit code."""

    def __init__(
        self,
        settings: Settings,
        *,
        factories: dict[str, ComponentFactory] | None = None,
        notifier: Notifier | None = None,
        metrics: Metrics | None = None,
    ):
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.notifier = notifier or Notifier()
        self._factories = factories
        self._stop = asyncio.Event()
        self._forced = asyncio.Event()
        self._signals = 0
        self.components: list[Component] = []
        self.app: App | None = None
        self.services: Services | None = None
        self.http: HttpEndpoint | None = None
        self.reporter: StatusReporter | None = None
        self.started = asyncio.Event()

    # -- control ------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Begin a graceful stop; a second request forces it (no more grace)."""
        self._signals += 1
        if self._signals == 1:
            log.info("stop requested: draining", extra={"grace_s": self.settings.shutdown_grace_s})
            self._stop.set()
        else:
            log.warning("second stop request: forcing shutdown")
            self._forced.set()

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)
        with contextlib.suppress(NotImplementedError, RuntimeError, AttributeError):
            loop.add_signal_handler(signal.SIGUSR1, dump_tasks)

    def _remove_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)

    # -- lifecycle ----------------------------------------------------------------------

    async def run(self, *, install_signals: bool = True) -> int:
        loop = asyncio.get_running_loop()
        if install_signals:
            self._install_signals(loop)
        self.metrics.build_info.labels(mailgate_version()).set(1)
        try:
            async with open_urls(self.settings) as urls:
                conn = await connect(urls.database, timeout_s=self.settings.db_connect_timeout_s)
                try:
                    applied = await migrate(conn)
                finally:
                    await conn.close()
                if applied:
                    log.info("database migrated", extra={"applied": [m.version for m in applied]})
                async with open_app(self.settings, urls, self.metrics) as app:
                    self.app = app
                    self.services = Services(app)
                    try:
                        await self._serve(app, self.services)
                    finally:
                        await self.services.aclose()
        finally:
            if install_signals:
                self._remove_signals(loop)
        log.info("mailgate stopped")
        return 0

    async def _serve(self, app: App, services: Services) -> None:
        listen = self.settings.http_listen
        self.http = HttpEndpoint(
            listen.host,
            listen.port,
            render_metrics=self.metrics.render,
            refresh_metrics=self.metrics.refresh,
            readiness=self.readiness,
            routes=discover_routes(app, services),
        )
        await self.http.start()
        log.info(
            "HTTP endpoint listening", extra={"listen": f"{listen.host}:{self.http.bound_port}"}
        )
        watchdog = asyncio.create_task(self._watchdog(), name="systemd-watchdog")
        self.reporter = StatusReporter(
            app,
            lambda: self.components,
            version=mailgate_version(),
            http=f"{listen.host}:{self.http.bound_port}",
        )
        try:
            starting = asyncio.create_task(self._start_components(app, services))
            stop_wait = asyncio.create_task(self._stop.wait())
            try:
                await asyncio.wait({starting, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop_wait.cancel()
            if not starting.done():
                log.warning("stop requested while starting: start abandoned")
                starting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await starting
                return
            starting.result()  # a failed start raises here
            await self.reporter.start()
            settle_heap()
            self.notifier.ready(f"{len(self.components)} components running")
            self.started.set()
            log.info(
                "mailgate running",
                extra={"components": [c.name for c in self.components] or "none"},
            )
            await self._stop.wait()
        finally:
            self.notifier.stopping()
            self.reporter.stopping = True
            await self._stop_components()
            await self.reporter.stop()
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
            await self.http.stop()

    async def _start_components(self, app: App, services: Services) -> None:
        factories = self._factories if self._factories is not None else discover()
        for name, factory in select(self.settings.components, factories).items():
            component = factory(app, services)
            # Listed before its start: one whose start failed or was abandoned half-way is
            # stopped like the others (stop() copes with a partial start).
            self.components.append(component)
            services.prepare(component.needs)
            await component.start()
            self.metrics.component_up.labels(name).set(1)
            log.info("component started", extra={"component": name})

    async def _stop_components(self) -> None:
        loop = asyncio.get_running_loop()
        grace = 0.0 if self._forced.is_set() else self.settings.shutdown_grace_s
        deadline = loop.time() + grace
        stops = [
            asyncio.create_task(c.stop(deadline), name=f"stop-{c.name}")
            for c in reversed(self.components)
        ]
        if not stops:
            return
        forced = asyncio.create_task(self._forced.wait())
        pending: set[asyncio.Task[Any]] = set(stops)
        while pending:
            done, pending = await asyncio.wait(
                pending | {forced}, return_when=asyncio.FIRST_COMPLETED
            )
            pending.discard(forced)
            if forced in done:
                # Second signal: cancelling stop() means "abandon the drain now" (see
                # Component); each component then cancels its in-flight work.
                for task in pending:
                    task.cancel()
                break
        forced.cancel()
        for task, component in zip(stops, reversed(self.components), strict=True):
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.error(
                    "component failed to stop cleanly",
                    exc_info=task.exception(),
                    extra={"component": component.name},
                )
            self.metrics.component_up.labels(component.name).set(0)
        await asyncio.gather(*stops, return_exceptions=True)

    async def _watchdog(self) -> None:
        interval = Notifier.watchdog_interval_s(self.settings.watchdog_interval_s)
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)

    async def readiness(self) -> dict[str, Any]:
        """PostgreSQL and Redis answer, components started and ready."""
        checks: dict[str, Any] = {}
        app = self.app
        if app is None:
            return {"ready": False, "error": "starting"}
        try:
            async with app.db.acquire(timeout=2) as conn:
                await conn.fetchval("SELECT 1")
            checks["postgres"] = "ok"
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            checks["postgres"] = f"error: {type(exc).__name__}"
        try:
            await asyncio.wait_for(app.redis.ping(), timeout=2)
            checks["redis"] = "ok"
        except Exception as exc:  # noqa: BLE001
            checks["redis"] = f"error: {type(exc).__name__}"
        checks["components"] = {
            c.name: ("ok" if c.ready() else "not ready") for c in self.components
        }
        checks["ready"] = (
            self.started.is_set()
            and not self._stop.is_set()
            and checks["postgres"] == "ok"
            and checks["redis"] == "ok"
            and all(v == "ok" for v in checks["components"].values())
        )
        return checks


def dump_tasks() -> None:
    """Log the stack of every task on the running loop (SIGUSR1)."""
    out = io.StringIO()
    tasks = sorted(asyncio.all_tasks(), key=lambda t: t.get_name())
    for task in tasks:
        out.write(f"--- task {task.get_name()}\n")
        task.print_stack(limit=12, file=out)
    log.warning("asyncio tasks (SIGUSR1)", extra={"tasks": len(tasks), "stacks": out.getvalue()})
