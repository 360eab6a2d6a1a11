"""Job handlers of the platform's jobs (entry points of group ``mailgate.handlers``):
``campaign``, ``import``, ``export``, ``analytics`` and ``maintenance``. Each is a thin
adapter from the validated payload to the module that does the work; a source that is
temporarily unreachable is a plain exception (retried with backoff), a bad file or payload
a :class:`~campaigns.CampaignJobError` (dead-lettered with the reason)."""

from __future__ import annotations

from typing import Any

from campaigns.analytics import run_aggregate
from campaigns.export import run_export
from campaigns.fanout import Fanout
from campaigns.importer import Importer
from gateway.app import App
from gateway.jobs.contracts import (
    AnalyticsPayload,
    CampaignPayload,
    ExportPayload,
    ImportPayload,
    MaintenancePayload,
)
from gateway.jobs.envelope import Job
from gateway.jobs.handlers import HandlerSpec
from gateway.retention import cleanup
from gateway.services import Services


def campaign_handler(app: App, services: Services) -> HandlerSpec:
    async def run(job: Job, payload: CampaignPayload) -> dict[str, Any]:
        return await Fanout(app, job.id, payload).run()

    return HandlerSpec(family="campaign", run=run)


def import_handler(app: App, services: Services) -> HandlerSpec:
    async def run(job: Job, payload: ImportPayload) -> dict[str, Any]:
        return await Importer(app, job.id, payload).run()

    return HandlerSpec(family="import", run=run)


def export_handler(app: App, services: Services) -> HandlerSpec:
    async def run(job: Job, payload: ExportPayload) -> dict[str, Any]:
        return await run_export(app, job.id, payload)

    return HandlerSpec(family="export", run=run, concurrency=2)


def analytics_handler(app: App, services: Services) -> HandlerSpec:
    async def run(job: Job, payload: AnalyticsPayload) -> dict[str, Any]:
        return await run_aggregate(app, payload)

    return HandlerSpec(family="analytics", run=run, concurrency=2)


def maintenance_handler(app: App, services: Services) -> HandlerSpec:
    async def run(job: Job, payload: MaintenancePayload) -> dict[str, Any]:
        deleted = await cleanup(app.db, app.settings, tenant_id=payload.tenant_id)
        return {"deleted": deleted}

    return HandlerSpec(family="maintenance", run=run, concurrency=1)
