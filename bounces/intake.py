"""Storing what the bounce listener received, then queueing its processing.

:meth:`Intake.accept` is what stands between DATA and the 250: the raw message and a
``bounce_receipts`` row are committed in ONE transaction (``email_content`` +
``email_messages``, direction inbound, source ``smtp``), then a ``queue:bounce:process``
job is pushed. Only when both succeeded does the listener answer 250; any failure is a
:class:`~bounces.errors.BounceError` and the peer gets 451 and retries. A retry of a
message already committed stores nothing new (the dedupe key hashes envelope and bytes)
but queues the job again; processing is idempotent. A receipt whose job was lost (Redis
failed after the commit and the peer never retried) is found by :meth:`Intake.requeue`.

Tenant: a genuine VERP token names a delivery, and the delivery row names its tenant. A
message with no genuine token is kept under :data:`UNATTRIBUTED_TENANT`; it changes
nothing anywhere else. ``message_type`` is ``bounce`` (mail to the bounce domain) until
processing classifies it and records the kind it really is.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any

from bounces.errors import translate_queue, translate_storage
from bounces.smtp_policy import dedupe_key
from gateway.app import App
from gateway.jobs.envelope import new_job
from gateway.messages import MessageRecord, store_message
from gateway.verp import Verp, VerpResult

log = logging.getLogger(__name__)

BOUNCE_QUEUE = "queue:bounce:process"
UNATTRIBUTED_TENANT = "_unattributed"
_HEADER_FIELDS = ("From", "To", "Subject", "Message-ID", "Date", "Auto-Submitted", "Content-Type")
_MAX_HEADER_BYTES = 64 * 1024


@dataclass(frozen=True)
class SmtpEnvelope:
    """One SMTP transaction's envelope and where it came from."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    peer: str = ""


@dataclass
class ReceiptPlan:
    """One stored copy: the tenant, the deliveries it names, its recipients."""

    tenant_id: str
    verp_status: str
    delivery_ids: list[str] = field(default_factory=list)
    rcpt_tos: list[str] = field(default_factory=list)


def plan_receipts(
    checks: Sequence[tuple[str, VerpResult]], tenants: dict[str, str]
) -> list[ReceiptPlan]:
    """Group a message's recipients by the tenant their VERP token leads to (pure).

    ``checks``: each recipient with its verification; ``tenants``: delivery id -> tenant
    for the deliveries that exist. Recipients without a genuine token naming an existing
    delivery ride along with the first tenant's copy; with no tenant at all, the message
    is one unattributed copy whose status says why (the first recipient's).
    """
    plans: dict[str, ReceiptPlan] = {}
    stray: list[str] = []
    first_failure = ""
    for rcpt, result in checks:
        tenant = tenants.get(result.delivery_id or "") if result.valid else None
        if tenant is None:
            stray.append(rcpt)
            if not first_failure:
                first_failure = "unknown_delivery" if result.valid else result.reason
            continue
        plan = plans.setdefault(tenant, ReceiptPlan(tenant, "ok"))
        plan.rcpt_tos.append(rcpt)
        assert result.delivery_id is not None
        if result.delivery_id not in plan.delivery_ids:
            plan.delivery_ids.append(result.delivery_id)
    if not plans:
        return [ReceiptPlan(UNATTRIBUTED_TENANT, first_failure or "not_verp", [], stray)]
    ordered = list(plans.values())
    ordered[0].rcpt_tos.extend(stray)
    return ordered


def header_summary(raw: bytes) -> dict[str, str]:
    """The few top-level headers worth a column or a glance (cheap: headers only)."""
    end = raw.find(b"\r\n\r\n")
    head = raw[: end if 0 <= end < _MAX_HEADER_BYTES else _MAX_HEADER_BYTES]
    parsed = BytesHeaderParser(policy=compat32).parsebytes(head)
    out: dict[str, str] = {}
    for name in _HEADER_FIELDS:
        value = parsed.get(name)
        if value is not None:
            out[name] = str(value).strip()[:2000]
    return out


def bounce_job(tenant_id: str, storage_key: str) -> dict[str, Any]:
    """The follow-up job for one stored copy."""
    return new_job(
        {"tenant_id": tenant_id, "storage_key": storage_key, "source": "smtp"},
        queue_name=BOUNCE_QUEUE,
        idempotency_key=f"bounce:{storage_key}",
    )


_INSERT_RECEIPT = """
INSERT INTO bounce_receipts (storage_key, tenant_id, mail_from, rcpt_tos, peer, verp_status,
                             delivery_ids, enqueued_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, now())
ON CONFLICT (storage_key) DO UPDATE SET enqueued_at = now()
"""


class Intake:
    """Commit-then-queue for the listener; see the module docstring."""

    def __init__(self, app: App):
        self.app = app
        self.verp = Verp(app.secret_key)
        self.timeout_s = app.settings.smtp_commit_timeout_s

    async def accept(self, envelope: SmtpEnvelope, raw: bytes) -> list[tuple[str, str]]:
        """Store ``raw`` and queue its processing; returns (tenant, storage key) pairs.

        Raises :class:`~bounces.errors.StorageUnavailable` or
        :class:`~bounces.errors.QueueUnavailable`.
        """
        checks = [(rcpt, self.verp.verify(rcpt)) for rcpt in envelope.rcpt_tos]
        headers = header_summary(raw)
        key = dedupe_key(envelope.mail_from, envelope.rcpt_tos, raw)
        try:
            async with asyncio.timeout(self.timeout_s):
                stored = await self._store(envelope, raw, checks, headers, key)
        except Exception as exc:
            raise translate_storage(exc) from exc
        try:
            async with asyncio.timeout(self.timeout_s):
                jobs = [json.dumps(bounce_job(t, k), separators=(",", ":")) for t, k in stored]
                await self.app.redis.lpush(BOUNCE_QUEUE, *jobs)
        except Exception as exc:
            raise translate_queue(exc) from exc
        return stored

    async def _store(
        self,
        envelope: SmtpEnvelope,
        raw: bytes,
        checks: list[tuple[str, VerpResult]],
        headers: dict[str, str],
        key: str,
    ) -> list[tuple[str, str]]:
        ids = sorted({r.delivery_id for _, r in checks if r.delivery_id})
        stored: list[tuple[str, str]] = []
        async with self.app.db.acquire() as conn, conn.transaction():
            tenants: dict[str, str] = {}
            if ids:
                # The ids come from tokens under our own HMAC: a delivery id is global
                # (primary key) and its row names the tenant every later query is scoped to.
                rows = await conn.fetch(
                    "SELECT id, tenant_id FROM email_deliveries WHERE id = ANY($1::text[])", ids
                )
                tenants = {r["id"]: r["tenant_id"] for r in rows}
            for plan in plan_receipts(checks, tenants):
                record = MessageRecord(
                    tenant_id=plan.tenant_id,
                    dedupe_key=key,
                    direction="inbound",
                    message_type="bounce",
                    from_email=headers.get("From") or envelope.mail_from or None,
                    to_emails=tuple(plan.rcpt_tos),
                    subject=headers.get("Subject"),
                    headers=headers,
                    raw=raw,
                    message_id=headers.get("Message-ID"),
                    source="smtp",
                    status="received",
                    delivery_id=plan.delivery_ids[0] if plan.delivery_ids else None,
                )
                result = await store_message(conn, record)
                await conn.execute(
                    _INSERT_RECEIPT,
                    result.storage_key,
                    plan.tenant_id,
                    envelope.mail_from,
                    plan.rcpt_tos,
                    envelope.peer,
                    plan.verp_status,
                    plan.delivery_ids,
                )
                stored.append((plan.tenant_id, result.storage_key))
        return stored

    async def requeue(self, older_than_s: float, limit: int = 500) -> int:
        """Queue again the receipts not processed ``older_than_s`` after their last queueing
        (their job was lost, or is failing): the durable fallback behind the 250."""
        try:
            async with self.app.db.acquire() as conn:
                rows = await conn.fetch(
                    """
                    UPDATE bounce_receipts SET enqueued_at = now()
                    WHERE storage_key IN (
                        SELECT storage_key FROM bounce_receipts
                        WHERE processed_at IS NULL
                          AND coalesce(enqueued_at, received_at)
                              < now() - make_interval(secs => $1)
                        ORDER BY received_at LIMIT $2
                        FOR UPDATE SKIP LOCKED)
                    RETURNING tenant_id, storage_key
                    """,
                    older_than_s,
                    limit,
                )
        except Exception as exc:
            raise translate_storage(exc) from exc
        if not rows:
            return 0
        jobs = [
            json.dumps(bounce_job(r["tenant_id"], r["storage_key"]), separators=(",", ":"))
            for r in rows
        ]
        try:
            await self.app.redis.lpush(BOUNCE_QUEUE, *jobs)
        except Exception as exc:
            raise translate_queue(exc) from exc
        log.warning("bounce receipts queued again", extra={"count": len(rows)})
        return len(rows)
