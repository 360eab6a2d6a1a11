"""The ``queue:webhook:process`` handler: events to one endpoint, one attempt each per run.

A job names one event (``event_id``: retries, replays) or a batch (``event_ids``: the
dispatcher's first attempts). A batch's events are POSTed one per request (Standard
Webhooks), concurrently within the endpoint's limit; the delivered ones are recorded in one
statement, and each one that failed is handed to a one-event job of its own on the retry
schedule (``queue:delayed``, the next delay of ``webhook_retry_schedule_s``; a dead letter
after the last attempt), so retries, dead letters and metrics stay per event and a
delivered event of the batch is never sent again. The batch job itself completes. Events
not started within :attr:`WebhookSender.batch_budget_s` (a slow endpoint) go to one-event
jobs without an attempt counted, so a batch ends within the family's time limit.

The process has one aiohttp session (:data:`SENDER`), whose resolver is the SSRF guard;
each endpoint has its own concurrency limit (``webhook_endpoints.concurrency``, default
4) and every attempt its timeouts (connect 5 s, total 15 s). An attempt's outcome:

* 2xx: delivered (recorded; the job completes);
* 410 Gone: the endpoint is disabled, an event says why, the job completes;
* anything else (another code, a timeout, a refused connection, the SSRF guard): recorded,
  then :class:`~gateway.jobs.RetryJob` with the next delay of ``webhook_retry_schedule_s``
  (the job runtime counts the attempt and dead-letters the last one; in a batch, the
  handler schedules the event's own job the same way), unless the endpoint
  has failed every attempt for ``webhook_disable_after_s`` (5 days): then it is disabled
  and an event says why.

Every attempt is a ``webhook_attempts`` row (code, latency, webhook-id). A job run again
for a delivery already delivered (re-queued after a crash, or dispatched twice) sends
nothing. The ``webhook-id`` is ``msg_<event id>``: the same on every attempt and every
re-delivery, so receivers deduplicate; the timestamp and signatures are fresh each time.

A batch job killed before it completes is run again (the reaper): events recorded delivered
are skipped, the others are POSTed again (at least once, the same ``webhook-id``).
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
from gateway.jobs import RetryJob, keys
from gateway.jobs.contracts import WEBHOOK, WebhookPayload, encode_job
from gateway.jobs.envelope import Job, utc_now_iso
from gateway.jobs.handlers import HandlerSpec
from gateway.logs import bind
from gateway.secretkey import CredentialBox
from gateway.services import Service, Services
from gateway.settings import job_timeouts
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
# A batch stops starting POSTs this long before its job's time limit, less one attempt's
# own limit: what is left goes to one-event jobs, never cut off by the job runtime.
BATCH_MARGIN_S = 5.0


def parse_schedule(text: str) -> tuple[float, ...]:
    """``0,5,300`` → (0.0, 5.0, 300.0): the delay before each attempt."""
    return tuple(float(part) for part in text.split(",") if part.strip())


def webhook_id(event_id: int) -> str:
    """The stable ``webhook-id`` of an event (the same on every attempt and re-delivery)."""
    return f"msg_{event_id}"


def job_id(event_id: int, endpoint_id: str) -> str:
    """The one-event job of (event, endpoint): the same id whenever it is pushed again."""
    return f"wh-{event_id}-{endpoint_id}"


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
        job_limit_s = job_timeouts(s.job_timeouts)["webhook"]
        self.batch_budget_s = max(1.0, job_limit_s - s.webhook_timeout_s - BATCH_MARGIN_S)
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
        attempt = await self._send(endpoint, msg_id, body, not_after=None)
        assert attempt is not None  # only a deadline makes it None
        return attempt

    async def _send(
        self, endpoint: Endpoint, msg_id: str, body: bytes, *, not_after: float | None
    ) -> Attempt | None:
        """:meth:`post`, or None (nothing sent) when the endpoint's slot came only after
        ``not_after`` (monotonic time): a batch's budget is spent."""
        t0 = time.perf_counter()
        try:
            check_url(endpoint.url, allow_private=self.allow_private)
            if not endpoint.secrets:
                raise EndpointRefused("the endpoint has no signing secret")
            headers = signing.headers(endpoint.secrets, msg_id, int(self.clock()), body)
            async with self.gate(endpoint):
                if not_after is not None and time.monotonic() > not_after:
                    return None
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
        if payload.event_ids is not None:
            return await self._handle_batch(job, payload)
        try:
            event_id = int(payload.events[0])
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
            disabled = await self._record_failure(
                conn, work, attempt, number, job.id, last=job.attempt >= job.max_attempts
            )
        if disabled is not None:
            return {**result, "disabled": disabled}
        raise RetryJob(self.delay_after(job.attempt), f"webhook attempt {number}: {_what(attempt)}")

    async def _record_failure(
        self, conn: Any, work: Work, attempt: Attempt, number: int, job_id: str, *, last: bool
    ) -> str | None:
        """Record a failed attempt (the caller's transaction); disable the endpoint on 410
        or after failing for ``webhook_disable_after_s``. Returns why it was disabled
        (``410``, ``failing``; no retry then), or None: the event is to be retried, or,
        when ``last``, it has failed for good."""
        msg_id = webhook_id(work.event_id)
        await store.record_attempt(
            conn, work, attempt, number=number, webhook_id=msg_id, job_id=job_id
        )
        if attempt.code == 410:
            gone = f"the endpoint answered 410 Gone ({work.endpoint.url})"
            await self._disable(conn, work, gone)
            await store.mark(conn, work, "dropped")
            return "410"
        failing_s = await store.failing_for_s(conn, work.endpoint.tenant_id, work.endpoint.id)
        if failing_s >= self.disable_after_s:
            days = failing_s / 86400
            await self._disable(
                conn, work, f"every attempt failed for {days:.1f} days (last: {_what(attempt)})"
            )
            await store.mark(conn, work, "failed")
            return "failing"
        if last:
            await store.mark(conn, work, "failed")
        return None

    # -- a batch (first attempts) ---------------------------------------------------------

    async def _handle_batch(self, job: Job, payload: WebhookPayload) -> dict[str, Any]:
        """Each event of the batch once; delivered ones recorded together, failed ones
        handed to one-event jobs (see the module's docstring). Completes unless a read or
        write fails (then the runtime runs the batch again: delivered events are skipped)."""
        try:
            event_ids = [int(e) for e in payload.events]
        except ValueError:
            return {"success": False, "skipped": "an event_id is not a number"}
        items = [(payload.tenant_id, e, payload.endpoint_id) for e in event_ids]
        works = await store.load_work(self.app.db, self.store, items)
        todo = [w for w in works if w is not None and w.delivery_status != "delivered"]
        summary: dict[str, Any] = {"success": True, "events": len(items)}
        if len(todo) < len(items):
            summary["skipped"] = len(items) - len(todo)
        if not todo:
            return summary
        if not todo[0].endpoint.enabled:
            async with self.app.db.acquire() as conn, conn.transaction():
                for work in todo:
                    await store.mark(conn, work, "dropped")
            return {**summary, "success": False, "dropped": len(todo)}
        attempts = await self._post_batch(todo, time.monotonic() + self.batch_budget_s)
        sent = [(w, a) for w, a in zip(todo, attempts, strict=True) if a is not None]
        delivered = [
            Success(w, a, w.attempts + 1, webhook_id(w.event_id), job.id) for w, a in sent if a.ok
        ]
        if delivered:
            await store.record_successes(self.app.db, delivered)
        summary["delivered"] = len(delivered)
        failed = [(w, a) for w, a in sent if not a.ok]
        later = [w for w, a in zip(todo, attempts, strict=True) if a is None]
        if failed or later:
            summary.update(await self._hand_over(job, failed, later))
            summary["success"] = not failed
        return summary

    async def _post_batch(self, todo: list[Work], not_after: float) -> list[Attempt | None]:
        """One attempt per event, in order, at most the endpoint's concurrency at once (a
        few sending loops rather than a task per event); None where the budget ran out."""
        results: list[Attempt | None] = [None] * len(todo)
        pending = iter(range(len(todo)))
        endpoint = todo[0].endpoint

        async def sending() -> None:
            for i in pending:
                work = todo[i]
                body = body_of(work.event_type, work.created_at, work.payload)
                results[i] = await self._send(
                    endpoint, webhook_id(work.event_id), body, not_after=not_after
                )

        await asyncio.gather(*(sending() for _ in range(min(endpoint.concurrency, len(todo)))))
        return results

    async def _hand_over(
        self, job: Job, failed: list[tuple[Work, Attempt]], later: list[Work]
    ) -> dict[str, Any]:
        """Record a batch's failed attempts, then give each failed event its own job on the
        retry schedule (or its dead letter after the last attempt), and each event not
        started its own job at once, no attempt counted. PostgreSQL first: a crash before
        the pushes leaves the batch job unfinished, and its next run sends them again."""
        retry: list[tuple[Work, int]] = []
        dead: list[tuple[Work, int, Attempt]] = []
        disabled: dict[str, str] = {}
        async with self.app.db.acquire() as conn, conn.transaction():
            for work, attempt in failed:
                number = work.attempts + 1
                last = number >= job.max_attempts
                why = await self._record_failure(conn, work, attempt, number, job.id, last=last)
                if why is not None:
                    disabled[str(work.event_id)] = why
                elif last:
                    dead.append((work, number, attempt))
                else:
                    retry.append((work, number))
        now_ms = self.clock() * 1000.0
        async with self.app.redis.pipeline(transaction=False) as pipe:
            for work, number in retry:
                member = keys.delayed_member(WEBHOOK, self._event_job(job, work, number))
                pipe.zadd(keys.DELAYED, {member: now_ms + self.delay_after(number) * 1000.0})
            for work, number, attempt in dead:
                error = f"webhook attempt {number}: {_what(attempt)}"
                letter = self._event_job(
                    job, work, number, error=error, failed_at=utc_now_iso(), queue_name=WEBHOOK
                )
                pipe.lpush(keys.DEAD, letter)
            if later:  # the head of the queue, oldest taken first
                pipe.rpush(WEBHOOK, *(self._event_job(job, w, w.attempts) for w in reversed(later)))
            await pipe.execute()
        self._count(failed=len(failed), retried=len(retry), dead=len(dead))
        out: dict[str, Any] = {}
        if retry:
            out["retrying"] = [w.event_id for w, _ in retry]
        if dead:
            out["failed"] = [w.event_id for w, _, _ in dead]
        if disabled:
            out["disabled"] = disabled
        if later:
            out["deferred"] = [w.event_id for w in later]
        return out

    def _event_job(self, batch: Job, work: Work, attempts: int, **extra: Any) -> bytes:
        """The one-event job of a batch's event (the id a dispatcher of one-event jobs gave
        it), ``attempts`` already made."""
        ep = work.endpoint
        return encode_job(
            WEBHOOK,
            WebhookPayload(tenant_id=ep.tenant_id, endpoint_id=ep.id, event_id=str(work.event_id)),
            id=job_id(work.event_id, ep.id),
            max_attempts=batch.max_attempts,
            attempt_count=attempts,
            **extra,
        )

    def _count(self, *, failed: int, retried: int, dead: int) -> None:
        """The job metrics a one-event job's failure would have moved, per event."""
        m = self.app.metrics
        if failed:
            m.jobs_failed.labels(WEBHOOK).inc(failed)
        if retried:
            m.jobs_retried.labels(WEBHOOK).inc(retried)
        if dead:
            m.jobs_dead.labels(WEBHOOK).inc(dead)

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
