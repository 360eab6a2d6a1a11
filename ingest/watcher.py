"""One watcher per (mailbox, folder): the aioimaplib code that drives the state machine.

Per session: log in (after a token from the shared login bucket), SELECT, catch up by UID
from the stored position (from UID 1 when UIDVALIDITY changed: fingerprints keep it from
storing anything twice), then IDLE; on EXISTS, fetch the new UIDs with ``BODY.PEEK[]`` and
store them one by one in UID order. Fetching the next batch overlaps storing the current one.
Any failure (connection lost, timeout, storage down) closes the session and retries after a
capped, jittered exponential backoff: nothing is lost, because the position only moves with
a committed message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
import redis.asyncio as aioredis

from gateway.logs import bind
from gateway.messages import MailboxPosition
from gateway.secretkey import CredentialBox
from gateway.settings import Settings
from gateway.warmupmark import WarmupMarker
from ingest.accounts import Account
from ingest.committer import Committer
from ingest.coordination import LoginLimiter
from ingest.errors import AccountError, ImapError, ImapPermanentError
from ingest.imap import BODY_ITEMS, META_ITEMS, ImapSession
from ingest.imapwire import FetchedItem, uid_set
from ingest.machine import Backoff, State, WatcherMachine
from ingest.metrics import IngestMetrics
from ingest.routing import Routable, failed_recipient, route
from ingest.store import Analysed, Outcome, Pending, analyse, latency_s, load_sync

log = logging.getLogger(__name__)

META_CHUNK = 200  # UIDs sized per FETCH
PERMANENT_MIN_DELAY_S = 60.0


@dataclass
class IngestContext:
    """What every watcher shares."""

    settings: Settings
    db: asyncpg.Pool
    redis: aioredis.Redis
    box: CredentialBox
    limiter: LoginLimiter
    metrics: IngestMetrics
    committer: Committer
    on_stored: Callable[[str, int, str], None] | None = None  # (account, uid, kind) for tests
    marker: WarmupMarker | None = None  # verifies warmup Message-IDs (kind "warmup")


class Watcher:
    """Watches one folder of one mailbox until :meth:`request_stop` or cancellation."""

    def __init__(self, ctx: IngestContext, account: Account, folder: str, rng: random.Random):
        self.ctx = ctx
        self.account = account
        self.folder = folder
        self.rng = rng
        s = ctx.settings
        self.machine = WatcherMachine(Backoff(s.ingest_backoff_base_s, s.ingest_backoff_max_s))
        self._stopping = asyncio.Event()
        self.busy = False  # True while a message is being stored (stop waits for it)

    def request_stop(self) -> None:
        self._stopping.set()

    @property
    def state(self) -> State:
        return self.machine.state

    async def run(self, first_delay_s: float = 0.0) -> None:
        with bind(account=self.account.id, tenant=self.account.tenant_id, folder=self.folder):
            try:
                await self._wait(first_delay_s)
                while not self._stopping.is_set():
                    delay = await self._one_session()
                    await self._wait(delay)
            finally:
                self.machine.to(State.STOPPED)

    async def _wait(self, delay_s: float) -> None:
        if delay_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay_s)

    async def _one_session(self) -> float:
        """Connect and serve until something fails; the backoff delay before the next try."""
        session: ImapSession | None = None
        try:
            self.machine.to(State.CONNECTING)
            await self.ctx.limiter.wait_turn(self.account.imap_host, self.rng)
            endpoint = self.account.endpoint(self.ctx.box)
            s = self.ctx.settings
            session = await ImapSession.open(
                endpoint,
                connect_timeout_s=s.ingest_connect_timeout_s,
                command_timeout_s=s.ingest_command_timeout_s,
            )
            await self._serve(session)
            return 0.0
        except asyncio.CancelledError:
            raise
        except (ImapError, AccountError) as exc:
            text = f"{exc}" + (
                f" (server: {exc.server_text})"
                if isinstance(exc, ImapError) and exc.server_text
                else ""
            )
            delay = self.machine.fail(text, self.rng)
            if isinstance(exc, ImapPermanentError | AccountError):
                delay = max(delay, PERMANENT_MIN_DELAY_S)
        except Exception as exc:
            log.exception("watcher failed")
            delay = self.machine.fail(f"{type(exc).__name__}: {exc}", self.rng)
        finally:
            if session is not None:
                if self._stopping.is_set():
                    await session.logout()
                else:
                    session.close()
        self.ctx.metrics.reconnects.inc()
        log.warning(
            "IMAP session ended (%s); reconnecting in %.1f s",
            self.machine.last_error,
            delay,
            extra={"failures": self.machine.failures},
        )
        return delay

    async def _serve(self, session: ImapSession) -> None:
        info = await session.select(self.folder)
        self.machine.to(State.SELECTED)
        sync = await load_sync(self.ctx.db, self.account, self.folder)
        last_uid = 0
        if sync is not None and sync.uidvalidity == info.uidvalidity:
            last_uid = sync.last_uid
        elif sync is not None:
            log.warning(
                "UIDVALIDITY changed: resyncing the folder (stored messages are recognised)",
                extra={"old": sync.uidvalidity, "new": info.uidvalidity},
            )
        renew_s = self.ctx.settings.ingest_idle_renew_s
        while not self._stopping.is_set():
            self.machine.to(State.FETCHING)
            last_uid = await self._catch_up(session, info.uidvalidity, last_uid)
            if self._stopping.is_set():
                return
            self.machine.to(State.IDLING)
            await session.idle(renew_s)

    async def _catch_up(self, session: ImapSession, uidvalidity: int, last_uid: int) -> int:
        """Fetch and store every UID above ``last_uid``; the new last UID."""
        while not self._stopping.is_set():
            seen = session.exists_seen
            uids = await session.uids_from(last_uid + 1)
            if not uids:
                if session.exists_seen == seen:
                    return last_uid
                continue  # new mail was announced during the search: look again
            batches = await self._plan(session, uids)
            last_uid = await self._fetch_and_store(session, batches, uidvalidity, last_uid)
        return last_uid

    async def _plan(self, session: ImapSession, uids: list[int]) -> list[list[int]]:
        """Group UIDs into body fetches of bounded bytes and count, sized by a cheap FETCH
        of ``META_CHUNK`` UIDs at a time (a bounded answer per command). A single new UID,
        the usual push, is fetched at once: its bytes must be read whatever its size, so
        sizing it first is a wasted round trip."""
        if len(uids) == 1:
            return [uids]
        s = self.ctx.settings
        batches: list[list[int]] = []
        current: list[int] = []
        current_bytes = 0
        for i in range(0, len(uids), META_CHUNK):
            meta = await session.fetch(uid_set(uids[i : i + META_CHUNK]), META_ITEMS)
            for item in sorted(meta, key=lambda m: m.uid):
                size = item.size or 0
                if current and (
                    current_bytes + size > s.ingest_fetch_batch_bytes
                    or len(current) >= s.ingest_fetch_batch_messages
                ):
                    batches.append(current)
                    current, current_bytes = [], 0
                current.append(item.uid)
                current_bytes += size
        if current:
            batches.append(current)
        return batches

    async def _fetch_and_store(
        self, session: ImapSession, batches: list[list[int]], uidvalidity: int, last_uid: int
    ) -> int:
        """Three stages at once: the next batch is fetched while this one is parsed and the
        previous one commits (the committer stores it; this watcher waits for that commit
        before handing over the next batch, so commits stay in UID order)."""
        queue: asyncio.Queue[list[FetchedItem] | None] = asyncio.Queue(maxsize=1)

        async def produce() -> None:
            for batch in batches:
                if self._stopping.is_set():
                    break
                items = await session.fetch(uid_set(batch), BODY_ITEMS)
                await queue.put(
                    sorted((i for i in items if i.body is not None), key=lambda i: i.uid)
                )
            await queue.put(None)

        producer = asyncio.create_task(produce(), name=f"fetch-{self.account.id}")
        inflight: asyncio.Future[None] | None = None
        self.busy = True
        try:
            while True:
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait(
                    {getter, producer}, return_when=asyncio.FIRST_COMPLETED
                )
                if getter not in done:
                    getter.cancel()
                    producer.result()  # raises the fetch error
                    continue  # producer finished normally: its None is in the queue
                items = getter.result()
                if items is None:
                    break
                fresh = [i for i in items if i.uid > last_uid]
                if fresh:
                    pending = await self._prepare(fresh, uidvalidity)
                    if inflight is not None:
                        await inflight
                    inflight = asyncio.ensure_future(self._commit(fresh, pending))
                    last_uid = fresh[-1].uid
                if self._stopping.is_set():
                    break
            if inflight is not None:
                await inflight
        finally:
            self.busy = False
            if inflight is not None:
                if not inflight.done():
                    inflight.cancel()  # the commit itself goes on in the committer
                elif not inflight.cancelled():
                    inflight.exception()  # retrieved: the error that matters is raised
            if not producer.done():
                producer.cancel()
                with contextlib.suppress(BaseException):
                    await producer  # abandoned with the session
            elif not producer.cancelled():
                producer.exception()
        return last_uid

    async def _analyse(self, raw: bytes) -> Analysed:
        s = self.ctx.settings
        if len(raw) >= s.ingest_offloop_parse_bytes:
            return await asyncio.to_thread(
                analyse, raw, s.ingest_max_message_bytes, self.ctx.marker
            )
        return analyse(raw, s.ingest_max_message_bytes, self.ctx.marker)

    async def _prepare(self, items: list[FetchedItem], uidvalidity: int) -> list[Pending]:
        """Parse a fetched batch (large messages in a worker thread)."""
        out = []
        for item in items:
            position = MailboxPosition(self.account.id, self.folder, uidvalidity, item.uid)
            out.append(Pending(self.account, position, await self._analyse(_body(item))))
        return out

    async def _commit(self, items: list[FetchedItem], batch: list[Pending]) -> None:
        """Store a batch through the shared committer, then count, report and route it."""
        outcomes = await self.ctx.committer.commit(batch)
        metrics = self.ctx.metrics
        routables: list[Routable] = []
        for item, pending, outcome in zip(items, batch, outcomes, strict=True):
            if not outcome.created:
                metrics.messages.labels("duplicate").inc()
                continue
            metrics.messages.labels(outcome.kind).inc()
            latency = latency_s(item.internal_date)
            if latency is not None:
                metrics.latency.observe(latency)
            if self.ctx.on_stored is not None:
                self.ctx.on_stored(self.account.id, item.uid, outcome.kind)
            if outcome.needs_routing:
                routables.append(self._routable(pending, outcome))
        for routable in routables:
            try:
                await route(self.ctx.db, self.ctx.redis, routable)
            except Exception as exc:  # noqa: BLE001 - stored; the routing sweep retries it
                log.warning("routing after commit failed; the sweep will retry: %s", exc)

    def _routable(self, pending: Pending, outcome: Outcome) -> Routable:
        parsed, refs = pending.analysed.parsed, pending.analysed.parsed.references
        return Routable(
            tenant_id=self.account.tenant_id,
            storage_key=outcome.storage_key,
            account_id=self.account.id,
            kind=outcome.kind,
            delivery=outcome.delivery,
            message_id=parsed.message_id,
            original_message_id=parsed.in_reply_to or (refs[-1] if refs else None),
            from_email=parsed.from_email,
            failed_recipient=failed_recipient(parsed.headers),
        )


def _body(item: FetchedItem) -> bytes:
    assert item.body is not None
    return item.body
