"""The ``email-sending`` job handler (queues ``queue:email-sending:high``, ``...``,
``...:low``): :class:`delivery.service.Sender` per job, permanent errors translated to
:class:`gateway.jobs.PermanentJobError` so the job is dead-lettered with the reason."""

from __future__ import annotations

from typing import Any

from delivery.errors import PermanentError
from delivery.service import SENDER
from gateway.app import App
from gateway.jobs import PermanentJobError
from gateway.jobs.contracts import EmailSendPayload
from gateway.jobs.envelope import Job
from gateway.jobs.handlers import HandlerSpec
from gateway.services import Services


def create_handler(app: App, services: Services) -> HandlerSpec:
    sender = services.get(SENDER)
    sender.start_helpers()

    async def run(job: Job, payload: EmailSendPayload) -> dict[str, Any]:
        try:
            return await sender.handle(job, payload)
        except PermanentError as exc:
            raise PermanentJobError(str(exc)) from None

    return HandlerSpec(
        family="email-sending", run=run, concurrency=app.settings.delivery_concurrency
    )
