"""The daemon's HTTP endpoint (aiohttp on the daemon's own loop).

``/healthz``: the event loop is alive (answering at all proves it) and how long ago each
component last reported; ``/readyz``: PostgreSQL and Redis answer and every component has
started (503 with the failing checks otherwise); ``/metrics``: Prometheus text.

Other packages add routes (the dashboard, unsubscribe intake, ...) through entry points of
group ``mailgate.http``: each names a factory ``routes(app, services) -> list of aiohttp
RouteDef`` (:func:`discover_routes`), built by the daemon before the endpoint starts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from gateway.app import App
    from gateway.services import Services

ReadinessCheck = Callable[[], Awaitable[dict[str, Any]]]
ROUTES_GROUP = "mailgate.http"
RoutesFactory = Callable[["App", "Services"], Sequence[web.AbstractRouteDef]]


def discover_routes(app: App, services: Services) -> list[web.AbstractRouteDef]:
    """The routes every installed ``mailgate.http`` entry point contributes."""
    found: list[web.AbstractRouteDef] = []
    for ep in sorted(entry_points(group=ROUTES_GROUP), key=lambda e: e.name):
        factory: RoutesFactory = ep.load()
        found.extend(factory(app, services))
    return found


class HttpEndpoint:
    """Binds the routes to a host:port; ``start``/``stop`` own the listening socket."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        render_metrics: Callable[[], bytes],
        refresh_metrics: Callable[[], Awaitable[None]] | None = None,
        readiness: ReadinessCheck,
        routes: Sequence[web.AbstractRouteDef] = (),
    ):
        self._host = host
        self._port = port
        self._render_metrics = render_metrics
        self._refresh_metrics = refresh_metrics
        self._readiness = readiness
        self._routes = tuple(routes)
        self._runner: web.AppRunner | None = None
        self._started = time.monotonic()
        self.bound_port: int | None = None

    def build(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_routes(self._routes)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.build(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, reuse_address=True)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.bound_port = sockets[0].getsockname()[1] if sockets else self._port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"status": "ok", "uptime_s": round(time.monotonic() - self._started, 3)}
        )

    async def _readyz(self, request: web.Request) -> web.Response:
        try:
            checks = await asyncio.wait_for(self._readiness(), timeout=5)
        except TimeoutError:
            checks = {"ready": False, "error": "readiness checks timed out"}
        return web.json_response(checks, status=200 if checks.get("ready") else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        if self._refresh_metrics is not None:
            await self._refresh_metrics()
        body = self._render_metrics()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
