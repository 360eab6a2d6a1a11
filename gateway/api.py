"""The JSON API under ``/api/`` (entry point ``api`` of group ``mailgate.http``).

Reads (GET):

* ``/api/status``: what ``mailgate status --json`` prints (:func:`gateway.status.collect_status`);
* ``/api/queues``: what ``mailgate queues --json`` prints (:func:`gateway.jobs.ops.queue_depths`);
* ``/api/throughput``: jobs completed and failed per minute over the last hour;
* ``/api/dlq?limit=N``: the newest dead letters (id, queue, error, when, attempts);
* ``/api/bounces``: bounce reports of the last 24 hours by reason and outcome, and warmup
  placement events by placement when there are any (``?tenant=`` narrows both).

Changes (POST, JSON body ``{"id": "..."}`` or ``{"all": true}``):
``/api/dlq/retry`` and ``/api/dlq/delete``. Who may call what: :mod:`gateway.webauth`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway.events import EventType, recent_counts
from gateway.jobs import keys, ops
from gateway.status import collect_status, minute_series, throughput
from gateway.webauth import Guard

if TYPE_CHECKING:
    from gateway.app import App
    from gateway.services import Services

DAY_S = 86400
_BOUNCES = """
SELECT coalesce(reason, 'unknown') AS reason, outcome, count(*) AS n FROM bounce_reports
WHERE created_at > now() - make_interval(secs => $1) AND ($2::text IS NULL OR tenant_id = $2)
GROUP BY 1, 2 ORDER BY 3 DESC, 1 LIMIT 50
"""


def _version() -> str:
    from gateway.daemon import mailgate_version

    return mailgate_version()


class Api:
    def __init__(self, app: App):
        self.app = app
        self.guard = Guard(app.settings, app.secret_key)

    async def status(self, request: web.Request) -> web.Response:
        self.guard.read(request)
        return _json(await collect_status(self.app.db, self.app.redis, version=_version()))

    async def queues(self, request: web.Request) -> web.Response:
        self.guard.read(request)
        return _json(await ops.queue_depths(self.app.redis))

    async def throughput(self, request: web.Request) -> web.Response:
        self.guard.read(request)
        return _json({"per_minute": throughput(await minute_series(self.app.redis))})

    async def dlq(self, request: web.Request) -> web.Response:
        self.guard.read(request)
        try:
            limit = max(1, min(int(request.query.get("limit", "100")), 1000))
        except ValueError:
            raise web.HTTPBadRequest(text='{"error": "limit must be a number"}') from None
        letters = await ops.list_letters(self.app.redis, limit)
        total = await self.app.redis.llen(keys.DEAD)
        return _json({"total": total, "letters": [letter.summary() for letter in letters]})

    async def bounces(self, request: web.Request) -> web.Response:
        self.guard.read(request)
        tenant = request.query.get("tenant") or None
        rows = await self.app.db.fetch(_BOUNCES, DAY_S, tenant)
        placement = await recent_counts(
            self.app.db,
            event_type=EventType.WARMUP_PLACEMENT,
            field="placement",
            since_s=DAY_S,
            tenant_id=tenant,
        )
        return _json(
            {
                "since_hours": 24,
                "by_reason": [dict(r) for r in rows],
                "warmup_placement": placement or None,
            }
        )

    async def _target(self, request: web.Request) -> str | None:
        """The job id a change names, or None for all (``{"all": true}``)."""
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        if isinstance(body, dict) and body.get("all") is True:
            return None
        if isinstance(body, dict) and isinstance(body.get("id"), str) and body["id"]:
            return str(body["id"])
        raise web.HTTPBadRequest(
            text='{"error": "send {\\"id\\": \\"JOB_ID\\"} or {\\"all\\": true}"}',
            content_type="application/json",
        )

    async def dlq_retry(self, request: web.Request) -> web.Response:
        await self.guard.write(request)
        job_id = await self._target(request)
        result = await ops.retry_letters(self.app.redis, job_id)
        return _changed(job_id, result)

    async def dlq_delete(self, request: web.Request) -> web.Response:
        await self.guard.write(request)
        job_id = await self._target(request)
        result = await ops.delete_letters(self.app.redis, job_id)
        return _changed(job_id, result)


def _json(body: Any, status: int = 200) -> web.Response:
    response = web.json_response(body, status=status, dumps=lambda o: json.dumps(o, default=str))
    response.headers["Cache-Control"] = "no-store"
    return response


def _changed(job_id: str | None, result: ops.DeadLetterResult) -> web.Response:
    body: dict[str, Any] = {
        "matched": result.matched,
        "done": result.done,
        "skipped": result.skipped,
    }
    if job_id is not None and not result.done:
        body["error"] = f"no dead letter with id {job_id!r}"
        return _json(body, 404)
    return _json(body)


def routes(app: App, services: Services) -> Sequence[web.AbstractRouteDef]:
    api = Api(app)
    return [
        web.get("/api/status", api.status),
        web.get("/api/queues", api.queues),
        web.get("/api/throughput", api.throughput),
        web.get("/api/dlq", api.dlq),
        web.get("/api/bounces", api.bounces),
        web.post("/api/dlq/retry", api.dlq_retry),
        web.post("/api/dlq/delete", api.dlq_delete),
    ]
