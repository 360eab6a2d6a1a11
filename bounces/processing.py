"""Bounce processing: the ``queue:bounce:process`` handler (the seeds' ``processBounceJob``).

Three producers speak to it:

* the SMTP listener: ``{tenant_id, storage_key, source: "smtp"}``; the raw message and its
  ``bounce_receipts`` row (which deliveries the VERP recipients named) are in PostgreSQL;
* IMAP ingest, for a bounce found in a mailbox: ``{tenant_id, storage_key, message_id,
  bounce_type, bounce_reason, recipient_email}``;
* the platform, in the seed's shape: ``{message_id, bounce_type, bounce_reason,
  recipient_email}`` (``tenant_id`` optional).

A stored message is classified (:func:`bounces.classify.classify`, off the event loop when
large) into one result per reported recipient; a seed payload is one result as it says.
Each result is attributed to a delivery: by VERP token, else by the original Message-ID,
else by recipient and a send in the last ``bounce_soft_window_days``. Mail to the listener
is attributed by its VERP token only: without a genuine one it changes nothing but is
kept and reported. Then, in ONE transaction per job:

* ``bounce_reports`` gets a row per (report, recipient), unique by ``report_key``: the
  same report processed twice stops here the second time and changes nothing;
* hard bounce: delivery ``bounced`` with type, reason and status; ``bounced_hard`` + 1;
  tenant-scoped suppression. Soft: the same with ``bounced_soft``; suppressed once the
  recipient has ``bounce_soft_limit`` soft bounces within the window. Complaint: delivery
  ``complained``, ``complaints`` + 1, suppression. Campaign counters move only when the
  delivery's status changes, so one delivery reported twice (listener and mailbox) counts
  once. Delayed DSNs, auto-replies and non-bounces are recorded, never counted;
* an ``events`` row for each report (deduplicated by the same key).

A report about a delivery that does not exist is recorded as ``unattributed`` and the job
completes: no retry loop. Storage failures are retried by the job runtime.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from bounces.classify import classify
from bounces.errors import BadBounceJob, translate_storage
from bounces.intake import UNATTRIBUTED_TENANT
from bounces.metrics import METRICS, BounceMetrics
from bounces.model import REASONS, BounceResult
from gateway.app import App
from gateway.events import EventType, Metric, count, record_event
from gateway.jobs.contracts import BouncePayload
from gateway.jobs.envelope import Job
from gateway.jobs.handlers import HandlerSpec
from gateway.logs import bind
from gateway.services import Services
from gateway.verp import Verp

log = logging.getLogger(__name__)

OFF_LOOP_BYTES = 64 * 1024  # classify larger messages in a thread
_DIAGNOSTIC_CHARS = 2000
_VERP_IN_TEXT = re.compile(r"b\+[a-z2-7]+-[a-z2-7]+@[a-z0-9.\-]+", re.IGNORECASE)

MESSAGE_TYPES = {"dsn": "bounce", "complaint": "complaint", "auto_reply": "auto_reply"}
EVENT_TYPES = {
    "bounced_hard": EventType.BOUNCED,
    "bounced_soft": EventType.BOUNCED,
    "delayed": EventType.DEFERRED,
    "complaint": EventType.COMPLAINED,
    "auto_reply": EventType.AUTO_REPLIED,
    "ignored": EventType.BOUNCE_IGNORED,
    "unattributed": EventType.BOUNCE_UNATTRIBUTED,
}
_COUNTERS = {
    "bounced_hard": Metric.BOUNCED_HARD,
    "bounced_soft": Metric.BOUNCED_SOFT,
    "complaint": Metric.COMPLAINTS,
}


# -- the request ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BounceRequest:
    """A ``queue:bounce:process`` payload, read for processing."""

    source: str  # smtp, mailbox, smtp_reply, job
    tenant_id: str | None = None
    storage_key: str | None = None
    message_id: str | None = None
    bounce_type: str | None = None
    bounce_reason: str | None = None
    recipient_email: str | None = None
    delivery_id: str | None = None
    status: str | None = None
    diagnostic: str | None = None


def parse_request(payload: BouncePayload) -> BounceRequest:
    """The request of a validated payload (:class:`gateway.jobs.contracts.BouncePayload`
    checked its shape: a stored message names its tenant, a seed payload its outcome)."""
    if payload.storage_key is not None:
        source = "smtp" if payload.source == "smtp" else "mailbox"
    else:
        source = "job"
    return BounceRequest(
        source=source,
        tenant_id=payload.tenant_id,
        storage_key=payload.storage_key,
        message_id=payload.message_id,
        bounce_type=payload.bounce_type,
        bounce_reason=payload.bounce_reason,
        recipient_email=payload.recipient_email,
        delivery_id=payload.delivery_id,
        status=payload.status,
        diagnostic=payload.diagnostic,
    )


def result_from_request(request: BounceRequest) -> BounceResult:
    """The one result a seed payload states."""
    return BounceResult(
        kind="dsn",
        recipient=request.recipient_email or "",
        bounce_type="hard" if request.bounce_type == "hard" else "soft",
        reason=request.bounce_reason or "",
        action="failed",
        status=request.status or "",
        diagnostic=request.diagnostic or "",
        original_message_id=request.message_id or "",
    )


# -- decisions (pure) -------------------------------------------------------------------------


def outcome_of(result: BounceResult) -> str:
    """What a result means for its delivery."""
    if result.kind == "complaint":
        return "complaint"
    if result.kind == "auto_reply":
        return "auto_reply"
    if result.kind != "dsn":
        return "ignored"
    action = result.action.lower()
    if action == "delayed":
        return "delayed"
    if action in ("delivered", "relayed", "expanded"):
        return "ignored"
    bounce_type = result.bounce_type
    if bounce_type is None:
        permanent = result.status.startswith("5") or (result.reply_code or 0) >= 500
        bounce_type = "hard" if permanent else "soft"
    return f"bounced_{bounce_type}"


def message_type_of(results: Sequence[BounceResult]) -> str:
    """``email_messages.message_type`` for a classified message."""
    for result in results:
        if result.kind in MESSAGE_TYPES:
            return MESSAGE_TYPES[result.kind]
    return "email"


@dataclass(frozen=True)
class Delivery:
    id: str
    tenant_id: str
    campaign_id: str | None
    recipient_email: str
    message_id: str | None = None


def match_deliveries(
    results: Sequence[BounceResult], deliveries: Sequence[Delivery]
) -> list[Delivery | None]:
    """Pair results with the deliveries their VERP tokens named: by recipient first, then
    a delivery left over goes to the first reportable result still unpaired (a report may
    name a forwarded address rather than the one we sent to)."""
    paired: list[Delivery | None] = [None] * len(results)
    used: set[str] = set()
    for i, result in enumerate(results):
        for delivery in deliveries:
            if delivery.id not in used and result.recipient.lower() == (
                delivery.recipient_email.lower()
            ):
                paired[i] = delivery
                used.add(delivery.id)
                break
    for delivery in deliveries:
        if delivery.id in used:
            continue
        for i, result in enumerate(results):
            if paired[i] is None and result.kind != "not_bounce":
                paired[i] = delivery
                used.add(delivery.id)
                break
    return paired


def report_key(request: BounceRequest, result: BounceResult) -> str:
    """The identity of one (report, recipient): stable across re-runs and classifier
    versions (no position, no kind), so repeating a report is a no-op."""
    if request.storage_key is not None:
        return f"msg:{request.storage_key}:{result.recipient.lower()[:320]}"
    parts = (
        request.message_id,
        request.recipient_email,
        request.bounce_type,
        request.bounce_reason,
    )
    digest = hashlib.sha256("\x00".join(p or "" for p in parts).encode()).hexdigest()
    return f"job:{digest[:40]}"


def _label(value: str, allowed: frozenset[str]) -> str:
    return value if value in allowed else ("none" if not value else "other")


# -- the handler ------------------------------------------------------------------------------


@dataclass
class _Report:
    """One result on its way into the database."""

    result: BounceResult
    outcome: str
    delivery: Delivery | None
    attribution: str  # delivery, verp, message_id, recipient, none
    cause: str = ""  # why unattributed


def _delivery(row: asyncpg.Record) -> Delivery:
    return Delivery(
        row["id"], row["tenant_id"], row["campaign_id"], row["recipient_email"], row["message_id"]
    )


class BounceProcessor:
    """Runs bounce jobs against one app (pool, settings, metrics)."""

    def __init__(self, app: App, metrics: BounceMetrics):
        self.app = app
        self.settings = app.settings
        self.verp = Verp(app.secret_key)
        self.domains = frozenset(app.settings.bounce_domains)
        self.metrics: BounceMetrics = metrics

    async def run(self, job: Job, payload: BouncePayload) -> dict[str, Any]:
        request = parse_request(payload)
        with bind(job_id=job.id, tenant_id=request.tenant_id, storage_key=request.storage_key):
            try:
                async with self.app.db.acquire() as conn:
                    reports, fresh = await self._process(conn, request)
            except BadBounceJob:
                raise
            except Exception as exc:
                raise translate_storage(exc) from exc
        self._count(fresh)
        return {
            "success": True,
            "reports": len(reports),
            "new": len(fresh),
            "outcomes": [r.outcome for r in reports],
            "deliveries": [r.delivery.id for r in reports if r.delivery is not None],
        }

    async def _process(
        self, conn: asyncpg.Connection, request: BounceRequest
    ) -> tuple[list[_Report], list[_Report]]:
        receipt: asyncpg.Record | None = None
        raw: bytes | None = None
        if request.storage_key is not None:
            receipt, raw = await self._load(conn, request)
        if raw is not None:
            results = await self._classify(raw)
            # A mailbox producer saw a bounce the classifier does not: trust its fields.
            unrecognised = all(r.kind == "not_bounce" for r in results)
            if request.source == "mailbox" and unrecognised and request.bounce_type is not None:
                results = [result_from_request(request)]
        elif request.bounce_type is not None:
            results = [result_from_request(request)]
        else:
            raise BadBounceJob(f"stored message {request.storage_key!r} not found")
        reports = await self._attribute(conn, request, receipt, results)
        fresh: list[_Report] = []
        async with conn.transaction():
            for report in reports:
                if await self._apply(conn, request, report):
                    fresh.append(report)
            if receipt is not None:
                await self._finish_receipt(conn, request, results)
        return reports, fresh

    async def _load(
        self, conn: asyncpg.Connection, request: BounceRequest
    ) -> tuple[asyncpg.Record | None, bytes | None]:
        receipt = await conn.fetchrow(
            "SELECT verp_status, delivery_ids FROM bounce_receipts"
            " WHERE tenant_id = $1 AND storage_key = $2",
            request.tenant_id,
            request.storage_key,
        )
        raw = await conn.fetchval(
            "SELECT raw FROM email_content WHERE tenant_id = $1 AND storage_key = $2",
            request.tenant_id,
            request.storage_key,
        )
        return receipt, (bytes(raw) if raw is not None else None)

    async def _classify(self, raw: bytes) -> list[BounceResult]:
        if len(raw) > OFF_LOOP_BYTES:
            return await asyncio.to_thread(classify, raw)
        return classify(raw)

    # -- attribution ----------------------------------------------------------------------

    async def _attribute(
        self,
        conn: asyncpg.Connection,
        request: BounceRequest,
        receipt: asyncpg.Record | None,
        results: list[BounceResult],
    ) -> list[_Report]:
        if receipt is not None:  # the listener: VERP or nothing
            return await self._attribute_by_verp(conn, request, receipt, results)
        reports = []
        for result in results:
            delivery, how = await self._find_delivery(conn, request, result)
            reports.append(
                _Report(result, outcome_of(result), delivery, how, "" if delivery else "no_match")
            )
        return reports

    async def _attribute_by_verp(
        self,
        conn: asyncpg.Connection,
        request: BounceRequest,
        receipt: asyncpg.Record,
        results: list[BounceResult],
    ) -> list[_Report]:
        if receipt["verp_status"] != "ok":
            cause = receipt["verp_status"]
            return [_Report(r, outcome_of(r), None, "none", cause) for r in results]
        rows = await conn.fetch(
            "SELECT id, tenant_id, campaign_id, recipient_email, message_id"
            " FROM email_deliveries"
            " WHERE tenant_id = $1 AND id = ANY($2::text[])",
            request.tenant_id,
            list(receipt["delivery_ids"]),
        )
        order = {d: i for i, d in enumerate(receipt["delivery_ids"])}
        deliveries = sorted((_delivery(r) for r in rows), key=lambda d: order.get(d.id, 0))
        paired = match_deliveries(results, deliveries)
        return [
            _Report(r, outcome_of(r), d, "verp" if d else "none", "" if d else "no_match")
            for r, d in zip(results, paired, strict=True)
        ]

    async def _find_delivery(
        self, conn: asyncpg.Connection, request: BounceRequest, result: BounceResult
    ) -> tuple[Delivery | None, str]:
        tenant = request.tenant_id
        if request.delivery_id is not None and tenant is not None:
            # Delivery's own 5xx at send time: the job names its delivery.
            row = await conn.fetchrow(
                "SELECT id, tenant_id, campaign_id, recipient_email, message_id"
                " FROM email_deliveries WHERE tenant_id = $1 AND id = $2",
                tenant,
                request.delivery_id,
            )
            return (_delivery(row), "delivery") if row is not None else (None, "none")
        for header, value in result.original_headers:
            if header.lower() in ("return-path", "sender", "x-original-sender", "from"):
                found = await self._by_verp_text(conn, tenant, value)
                if found is not None:
                    return found, "verp"
        for mid in (result.original_message_id, request.message_id):
            if mid:
                found = await self._by_message_id(conn, tenant, mid)
                if found is not None:
                    return found, "message_id"
        email = result.recipient or request.recipient_email
        if email and tenant is not None:
            row = await conn.fetchrow(
                "SELECT id, tenant_id, campaign_id, recipient_email, message_id"
                " FROM email_deliveries"
                " WHERE tenant_id = $1 AND lower(recipient_email) = lower($2)"
                " AND sent_at > now() - make_interval(days => $3)"
                " ORDER BY sent_at DESC LIMIT 1",
                tenant,
                email,
                self.settings.bounce_soft_window_days,
            )
            if row is not None:
                return _delivery(row), "recipient"
        return None, "none"

    async def _by_verp_text(
        self, conn: asyncpg.Connection, tenant: str | None, text: str
    ) -> Delivery | None:
        for match in _VERP_IN_TEXT.finditer(text):
            address = match.group(0).lower()
            if address.rpartition("@")[2] not in self.domains:
                continue
            verified = self.verp.verify(address)
            if verified.delivery_id is None:
                continue
            row = await conn.fetchrow(
                "SELECT id, tenant_id, campaign_id, recipient_email, message_id"
                " FROM email_deliveries WHERE id = $1",
                verified.delivery_id,
            )
            if row is not None and (tenant is None or row["tenant_id"] == tenant):
                return _delivery(row)
        return None

    async def _by_message_id(
        self, conn: asyncpg.Connection, tenant: str | None, message_id: str
    ) -> Delivery | None:
        bare = message_id.strip().strip("<>")
        candidates = [bare, f"<{bare}>"]
        if tenant is not None:
            rows = await conn.fetch(
                "SELECT id, tenant_id, campaign_id, recipient_email, message_id"
                " FROM email_deliveries"
                " WHERE tenant_id = $1 AND message_id = ANY($2::text[]) LIMIT 2",
                tenant,
                candidates,
            )
        else:  # the seed's payload has no tenant: a Message-ID is unique across tenants
            rows = await conn.fetch(
                "SELECT id, tenant_id, campaign_id, recipient_email, message_id"
                " FROM email_deliveries"
                " WHERE message_id = ANY($1::text[]) LIMIT 2",
                candidates,
            )
        return _delivery(rows[0]) if len(rows) == 1 else None

    # -- effects --------------------------------------------------------------------------

    async def _apply(
        self, conn: asyncpg.Connection, request: BounceRequest, report: _Report
    ) -> bool:
        """Record one report and its effects; False when it had been recorded before."""
        result, delivery = report.result, report.delivery
        outcome = report.outcome if delivery is not None else "unattributed"
        tenant = delivery.tenant_id if delivery else (request.tenant_id or UNATTRIBUTED_TENANT)
        recipient = (delivery.recipient_email if delivery else result.recipient).lower() or None
        key = report_key(request, result)
        inserted = await conn.fetchval(
            """
            INSERT INTO bounce_reports (tenant_id, report_key, source, storage_key, delivery_id,
                campaign_id, recipient_email, kind, action, outcome, attribution, bounce_type,
                reason, status, diagnostic)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
            ON CONFLICT (tenant_id, report_key) DO NOTHING RETURNING id
            """,
            tenant,
            key,
            request.source,
            request.storage_key,
            delivery.id if delivery else None,
            delivery.campaign_id if delivery else None,
            recipient,
            result.kind,
            result.action or None,
            outcome,
            report.attribution,
            result.bounce_type if outcome.startswith("bounced") else None,
            result.reason or None,
            result.status or None,
            (result.diagnostic or "")[:_DIAGNOSTIC_CHARS] or None,
        )
        if inserted is None:
            return False
        if delivery is not None:
            await self._delivery_effects(conn, report, delivery)
        await record_event(
            conn,
            tenant_id=tenant,
            event_type=EVENT_TYPES[outcome],
            subject_id=delivery.id if delivery else request.storage_key,
            payload=_event_payload(request, report, outcome),
            dedupe_key=f"bounce:{key}",
        )
        return True

    async def _delivery_effects(
        self, conn: asyncpg.Connection, report: _Report, delivery: Delivery
    ) -> None:
        outcome, result = report.outcome, report.result
        if outcome not in _COUNTERS:
            return  # delayed, auto-reply, ignored: recorded, never counted
        old = await conn.fetchval(
            "SELECT status FROM email_deliveries WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
            delivery.tenant_id,
            delivery.id,
        )
        if outcome == "complaint":
            await conn.execute(
                "UPDATE email_deliveries SET status = 'complained', updated_at = now()"
                " WHERE tenant_id = $1 AND id = $2",
                delivery.tenant_id,
                delivery.id,
            )
            changed = old != "complained"
            await self._suppress(conn, delivery, "complaint", result.feedback_type or "abuse")
        else:
            bounce_type = outcome.removeprefix("bounced_")
            await conn.execute(
                """
                UPDATE email_deliveries SET
                    status = CASE WHEN status = 'complained' THEN status ELSE 'bounced' END,
                    bounced_at = now(), bounce_type = $3, bounce_reason = $4,
                    bounce_status = $5, updated_at = now()
                WHERE tenant_id = $1 AND id = $2
                  AND (bounce_type IS DISTINCT FROM 'hard' OR $3 = 'hard')
                """,
                delivery.tenant_id,
                delivery.id,
                bounce_type,
                (result.reason or "undefined")[:500],
                result.status or None,
            )
            changed = old not in ("bounced", "complained")
            if bounce_type == "hard":
                await self._suppress(conn, delivery, "hard_bounce", result.reason)
            elif await self._soft_count(conn, delivery) >= self.settings.bounce_soft_limit:
                await self._suppress(conn, delivery, "soft_bounce", result.reason)
        if changed and delivery.campaign_id:
            # One bounce count and one complaint count per delivery, whatever repeats.
            fact = "complaint" if outcome == "complaint" else "bounce"
            await count(
                conn,
                tenant_id=delivery.tenant_id,
                campaign_id=delivery.campaign_id,
                metric=_COUNTERS[outcome],
                dedupe_key=f"delivery:{delivery.id}:{fact}",
            )

    async def _soft_count(self, conn: asyncpg.Connection, delivery: Delivery) -> int:
        count = await conn.fetchval(
            "SELECT count(*) FROM bounce_reports WHERE tenant_id = $1 AND recipient_email = $2"
            " AND outcome = 'bounced_soft'"
            " AND created_at > now() - make_interval(days => $3)",
            delivery.tenant_id,
            delivery.recipient_email.lower(),
            self.settings.bounce_soft_window_days,
        )
        return int(count)

    async def _suppress(
        self, conn: asyncpg.Connection, delivery: Delivery, reason: str, detail: str
    ) -> None:
        """Suppress the delivery's recipient for its tenant; a soft-bounce suppression is
        upgraded by a hard bounce or a complaint, nothing else is overwritten."""
        await conn.execute(
            """
            INSERT INTO suppressions (tenant_id, email, reason, source, detail)
            VALUES ($1, lower($2), $3, 'bounce', $4)
            ON CONFLICT (tenant_id, email) DO UPDATE SET
                reason = EXCLUDED.reason, source = EXCLUDED.source,
                detail = EXCLUDED.detail, created_at = now()
            WHERE suppressions.reason = 'soft_bounce' AND EXCLUDED.reason <> 'soft_bounce'
            """,
            delivery.tenant_id,
            delivery.recipient_email,
            reason,
            (detail or "")[:500] or None,
        )

    async def _finish_receipt(
        self, conn: asyncpg.Connection, request: BounceRequest, results: list[BounceResult]
    ) -> None:
        await conn.execute(
            "UPDATE email_messages SET message_type = $3, status = 'processed',"
            " processed = now() WHERE tenant_id = $1 AND storage_key = $2",
            request.tenant_id,
            request.storage_key,
            message_type_of(results),
        )
        await conn.execute(
            "UPDATE bounce_receipts SET processed_at = now()"
            " WHERE tenant_id = $1 AND storage_key = $2",
            request.tenant_id,
            request.storage_key,
        )

    def _count(self, fresh: list[_Report]) -> None:
        """Prometheus, after the commit: attributed reports by kind, the rest by cause."""
        for report in fresh:
            if report.delivery is None:
                self.metrics.unattributed.labels(report.cause or "no_match").inc()
                continue
            result = report.result
            kind = "delayed" if report.outcome == "delayed" else result.kind
            self.metrics.bounces.labels(
                kind,
                result.bounce_type if report.outcome.startswith("bounced") else "none",
                _label(result.reason, REASONS),
            ).inc()


def _event_payload(request: BounceRequest, report: _Report, outcome: str) -> dict[str, Any]:
    result, delivery = report.result, report.delivery
    return {
        "outcome": outcome,
        "source": request.source,
        "storage_key": request.storage_key,
        "delivery_id": delivery.id if delivery else None,
        "campaign_id": delivery.campaign_id if delivery else None,
        "recipient": (delivery.recipient_email if delivery else result.recipient) or None,
        "kind": result.kind,
        "action": result.action or None,
        "bounce_type": result.bounce_type,
        "reason": result.reason or None,
        "status": result.status or None,
        "diagnostic": (result.diagnostic or "")[:500] or None,
        "feedback_type": result.feedback_type or None,
        "attribution": report.attribution,
        "unattributed_cause": report.cause or None,
    }


def create_handler(app: App, services: Services) -> HandlerSpec:
    """Entry point (group ``mailgate.handlers``): the handler of family ``bounce``."""
    processor = BounceProcessor(app, services.get(METRICS))
    return HandlerSpec(family="bounce", run=processor.run)
