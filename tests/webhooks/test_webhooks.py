"""Webhook dispatch end to end: the outbox, the dispatcher, the job runtime's worker and a
real aiohttp receiver on 127.0.0.1 that verifies signatures with its own implementation.
Signing against the spec's published vector, rotation, the retry schedule on an injected
clock, 410, disabling after days of failure, the SSRF guard."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from gateway.app import App
from gateway.events import EventType, record_event
from gateway.jobs import keys
from gateway.jobs.contracts import FAMILY_BY_NAME, WEBHOOK, PayloadInvalid, WebhookPayload
from gateway.jobs.worker import Worker
from gateway.secretkey import CredentialBox
from gateway.services import Services
from gateway.settings import Settings
from tests.daemon import cli_env, poll
from tests.webhooks.receiver import Receiver, verify
from webhooks import EndpointRefused, signing
from webhooks.commands import replay
from webhooks.dispatch import Dispatcher, batches, fan_out
from webhooks.sender import SENDER, WebhookSender
from webhooks.ssrf import GuardedResolver, address_allowed, check_url
from webhooks.store import EndpointStore

TENANT = "tenant_w"


class FakeClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_signature_matches_the_specs_test_vector() -> None:
    """The Standard Webhooks reference vector signs to the published value."""
    got = signing.signature(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        b'{"test": 2432232314}',
    )
    assert got == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_every_secret_signs_during_rotation() -> None:
    """With two secrets, a receiver holding either verifies; a third secret does not."""
    old, new, other = signing.new_secret(), signing.new_secret(), signing.new_secret()
    body = b'{"type":"email.sent"}'
    headers = signing.headers([new, old], "msg_1", int(time.time()), body)
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert verify(old, headers, body) and verify(new, headers, body)
    assert not verify(other, headers, body)
    assert not verify(new, headers, body + b" ")


def test_ssrf_guard_refuses_private_ranges() -> None:
    """Loopback, link-local (cloud metadata), private and mapped addresses are refused
    unless allowed; public ones pass."""
    for address in ("127.0.0.1", "169.254.169.254", "10.1.2.3", "192.168.0.1", "::1",
                    "::ffff:127.0.0.1", "fe80::1", "0.0.0.0", "100.64.0.1"):  # fmt: skip
        assert not address_allowed(address, allow_private=False), address
        assert address_allowed(address, allow_private=True), address
    assert address_allowed("93.184.216.34", allow_private=False)
    for url in ("http://127.0.0.1:8080/x", "https://169.254.169.254/", "ftp://example.com/",
                "http://localhost/x"):  # fmt: skip
        with pytest.raises(EndpointRefused):
            check_url(url, allow_private=False)
    check_url("https://hooks.example.com/x", allow_private=False)


async def test_resolver_refuses_a_name_that_resolves_to_loopback() -> None:
    """A name resolving only to loopback is refused where the connection is made."""
    resolver = GuardedResolver(allow_private=False)
    try:
        with pytest.raises(EndpointRefused):
            await resolver.resolve("localhost", 80)
    finally:
        await resolver.close()


def test_fan_out_by_tenant_type_and_age() -> None:
    """Each event goes to its own tenant's endpoints that want its type and existed when
    it was recorded, in event order."""
    t0 = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)
    later = t0 + dt.timedelta(minutes=1)
    events = [(1, "a", "email.sent", t0), (2, "b", "email.sent", t0),
              (3, "a", "email.bounced", later)]  # fmt: skip
    endpoints = [("e1", "a", ["email.sent"], t0), ("e2", "a", ["*"], t0),
                 ("e3", "b", ["email.bounced"], t0), ("e4", "a", ["*"], later)]  # fmt: skip
    assert fan_out(events, endpoints) == [
        (1, "a", "e1"), (1, "a", "e2"), (3, "a", "e2"), (3, "a", "e4")
    ]  # fmt: skip


def test_batches_per_endpoint_in_event_order() -> None:
    """Runs of up to N events of one endpoint, ordered by their first event."""
    pairs = [(1, "a", "e1"), (1, "a", "e2"), (2, "a", "e1"), (3, "a", "e1"), (4, "b", "e3")]
    assert batches(pairs, 2) == [("a", "e1", [1, 2]), ("a", "e2", [1]), ("a", "e1", [3]),
                                 ("b", "e3", [4])]  # fmt: skip


def test_webhook_payload_takes_one_event_or_a_batch() -> None:
    """Jobs queued before batches (``event_id``) still validate; a batch is ``event_ids``;
    both or neither is refused."""
    family = FAMILY_BY_NAME["webhook"]
    old = family.validate({"tenant_id": "t", "endpoint_id": "e", "event_id": 7})
    assert isinstance(old, WebhookPayload) and old.events == ["7"]
    batch = family.validate({"tenant_id": "t", "endpoint_id": "e", "event_ids": [7, "8"]})
    assert isinstance(batch, WebhookPayload) and batch.events == ["7", "8"]
    for bad in ({}, {"event_id": "1", "event_ids": ["2"]}, {"event_ids": []}):
        with pytest.raises(PayloadInvalid):
            family.validate({"tenant_id": "t", "endpoint_id": "e", **bad})


# -- against the receiver ---------------------------------------------------------------------


async def add_endpoint(
    app: App, url: str, types: list[str], secret: str, concurrency: int = 4
) -> str:
    store = EndpointStore(app.db, CredentialBox(app.secret_key))
    return (await store.add(TENANT, url, types, secret, concurrency=concurrency)).id


async def event(
    app: App, n: int, event_type: EventType = EventType.SENT, tenant: str = TENANT
) -> None:
    async with app.db.acquire() as conn:
        await record_event(
            conn,
            tenant_id=tenant,
            event_type=event_type,
            subject_id=f"d{n}",
            payload={"delivery_id": f"d{n}", "n": n},
            dedupe_key=f"test:{n}",
        )


@pytest.fixture
async def run_worker(
    app: App, services: Services
) -> AsyncIterator[Callable[..., Awaitable[Worker]]]:
    workers: list[Worker] = []

    async def make(clock: Callable[[], float] = time.time) -> Worker:
        sender = services.get(SENDER)
        from webhooks.sender import create_handler

        worker = Worker(app, {"webhook": create_handler(app, services)}, clock=clock,
                        rng=random.Random(1))  # fmt: skip
        assert sender is services.get(SENDER)
        await worker.start()
        workers.append(worker)
        return worker

    yield make
    loop = asyncio.get_running_loop()
    for w in workers:
        await w.stop(loop.time() + 5)


async def test_events_arrive_once_signed_and_in_order(
    app: App, services: Services, receiver: Receiver, run_worker: Any
) -> None:
    """Subscribed events are queued in outbox order (the oldest taken first) and reach the
    endpoint once each (attempts overlap, up to the endpoint's concurrency), as {type,
    timestamp, data} with a valid signature under both secrets of a rotation; other types
    and other tenants' events do not; a second dispatch of the same events (a crash before
    the commit) re-sends nothing."""
    old, new = signing.new_secret(), signing.new_secret()
    receiver.secrets = [old, new]
    endpoint = await add_endpoint(app, receiver.url, ["email.sent", "email.bounced"], old)
    await EndpointStore(app.db, CredentialBox(app.secret_key)).add_secret(
        TENANT, endpoint, new, keep=3
    )
    for n in range(1, 6):
        await event(app, n, EventType.BOUNCED if n == 3 else EventType.SENT)
    await event(app, 6, EventType.REPLIED)  # not subscribed
    await event(app, 7, tenant="someone_else")
    sender = services.get(SENDER)
    dispatcher = Dispatcher(app, sender.max_attempts)
    assert await dispatcher.dispatch_once() == 7
    jobs = await app.redis.lrange(WEBHOOK, 0, -1)
    taken_first = [e for j in reversed(jobs) for e in json.loads(j)["payload"]["event_ids"]]
    assert [int(e) for e in taken_first] == sorted(int(e) for e in taken_first)
    worker = await run_worker()
    await worker.run_until_empty(30)
    await app.redis.lpush(WEBHOOK, *reversed(jobs))  # the same jobs pushed again
    await worker.run_until_empty(30)
    ids = sorted(int(i.removeprefix("msg_")) for i in receiver.ids())
    assert len(receiver.got) == 5 and ids == [int(e) for e in taken_first]
    assert all(all(r.valid.values()) for r in receiver.got)
    bodies = sorted(receiver.bodies(), key=lambda b: b["data"]["n"])
    assert [b["type"] for b in bodies] == ["email.sent"] * 2 + ["email.bounced"] + [
        "email.sent"
    ] * 2
    assert [b["data"]["n"] for b in bodies] == [1, 2, 3, 4, 5]
    assert all(b["timestamp"].endswith("Z") for b in bodies)
    rows = await app.db.fetch("SELECT status, response_code, latency_ms FROM webhook_attempts")
    assert len(rows) == 5 and all(r["status"] == "success" and r["latency_ms"] > 0 for r in rows)
    assert await dispatcher.dispatch_once() == 0
    cursor = await app.db.fetchval(
        "SELECT last_event_id FROM outbox_cursor WHERE tenant_id = $1 AND name = 'webhooks'", TENANT
    )
    assert cursor == await app.db.fetchval(
        "SELECT max(id) FROM events WHERE tenant_id = $1", TENANT
    )


async def test_retries_follow_the_schedule_on_an_injected_clock(
    app: App, services: Services, receiver: Receiver, run_worker: Any
) -> None:
    """500, 500, then 200: the retries come after 5 s and 5 min on the worker's clock (the
    schedule), each attempt recorded with its code, the webhook-id the same throughout."""
    secret = signing.new_secret()
    receiver.secrets = [secret]
    receiver.answer = lambda _id, n: 500 if n <= 2 else 200
    await add_endpoint(app, receiver.url, ["*"], secret)
    await event(app, 1)
    clock = FakeClock()
    await Dispatcher(app, services.get(SENDER).max_attempts).dispatch_once()
    worker = await run_worker(clock)
    for expected_s in (5, 300):
        due = await poll(lambda: app.redis.zrange(keys.DELAYED, 0, -1, withscores=True), bool)
        delay_s = due[0][1] / 1000 - clock.now
        assert expected_s - 0.5 <= delay_s <= expected_s + 0.5, delay_s
        clock.now += delay_s - 1
        assert await worker.promote_once() == 0
        clock.now += 1.1
        assert await worker.promote_once() == 1
    await worker.run_until_empty(30)
    assert [r.status for r in receiver.got] == [500, 500, 200]
    assert len({r.webhook_id for r in receiver.got}) == 1
    rows = await app.db.fetch("SELECT attempt, response_code FROM webhook_attempts ORDER BY id")
    assert [(r["attempt"], r["response_code"]) for r in rows] == [(1, 500), (2, 500), (3, 200)]
    assert await app.db.fetchval("SELECT status FROM webhook_deliveries") == "delivered"
    assert await app.db.fetchval("SELECT failing_since FROM webhook_endpoints") is None


async def test_a_batch_retries_only_its_failed_events_each_on_its_own(
    app: App, services: Services, receiver: Receiver, run_worker: Any
) -> None:
    """Six events to one endpoint are one job; events 2 and 5 get a 500 the first time.
    The four others are delivered once and never sent again; 2 and 5 each get a one-event
    job due after the schedule's second delay (5 s, on the worker's clock), which delivers
    them with the same webhook-id; every attempt is a row; the batch job completes."""
    secret = signing.new_secret()
    receiver.secrets = [secret]
    await add_endpoint(app, receiver.url, ["*"], secret)
    for n in range(1, 7):
        await event(app, n)
    ids = [r["id"] for r in await app.db.fetch("SELECT id FROM events ORDER BY id")]
    flaky = {f"msg_{ids[1]}", f"msg_{ids[4]}"}
    receiver.answer = lambda msg_id, n: 500 if msg_id in flaky and n == 1 else 200
    clock = FakeClock()
    assert await Dispatcher(app, services.get(SENDER).max_attempts).dispatch_once() == 6
    [batch] = [json.loads(j) for j in await app.redis.lrange(WEBHOOK, 0, -1)]
    assert batch["payload"]["event_ids"] == [str(i) for i in ids]
    worker = await run_worker(clock)
    due = await poll(
        lambda: app.redis.zrange(keys.DELAYED, 0, -1, withscores=True), lambda d: len(d) == 2
    )
    retries = [(json.loads(m.partition(b"\n")[2]), score) for m, score in due]
    assert sorted(j["payload"]["event_id"] for j, _ in retries) == [str(ids[1]), str(ids[4])]
    assert all(j["attempt_count"] == 1 and "event_ids" not in j["payload"] for j, _ in retries)
    assert all(4.5 <= score / 1000 - clock.now <= 5.5 for _, score in retries)
    assert sorted(r.webhook_id for r in receiver.got) == sorted(f"msg_{i}" for i in ids)
    # Due on the sender's clock (real time, later than the worker's fake one on a loaded
    # machine); the worker's own promoter may move them first.
    clock.now = max(score for _, score in retries) / 1000 + 0.1
    await worker.promote_once()
    assert await app.redis.zcard(keys.DELAYED) == 0
    await worker.run_until_empty(30)
    sent: dict[str, int] = {}
    for r in receiver.got:
        sent[r.webhook_id] = sent.get(r.webhook_id, 0) + 1
    assert sent == {f"msg_{i}": 2 if f"msg_{i}" in flaky else 1 for i in ids}
    assert sorted(receiver.ids()) == sorted(f"msg_{i}" for i in ids)
    assert all(all(r.valid.values()) for r in receiver.got)
    rows = await app.db.fetch(
        "SELECT event_id, attempt, response_code FROM webhook_attempts ORDER BY event_id, attempt"
    )
    assert [(r["event_id"], r["attempt"], r["response_code"]) for r in rows] == [
        row
        for i in ids
        for row in ([(i, 1, 500), (i, 2, 200)] if f"msg_{i}" in flaky else [(i, 1, 200)])
    ]
    statuses = await app.db.fetch("SELECT status, attempts FROM webhook_deliveries")
    assert all(r["status"] == "delivered" for r in statuses) and len(statuses) == 6
    record = await app.redis.hgetall(keys.job_key(batch["id"]))
    assert record[b"status"] == b"completed"


async def test_old_single_event_jobs_still_run(
    app: App, services: Services, receiver: Receiver, run_worker: Any
) -> None:
    """A job of the single-event shape (queued before batches existed) is delivered."""
    secret = signing.new_secret()
    receiver.secrets = [secret]
    endpoint = await add_endpoint(app, receiver.url, ["*"], secret)
    await event(app, 1)
    event_id = await app.db.fetchval("SELECT id FROM events")
    await app.db.execute(
        "INSERT INTO webhook_deliveries (tenant_id, event_id, endpoint_id) VALUES ($1, $2, $3)",
        TENANT,
        event_id,
        endpoint,
    )
    payload = {"tenant_id": TENANT, "endpoint_id": endpoint, "event_id": str(event_id)}
    old = {"id": f"wh-{event_id}-{endpoint}", "max_attempts": 8, "payload": payload}
    await app.redis.lpush(WEBHOOK, json.dumps(old))
    worker = await run_worker()
    await worker.run_until_empty(30)
    assert receiver.ids() == [f"msg_{event_id}"]
    assert await app.db.fetchval("SELECT status FROM webhook_deliveries") == "delivered"


async def test_410_disables_the_endpoint(
    app: App, services: Services, receiver: Receiver, run_worker: Any
) -> None:
    """410 Gone: one attempt, the endpoint disabled with the reason, an event recorded,
    later events not sent to it."""
    secret = signing.new_secret()
    receiver.answer = lambda _id, _n: 410
    endpoint = await add_endpoint(app, receiver.url, ["email.sent"], secret)
    await event(app, 1)
    dispatcher = Dispatcher(app, services.get(SENDER).max_attempts)
    await dispatcher.dispatch_once()
    worker = await run_worker()
    await worker.run_until_empty(30)
    row = await app.db.fetchrow("SELECT enabled, disabled_reason FROM webhook_endpoints")
    assert not row["enabled"] and "410" in row["disabled_reason"]
    ev = await app.db.fetchrow("SELECT subject_id, payload FROM events WHERE type = $1",
                               EventType.WEBHOOK_DISABLED.value)  # fmt: skip
    assert ev["subject_id"] == endpoint and "410" in ev["payload"]["reason"]
    await event(app, 2)
    await dispatcher.dispatch_once()
    await worker.run_until_empty(30)
    assert len(receiver.got) == 1


async def test_endpoint_failing_for_five_days_is_disabled(
    app: App, services: Services, receiver: Receiver, run_worker: Any
) -> None:
    """An endpoint whose attempts have failed for 5 days is disabled at its next failure,
    with an event naming why; the job completes (no more retries)."""
    secret = signing.new_secret()
    receiver.answer = lambda _id, _n: 503
    await add_endpoint(app, receiver.url, ["email.sent"], secret)
    await app.db.execute("UPDATE webhook_endpoints SET failing_since = now() - interval '5 days'")
    await event(app, 1)
    await Dispatcher(app, services.get(SENDER).max_attempts).dispatch_once()
    worker = await run_worker()
    await worker.run_until_empty(30)
    reason = await app.db.fetchval("SELECT disabled_reason FROM webhook_endpoints")
    assert reason.startswith("every attempt failed for 5.0 days") and "503" in reason
    assert (
        await app.db.fetchval(
            "SELECT count(*) FROM events WHERE type = 'webhook.endpoint_disabled'"
        )
        == 1
    )
    assert await app.db.fetchval("SELECT status FROM webhook_deliveries") == "failed"


async def test_ssrf_guard_refuses_loopback_when_not_allowed(app: App, receiver: Receiver) -> None:
    """Without webhook_allow_private, an attempt to a 127.0.0.1 endpoint is refused before
    any connection (the receiver sees nothing) and recorded as an error."""
    app.settings = app.settings.model_copy(update={"webhook_allow_private": False})
    sender = WebhookSender(app)
    try:
        endpoint = await EndpointStore(app.db, sender.store.box).add(
            TENANT, receiver.url, ["*"], signing.new_secret()
        )
        attempt = await sender.post(endpoint, "msg_1", b"{}")
        named = endpoint.__class__(
            **{**endpoint.__dict__, "url": f"http://localhost:{receiver.port}/hook"}
        )
        by_name = await sender.post(named, "msg_2", b"{}")
    finally:
        await sender.aclose()
    assert attempt.code is None and attempt.error is not None and "refused" in attempt.error
    assert by_name.code is None and by_name.error is not None and "refused" in by_name.error
    assert receiver.got == []


async def test_cli_test_sends_a_signed_event_and_replay_resends_with_the_same_id(
    app: App, settings: Settings, services: Services, receiver: Receiver, run_worker: Any
) -> None:
    """`mailgate webhooks test` POSTs a signed test event and prints the answer; `list`
    shows the endpoint; replay of the events since a time queues them again, and they
    arrive with their original webhook-id."""
    secret = signing.new_secret()
    receiver.secrets = [secret]
    endpoint = await add_endpoint(app, receiver.url, ["email.sent"], secret)
    env = cli_env(settings, secret_key=settings.secret_key.get_secret_value(),
                  webhook_allow_private="true")  # fmt: skip
    for args, expected in ((["test", endpoint], "HTTP 200"), (["list"], endpoint)):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli", "webhooks", *args, "--tenant", TENANT,
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await proc.communicate()
        assert proc.returncode == 0 and expected in out.decode(), out.decode()
    [probe] = receiver.got
    assert json.loads(probe.body)["type"] == "webhook.test" and probe.valid[secret]
    since = dt.datetime.now(dt.UTC)
    await event(app, 1)
    await Dispatcher(app, services.get(SENDER).max_attempts).dispatch_once()
    worker = await run_worker()
    await worker.run_until_empty(30)
    assert await replay(app, TENANT, since, None) == 1
    await worker.run_until_empty(30)
    first, again = receiver.got[1:]
    assert first.webhook_id == again.webhook_id and first.body == again.body
