"""The issue's done-when, against the real `mailgate run` in a subprocess: the CLI adds an
endpoint and prints its secret; a run's events (a send through the relay, its DSN through
the bounce listener, a one-click unsubscribe of another delivery) reach a local receiver
verifying Standard Webhooks signatures with that secret, exactly once per webhook-id,
after a first 500 each, within the retry schedule; a burst of hard bounces pauses the
account. Then SIGKILL during dispatch and a restart: every event at least once, the same
webhook-id and body on a re-delivery."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import aiosmtplib

from gateway.app import App
from gateway.embedded import free_port
from gateway.events import EventType, record_event
from gateway.jobs.contracts import EMAIL_SENDING, EmailSendPayload, encode_job
from gateway.settings import Settings
from tests.bounces.test_processing import make_dsn
from tests.daemon import cli_env, mailgate_env, poll, spawn_mailgate, stop_mailgate
from tests.delivery.peer import ScriptedPeer
from tests.webhooks.receiver import Receiver

TENANT = "tenant_run"
KEY = "k" * 40


async def seed(app: App) -> None:
    """An account with no SMTP endpoint of its own (it sends through the relay)."""
    await app.db.execute(
        "INSERT INTO email_accounts (id, tenant_id, address) VALUES ('acct', $1, 'ops@s.test')",
        TENANT,
    )
    await app.db.execute(
        "INSERT INTO email_templates (id, tenant_id, subject, text) VALUES"
        " ('tpl', $1, 'Hello', 'Hi {{ email }}')",
        TENANT,
    )
    await app.db.execute(
        "INSERT INTO campaigns (id, tenant_id, email_account_id, template_id, status)"
        " VALUES ('camp', $1, 'acct', 'tpl', 'active')",
        TENANT,
    )


def add_endpoint(settings: Settings, url: str) -> str:
    """`mailgate webhooks add`, as an operator runs it; returns the secret it printed."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "webhooks",
            "add",
            "--tenant",
            TENANT,
            "--url",
            url,
            "--events",
            "*",
        ],
        env=cli_env(settings, secret_key=KEY, webhook_allow_private="true"),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    [secret] = [ln.split()[1] for ln in done.stdout.splitlines() if ln.startswith("secret")]
    return secret


async def queue_send(app: App, recipient: str) -> None:
    payload = EmailSendPayload(tenant_id=TENANT, campaign_id="camp", recipient=recipient)
    await app.redis.lpush(EMAIL_SENDING, encode_job(EMAIL_SENDING, payload))


async def bounce(peer: ScriptedPeer, smtp_port: int, recipient: str) -> None:
    """A DSN for the message sent to ``recipient``, to its VERP return path."""
    [sent] = [m for m in peer.messages if m.rcpt_tos == [recipient]]
    dsn = make_dsn(recipient, to=sent.mail_from, salt=recipient)
    await aiosmtplib.send(
        dsn,
        sender="mailer-daemon@mx.rcpt.test",
        recipients=[sent.mail_from],
        hostname="127.0.0.1",
        port=smtp_port,
    )


def unsubscribe_url(peer: ScriptedPeer, recipient: str) -> str:
    [sent] = [m for m in peer.messages if m.rcpt_tos == [recipient]]
    msg = email.message_from_bytes(sent.content, policy=email.policy.default)
    return str(msg["List-Unsubscribe"]).split(",")[1].strip().strip("<>")


async def test_done_when_a_runs_events_reach_the_endpoint_once_signed_after_retries(
    app: App, settings: Settings, tmp_path: Path
) -> None:
    """Sends through the relay, a DSN through the listener, a one-click POST: each event
    once (by webhook-id) with a valid signature, the first attempt of each answered 500 and
    its retry ~5 s later; the unsubscribed address is suppressed and a later send to it is
    skipped; a second hard bounce pauses the account (account.paused arrives too)."""
    await seed(app)
    receiver = await Receiver(answer=lambda _id, n: 500 if n == 1 else 200).start()
    peer = await ScriptedPeer(pipelining=True).start()
    http_port, smtp_port = free_port(), free_port()
    receiver.secrets = [add_endpoint(settings, receiver.url)]
    env = mailgate_env(
        settings,
        http_port,
        secret_key=KEY,
        smtp_listen=f"127.0.0.1:{smtp_port}",
        bounce_domains="bounces.test",
        delivery_relay=f"127.0.0.1:{peer.port}",
        delivery_relay_security="none",
        public_url=f"http://127.0.0.1:{http_port}",
        webhook_allow_private="true",
        guard_bounce_window="10",
        guard_bounce_rate="0.2",
        delivery_dkim_signer_process="false",
    )
    log = tmp_path / "run.log"
    proc = spawn_mailgate(env, log)
    try:
        for rcpt in ("ada@example.net", "bob@example.net", "cat@example.net"):
            await queue_send(app, rcpt)
        await poll(lambda: asyncio.sleep(0, len(peer.messages)), lambda n: n == 3, 60)
        await bounce(peer, smtp_port, "ada@example.net")
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                unsubscribe_url(peer, "bob@example.net"),
                data={"List-Unsubscribe": "One-Click"},
                allow_redirects=False,
            ) as response,
        ):
            assert response.status == 200, await response.text()
        await queue_send(app, "bob@example.net")  # after the unsubscribe: skipped
        await poll(
            lambda: app.db.fetchval(
                "SELECT count(*) FROM email_deliveries WHERE status = 'suppressed'"
            ),
            lambda n: n == 1,
            30,
        )
        await bounce(peer, smtp_port, "cat@example.net")  # 2 of 10: the account pauses

        def types() -> list[str]:
            return sorted(json.loads(r.body)["type"] for r in receiver.delivered())

        wanted = sorted(
            ["email.sent", "email.delivered"] * 3
            + ["email.bounced"] * 2
            + ["email.unsubscribed", "account.paused", "campaign.status_changed"]
        )
        await poll(lambda: asyncio.sleep(0, types()), lambda t: t == wanted, 60)
    finally:
        code = await stop_mailgate(proc, log)
        await receiver.stop()
        await peer.stop()
    assert code == 0, log.read_text()[-3000:]
    ids = receiver.ids()
    assert len(ids) == len(set(ids)) == len(wanted)  # exactly once per webhook-id
    assert all(all(r.valid.values()) for r in receiver.got)
    for webhook_id in ids:
        tries = [r for r in receiver.got if r.webhook_id == webhook_id]
        assert [t.status for t in tries] == [500, 200]
        assert 4.0 <= tries[1].at - tries[0].at <= 9.0  # the schedule's 5 s
        assert tries[0].body == tries[1].body
    assert len(peer.messages) == 3  # the later send to bob was skipped
    suppressed = await app.db.fetchval(
        "SELECT reason FROM suppressions WHERE email = 'bob@example.net'"
    )
    assert suppressed == "unsubscribe"
    assert await app.db.fetchval("SELECT paused FROM sending_pauses WHERE scope = 'account'")


async def test_sigkill_during_dispatch_then_restart_delivers_every_event(
    app: App, settings: Settings, tmp_path: Path
) -> None:
    """400 events; the daemon is SIGKILLed while it dispatches them and restarted: every
    event arrives at least once, and a re-delivered one carries the same webhook-id and
    body."""
    receiver = await Receiver().start()
    receiver.secrets = [add_endpoint(settings, receiver.url)]  # before the events
    async with app.db.acquire() as conn:
        for n in range(400):
            await record_event(
                conn,
                tenant_id=TENANT,
                event_type=EventType.SENT,
                subject_id=f"d{n}",
                payload={"n": n},
                dedupe_key=f"k{n}",
            )
    env = mailgate_env(
        settings,
        free_port(),
        secret_key=KEY,
        components="worker,webhooks",
        webhook_allow_private="true",
        stalled_timeout_s="2",
        webhook_dispatch_batch="50",
    )
    log = tmp_path / "run.log"
    proc = spawn_mailgate(env, log)
    try:
        await poll(lambda: asyncio.sleep(0, len(receiver.got)), lambda n: n >= 60, 60)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        before = len(set(receiver.ids()))
        assert before < 400, "the kill came too late to test anything"
        proc = spawn_mailgate(env, log)
        await poll(lambda: asyncio.sleep(0, len(set(receiver.ids()))), lambda n: n == 400, 90)
    finally:
        code = await stop_mailgate(proc, log)
        await receiver.stop()
    assert code == 0, log.read_text()[-3000:]
    by_id: dict[str, set[bytes]] = {}
    for r in receiver.got:
        by_id.setdefault(r.webhook_id, set()).add(r.body)
    assert len(by_id) == 400 and all(len(bodies) == 1 for bodies in by_id.values())
    assert all(all(r.valid.values()) for r in receiver.got)
    numbers = sorted(json.loads(next(iter(b)))["data"]["n"] for b in by_id.values())
    assert numbers == list(range(400))
