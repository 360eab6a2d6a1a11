"""``GET /api/warmup`` (entry point ``warmup`` of group ``mailgate.http``): inbox placement
per account per day, and each account's status as ``mailgate warmup status --json`` shows
it. ``?tenant=`` narrows both, ``?days=N`` (1-90, default 7) sets how far back the daily
figures go. The dashboard's "warmup placement" panel reads the placement events through
``/api/bounces``; this is the per-account, per-day view behind it. Who may call it:
:mod:`gateway.webauth` (a read)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from gateway.app import App
from gateway.services import Services
from gateway.webauth import Guard
from warmup import store
from warmup.commands import status


class WarmupApi:
    def __init__(self, app: App) -> None:
        self.app = app
        self.guard = Guard(app.settings, app.secret_key)

    async def warmup(self, request: web.Request) -> web.Response:
        self.guard.read(request)
        tenant = request.query.get("tenant") or None
        try:
            days = max(1, min(int(request.query.get("days", "7")), 90))
        except ValueError:
            raise web.HTTPBadRequest(text='{"error": "days must be a number"}') from None
        now = dt.datetime.now(dt.UTC)
        since = now.date() - dt.timedelta(days=days - 1)
        body: dict[str, Any] = {
            "since": since.isoformat(),
            "by_day": await store.placement_by_day(self.app.db, tenant, since),
            "accounts": await status(self.app, tenant, now),
        }
        response = web.json_response(body, dumps=lambda o: json.dumps(o, default=str))
        response.headers["Cache-Control"] = "no-store"
        return response


def routes(app: App, services: Services) -> Sequence[web.AbstractRouteDef]:
    return [web.get("/api/warmup", WarmupApi(app).warmup)]
