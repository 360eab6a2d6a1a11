"""The incoming-email handler: ``queue:email:processing*`` jobs (seeds 000 and 003).

The payload (design §2; validated by the worker as an
:class:`~gateway.jobs.contracts.EmailProcessingPayload`) becomes a
:class:`~gateway.messages.MessageRecord` stored with the same code IMAP ingest uses:
content, message and attachments in one transaction. Storing is idempotent per (tenant,
account, Message-ID): the seed's time-stamped storage key is not, so a re-delivered job
would have stored the message twice.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from gateway.app import App
from gateway.jobs import PermanentJobError
from gateway.jobs.contracts import AttachmentPayload, Body, EmailProcessingPayload
from gateway.jobs.envelope import Job
from gateway.jobs.handlers import HandlerSpec
from gateway.messages import (
    AttachmentRecord,
    MessageRecord,
    html_to_text,
    store_message,
    text_to_html,
)
from gateway.services import Services


def _addresses(value: str | list[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else value
    return tuple(a.strip() for a in items if a.strip())


def _bodies(body: Body | str | None) -> tuple[str | None, str | None]:
    if body is None:
        return None, None
    if isinstance(body, str):  # seed 003's IMAP worker sends the source as the body
        return body, None
    plain = body.plain or None
    markup = body.html or None
    if plain is None and markup is not None:
        plain = html_to_text(markup)
    if markup is None and plain is not None:
        markup = text_to_html(plain)
    return plain, markup


def _attachments(items: list[AttachmentPayload]) -> tuple[AttachmentRecord, ...]:
    out = []
    for i, item in enumerate(items):
        try:
            # MIME-style base64 may be wrapped in lines; anything else must be the alphabet.
            content = base64.b64decode("".join(item.content.split()), validate=True)
        except (binascii.Error, ValueError):
            raise PermanentJobError(f"payload.attachments[{i}].content is not base64") from None
        disposition = (item.disposition or "attachment").lower()
        out.append(
            AttachmentRecord(
                filename=item.filename,
                mime_type=item.mime_type or "application/octet-stream",
                content=content,
                disposition="inline" if disposition == "inline" else "attachment",
                content_id=item.content_id,
            )
        )
    return tuple(out)


def record_from_payload(job: Job, p: EmailProcessingPayload) -> MessageRecord:
    """The record to store for a validated payload (its model checked the shapes; a bad
    attachment encoding is a permanent job error)."""
    account = p.email_account_id or None
    message_id = p.the_message_id
    # Identity: the Message-ID for this tenant and account, whatever the storage key; a
    # message without one is identified by its job (a re-delivered job stores once).
    identity = message_id or f"job-{job.idempotency_key or job.id}"
    plain, markup = _bodies(p.body)
    raw = p.raw.encode("utf-8", "surrogateescape") if p.raw is not None else None
    headers = p.headers
    return MessageRecord(
        tenant_id=p.tenant_id,
        dedupe_key=f"job:{account or ''}:{identity}",
        direction=p.direction,
        message_type=p.type or "email",
        email_account_id=account,
        from_email=p.from_,
        to_emails=_addresses(p.to),
        subject=p.subject,
        text=plain,
        html=markup,
        headers={"headers": headers} if isinstance(headers, list) else (headers or {}),
        raw=raw,
        raw_size=len(raw)
        if raw is not None
        else len((plain or "").encode()) + len((markup or "").encode()),
        message_id=message_id,
        in_reply_to=p.the_in_reply_to,
        attachments=_attachments(p.attachments),
        source="job",
    )


async def handle_incoming_email(
    app: App, job: Job, payload: EmailProcessingPayload
) -> dict[str, Any]:
    record = record_from_payload(job, payload)
    async with app.db.acquire() as conn:
        if record.email_account_id is not None:
            # An account of another tenant is refused (issue 16); an account this host does
            # not know (the platform's own) is stored as named.
            owner = await conn.fetchval(
                "SELECT tenant_id FROM email_accounts WHERE id = $1", record.email_account_id
            )
            if owner is not None and owner != record.tenant_id:
                raise PermanentJobError(
                    f"payload.email_account_id {record.email_account_id!r} belongs to "
                    "another tenant"
                )
        result = await store_message(conn, record)
    return {
        "success": True,
        "storage_key": result.storage_key,
        "created": result.created,
        "attachment_count": result.attachment_count,
    }


def create_handler(app: App, services: Services) -> HandlerSpec:
    async def run(job: Job, payload: EmailProcessingPayload) -> dict[str, Any]:
        return await handle_incoming_email(app, job, payload)

    return HandlerSpec(family="email-processing", run=run)
