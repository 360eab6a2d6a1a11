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
nothing unless processing finds evidence in the report itself (see
:mod:`bounces.processing`). Mail to ``postmaster`` (bare, or at a bounce domain) is kept
there too, as a copy of its own with ``verp_status`` ``postmaster``, for the operator.

Commits are grouped (:class:`~gateway.groupcommit.GroupCommit`), capped in count and in
bytes (``smtp_commit_batch_bytes``; a larger message commits alone), and stored with the
batched :func:`gateway.messages.store_messages` (a handful of statements per batch, not
per message). One slow or failed member never fails the others: a batch that fails on a
statement or runs past its share of the time (a third of ``smtp_commit_timeout_s``) is
run again message by message, each with a timeout of its own; an outage (connection
refused or lost) fails the batch at once. A timeout is reported as a timeout.

``message_type`` at commit comes from the headers alone
(:func:`provisional_type`: the shared message-kind classifier on those headers), because the full
classification is CPU work that must not delay the 250; processing classifies the message
and records the kind it really is.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from bounces.errors import BounceError, StorageUnavailable, translate_queue, translate_storage
from bounces.smtp_policy import dedupe_key, is_postmaster
from gateway.app import App
from gateway.groupcommit import GroupCommit
from gateway.jobs.contracts import BOUNCE, BouncePayload, encode_job
from gateway.messagekind import HEADERS, Kind, classify_kind, lookup
from gateway.messages import MessageRecord, store_messages
from gateway.storage import is_transient
from gateway.verp import Verp, VerpResult

log = logging.getLogger(__name__)

UNATTRIBUTED_TENANT = "_unattributed"
POSTMASTER = VerpResult(None, "postmaster")  # a postmaster recipient's "verification"
UNSUBSCRIBE = "unsubscribe"  # verp_status of a genuine unsubscribe+<token> recipient
# What the listener stores before the 250, plus what the message-kind classifier reads.
_HEADER_FIELDS = tuple(dict.fromkeys(("From", "To", "Subject", "Message-ID", "Date", *HEADERS)))
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

    ``checks``: each recipient with its verification (:data:`POSTMASTER` for postmaster);
    ``tenants``: delivery id -> tenant for the deliveries that exist. Recipients without a
    genuine token naming an existing delivery ride along with the first tenant's copy;
    with no tenant at all, the message is one unattributed copy whose status says why (the
    first recipient's). Postmaster recipients always get an unattributed copy of their own
    (status ``postmaster``), which the stray recipients join when no tenant takes them.
    """
    plans: dict[tuple[str, str], ReceiptPlan] = {}
    stray: list[str] = []
    postmaster: list[str] = []
    first_failure = ""
    for rcpt, result in checks:
        if result is POSTMASTER or result.reason == "postmaster":
            postmaster.append(rcpt)
            continue
        tenant = tenants.get(result.delivery_id or "") if result.valid else None
        if tenant is None:
            stray.append(rcpt)
            if not first_failure:
                first_failure = "unknown_delivery" if result.valid else result.reason
            continue
        # An unsubscribe (``unsubscribe+<token>@``) is a copy of its own: processing
        # unsubscribes instead of classifying a bounce.
        status = UNSUBSCRIBE if result.reason == UNSUBSCRIBE else "ok"
        plan = plans.setdefault((tenant, status), ReceiptPlan(tenant, status))
        plan.rcpt_tos.append(rcpt)
        assert result.delivery_id is not None
        if result.delivery_id not in plan.delivery_ids:
            plan.delivery_ids.append(result.delivery_id)
    ordered = list(plans.values())
    if ordered:
        ordered[0].rcpt_tos.extend(stray)
        stray = []
    if postmaster:
        ordered.append(ReceiptPlan(UNATTRIBUTED_TENANT, "postmaster", [], postmaster + stray))
    elif not ordered:
        ordered.append(ReceiptPlan(UNATTRIBUTED_TENANT, first_failure or "not_verp", [], stray))
    return ordered


def header_summary(raw: bytes) -> dict[str, str]:
    """The few top-level headers worth a column or a glance (first occurrence, unfolded).

    A plain scan of the header block (at most 64 KB) instead of a MIME parser: this runs
    before the 250 for every message, and classification parses the message fully later.
    """
    head = raw[:_MAX_HEADER_BYTES]
    end = head.find(b"\r\n\r\n")
    if end >= 0:
        head = head[:end]
    wanted = {name.lower(): name for name in _HEADER_FIELDS}
    out: dict[str, str] = {}
    current: str | None = None
    for line in head.decode("utf-8", "replace").splitlines():
        if line[:1] in (" ", "\t"):
            if current is not None and current in out:
                out[current] = f"{out[current]} {line.strip()}"
            continue
        name, colon, value = line.partition(":")
        current = wanted.get(name.strip().lower()) if colon else None
        if current is not None and current not in out:
            out[current] = value.strip()
        elif current is not None:
            current = None  # a repeated header: keep the first
    return {name: value[:2000] for name, value in out.items()}


def provisional_type(headers: dict[str, str]) -> str:
    """The message type the headers announce: what is stored before the 250, until
    processing has classified the message. Mail to the bounce domain without a sign
    is taken for a (non-standard) bounce."""
    kind = classify_kind(lookup(headers))
    if kind in (Kind.COMPLAINT, Kind.AUTO_REPLY):
        return kind.value
    return Kind.BOUNCE.value


def bounce_job(tenant_id: str, storage_key: str) -> bytes:
    """The follow-up job for one stored copy (the bytes to LPUSH)."""
    return encode_job(
        BOUNCE,
        BouncePayload(tenant_id=tenant_id, storage_key=storage_key, source="smtp"),
        idempotency_key=f"bounce:{storage_key}",
    )


_INSERT_RECEIPT = """
INSERT INTO bounce_receipts (storage_key, tenant_id, mail_from, rcpt_tos, peer, verp_status,
                             delivery_ids, enqueued_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, now())
ON CONFLICT (storage_key) DO UPDATE SET enqueued_at = now()
"""


def _one_messages_fault(exc: BaseException) -> bool:
    """Errors that may be one message's (store each alone): a statement error (not an
    outage), and a batch that ran past its time (one slow member)."""
    if isinstance(exc, TimeoutError):
        return True
    return isinstance(exc, asyncpg.PostgresError) and not is_transient(exc)


@dataclass
class _Pending:
    """One message waiting for the next group commit."""

    envelope: SmtpEnvelope
    raw: bytes
    checks: list[tuple[str, VerpResult]]
    headers: dict[str, str]
    key: str


class Intake:
    """Commit-then-queue for the listener; see the module docstring.

    Group commit (:class:`~gateway.groupcommit.GroupCommit`): messages that arrive while a
    commit is running wait for the next one, which stores them all in ONE transaction
    and queues their jobs with ONE ``LPUSH``; ``committers`` such commits may run at once,
    each at most ``max_batch`` messages and ``max_batch_bytes`` bytes (a message larger
    than that commits alone). Should a batch fail on a statement or time out, it is stored
    again one message at a time, each with its own timeout, so that a bad or slow message
    fails alone. Each session still gets its own answer, and only after its message is
    committed and queued. Under load this shares the commit's fsync and round trips among
    up to ``max_batch`` messages; at low load a batch is a single message and nothing waits.
    """

    def __init__(
        self,
        app: App,
        max_batch: int = 64,
        committers: int = 4,
        max_batch_bytes: int | None = None,
    ):
        self.app = app
        self.verp = Verp(app.secret_key)
        self.domains = frozenset(d.lower().rstrip(".") for d in app.settings.bounce_domains)
        self.timeout_s = app.settings.smtp_commit_timeout_s
        # A batch, and then each of its messages alone, gets a third of the time a session
        # waits: a batch held up by one slow member still leaves the others time to commit.
        self.attempt_timeout_s = self.timeout_s / 3
        self._group: GroupCommit[_Pending, list[tuple[str, str]]] = GroupCommit(
            "bounce-intake",
            self._commit,
            one=self._commit_one,
            concurrency=committers,
            max_items=max_batch,
            max_bytes=(
                app.settings.smtp_commit_batch_bytes if max_batch_bytes is None else max_batch_bytes
            ),
            size=lambda item: len(item.raw),
            isolate=_one_messages_fault,
            interrupted=lambda: StorageUnavailable("shutting down"),
        )

    def check_recipient(self, rcpt: str) -> VerpResult:
        """What a recipient's token says: a bounce's (``b+``), an unsubscribe's
        (``unsubscribe+``: reason ``unsubscribe`` when genuine), or postmaster."""
        if is_postmaster(rcpt, self.domains):
            return POSTMASTER
        unsubscribe = self.verp.verify_unsubscribe(rcpt)
        if unsubscribe.reason == "not_verp":
            return self.verp.verify(rcpt)
        if unsubscribe.valid:
            return VerpResult(unsubscribe.delivery_id, UNSUBSCRIBE)
        return unsubscribe

    @property
    def batches(self) -> int:
        """Group commits run so far (batches of one included)."""
        return self._group.batches

    @property
    def isolated(self) -> int:
        """Batches that were run again message by message."""
        return self._group.isolated

    async def accept(self, envelope: SmtpEnvelope, raw: bytes) -> list[tuple[str, str]]:
        """Store ``raw`` and queue its processing; returns (tenant, storage key) pairs.

        Raises :class:`~bounces.errors.StorageUnavailable` or
        :class:`~bounces.errors.QueueUnavailable`.
        """
        checks = [(rcpt, self.check_recipient(rcpt)) for rcpt in envelope.rcpt_tos]
        item = _Pending(
            envelope,
            raw,
            checks,
            header_summary(raw),
            dedupe_key(envelope.mail_from, envelope.rcpt_tos, raw),
        )
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._group.submit(item)
        except TimeoutError as exc:
            raise StorageUnavailable(
                f"postgresql: timed out (commit of {len(raw)} bytes, {self.timeout_s:g} s)"
            ) from exc
        except BounceError:
            raise
        except Exception as exc:
            error = translate_storage(exc)
            log.warning("bounce intake: message not stored: %s", error)
            raise error from exc

    @property
    def busy(self) -> bool:
        """True while messages wait for, or are in, a commit."""
        return self._group.busy

    async def close(self) -> None:
        """Stop committing; whatever still waits gets StorageUnavailable (the peer: 451)."""
        await self._group.close()

    async def _commit_one(self, item: _Pending) -> list[tuple[str, str]]:
        return (await self._commit([item]))[0]

    async def _commit(self, batch: list[_Pending]) -> list[list[tuple[str, str]]]:
        """Store a batch (one transaction), then queue its jobs (one LPUSH). Storage errors
        propagate as they are (the group commit decides whether one message is at fault);
        a queue failure is a :class:`QueueUnavailable` for every message of the batch."""
        async with asyncio.timeout(self.attempt_timeout_s):
            results = await self._store_all(batch)
        jobs = [bounce_job(tenant, key) for pairs in results for tenant, key in pairs]
        if jobs:
            try:
                async with asyncio.timeout(self.attempt_timeout_s):
                    await self.app.redis.lpush(BOUNCE, *jobs)
            except Exception as exc:
                raise translate_queue(exc) from exc
        return results

    async def _store_all(self, batch: list[_Pending]) -> list[list[tuple[str, str]]]:
        ids = sorted({r.delivery_id for item in batch for _, r in item.checks if r.delivery_id})
        records: list[MessageRecord] = []
        receipts: list[tuple[Any, ...]] = []
        owners: list[int] = []  # records[n] is a copy of batch[owners[n]]
        async with self.app.db.acquire() as conn, conn.transaction():
            tenants: dict[str, str] = {}
            if ids:
                # The ids come from tokens under our own HMAC: a delivery id is global
                # (primary key) and its row names the tenant every later query is scoped to.
                rows = await conn.fetch(
                    "SELECT id, tenant_id FROM email_deliveries WHERE id = ANY($1::text[])", ids
                )
                tenants = {r["id"]: r["tenant_id"] for r in rows}
            for i, item in enumerate(batch):
                envelope = item.envelope
                for plan in plan_receipts(item.checks, tenants):
                    record = self._record(item, plan)
                    records.append(record)
                    owners.append(i)
                    receipts.append(
                        (
                            record.storage_key,
                            plan.tenant_id,
                            envelope.mail_from,
                            plan.rcpt_tos,
                            envelope.peer,
                            plan.verp_status,
                            plan.delivery_ids,
                        )
                    )
            await store_messages(conn, records)
            await conn.executemany(_INSERT_RECEIPT, receipts)
        results: list[list[tuple[str, str]]] = [[] for _ in batch]
        for owner, record in zip(owners, records, strict=True):
            results[owner].append((record.tenant_id, record.storage_key))
        return results

    @staticmethod
    def _record(item: _Pending, plan: ReceiptPlan) -> MessageRecord:
        return MessageRecord(
            tenant_id=plan.tenant_id,
            dedupe_key=item.key,
            direction="inbound",
            message_type=provisional_type(item.headers),
            from_email=item.headers.get("From") or item.envelope.mail_from or None,
            to_emails=tuple(plan.rcpt_tos),
            subject=item.headers.get("Subject"),
            headers=item.headers,
            raw=item.raw,
            message_id=item.headers.get("Message-ID"),
            source="smtp",
            status="received",
            delivery_id=plan.delivery_ids[0] if plan.delivery_ids else None,
        )

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
        jobs = [bounce_job(r["tenant_id"], r["storage_key"]) for r in rows]
        try:
            await self.app.redis.lpush(BOUNCE, *jobs)
        except Exception as exc:
            raise translate_queue(exc) from exc
        log.warning("bounce receipts queued again", extra={"count": len(rows)})
        return len(rows)
