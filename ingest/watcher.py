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
from ingest.accounts import Account
from ingest.coordination import LoginLimiter
from ingest.errors import AccountError, ImapError, ImapPermanentError
from ingest.imap import BODY_ITEMS, META_ITEMS, ImapSession
from ingest.imapwire import FetchedItem, uid_set
from ingest.machine import Backoff, State, WatcherMachine
from ingest.metrics import IngestMetrics
from ingest.routing import Routable, failed_recipient, find_delivery, route
from ingest.store import Analysed, analyse, build_record, latency_s, load_sync, store_fetched

log = logging.getLogger(__name__)

META_CHUNK = 200
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
    on_stored: Callable[[str, int, str], None] | None = None  # (account, uid, kind) for tests


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
        """Group UIDs into body fetches of bounded bytes and count (sizes from a cheap FETCH)."""
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
                    await self._store_batch(fresh, uidvalidity)
                    last_uid = fresh[-1].uid
                if self._stopping.is_set():
                    return last_uid
        finally:
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
            return await asyncio.to_thread(analyse, raw, s.ingest_max_message_bytes)
        return analyse(raw, s.ingest_max_message_bytes)

    async def _store_batch(self, items: list[FetchedItem], uidvalidity: int) -> None:
        """Store one fetched batch in ONE transaction (a savepoint per message), in UID
        order; the next message is parsed while the current one is written."""
        self.busy = True
        routables: list[Routable] = []
        try:
            next_parse = asyncio.ensure_future(self._analyse(_body(items[0])))
            async with self.ctx.db.acquire() as conn, conn.transaction():
                for n, item in enumerate(items):
                    analysed = await next_parse
                    if n + 1 < len(items):
                        next_parse = asyncio.ensure_future(self._analyse(_body(items[n + 1])))
                    routable = await self._commit(conn, item, uidvalidity, analysed)
                    if routable is not None:
                        routables.append(routable)
        except BaseException:
            if not next_parse.done():
                next_parse.cancel()
            raise
        finally:
            self.busy = False
        for routable in routables:
            try:
                await route(self.ctx.db, self.ctx.redis, routable)
            except Exception as exc:  # noqa: BLE001 - stored; the routing sweep retries it
                log.warning("routing after commit failed; the sweep will retry: %s", exc)

    async def _commit(
        self, conn: asyncpg.Connection, item: FetchedItem, uidvalidity: int, analysed: Analysed
    ) -> Routable | None:
        """Write one message (inside the batch transaction); what to route after commit."""
        account, parsed = self.account, analysed.parsed
        kind = analysed.kind
        position = MailboxPosition(account.id, self.folder, uidvalidity, item.uid)
        delivery = None
        if kind in ("email", "auto_reply") and (parsed.in_reply_to or parsed.references):
            delivery = await find_delivery(
                conn, account.tenant_id, parsed.in_reply_to, parsed.references
            )
            if delivery is not None and kind == "email":
                kind = "reply"
        record = build_record(account, position, analysed, kind, delivery.id if delivery else None)
        needs_routing = kind in ("bounce", "complaint") or delivery is not None
        stored = await store_fetched(conn, record, analysed.fingerprint, routed=not needs_routing)
        metrics = self.ctx.metrics
        if not stored.created:
            metrics.messages.labels("duplicate").inc()
            return None
        metrics.messages.labels(kind).inc()
        latency = latency_s(item.internal_date)
        if latency is not None:
            metrics.latency.observe(latency)
        if self.ctx.on_stored is not None:
            self.ctx.on_stored(account.id, item.uid, kind)
        if not needs_routing:
            return None
        refs = parsed.references
        return Routable(
            tenant_id=account.tenant_id,
            storage_key=stored.storage_key,
            account_id=account.id,
            kind=kind,
            delivery=delivery,
            message_id=parsed.message_id,
            original_message_id=parsed.in_reply_to or (refs[-1] if refs else None),
            from_email=parsed.from_email,
            failed_recipient=failed_recipient(parsed.headers),
        )


def _body(item: FetchedItem) -> bytes:
    assert item.body is not None
    return item.body
