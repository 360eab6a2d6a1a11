"""The ``warmup`` job handler (queue ``queue:warmup:process``): :class:`warmup.steps.Steps`
per job; a failed IMAP login and delivery's permanent errors dead-letter the job with the
reason, everything else (IMAP or SMTP trouble) is retried."""

from __future__ import annotations

from typing import Any

from delivery.errors import PermanentError
from delivery.service import SENDER
from gateway.app import App
from gateway.jobs import PermanentJobError
from gateway.jobs.contracts import WarmupPayload
from gateway.jobs.envelope import Job
from gateway.jobs.handlers import HandlerSpec
from gateway.services import Services
from warmup.metrics import METRICS
from warmup.steps import Steps


def create_handler(app: App, services: Services) -> HandlerSpec:
    sender = services.get(SENDER)
    sender.start_helpers()
    steps = Steps(app, sender, services.get(METRICS))

    async def run(job: Job, payload: WarmupPayload) -> dict[str, Any]:
        try:
            return await steps.handle(job, payload)
        except PermanentError as exc:
            raise PermanentJobError(str(exc)) from None

    return HandlerSpec(family="warmup", run=run)
