"""The warmup steps (seed 000's ``processWarmupJob``): outbound, inbound, engagement.

``outbound`` (the sender): compose the planned message (:mod:`warmup.content`; a message
to a partner whose last reply is not answered yet continues that thread, planned so by
:func:`warmup.planner.plan_sender`), take the
account's rate limits, DKIM-sign and send it through delivery's pool (the process's
:data:`~delivery.service.SENDER`), record ``sent_at`` and queue the receiver's inbound step
``warmup_inbound_delay_s`` later. Warmup sends write no ``email_deliveries`` row and move
no campaign counter: they never count in campaign metrics or analytics.

``inbound`` (the receiver): log in over IMAP, look for the Message-ID in INBOX, then the
Junk folder (SPECIAL-USE ``\\Junk``, else a common name), then the other folders; record
where (``inbox``/``spam``/``other``) and queue the engagement step. Not found yet: look
again in ``warmup_retry_find_s``; not found ``warmup_missing_after_s`` after the send: it is
``missing``.

``engagement`` (the receiver): move a message found in Junk to INBOX, mark it ``\\Seen``,
flag it at ``warmup_flag_rate``, and when the plan says so (``reply_planned``, from the
receiver's ``reply_rate``) send a threaded reply from the receiver, whose own inbound and
engagement steps then run at the original sender.

Idempotent throughout: every action is recorded with its time and done only while its
time is unset; a reply is a row of its own, at most one per message (a unique index), and
sent under a claim. A send whose previous claim lapsed without a recorded result (a worker
killed after the server's 250) is first looked for in the recipient's mailbox: found, it
is recorded as sent and not sent again, so a restart never replies twice.

Safety: a 5xx hard bounce at send time pauses the sender's warmup and records a
``warmup.paused`` event; steps of a paused or disabled account change nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from delivery.compose import domain_of
from delivery.errors import TransportError
from delivery.ratelimit import Admission, Window
from delivery.reply import classify
from delivery.service import Sender
from gateway.app import App
from gateway.events import EventType, record_event
from gateway.imapendpoint import Endpoint
from gateway.jobs import DeferJob, PermanentJobError
from gateway.jobs.contracts import WARMUP, WarmupPayload, encode_job
from gateway.jobs.envelope import Job
from gateway.logs import bind
from gateway.secretkey import CredentialBox, SecretKeyError
from gateway.warmupmark import WarmupMarker
from warmup import content, plan, store
from warmup.errors import ImapAuthFailed, ImapError
from warmup.imap import ImapClient
from warmup.imapwire import junk_folder
from warmup.metrics import WarmupMetrics

log = logging.getLogger(__name__)

INBOX = "INBOX"
SKIP_FOLDERS = ("\\sent", "\\trash", "\\drafts", "\\noselect", "\\nonexistent")


@dataclass(frozen=True)
class Located:
    """Where a message is in a mailbox: the placement, the folder's name and the UID."""

    placement: str  # inbox, spam, other
    folder: str
    uid: int


async def locate(imap: ImapClient, message_id: str) -> Located | None:
    """The message in INBOX, else Junk, else any other ordinary folder."""
    uids = await imap.find(INBOX, message_id)
    if uids:
        return Located("inbox", INBOX, uids[-1])
    folders = await imap.folders()
    junk = junk_folder(folders)
    if junk is not None:
        uids = await imap.find(junk, message_id)
        if uids:
            return Located("spam", junk, uids[-1])
    for folder in folders:
        if folder.name in (INBOX, junk) or folder.name.upper() == INBOX:
            continue
        if any(flag in folder.flags for flag in SKIP_FOLDERS):
            continue
        uids = await imap.find(folder.name, message_id)
        if uids:
            return Located("other", folder.name, uids[-1])
    return None


def _now(clock: Callable[[], float]) -> dt.datetime:
    return dt.datetime.fromtimestamp(clock(), dt.UTC)


class Steps:
    """Runs warmup steps; one per process, shared by the handler's concurrent jobs."""

    def __init__(
        self,
        app: App,
        sender: Sender,
        metrics: WarmupMetrics,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        self.db = app.db
        self.settings = app.settings
        self.sender = sender
        self.metrics = metrics
        self.clock = clock
        self.box = CredentialBox(app.secret_key)
        self.marker = WarmupMarker(app.secret_key)

    # -- the job ----------------------------------------------------------------------------

    async def handle(self, job: Job, payload: WarmupPayload) -> dict[str, Any]:
        with bind(account_id=payload.email_account_id, warmup_type=payload.warmup_type):
            if payload.warmup_message_id is None:
                return await self._bare(payload)
            if payload.tenant_id is None:
                raise PermanentJobError("warmup_message_id needs its tenant_id")
            row = await store.row(self.db, payload.tenant_id, payload.warmup_message_id)
            if row is None:
                raise PermanentJobError(f"no warmup message {payload.warmup_message_id}")
            acting = row.from_account_id if payload.warmup_type == "outbound" else row.to_account_id
            if acting != payload.email_account_id:
                raise PermanentJobError(
                    f"{payload.warmup_type} step of {row.id} belongs to {acting}, "
                    f"not {payload.email_account_id}"
                )
            if payload.warmup_type == "outbound":
                return await self.outbound(row)
            if payload.warmup_type == "inbound":
                return await self.inbound(row, payload.not_before)
            return await self.engagement(row)

    async def _bare(self, payload: WarmupPayload) -> dict[str, Any]:
        """A seed producer's step without a row: see :class:`WarmupPayload`."""
        tenant = payload.tenant_id or await self.db.fetchval(
            "SELECT tenant_id FROM warmup_configs WHERE email_account_id = $1",
            payload.email_account_id,
        )
        if tenant is None:
            raise PermanentJobError(f"account {payload.email_account_id} has no warmup config")
        if payload.warmup_type == "outbound":
            from warmup.planner import plan_sender

            cfg = await store.config(self.db, tenant, payload.email_account_id)
            if cfg is None or not cfg.active:
                return {"status": "inactive"}
            made = await plan_sender(self.app, cfg, _now(self.clock), all_now=True, limit=1)
            planned = [await store.row(self.db, p.tenant_id, p.id) for p in made]
            results = [await self.outbound(r) for r in planned if r is not None]
            return {"status": "planned", "results": results}
        rows = await store.rows_waiting(
            self.db, tenant, payload.email_account_id, payload.warmup_type
        )
        results = []
        for r in rows:
            try:
                if payload.warmup_type == "inbound":
                    results.append(await self.inbound(r, None))
                else:
                    results.append(await self.engagement(r))
            except DeferJob:
                results.append({"id": r.id, "status": "not yet"})
        return {"status": "done", "results": results}

    # -- outbound ---------------------------------------------------------------------------

    async def outbound(self, row: store.Row) -> dict[str, Any]:
        cfg = await store.config(self.db, row.tenant_id, row.from_account_id)
        if row.sent_at is None and (cfg is None or not cfg.active):
            return {"id": row.id, "status": "inactive"}
        status = await self.send(row)
        return {"id": row.id, "status": status}

    def _draft(self, row: store.Row) -> content.Draft:
        if row.depth == 0 and row.in_reply_to is None:
            draft = content.new_message(row.id, row.from_address, row.to_address, row.message_id)
            return content.Draft(
                draft.from_email, draft.to_email, draft.message_id, row.subject, draft.text
            )
        draft = content.reply_to(
            row.id,
            row.from_address,
            row.to_address,
            row.message_id,
            row.subject,
            row.in_reply_to or "",
            None,
        )
        return content.Draft(
            draft.from_email,
            draft.to_email,
            draft.message_id,
            row.subject,
            draft.text,
            row.in_reply_to,
            row.references,
        )

    async def send(self, row: store.Row) -> str:
        """Send a planned row once; ``sent``, ``already sent`` or ``failed``."""
        if row.sent_at is not None:
            await self._queue_inbound(row)
            return "already sent"
        claim = await store.claim_send(
            self.db, row.tenant_id, row.id, self.settings.warmup_send_lease_s
        )
        if claim is None:
            fresh = await store.row(self.db, row.tenant_id, row.id)
            if fresh is not None and fresh.sent_at is not None:
                return "already sent"
            raise DeferJob(self.settings.warmup_send_lease_s + 1, "send held by another run")
        if claim and await self._delivered(row):
            # A run before us was cut off after the server took the message.
            await self._sent(row)
            return "already sent"
        admission = await self._admit(row)
        try:
            return await self._transact(row)
        finally:
            await self.sender.limiter.release(admission)

    async def _admit(self, row: store.Row) -> Admission:
        """The account's own minute/hour/day limits and the recipient domain's (the quota
        itself was taken when the row was planned)."""
        s = self.settings
        domain = domain_of(row.to_address)
        dom_min, dom_conc = self.sender.domain_limits.get(
            domain, (s.delivery_domain_per_minute, s.delivery_domain_concurrency)
        )
        acct = f"{row.tenant_id}:{row.from_account_id}"
        windows = [
            Window("account", acct, s.delivery_account_per_minute, 60.0),
            Window("account", acct, s.delivery_account_per_hour, 3600.0),
            Window("account", acct, s.delivery_account_per_day, 86400.0),
            Window("domain", domain, dom_min, 60.0),
            Window("tenant", row.tenant_id, s.delivery_tenant_per_minute, 60.0),
        ]
        lease_s = s.delivery_connect_timeout_s + 3 * s.delivery_command_timeout_s
        admission = await self.sender.limiter.acquire(windows, (domain, dom_conc), lease_s=lease_s)
        if not admission.admitted:
            await store.release_send(self.db, row.tenant_id, row.id, "rate limited")
            raise DeferJob(admission.wait_s, f"rate limited by {admission.limit}")
        return admission

    async def _transact(self, row: store.Row) -> str:
        try:
            raw = content.render(self._draft(row), date=self.clock())
            signed, _ = await self.sender.sign(row.tenant_id, domain_of(row.from_address), raw)
            account = await self.sender.contexts.account(row.tenant_id, row.from_account_id)
            endpoint = self.sender.endpoint_for(account)
            reply = await self.sender.pool.send(endpoint, row.from_address, row.to_address, signed)
        except TransportError as exc:
            await store.release_send(self.db, row.tenant_id, row.id, str(exc))
            raise
        except Exception as exc:
            await store.release_send(self.db, row.tenant_id, row.id, f"not sent: {exc}")
            raise
        disposition = classify(reply)
        if disposition.result == "sent":
            await self._sent(row)
            return "sent"
        if disposition.result == "retry":
            await store.release_send(self.db, row.tenant_id, row.id, str(reply))
            raise DeferJob(disposition.retry_after_s or 60.0, f"server said {reply}")
        await store.mark(self.db, row.tenant_id, row.id, "missing_at", send_error=str(reply))
        if disposition.bounce_type == "hard":
            await self.pause(row.tenant_id, row.from_account_id, f"hard bounce: {reply}")
        return "failed"

    async def _sent(self, row: store.Row) -> None:
        if await store.mark(self.db, row.tenant_id, row.id, "sent_at"):
            self.metrics.sent.inc()
        # A reply goes back to the parent's sender: the parent is of the reply's to_tenant.
        if row.parent_id is not None and await store.mark(
            self.db, row.to_tenant_id, row.parent_id, "replied_at", reply_message_id=row.message_id
        ):
            self.metrics.replies.inc()
        await self._queue_inbound(row)

    async def _delivered(self, row: store.Row) -> bool:
        """Is the row's message already in the recipient's mailbox?"""
        try:
            async with await self._imap(row.to_tenant_id, row.to_account_id) as imap:
                return await locate(imap, row.message_id) is not None
        except (ImapError, PermanentJobError):
            return False  # cannot tell: send (a duplicate at worst, never a loss)

    async def pause(self, tenant: str, account_id: str, reason: str) -> None:
        """Pause an account's warmup and record why (once)."""
        async with self.db.acquire() as conn, conn.transaction():
            if await store.pause(conn, tenant, account_id, reason):
                await record_event(
                    conn,
                    tenant_id=tenant,
                    event_type=EventType.WARMUP_PAUSED,
                    subject_id=account_id,
                    payload={"account": account_id, "reason": reason[:500]},
                    dedupe_key=f"warmup:paused:{account_id}:{int(self.clock())}",
                )
        log.warning("warmup paused", extra={"account": account_id, "reason": reason[:200]})

    # -- inbound ----------------------------------------------------------------------------

    async def inbound(self, row: store.Row, not_before: dt.datetime | None) -> dict[str, Any]:
        if row.found_at is not None or row.missing_at is not None:
            if row.found_at is not None:
                await self._queue(row, "engagement", row.to_account_id, 2)
            return {"id": row.id, "status": "done", "folder": row.folder_found}
        now = _now(self.clock)
        if not_before is not None and now < not_before:
            raise DeferJob((not_before - now).total_seconds(), "inbound step not due yet")
        if not await self._receiver_active(row):
            return {"id": row.id, "status": "inactive"}
        async with await self._imap(row.to_tenant_id, row.to_account_id) as imap:
            where = await locate(imap, row.message_id)
        if where is None:
            sent = row.sent_at or now
            if (now - sent).total_seconds() < self.settings.warmup_missing_after_s:
                raise DeferJob(self.settings.warmup_retry_find_s, "not found yet")
            if await store.mark(self.db, row.tenant_id, row.id, "missing_at"):
                await self._placement(row, "missing")
            return {"id": row.id, "status": "missing"}
        if await store.mark(
            self.db, row.tenant_id, row.id, "found_at", folder_found=where.placement
        ):
            await self._placement(row, where.placement)
        await self._queue(row, "engagement", row.to_account_id, 2)
        return {"id": row.id, "status": "found", "folder": where.placement}

    async def _placement(self, row: store.Row, folder: str) -> None:
        self.metrics.placement.labels(folder).inc()
        async with self.db.acquire() as conn:
            await record_event(
                conn,
                tenant_id=row.tenant_id,
                event_type=EventType.WARMUP_PLACEMENT,
                subject_id=row.id,
                payload={
                    "placement": folder,
                    "account": row.from_account_id,
                    "receiver": row.to_account_id,
                    "day": row.quota_day.isoformat(),
                    "reply": row.depth > 0,
                },
                dedupe_key=f"warmup:placement:{row.id}",
            )
            since = row.quota_day - dt.timedelta(days=6)
            inbox, judged = await store.placement(conn, row.tenant_id, row.from_account_id, since)
        if judged:
            self.metrics.inbox_placement.labels(row.tenant_id, row.from_account_id).set(
                inbox / judged
            )

    # -- engagement -------------------------------------------------------------------------

    async def engagement(self, row: store.Row) -> dict[str, Any]:
        if row.found_at is None:
            return {"id": row.id, "status": "not found"}
        if not await self._receiver_active(row):
            return {"id": row.id, "status": "inactive"}
        done: list[str] = []
        needs_imap = row.read_at is None or (
            row.folder_found == "spam" and row.moved_to_inbox_at is None
        )
        if needs_imap:
            async with await self._imap(row.to_tenant_id, row.to_account_id) as imap:
                where = await locate(imap, row.message_id)
                if where is not None and where.placement == "spam":
                    await imap.move_to_inbox(where.uid)
                    uids = await imap.find(INBOX, row.message_id)
                    where = Located("inbox", INBOX, uids[-1]) if uids else None
                moved = where is not None and where.placement == "inbox"
                if (
                    moved
                    and row.folder_found == "spam"
                    and await store.mark(self.db, row.tenant_id, row.id, "moved_to_inbox_at")
                ):
                    done.append("moved")
                if where is not None:
                    await imap.select(where.folder)
                    flag = plan.chance(f"{row.id}:flag", self.settings.warmup_flag_rate)
                    await imap.add_flags(where.uid, "\\Seen \\Flagged" if flag else "\\Seen")
                    if await store.mark(self.db, row.tenant_id, row.id, "read_at"):
                        done.append("read")
                    if flag and await store.mark(self.db, row.tenant_id, row.id, "flagged_at"):
                        done.append("flagged")
        if row.depth == 0 and row.reply_planned and row.replied_at is None:
            status = await self._reply(row)
            done.append(f"reply {status}")
        return {"id": row.id, "status": "engaged", "done": done}

    async def _reply(self, row: store.Row) -> str:
        """Make (once) and send (once) the receiver's threaded reply to ``row``."""
        reply = await store.reply_of(self.db, row.to_tenant_id, row.id)
        if reply is None:
            cfg = await store.config(self.db, row.to_tenant_id, row.to_account_id)
            if cfg is None:
                return "skipped"
            message_id = self.marker.mint(domain_of(cfg.address))
            draft = content.reply_to(
                row.id + ":reply",
                cfg.address,
                row.from_address,
                message_id,
                row.subject,
                row.message_id,
                row.references,
            )
            to = plan.Member(row.from_account_id, row.tenant_id, "", 0.0, row.from_address)
            await store.insert(
                self.db,
                row_id=store.new_row_id(),
                tenant_id=row.to_tenant_id,
                from_account_id=row.to_account_id,
                to=to,
                message_id=message_id,
                quota_day=cfg.window.local_day(_now(self.clock)),
                subject=draft.subject,
                parent_id=row.id,
                in_reply_to=draft.in_reply_to,
                references=draft.references,
            )
            reply = await store.reply_of(self.db, row.to_tenant_id, row.id)
            if reply is None:
                return "skipped"
        return await self.send(reply)

    # -- helpers ----------------------------------------------------------------------------

    async def _receiver_active(self, row: store.Row) -> bool:
        cfg = await store.config(self.db, row.to_tenant_id, row.to_account_id)
        return cfg is not None and cfg.active

    async def _imap(self, tenant: str, account_id: str) -> ImapClient:
        r = await store.account_login_row(self.db, tenant, account_id)
        if r is None or r["imap_host"] is None or r["imap_password_enc"] is None:
            raise PermanentJobError(f"account {account_id} has no IMAP endpoint for warmup")
        try:
            password = self.box.open(bytes(r["imap_password_enc"]))
        except SecretKeyError as exc:
            raise PermanentJobError(f"account {account_id}: {exc}") from None
        login = Endpoint(
            host=r["imap_host"],
            port=r["imap_port"] or 993,
            security=r["imap_security"] or "tls",
            username=r["imap_username"] or r["address"],
            password=password,
            master_user=r["imap_master_user"],
        )
        try:
            return await ImapClient.connect(login, self.settings.warmup_imap_timeout_s)
        except ImapAuthFailed as exc:
            raise PermanentJobError(str(exc)) from None

    async def _queue_inbound(self, row: store.Row) -> None:
        due = _now(self.clock) + dt.timedelta(seconds=self.settings.warmup_inbound_delay_s)
        await self._queue(row, "inbound", row.to_account_id, 1, not_before=due)

    async def _queue(
        self,
        row: store.Row,
        step: str,
        account_id: str,
        sequence: int,
        not_before: dt.datetime | None = None,
    ) -> None:
        await enqueue(self.app, row.tenant_id, row.id, step, account_id, sequence + 3 * row.depth,
                      not_before)  # fmt: skip


def outbound_payload(tenant_id: str, row_id: str, account_id: str) -> WarmupPayload:
    """The outbound step of a planned row."""
    return WarmupPayload(
        email_account_id=account_id,
        warmup_type="outbound",
        sequence_step=0,
        tenant_id=tenant_id,
        warmup_message_id=row_id,
    )


async def enqueue(
    app: App,
    tenant_id: str,
    row_id: str,
    step: str,
    account_id: str,
    sequence: int,
    not_before: dt.datetime | None = None,
) -> None:
    """Queue one step of one warmup message (the job id names both: a re-queue of the same
    step while the first still waits is the same job)."""
    payload = WarmupPayload(
        email_account_id=account_id,
        warmup_type=step,  # type: ignore[arg-type]
        sequence_step=sequence,
        tenant_id=tenant_id,
        warmup_message_id=row_id,
        not_before=not_before,
    )
    await app.redis.lpush(WARMUP, encode_job(WARMUP, payload, id=f"warmup-{step}-{row_id}"))
