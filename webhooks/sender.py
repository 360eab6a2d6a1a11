"""The ``queue:webhook:process`` handler: one event to one endpoint, one attempt per run.

The process has one aiohttp session (:data:`SENDER`), whose resolver is the SSRF guard;
each endpoint has its own concurrency limit (``webhook_endpoints.concurrency``, default
4) and every attempt its timeouts (connect 5 s, total 15 s). An attempt's outcome:

* 2xx: delivered (recorded; the job completes);
* 410 Gone: the endpoint is disabled, an event says why, the job completes;
* anything else (another code, a timeout, a refused connection, the SSRF guard): recorded,
  then :class:`~gateway.jobs.RetryJob` with the next delay of ``webhook_retry_schedule_s``
  (the job runtime counts the attempt and dead-letters the last one), unless the endpoint
  has failed every attempt for ``webhook_disable_after_s`` (5 days): then it is disabled
  and an event says why.

Every attempt is a ``webhook_attempts`` row (code, latency, webhook-id). A job run again
for a delivery already delivered (re-queued after a crash, or dispatched twice) sends
nothing. The ``webhook-id`` is ``msg_<event id>``: the same on every attempt and every
re-delivery, so receivers deduplicate; the timestamp and signatures are fresh each time.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from gateway.app import App
from gateway.events import EventType, record_event
from gateway.groupcommit import GroupCommit
from gateway.jobs import RetryJob
from gateway.jobs.contracts import WebhookPayload
from gateway.jobs.envelope import Job
from gateway.jobs.handlers import HandlerSpec
from gateway.logs import bind
from gateway.secretkey import CredentialBox
from gateway.services import Service, Services
from webhooks import EndpointRefused, signing, store
from webhooks.ssrf import GuardedResolver, check_url
from webhooks.store import Attempt, Endpoint, EndpointStore, Success, Work

log = logging.getLogger(__name__)

USER_AGENT = "mailgate-webhooks/1"
_BODY_LIMIT = 1024
BATCH = 200  # jobs sharing one read or one write statement at most
# Delivered attempts wait this long for others to share their write: the endpoint slot is
# already free, so only the job (not the endpoint) waits, and a statement per event is not
# paid when attempts finish one by one (bench/webhooks.py).
SUCCESS_LINGER_S = 0.005


def parse_schedule(text: str) -> tuple[float, ...]:
    """``0,5,300`` → (0.0, 5.0, 300.0): the delay before each attempt."""
    return tuple(float(part) for part in text.split(",") if part.strip())


def webhook_id(event_id: int) -> str:
    """The stable ``webhook-id`` of an event (the same on every attempt and re-delivery)."""
    return f"msg_{event_id}"


def body_of(event_type: str, created_at: dt.datetime, data: dict[str, Any]) -> bytes:
    """The JSON body: ``{type, timestamp, data}`` (the same bytes on every attempt)."""
    stamp = created_at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    doc = {"type": event_type, "timestamp": stamp, "data": data}
    return json.dumps(doc, separators=(",", ":"), sort_keys=True, default=str).encode()


class WebhookSender:
    """The process's webhook client: session, per-endpoint gates, the handler."""

    def __init__(self, app: App, *, clock: Callable[[], float] = time.time):
        s = app.settings
        self.app = app
        self.clock = clock
        self.store = EndpointStore(app.db, CredentialBox(app.secret_key))
        self.schedule = parse_schedule(s.webhook_retry_schedule_s)
        self.allow_private = s.webhook_allow_private
        self.disable_after_s = s.webhook_disable_after_s
        self.timeout = aiohttp.ClientTimeout(
            total=s.webhook_timeout_s, connect=s.webhook_connect_timeout_s
        )
        self.concurrency = s.webhook_concurrency
        self._session: aiohttp.ClientSession | None = None
        # The jobs running at once share their reads and their success writes (one
        # statement per batch): a delivered attempt costs a row, not a transaction.
        self._loads: GroupCommit[tuple[str, int, str], Work | None] = GroupCommit(
            "webhook-loads", self._load_many, max_items=BATCH, concurrency=2
        )
        self._successes: GroupCommit[Success, None] = GroupCommit(
            "webhook-successes",
            self._record_many,
            one=self._record_one,
            max_items=BATCH,
            linger_s=SUCCESS_LINGER_S,
            concurrency=2,
        )
        self._gates: dict[str, tuple[int, asyncio.Semaphore]] = {}

    @property
    def max_attempts(self) -> int:
        return max(1, len(self.schedule))

    def session(self) -> aiohttp.ClientSession:
        """The one session (made on first use, on the running loop)."""
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                resolver=GuardedResolver(allow_private=self.allow_private),
                limit=self.concurrency,
                limit_per_host=0,
                ttl_dns_cache=60,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self.timeout,
                cookie_jar=aiohttp.DummyCookieJar(),
                headers={"User-Agent": USER_AGENT},
            )
        return self._session

    def gate(self, endpoint: Endpoint) -> asyncio.Semaphore:
        """The endpoint's concurrency limit (this process's share of it)."""
        held = self._gates.get(endpoint.id)
        if held is None or held[0] != endpoint.concurrency:
            held = (endpoint.concurrency, asyncio.Semaphore(endpoint.concurrency))
            self._gates[endpoint.id] = held
        return held[1]

    async def post(self, endpoint: Endpoint, msg_id: str, body: bytes) -> Attempt:
        """One signed POST; never raises for what the endpoint or network does."""
        t0 = time.perf_counter()
        try:
            check_url(endpoint.url, allow_private=self.allow_private)
            if not endpoint.secrets:
                raise EndpointRefused("the endpoint has no signing secret")
            headers = signing.headers(endpoint.secrets, msg_id, int(self.clock()), body)
            async with self.gate(endpoint):
                t0 = time.perf_counter()
                async with self.session().post(
                    endpoint.url, data=body, headers=headers, allow_redirects=False
                ) as response:
                    text = await response.content.read(_BODY_LIMIT)
                    code = response.status
        except EndpointRefused as exc:
            return Attempt(None, _ms(t0), f"refused: {exc}")
        except TimeoutError:
            return Attempt(None, _ms(t0), "timeout")
        except (aiohttp.ClientError, OSError) as exc:
            return Attempt(None, _ms(t0), f"{type(exc).__name__}: {exc}"[:300])
        return Attempt(code, _ms(t0), None, text.decode("utf-8", "replace"))

    # -- the job --------------------------------------------------------------------------

    async def handle(self, job: Job, payload: WebhookPayload) -> dict[str, Any]:
        with bind(tenant_id=payload.tenant_id, endpoint_id=payload.endpoint_id):
            return await self._handle(job, payload)

    async def _handle(self, job: Job, payload: WebhookPayload) -> dict[str, Any]:
        try:
            event_id = int(payload.event_id)
        except ValueError:
            return {"success": False, "skipped": "event_id is not a number"}
        work = await self._loads.submit((payload.tenant_id, event_id, payload.endpoint_id))
        if work is None:
            return {"success": True, "skipped": "no such event or endpoint"}
        if work.delivery_status == "delivered":
            return {"success": True, "skipped": "already delivered", "event_id": event_id}
        if not work.endpoint.enabled:
            async with self.app.db.acquire() as conn:
                await store.mark(conn, work, "dropped")
            return {"success": False, "skipped": "endpoint disabled"}
        msg_id = webhook_id(event_id)
        attempt = await self.post(
            work.endpoint, msg_id, body_of(work.event_type, work.created_at, work.payload)
        )
        number = work.attempts + 1
        result = {
            "success": attempt.ok,
            "event_id": event_id,
            "webhook_id": msg_id,
            "code": attempt.code,
            "latency_ms": round(attempt.latency_ms, 1),
            "attempt": number,
        }
        if attempt.ok:
            await self._successes.submit(Success(work, attempt, number, msg_id, job.id))
            return result
        async with self.app.db.acquire() as conn, conn.transaction():
            await store.record_attempt(
                conn, work, attempt, number=number, webhook_id=msg_id, job_id=job.id
            )
            if attempt.code == 410:
                gone = f"the endpoint answered 410 Gone ({work.endpoint.url})"
                await self._disable(conn, work, gone)
                await store.mark(conn, work, "dropped")
                return {**result, "disabled": "410"}
            failing_s = await store.failing_for_s(conn, work.endpoint.tenant_id, work.endpoint.id)
            if failing_s >= self.disable_after_s:
                days = failing_s / 86400
                await self._disable(
                    conn, work, f"every attempt failed for {days:.1f} days (last: {_what(attempt)})"
                )
                await store.mark(conn, work, "failed")
                return {**result, "disabled": "failing"}
            if job.attempt >= job.max_attempts:
                await store.mark(conn, work, "failed")
        raise RetryJob(self.delay_after(job.attempt), f"webhook attempt {number}: {_what(attempt)}")

    def delay_after(self, attempt: int) -> float:
        """The wait before the attempt after ``attempt`` (1-based) by the schedule."""
        return self.schedule[min(attempt, len(self.schedule) - 1)]

    async def _load_many(self, items: list[tuple[str, int, str]]) -> list[Work | None]:
        return await store.load_work(self.app.db, self.store, items)

    async def _record_many(self, items: list[Success]) -> list[None]:
        return await store.record_successes(self.app.db, items)

    async def _record_one(self, item: Success) -> None:
        await store.record_successes(self.app.db, [item])

    async def _disable(self, conn: Any, work: Work, reason: str) -> None:
        ep = work.endpoint
        if await store.disable(conn, ep.tenant_id, ep.id, reason):
            log.warning("webhook endpoint disabled: %s", reason)
            await record_event(
                conn,
                tenant_id=ep.tenant_id,
                event_type=EventType.WEBHOOK_DISABLED,
                subject_id=ep.id,
                payload={"endpoint_id": ep.id, "url": ep.url, "reason": reason},
                dedupe_key=f"webhook-disabled:{ep.id}:{int(self.clock() * 1000)}",
            )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


def _what(attempt: Attempt) -> str:
    return f"HTTP {attempt.code}" if attempt.code is not None else (attempt.error or "no answer")


def _build(app: App, services: Services) -> WebhookSender:
    return WebhookSender(app)


# The process's one webhook client (one aiohttp session), closed by the daemon.
SENDER: Service[WebhookSender] = Service("webhooks.sender", _build, close=WebhookSender.aclose)


def create_handler(app: App, services: Services) -> HandlerSpec:
    """Entry point (group ``mailgate.handlers``): the handler of family ``webhook``."""
    sender = services.get(SENDER)
    return HandlerSpec(family="webhook", run=sender.handle, concurrency=sender.concurrency)
