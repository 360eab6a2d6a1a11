"""The dashboard in a real browser (Debian's headless Chromium driven by Playwright) on a
real `mailgate run`, its API's access rules, and `mailgate status` on a healthy daemon and
after Redis is stopped."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import async_playwright, expect

from gateway.app import App
from gateway.embedded import EmbeddedRedis, free_port
from gateway.jobs import keys
from gateway.jobs.envelope import utc_now_iso
from gateway.settings import Settings
from gateway.status import field_name, minute_key
from gateway.webauth import is_loopback
from tests.daemon import cli_env, mailgate_env, poll, spawn_mailgate, stop_mailgate

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TOKEN = "dashboard-token-0123456789"
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "dashboard.png"


async def mailgate(env: dict[str, str], *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.cli",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


async def _ready(port: int) -> int:
    try:
        async with (
            aiohttp.ClientSession() as s,
            s.get(f"http://127.0.0.1:{port}/readyz", timeout=aiohttp.ClientTimeout(total=2)) as r,
        ):
            return r.status
    except (aiohttp.ClientError, TimeoutError):
        return 0


async def _stop(proc: subprocess.Popen[bytes], log: Path) -> None:
    await stop_mailgate(proc, log)


@pytest.fixture
async def daemon(settings: Settings, tmp_path: Path) -> AsyncIterator[tuple[int, dict[str, str]]]:
    """A running `mailgate run` (HTTP endpoint only, dashboard token set): its HTTP port
    and the CLI environment for the same servers."""
    port = free_port()
    env = mailgate_env(
        settings, port, components="none", dashboard_token=TOKEN, status_interval_s="0.5"
    )
    log = tmp_path / "daemon.log"
    proc = spawn_mailgate(env, log)
    try:
        await poll(lambda: _ready(port), lambda s: s == 200, 60)
        yield port, env
    finally:
        await _stop(proc, log)


def _require_chromium() -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing: apt-get install chromium", pytrace=False)


async def _seed(app: App) -> dict[str, Any]:
    """Queues with waiting, held, delayed and dead jobs; one live worker heartbeat."""
    await app.redis.lpush("queue:email-sending", *[json.dumps({"id": f"w{i}"}) for i in range(3)])
    await app.redis.lpush("queue:campaign:process", json.dumps({"id": "c1"}))
    await app.redis.zadd(
        keys.DELAYED, {keys.delayed_member("queue:bounce:process", b'{"id":"d1"}'): 1e15}
    )
    await app.redis.sadd(keys.WORKERS, "worker-test-1")
    await app.redis.hset(
        keys.worker_key("worker-test-1"),
        mapping={
            "worker_id": "worker-test-1",
            "status": "healthy",
            "last_heartbeat": utc_now_iso(),
            "in_flight": 2,
            "jobs_processed": 7,
        },
    )
    await app.redis.lpush(
        keys.processing_key("worker-test-1", "queue:email-sending"), b'{"id":"a1"}', b'{"id":"a2"}'
    )
    letter = {
        "id": "dead-1",
        "payload": {"message_id": "<m@x>", "bounce_type": "hard", "recipient_email": "a@b.test"},
        "attempt_count": 5,
        "max_attempts": 5,
        "error": "RuntimeError: boom",
        "failed_at": "2026-01-01T00:00:00Z",
        "queue_name": "queue:bounce:process",
    }
    await app.redis.lpush(keys.DEAD, json.dumps(letter))
    # The last 40 minutes' counter growth, as daemons record it (the throughput chart).
    now_min = int(time.time() // 60)
    for ago in range(40):
        key = minute_key(now_min - ago)
        done, failed = 50 + (ago * 37) % 90, (ago * 7) % 5
        await app.redis.hset(key, field_name("jobs_completed_total", {"queue": "q"}), done)
        await app.redis.hset(key, field_name("jobs_failed_total", {"queue": "q"}), failed)
        await app.redis.expire(key, 600)
    return letter


async def _page_counts(page: Any) -> dict[str, dict[str, int]]:
    rows = await page.eval_on_selector_all(
        "#queues tbody tr",
        """rows => rows.map(r => [r.dataset.queue,
             Object.fromEntries([...r.querySelectorAll('td[data-col]')]
               .map(td => [td.dataset.col, Number(td.textContent)]))])""",
    )
    return dict(rows)


@pytest.mark.timeout(180)
async def test_dashboard_in_chromium_matches_queues_and_retries_a_dead_letter(
    app: App, daemon: tuple[int, dict[str, str]], tmp_path: Path
) -> None:
    """Headless Chromium logs in to /dashboard with no console error; the page shows the
    counts of `mailgate queues --json` (waiting, active, delayed, failed per queue; totals);
    a retry from the page, after its confirmation, moves the dead letter back to its queue."""
    _require_chromium()
    port, env = daemon
    letter = await _seed(app)
    code, out = await mailgate(env, "queues", "--json")
    assert code == 0, out
    cli = json.loads(out)
    errors: list[str] = []
    base = f"http://127.0.0.1:{port}"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 1000})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on(
                "response",
                lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None,
            )
            await page.goto(f"{base}/dashboard")
            assert page.url == f"{base}/dashboard/login"
            await page.fill("#password", TOKEN)
            await page.click("button[type=submit]")
            await page.wait_for_url(f"{base}/dashboard")
            await page.wait_for_selector("body[data-loaded]")

            shown = await _page_counts(page)
            expected = {
                name: {c: q[c] for c in ("waiting", "active", "delayed", "failed")}
                for name, q in cli["queues"].items()
            }
            assert shown == expected
            assert expected["queue:email-sending"] == {
                "waiting": 3,
                "active": 2,
                "delayed": 0,
                "failed": 0,
            }
            assert expected["queue:bounce:process"]["failed"] == 1
            for total in ("delayed", "dead", "processing"):
                assert await page.text_content(f"#total-{total}") == str(cli[total])
            assert await page.text_content("#workers tbody") is not None
            assert "worker-test-1" in (await page.text_content("#workers tbody") or "")
            seeded = sum(50 + (a * 37) % 90 for a in range(40)), sum((a * 7) % 5 for a in range(40))
            assert await page.text_content("#throughput-total") == (
                f"{seeded[0]} completed, {seeded[1]} failed in the last hour"
            )
            await page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
            if os.environ.get("MAILGATE_UPDATE_SCREENSHOT") == "1":
                shutil.copy(tmp_path / "dashboard.png", SCREENSHOT)

            await page.click('#dlq tr[data-job="dead-1"] button[data-action="retry"]')
            await page.wait_for_selector("#confirm[open]")
            assert "dead-1" in (await page.text_content("#confirm-text") or "")
            await page.click("#confirm-yes")
            # (expect() polls without eval: the page's CSP forbids evaluating strings.)
            await expect(page.locator("#message")).to_have_text(re.compile("^retried 1"))
            await expect(page.locator("#total-dead")).to_have_text("0")
            bounce_row = '#queues tr[data-queue="queue:bounce:process"] td[data-col="waiting"]'
            await expect(page.locator(bounce_row)).to_have_text("1")
        finally:
            await browser.close()
    assert errors == []
    assert await app.redis.llen(keys.DEAD) == 0
    revived = json.loads(await app.redis.lindex("queue:bounce:process", 0))
    assert revived["id"] == letter["id"] and revived["attempt_count"] == 0
    assert "error" not in revived


async def test_api_refuses_changes_without_token_or_csrf(
    app: App, daemon: tuple[int, dict[str, str]]
) -> None:
    """A read without credentials is 401; a change without the token is 401, with a session
    cookie but no or a wrong CSRF token 403, from a foreign Origin 403; with the bearer token
    or the session plus its CSRF token it goes through."""
    port, _ = daemon
    await _seed(app)
    base = f"http://127.0.0.1:{port}"
    retry = f"{base}/api/dlq/retry"
    body = {"id": "dead-1"}
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as anon:
        async with anon.get(f"{base}/api/queues") as r:
            assert r.status == 401
        async with anon.post(retry, json=body) as r:
            assert r.status == 401
        async with anon.post(retry, json=body, headers={"Authorization": "Bearer wrong"}) as r:
            assert r.status == 401
        async with anon.post(
            retry, json=body, headers={**bearer, "Origin": "http://evil.example"}
        ) as r:
            assert r.status == 403 and "cross-origin" in (await r.json())["error"]
        async with anon.post(f"{base}/dashboard/login", data={"password": "wrong"}) as r:
            assert r.status == 401
    assert await app.redis.llen(keys.DEAD) == 1

    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        async with browser.post(
            f"{base}/dashboard/login", data={"password": TOKEN}, allow_redirects=False
        ) as r:
            assert r.status == 303
        async with browser.get(f"{base}/dashboard") as r:
            page = await r.text()
            assert r.headers["Content-Security-Policy"].startswith("default-src 'none'")
        csrf = page.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
        assert len(csrf) == 40
        async with browser.get(f"{base}/api/queues") as r:
            assert r.status == 200
        async with browser.post(retry, json=body) as r:
            assert r.status == 403 and "CSRF" in (await r.json())["error"]
        async with browser.post(retry, json=body, headers={"X-CSRF-Token": "0" * 40}) as r:
            assert r.status == 403
        assert await app.redis.llen(keys.DEAD) == 1
        async with browser.post(retry, json=body, headers={"X-CSRF-Token": csrf}) as r:
            assert r.status == 200 and (await r.json())["done"] == 1
    assert await app.redis.llen(keys.DEAD) == 0
    async with aiohttp.ClientSession(headers=bearer) as script:
        async with script.post(f"{base}/api/dlq/delete", json={"id": "dead-1"}) as r:
            assert r.status == 404
        async with script.get(f"{base}/api/dlq") as r:
            assert (await r.json())["total"] == 0


async def test_without_a_token_the_dashboard_is_read_only(
    app: App, settings: Settings, tmp_path: Path
) -> None:
    """No dashboard_token: loopback clients read the page and the API without logging in;
    every change is refused (403, read-only); other addresses are not loopback."""
    port = free_port()
    env = mailgate_env(settings, port, components="none")
    log = tmp_path / "daemon.log"
    proc = spawn_mailgate(env, log)
    try:
        await poll(lambda: _ready(port), lambda s: s == 200, 60)
        await _seed(app)
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{base}/dashboard") as r:
                assert r.status == 200 and 'data-writable="0"' in await r.text()
            async with s.get(f"{base}/api/queues") as r:
                assert (await r.json())["dead"] == 1
            async with s.post(f"{base}/api/dlq/retry", json={"all": True}) as r:
                assert r.status == 403 and "read-only" in (await r.json())["error"]
        assert await app.redis.llen(keys.DEAD) == 1
    finally:
        await _stop(proc, log)
    assert is_loopback("127.0.0.2") and is_loopback("::1")
    assert not is_loopback("10.1.2.3") and not is_loopback(None) and not is_loopback("x")


@pytest.mark.timeout(180)
async def test_status_json_healthy_then_unhealthy_after_redis_stops(
    settings: Settings, private_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    """`mailgate status --json` exits 0 on a healthy daemon running every component (its
    components ready, a live worker; a mailbox whose server refuses connections is listed in
    backoff with its last error, a warning only); after its Redis is stopped it exits 1
    naming Redis."""
    live = settings.model_copy(
        update={"redis_url": settings.redis_url.__class__(private_redis.url)}
    )
    port = free_port()
    env = mailgate_env(live, port, status_interval_s="0.5", bounce_domains="bounces.test")
    cli = cli_env(live, secret_key=env["MAILGATE_SECRET_KEY"])
    code, out = await mailgate(
        {**cli, "PW": "pw"},
        "accounts", "add", "--tenant", "t1", "--address", "down@example.test",
        "--imap-host", "127.0.0.1", "--imap-port", str(free_port()), "--imap-security", "none",
        "--password-env", "PW",
    )  # fmt: skip
    assert code == 0, out
    log = tmp_path / "daemon.log"
    proc = spawn_mailgate(env, log)
    try:
        await poll(lambda: _ready(port), lambda s: s == 200, 90)
        code, out = await poll(
            lambda: mailgate(cli, "status", "--json"),
            lambda r: r[0] == 0 and json.loads(r[1])["watchers"]["backoff"],
            30,
        )
        status = json.loads(out)
        assert status["healthy"] is True and status["problems"] == []
        (backoff,) = status["watchers"]["backoff"]
        assert backoff["address"] == "down@example.test" and backoff["folder"] == "INBOX"
        assert backoff["failures"] >= 1 and backoff["last_error"]
        assert any("in backoff" in w for w in status["warnings"])
        assert status["backends"] == {"postgres": "ok", "redis": "ok"}
        (instance,) = status["instances"]
        assert set(instance["components"]) == {
            "worker",
            "ingest",
            "bounces",
            "delivery",
            "schedule",
            "warmup",
            "webhooks",
        }
        assert set(instance["components"].values()) == {"ready"}
        assert len(status["workers"]) == 1
        code, text = await mailgate(cli, "status")
        assert code == 0 and text.startswith("mailgate ") and "healthy" in text
        assert "workers: 1 live" in text and "backoff down@example.test INBOX" in text

        await asyncio.to_thread(private_redis.stop, force=True)
        code, out = await mailgate(cli, "status", "--json")
        status = json.loads(out)
        assert code == 1 and status["healthy"] is False
        assert status["backends"]["postgres"] == "ok"
        assert status["backends"]["redis"].startswith("error")
        assert any(p.startswith("Redis") for p in status["problems"])
        code, text = await mailgate(cli, "status")
        assert code == 1 and "UNHEALTHY" in text
    finally:
        await _stop(proc, log)
