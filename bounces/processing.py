"""Bounce processing: the ``queue:bounce:process`` handler (the seeds' ``processBounceJob``).

Four producers speak to it:

* the SMTP listener: ``{tenant_id, storage_key, source: "smtp"}``; the raw message and its
  ``bounce_receipts`` row (which deliveries the VERP recipients named) are in PostgreSQL;
* IMAP ingest, for a bounce found in a mailbox: ``{tenant_id, storage_key, message_id,
  recipient_email}`` (the message's account is on its ``email_messages`` row);
* delivery, for its own 5xx at send time: the ``delivery_id`` it is about;
* the platform, in the seed's shape: ``{message_id, bounce_type, bounce_reason,
  recipient_email}`` (``tenant_id`` optional).

A stored message is classified (:func:`bounces.classify.classify`, off the event loop when
large) into one result per reported recipient; a seed payload is one result as it says.

**Attribution needs evidence.** A result changes a delivery only when it proves which
delivery it is about:

* delivery's own job names its delivery (``delivery``);
* a genuine VERP token: the listener's envelope recipient, or an address of a bounce
  domain in the report's own recipient headers or in the returned message's headers
  (``verp``);
* the returned message's Message-ID (or, from a mailbox, the report's In-Reply-To) equal
  to a delivery's, sent to the recipient the report names, and, for a mailbox, from that
  mailbox's account (``message_id``).

Anything else (a report that only names a recipient we mailed, a forged token, an
unrelated Message-ID) is stored, classified and recorded as ``unattributed``, naming the
recipient's latest send in the window as its ``candidate_delivery_id``, and changes no
delivery, counter or suppression. Complaints follow the same rule.

**One report counts once.** A row of ``bounce_reports`` has two identities: the stored
message and recipient (``report_key``: the same copy processed twice), and the report
itself (``report_identity``: delivery, recipient, action, status, reporting MTA, and the
report's Message-ID, else its Arrival-Date, else the day it came), so the same report
replayed under another envelope, or found both by the listener and in a mailbox, is
recorded once: no second counter, suppression or event. Then, in ONE transaction per job:

* hard bounce: delivery ``bounced`` with type, reason and status; ``bounced_hard`` + 1;
  tenant-scoped suppression. Soft: the same with ``bounced_soft``; suppressed once the
  recipient has soft bounces on ``bounce_soft_limit`` distinct (delivery, day) pairs
  within the window (copies and same-day repeats of one delivery count once).
  Complaint: delivery ``complained``, ``complaints`` + 1, suppression. Campaign counters
  move only when the delivery's status changes. Delayed DSNs, auto-replies and
  non-bounces are recorded, never counted;
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
from dataclasses import dataclass, replace
from typing import Any

import asyncpg

from bounces.classify import classify
from bounces.errors import BadBounceJob, translate_storage
from bounces.intake import UNATTRIBUTED_TENANT, UNSUBSCRIBE
from bounces.metrics import METRICS, BounceMetrics
from bounces.model import REASONS, BounceResult
from gateway import guards
from gateway.app import App
from gateway.events import EventType, Metric, count, record_event
from gateway.jobs.contracts import BouncePayload
from gateway.jobs.envelope import Job
from gateway.jobs.handlers import HandlerSpec
from gateway.logs import bind
from gateway.services import Services
from gateway.unsubscribe import apply_unsubscribe
from gateway.verp import Verp

log = logging.getLogger(__name__)

OFF_LOOP_BYTES = 64 * 1024  # classify larger messages in a thread
_DIAGNOSTIC_CHARS = 2000
_VERP_IN_TEXT = re.compile(r"b\+[a-z2-7]+-[a-z2-7]+@[a-z0-9.\-]+", re.IGNORECASE)
#: The report's own headers where a VERP return path shows which address it was sent to.
_RECIPIENT_HEADERS = re.compile(
    rb"^(?:to|delivered-to|x-original-to|envelope-to|x-envelope-to|x-failed-recipients|"
    rb"original-recipient)[ \t]*:[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*",
    re.IGNORECASE | re.MULTILINE,
)
_REPORTING_MTA = re.compile(rb"^Reporting-MTA[ \t]*:[ \t]*([^\r\n]{1,300})", re.I | re.M)
_ARRIVAL_DATE = re.compile(rb"^Arrival-Date[ \t]*:[ \t]*([^\r\n]{1,200})", re.I | re.M)
_MESSAGE_ID = re.compile(rb"^Message-ID[ \t]*:[ \t]*([^\r\n]{1,998})", re.I | re.M)
_SCAN_BYTES = 512 * 1024  # DSN fields sit near the top; never scan a huge attachment

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


@dataclass(frozen=True)
class StoredReport:
    """What a stored report says about itself, besides its classification (pure: read
    from the raw bytes and its ``email_messages`` row)."""

    account_id: str | None = None  # the mailbox it was found in
    message_id: str = ""  # the report's own Message-ID
    reporting_mta: str = ""
    arrival: str = ""  # its Arrival-Date
    day: str = ""  # the UTC day it was stored
    verp_addresses: tuple[str, ...] = ()  # bounce-domain addresses in its recipient headers


def read_stored_report(
    raw: bytes,
    domains: frozenset[str],
    *,
    account_id: str | None = None,
    message_id: str | None = None,
    day: str = "",
) -> StoredReport:
    """The parts of a stored report that attribution and report identity need (pure)."""
    head = raw[:_SCAN_BYTES]
    end = head.find(b"\r\n\r\n")
    if end < 0:
        end = head.find(b"\n\n")
    top = head[: end if end >= 0 else len(head)]
    addresses: list[str] = []
    for match in _RECIPIENT_HEADERS.finditer(top):
        text = match.group(0).decode("utf-8", "replace")
        for found in _VERP_IN_TEXT.finditer(text):
            address = found.group(0).lower()
            if address.rpartition("@")[2] in domains and address not in addresses:
                addresses.append(address)
    mta = _REPORTING_MTA.search(head)
    arrival = _ARRIVAL_DATE.search(head)
    own_id = _MESSAGE_ID.search(top)  # the same whichever producer stored the copy
    return StoredReport(
        account_id=account_id,
        message_id=(_field(own_id) or message_id or "").strip().strip("<>").strip(),
        reporting_mta=_field(mta).removeprefix("dns;").strip().lower(),
        arrival=_field(arrival),
        day=day,
        verp_addresses=tuple(addresses[:10]),
    )


def _field(match: re.Match[bytes] | None) -> str:
    return match.group(1).decode("utf-8", "replace").strip() if match else ""


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


_TEXT_FIELDS = (
    "recipient",
    "reason",
    "status",
    "diagnostic",
    "remote_mta",
    "action",
    "original_message_id",
    "feedback_type",
)


def storable(result: BounceResult) -> BounceResult:
    """``result`` with every text PostgreSQL can hold (a NUL in a report's fields would fail
    the job on every attempt: text and JSON cannot carry it)."""
    changes: dict[str, Any] = {
        name: value.replace("\x00", "\ufffd")
        for name in _TEXT_FIELDS
        if "\x00" in (value := getattr(result, name))
    }
    if any("\x00" in h or "\x00" in v for h, v in result.original_headers):
        changes["original_headers"] = tuple(
            (h.replace("\x00", "\ufffd"), v.replace("\x00", "\ufffd"))
            for h, v in result.original_headers
        )
    return replace(result, **changes) if changes else result


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
    email_account_id: str | None = None


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


def report_identity(delivery_id: str | None, result: BounceResult, stored: StoredReport) -> str:
    """The identity of a report, whatever copy or envelope brought it: (delivery,
    recipient, action, status, reporting MTA, and the report's Message-ID, else its
    Arrival-Date, else the day it came). A replay is the same report; a new report of the
    same failure (a new Message-ID, or another day) is a new one."""
    parts = (
        delivery_id or "-",
        result.recipient.lower(),
        result.kind,
        result.action.lower(),
        result.status or str(result.reply_code or ""),
        stored.reporting_mta or result.remote_mta.lower(),
        stored.message_id or stored.arrival or stored.day,
    )
    digest = hashlib.sha256("\x00".join(parts).encode("utf-8", "replace")).hexdigest()
    return f"rpt:{digest[:40]}"


def _label(value: str, allowed: frozenset[str]) -> str:
    return value if value in allowed else ("none" if not value else "other")


# -- the handler ------------------------------------------------------------------------------


@dataclass
class _Report:
    """One result on its way into the database."""

    result: BounceResult
    outcome: str
    delivery: Delivery | None
    attribution: str  # delivery, verp, message_id, none
    cause: str = ""  # why unattributed
    candidate: str | None = None  # unattributed: the delivery it may be about (never changed)


def _delivery(row: asyncpg.Record) -> Delivery:
    return Delivery(
        row["id"],
        row["tenant_id"],
        row["campaign_id"],
        row["recipient_email"],
        row["message_id"],
        row["email_account_id"],
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
        await self._guard(fresh)
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
        stored: StoredReport | None = None
        if request.storage_key is not None:
            receipt, raw, stored = await self._load(conn, request)
        if receipt is not None and receipt["verp_status"] == UNSUBSCRIBE:
            await self._unsubscribe(conn, request, receipt)
            return [], []
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
        results = [storable(r) for r in results]
        reports = await self._attribute(conn, request, receipt, stored, results)
        fresh: list[_Report] = []
        async with conn.transaction():
            for report in reports:
                if await self._apply(conn, request, report, stored):
                    fresh.append(report)
            if receipt is not None:
                await self._finish_receipt(conn, request, results)
        return reports, fresh

    async def _unsubscribe(
        self, conn: asyncpg.Connection, request: BounceRequest, receipt: asyncpg.Record
    ) -> None:
        """Mail to ``unsubscribe+<token>@<bounce domain>`` (the List-Unsubscribe mailto):
        the same effect as the one-click POST, for each delivery its genuine tokens name."""
        async with conn.transaction():
            for delivery_id in receipt["delivery_ids"]:
                await apply_unsubscribe(
                    conn, delivery_id, source="mailto", tenant_id=request.tenant_id
                )
            await conn.execute(
                "UPDATE email_messages SET message_type = 'unsubscribe', status = 'processed',"
                " processed = now() WHERE tenant_id = $1 AND storage_key = $2",
                request.tenant_id,
                request.storage_key,
            )
            await conn.execute(
                "UPDATE bounce_receipts SET processed_at = now()"
                " WHERE tenant_id = $1 AND storage_key = $2",
                request.tenant_id,
                request.storage_key,
            )

    async def _load(
        self, conn: asyncpg.Connection, request: BounceRequest
    ) -> tuple[asyncpg.Record | None, bytes | None, StoredReport | None]:
        receipt = await conn.fetchrow(
            "SELECT verp_status, delivery_ids FROM bounce_receipts"
            " WHERE tenant_id = $1 AND storage_key = $2",
            request.tenant_id,
            request.storage_key,
        )
        row = await conn.fetchrow(
            "SELECT c.raw, m.email_account_id, m.message_id,"
            " to_char(c.created AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day"
            " FROM email_content c LEFT JOIN email_messages m"
            " ON m.tenant_id = c.tenant_id AND m.storage_key = c.storage_key"
            " WHERE c.tenant_id = $1 AND c.storage_key = $2",
            request.tenant_id,
            request.storage_key,
        )
        if row is None or row["raw"] is None:
            return receipt, None, None
        raw = bytes(row["raw"])
        stored = read_stored_report(
            raw,
            self.domains,
            account_id=row["email_account_id"],
            message_id=row["message_id"],
            day=row["day"] or "",
        )
        return receipt, raw, stored

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
        stored: StoredReport | None,
        results: list[BounceResult],
    ) -> list[_Report]:
        if receipt is not None and receipt["verp_status"] == "ok":  # the listener's token
            return await self._attribute_by_verp(conn, request, receipt, results)
        # No token in the envelope: the report must carry its own evidence.
        cause = receipt["verp_status"] if receipt is not None else "no_evidence"
        reports = []
        for result in results:
            delivery, how = await self._find_delivery(conn, request, result, stored)
            if delivery is not None:
                reports.append(_Report(result, outcome_of(result), delivery, how))
                continue
            candidate = await self._candidate(conn, request, result)
            reports.append(_Report(result, outcome_of(result), None, "none", cause, candidate))
        return reports

    async def _attribute_by_verp(
        self,
        conn: asyncpg.Connection,
        request: BounceRequest,
        receipt: asyncpg.Record,
        results: list[BounceResult],
    ) -> list[_Report]:
        rows = await conn.fetch(
            "SELECT id, tenant_id, campaign_id, recipient_email, message_id, email_account_id"
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

    def _real_tenant(self, request: BounceRequest) -> str | None:
        """The tenant a look-up is scoped to (None: any, for an unattributed copy or a
        seed payload without one; the ids looked up are global and unguessable)."""
        tenant = request.tenant_id
        return None if tenant in (None, UNATTRIBUTED_TENANT) else tenant

    async def _find_delivery(
        self,
        conn: asyncpg.Connection,
        request: BounceRequest,
        result: BounceResult,
        stored: StoredReport | None,
    ) -> tuple[Delivery | None, str]:
        """The delivery a result proves it is about, and how; (None, "none") without
        evidence. The recipient alone is never evidence (see :meth:`_candidate`)."""
        tenant = self._real_tenant(request)
        if request.delivery_id is not None and tenant is not None:
            # Delivery's own 5xx at send time: the job names its delivery.
            row = await conn.fetchrow(
                "SELECT id, tenant_id, campaign_id, recipient_email, message_id, email_account_id"
                " FROM email_deliveries"
                " WHERE tenant_id = $1 AND id = $2",
                tenant,
                request.delivery_id,
            )
            return (_delivery(row), "delivery") if row is not None else (None, "none")
        texts = list(stored.verp_addresses) if stored is not None else []
        texts += [
            value
            for header, value in result.original_headers
            if header.lower() in ("return-path", "sender", "x-original-sender", "from")
        ]
        for text in texts:
            found = await self._by_verp_text(conn, tenant, text)
            if found is not None:
                return found, "verp"
        recipient = (result.recipient or request.recipient_email or "").lower()
        account = stored.account_id if stored is not None else None
        for mid in (result.original_message_id, request.message_id):
            if mid:
                found = await self._by_message_id(conn, tenant, mid, recipient, account)
                if found is not None:
                    return found, "message_id"
        return None, "none"

    async def _candidate(
        self, conn: asyncpg.Connection, request: BounceRequest, result: BounceResult
    ) -> str | None:
        """The recipient's latest send in the window: named on an unattributed report for
        the operator, never changed (anyone can send a report naming a recipient)."""
        tenant = self._real_tenant(request)
        email = result.recipient or request.recipient_email
        if not email or tenant is None:
            return None
        found: str | None = await conn.fetchval(
            "SELECT id FROM email_deliveries"
            " WHERE tenant_id = $1 AND lower(recipient_email) = lower($2)"
            " AND sent_at > now() - make_interval(days => $3)"
            " ORDER BY sent_at DESC LIMIT 1",
            tenant,
            email,
            self.settings.bounce_soft_window_days,
        )
        return found

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
                "SELECT id, tenant_id, campaign_id, recipient_email, message_id, email_account_id"
                " FROM email_deliveries WHERE id = $1",
                verified.delivery_id,
            )
            if row is not None and (tenant is None or row["tenant_id"] == tenant):
                return _delivery(row)
        return None

    async def _by_message_id(
        self,
        conn: asyncpg.Connection,
        tenant: str | None,
        message_id: str,
        recipient: str,
        account: str | None,
    ) -> Delivery | None:
        """The one delivery with this Message-ID, sent to ``recipient`` (when the report
        names one) from ``account`` (when the report was found in a mailbox)."""
        bare = message_id.strip().strip("<>")
        if not bare:
            return None
        candidates = [bare, f"<{bare}>"]
        rows = await conn.fetch(
            "SELECT id, tenant_id, campaign_id, recipient_email, message_id, email_account_id"
            " FROM email_deliveries"
            " WHERE message_id = ANY($1::text[]) AND ($2::text IS NULL OR tenant_id = $2)"
            " LIMIT 2",
            candidates,
            tenant,
        )
        if len(rows) != 1:
            return None
        found = _delivery(rows[0])
        if recipient and found.recipient_email.lower() != recipient:
            return None
        if account is not None and found.email_account_id not in (None, account):
            return None
        return found

    # -- effects --------------------------------------------------------------------------

    async def _apply(
        self,
        conn: asyncpg.Connection,
        request: BounceRequest,
        report: _Report,
        stored: StoredReport | None,
    ) -> bool:
        """Record one report and its effects; False when it had been recorded before (this
        copy, or the same report in another copy)."""
        result, delivery = report.result, report.delivery
        outcome = report.outcome if delivery is not None else "unattributed"
        tenant = delivery.tenant_id if delivery else (request.tenant_id or UNATTRIBUTED_TENANT)
        recipient = (delivery.recipient_email if delivery else result.recipient).lower() or None
        key = report_key(request, result)
        identity = (
            report_identity(delivery.id if delivery else None, result, stored)
            if stored is not None
            else None
        )
        # No conflict target: either identity (report_key, report_identity) makes it a no-op.
        inserted = await conn.fetchval(
            """
            INSERT INTO bounce_reports (tenant_id, report_key, source, storage_key, delivery_id,
                campaign_id, recipient_email, kind, action, outcome, attribution, bounce_type,
                reason, status, diagnostic, report_identity, candidate_delivery_id)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
            ON CONFLICT DO NOTHING RETURNING id
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
            identity,
            report.candidate,
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
        """Distinct (delivery, day) pairs with a soft bounce of this recipient in the
        window: copies of one report, or one delivery reported again the same day, count
        once; another send, or the same one failing again on another day, counts again.
        Counted under a per-recipient lock (held to the commit), so two reports processed
        at once each see the other's row, whichever commits first."""
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext('bounce-soft-count'), hashtext($1))",
            f"{delivery.tenant_id}/{delivery.recipient_email.lower()}",
        )
        count = await conn.fetchval(
            "SELECT count(DISTINCT (delivery_id, (created_at AT TIME ZONE 'UTC')::date))"
            " FROM bounce_reports WHERE tenant_id = $1 AND recipient_email = $2"
            " AND outcome = 'bounced_soft' AND delivery_id IS NOT NULL"
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

    async def _guard(self, fresh: list[_Report]) -> None:
        """After a bounce or complaint is recorded, the deliverability guards of the
        delivery's account and campaign (a rate has just moved)."""
        seen: set[tuple[str, str | None, str | None, str]] = set()
        for report in fresh:
            delivery = report.delivery
            if delivery is None or report.outcome not in _COUNTERS:
                continue
            domain = delivery.recipient_email.rpartition("@")[2].lower()
            key = (delivery.tenant_id, delivery.email_account_id, delivery.campaign_id, domain)
            if key in seen:
                continue
            seen.add(key)
            try:
                async with self.app.db.acquire() as conn:
                    await guards.check(
                        conn,
                        self.settings,
                        delivery.tenant_id,
                        account_id=delivery.email_account_id,
                        campaign_id=delivery.campaign_id,
                        domain=domain,
                        registry=self.app.metrics.registry,
                    )
            except Exception:  # the report is recorded; the next one evaluates again
                log.exception("deliverability guard check failed")

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
        "candidate_delivery_id": report.candidate,
        # The bounced message's own Message-ID: how warmup recognises a report about its
        # mail (warmup sends write no delivery row, so such reports are unattributed).
        "original_message_id": result.original_message_id or None,
    }


def create_handler(app: App, services: Services) -> HandlerSpec:
    """Entry point (group ``mailgate.handlers``): the handler of family ``bounce``."""
    processor = BounceProcessor(app, services.get(METRICS))
    return HandlerSpec(family="bounce", run=processor.run)
