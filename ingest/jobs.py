"""The incoming-email handler: ``queue:email:processing*`` jobs (seeds 000 and 003).

The payload (design §2) becomes a :class:`~gateway.messages.MessageRecord` stored with the
same code IMAP ingest uses: content, message and attachments in one transaction. Storing is
idempotent per (tenant, account, Message-ID): the seed's time-stamped storage key is not,
so a re-delivered job would have stored the message twice.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from gateway.app import App
from gateway.jobs import PermanentJobError
from gateway.jobs.envelope import Job
from gateway.jobs.handlers import HandlerSpec
from gateway.messages import (
    AttachmentRecord,
    MessageRecord,
    html_to_text,
    store_message,
    text_to_html,
)

DIRECTIONS = ("inbound", "outbound")


def _text(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    raise PermanentJobError(f"payload.{name} must be a string, got {type(value).__name__}")


def _addresses(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(a.strip() for a in value.split(",") if a.strip())
    if isinstance(value, list):
        return tuple(str(a).strip() for a in value if str(a).strip())
    raise PermanentJobError("payload.to must be a string or a list of strings")


def _bodies(payload: dict[str, Any]) -> tuple[str | None, str | None]:
    body = payload.get("body")
    if body is None:
        return None, None
    if isinstance(body, str):  # seed 003's IMAP worker sends the source as the body
        return body, None
    if not isinstance(body, dict):
        raise PermanentJobError("payload.body must be an object {plain, html} or a string")
    plain = _text(body.get("plain"), "body.plain") or None
    markup = _text(body.get("html"), "body.html") or None
    if plain is None and markup is not None:
        plain = html_to_text(markup)
    if markup is None and plain is not None:
        markup = text_to_html(plain)
    return plain, markup


def _attachments(payload: dict[str, Any]) -> tuple[AttachmentRecord, ...]:
    items = payload.get("attachments") or []
    if not isinstance(items, list):
        raise PermanentJobError("payload.attachments must be a list")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise PermanentJobError(f"payload.attachments[{i}] must be an object")
        encoded = item.get("content") or ""
        if not isinstance(encoded, str):
            raise PermanentJobError(f"payload.attachments[{i}].content must be base64 text")
        try:
            # MIME-style base64 may be wrapped in lines; anything else must be the alphabet.
            content = base64.b64decode("".join(encoded.split()), validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise PermanentJobError(f"payload.attachments[{i}].content is not base64") from None
        disposition = str(item.get("disposition") or "attachment").lower()
        out.append(
            AttachmentRecord(
                filename=_text(item.get("filename"), f"attachments[{i}].filename"),
                mime_type=str(item.get("mime_type") or "application/octet-stream"),
                content=content,
                disposition="inline" if disposition == "inline" else "attachment",
                content_id=_text(item.get("content_id"), f"attachments[{i}].content_id"),
            )
        )
    return tuple(out)


def record_from_payload(job: Job) -> MessageRecord:
    """Validate an email-processing payload; a bad one is a permanent job error."""
    p = job.payload
    tenant = _text(p.get("tenant_id"), "tenant_id")
    if not tenant:
        raise PermanentJobError("payload.tenant_id is required")
    account = _text(p.get("email_account_id"), "email_account_id")
    direction = _text(p.get("direction"), "direction") or "inbound"
    if direction not in DIRECTIONS:
        raise PermanentJobError(f"payload.direction must be inbound or outbound, not {direction!r}")
    message_id = _text(p.get("messageId") or p.get("message_id"), "messageId")
    # Identity: the Message-ID for this tenant and account, whatever the storage key; a
    # message without one is identified by its job (a re-delivered job stores once).
    identity = message_id or f"job-{job.idempotency_key or job.id}"
    plain, markup = _bodies(p)
    raw_value = p.get("raw")
    raw = raw_value.encode("utf-8", "surrogateescape") if isinstance(raw_value, str) else None
    headers = p.get("headers")
    if headers is not None and not isinstance(headers, dict | list):
        raise PermanentJobError("payload.headers must be an object or a list")
    return MessageRecord(
        tenant_id=tenant,
        dedupe_key=f"job:{account or ''}:{identity}",
        direction=direction,
        message_type=_text(p.get("type"), "type") or "email",
        email_account_id=account,
        from_email=_text(p.get("from"), "from"),
        to_emails=_addresses(p.get("to")),
        subject=_text(p.get("subject"), "subject"),
        text=plain,
        html=markup,
        headers={"headers": headers} if isinstance(headers, list) else (headers or {}),
        raw=raw,
        raw_size=len(raw)
        if raw is not None
        else len((plain or "").encode()) + len((markup or "").encode()),
        message_id=message_id,
        in_reply_to=_text(p.get("inReplyTo") or p.get("in_reply_to"), "inReplyTo"),
        attachments=_attachments(p),
        source="job",
    )


async def handle_incoming_email(app: App, job: Job) -> dict[str, Any]:
    record = record_from_payload(job)
    async with app.db.acquire() as conn:
        result = await store_message(conn, record)
    return {
        "success": True,
        "storage_key": result.storage_key,
        "created": result.created,
        "attachment_count": result.attachment_count,
    }


def create_handler(app: App) -> HandlerSpec:
    async def run(job: Job) -> dict[str, Any]:
        return await handle_incoming_email(app, job)

    return HandlerSpec(family="email:processing", run=run)
