"""Feedback in (issue 17) against real PostgreSQL, Redis, an SMTP peer and the HTTP routes:
RFC 8058 one-click POST, the GET page and the mailto through the bounce listener's intake
each suppress once; forged tokens change nothing; a hard-bounce burst pauses the account,
held sends are kept and go after `resume`."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import random
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bounces.intake import Intake, SmtpEnvelope
from bounces.processing import create_handler as bounce_handler
from delivery.jobs import create_handler as send_handler
from delivery.unsubscribe import routes
from gateway import guards
from gateway.app import App
from gateway.guardcmds import SENDING_QUEUES
from gateway.jobs import DeferJob, keys
from gateway.jobs.contracts import BOUNCE, EMAIL_SENDING, BouncePayload, encode_job
from gateway.jobs.envelope import Job, parse_job
from gateway.jobs.worker import Worker
from gateway.settings import Settings
from gateway.verp import Verp
from tests.daemon import poll
from tests.delivery.conftest import TENANT, World
from tests.delivery.peer import ScriptedPeer


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """A public URL on loopback (RFC 8058 wants HTTPS; loopback http is allowed) and small
    guard windows so a burst of a few bounces trips."""
    return settings.model_copy(
        update={
            "public_url": "http://127.0.0.1:8025",
            "guard_bounce_window": 20,
            "guard_bounce_rate": 0.2,
            "guard_hold_s": 3600.0,
        }
    )


@pytest.fixture
async def peer() -> AsyncIterator[ScriptedPeer]:
    """One SMTP peer (the parametrised one of conftest is not needed here)."""
    p = await ScriptedPeer(pipelining=True).start()
    yield p
    await p.stop()


@pytest.fixture
async def http(world: World) -> AsyncIterator[str]:
    """The unsubscribe routes on 127.0.0.1 (as the daemon's HTTP listener mounts them)."""
    site_app = web.Application()
    site_app.router.add_routes(routes(world.app, world.services))
    runner = web.AppRunner(site_app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def send(world: World, recipient: str, **fields: Any) -> dict[str, Any]:
    handler = send_handler(world.app, world.services)
    job = world.job(world.payload(recipient), **fields)
    result: dict[str, Any] = await handler.run(job, handler.parse(job.payload))
    return result


def links(world: World) -> tuple[str, str]:
    """The (URL, mailto) of the last message's List-Unsubscribe."""
    msg = email.message_from_bytes(world.peer.messages[-1].content, policy=email.policy.default)
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    mailto, url = (p.strip().strip("<>") for p in str(msg["List-Unsubscribe"]).split(","))
    return url, mailto.removeprefix("mailto:")


async def effects(app: App, address: str) -> dict[str, Any]:
    return {
        "suppressions": await app.db.fetchval(
            "SELECT count(*) FROM suppressions WHERE email = $1 AND reason = 'unsubscribe'",
            address,
        ),
        "metric": await app.db.fetchval(
            "SELECT coalesce(sum(unsubscribes), 0) FROM campaign_metrics"
        ),
        "events": await app.db.fetchval(
            "SELECT count(*) FROM events WHERE type = 'email.unsubscribed'"
        ),
        "marked": await app.db.fetchval(
            "SELECT count(*) FROM email_deliveries WHERE unsubscribed_at IS NOT NULL"
        ),
    }


ONCE = {"suppressions": 1, "metric": 1, "events": 1, "marked": 1}
NOTHING = {"suppressions": 0, "metric": 0, "events": 0, "marked": 0}


async def test_one_click_post_suppresses_once_and_later_sends_are_skipped(
    world: World, http: str
) -> None:
    """The message carries <public url>/unsubscribe/<token> and unsubscribe+<token>@ the
    bounce domain; two one-click POSTs: 200, no cookie, no redirect, no form; one
    suppression (reason unsubscribe), one count, one event; the next send is skipped."""
    await send(world, "ada@example.net")
    url, mailto = links(world)
    assert url.startswith("http://127.0.0.1:8025/unsubscribe/")
    assert mailto.startswith("unsubscribe+") and mailto.endswith("@bounces.test")
    path = url.removeprefix("http://127.0.0.1:8025")
    async with aiohttp.ClientSession() as session:
        for _ in range(2):
            async with session.post(
                http + path, data={"List-Unsubscribe": "One-Click"}, allow_redirects=False
            ) as response:
                assert response.status == 200
                assert "Set-Cookie" not in response.headers
                body = await response.text()
                assert "<form" not in body and "unsubscribed" in body
    assert await effects(world.app, "ada@example.net") == ONCE
    again = await send(world, "ada@example.net", id="another-job")
    assert again["status"] == "suppressed" and len(world.peer.messages) == 1


async def test_get_page_changes_nothing_and_its_button_unsubscribes(
    world: World, http: str
) -> None:
    """GET shows a page whose form POSTs List-Unsubscribe=One-Click to the same URL; the
    GET itself (a link scanner) changes nothing; the button's POST unsubscribes once."""
    await send(world, "ada@example.net")
    path = "/unsubscribe/" + links(world)[0].rsplit("/", 1)[1]
    async with aiohttp.ClientSession() as session:
        async with session.get(http + path) as response:
            assert response.status == 200
            page = await response.text()
        assert f'action="{path}"' in page and 'name="List-Unsubscribe" value="One-Click"' in page
        assert await effects(world.app, "ada@example.net") == NOTHING
        async with session.post(http + path, data={"List-Unsubscribe": "One-Click"}) as response:
            assert response.status == 200
        async with session.post(http + path, data="nonsense") as response:
            assert response.status == 400
    assert await effects(world.app, "ada@example.net") == ONCE


async def test_forged_tokens_get_404_and_change_nothing(world: World, http: str) -> None:
    """A token with a wrong MAC, a malformed one, and a genuine token of a delivery that
    does not exist: 404 for GET and POST, nothing written."""
    await send(world, "ada@example.net")
    token = links(world)[0].rsplit("/", 1)[1]
    ident, _, mac = token.partition("-")
    forged = f"{ident}-{'a' * len(mac)}"
    unknown = Verp(world.app.secret_key).token("dnosuchdelivery")
    async with aiohttp.ClientSession() as session:
        for bad in (forged, "garbage", unknown):
            for method in ("GET", "POST"):
                async with session.request(
                    method, f"{http}/unsubscribe/{bad}", data="List-Unsubscribe=One-Click"
                ) as response:
                    assert response.status == 404, (bad, method)
    assert await effects(world.app, "ada@example.net") == NOTHING


async def run_bounce_jobs(world: World) -> None:
    handler = bounce_handler(world.app, world.services)
    while raw := await world.app.redis.rpop(BOUNCE):
        job = parse_job(raw, BOUNCE)
        await handler.run(job, handler.parse(job.payload))


async def test_mailto_unsubscribe_through_the_listener_suppresses_once(world: World) -> None:
    """Mail to unsubscribe+<token>@<bounce domain> is stored by the listener's intake and
    processed like the one-click POST (twice: once); a forged token's mail changes nothing."""
    await send(world, "ada@example.net")
    mailto = links(world)[1]
    intake = Intake(world.app)
    raw = (
        b"From: ada@example.net\r\nTo: " + mailto.encode() + b"\r\nSubject: unsubscribe\r\n"
        b"Message-ID: <u1@example.net>\r\n\r\nplease\r\n"
    )
    local, _, domain = mailto.partition("@")
    forged = local[:-3] + "aaa@" + domain
    try:
        await intake.accept(SmtpEnvelope("ada@example.net", (forged,), "127.0.0.1"), raw + b"x")
        await run_bounce_jobs(world)
        assert await effects(world.app, "ada@example.net") == NOTHING
        for _ in range(2):
            await intake.accept(SmtpEnvelope("ada@example.net", (mailto,), "127.0.0.1"), raw)
            await run_bounce_jobs(world)
    finally:
        await intake.close()
    assert await effects(world.app, "ada@example.net") == ONCE
    source = await world.app.db.fetchval("SELECT source FROM suppressions")
    assert source == "mailto"


async def test_hard_bounce_burst_pauses_the_account_and_held_sends_resume(
    world: World,
) -> None:
    """Ten sends, four hard bounces (20 % of a 20-send window): the account is paused with
    an account.paused event and the guard's metric; a queued send is held (kept in the
    delayed set), `resume` without force is refused while over the threshold, with force
    it resumes and the held send goes out: nothing lost."""
    app = world.app
    for n in range(10):
        await send(world, f"r{n}@example.net")
    rows = await app.db.fetch(
        "SELECT id, recipient_email, message_id FROM email_deliveries ORDER BY id"
    )
    for row in rows[:4]:
        # As delivery queues its own 5xx (the same shape, one per delivery).
        payload = BouncePayload(
            tenant_id=TENANT,
            delivery_id=row["id"],
            recipient_email=row["recipient_email"],
            message_id=row["message_id"],
            bounce_type="hard",
            bounce_reason="userunknown",
            status="5.1.1",
            smtp_code=550,
            source="smtp_reply",
        )
        await app.redis.lpush(BOUNCE, encode_job(BOUNCE, payload))
    await run_bounce_jobs(world)
    pause = await guards.pause_of(app.db, TENANT, "acct_1", None)
    assert pause is not None and pause.guard == "hard_bounce_rate"
    assert "20.0%" in pause.reason
    event = await app.db.fetchrow("SELECT payload FROM events WHERE type = 'account.paused'")
    assert event["payload"]["email_account_id"] == "acct_1"
    assert (
        app.metrics.registry.get_sample_value(
            "guard_hard_bounce_rate_trips_total", {"scope": "account"}
        )
        == 1
    )
    # The campaign too: its window is the same ten sends.
    assert await app.db.fetchval("SELECT status FROM campaigns WHERE id = 'camp_1'") == "paused"

    handler = send_handler(app, world.services)
    await asyncio.sleep(1.1)  # the send-time pause cache
    held: Job = world.job(world.payload("late@example.net"), id="held-1")
    with pytest.raises(DeferJob, match="paused"):
        await handler.run(held, handler.parse(held.payload))

    queued = encode_job(
        EMAIL_SENDING, handler.parse(world.payload("queued@example.net")), id="queued-1"
    )
    await app.redis.lpush(EMAIL_SENDING, queued)
    worker = Worker(app, {"email-sending": handler}, rng=random.Random(2))
    await worker.start()
    try:
        await poll(lambda: app.redis.zcard(keys.DELAYED), lambda n: n == 1)
        async with app.db.acquire() as conn:
            with pytest.raises(guards.StillOverThreshold):
                await guards.resume(conn, app.settings, TENANT, "account", "acct_1", force=False)
            assert await guards.resume(conn, app.settings, TENANT, "account", "acct_1", force=True)
            assert await guards.resume(conn, app.settings, TENANT, "campaign", "camp_1", force=True)
        assert await guards.release_held(app.redis, SENDING_QUEUES, TENANT) == 1
        await asyncio.sleep(1.1)  # the send-time pause cache
        await worker.run_until_empty(30)
    finally:
        await worker.stop(asyncio.get_running_loop().time() + 5)
    assert [m.rcpt_tos for m in world.peer.messages][-1] == ["queued@example.net"]
    status = await app.db.fetchval(
        "SELECT status FROM email_deliveries WHERE lower(recipient_email) = 'queued@example.net'"
    )
    assert status == "sent"
    assert json.loads(await app.redis.hget("job:queued-1", "result"))["status"] == "sent"
