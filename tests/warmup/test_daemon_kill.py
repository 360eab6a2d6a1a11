"""`mailgate run` with the worker and the warmup planner, SIGKILLed in the middle of the
engagement step (as soon as the reply's row exists), then started again: the conversation
completes with exactly one reply in the sender's mailbox."""

from __future__ import annotations

import asyncio
import signal
import urllib.request
from pathlib import Path

from gateway.app import App
from gateway.embedded import free_port
from gateway.settings import Settings
from tests.daemon import mailgate_env, poll, spawn_mailgate, stop_mailgate
from tests.peers.dovecot import Dovecot
from tests.peers.postfix import Postfix
from tests.warmup.conftest import DOMAINS, Cli, new_box


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status, r.read().decode()
    except OSError:
        return 0, ""


async def test_sigkill_mid_engagement_then_restart_replies_once(
    app: App,
    settings: Settings,
    lmtp_dovecot: Dovecot,
    relay: Postfix,
    cli: Cli,
    tmp_path: Path,
) -> None:
    """SIGKILL while engaging (the reply row exists), restart: the reaped job runs again,
    the reply is sent or recognised as sent, once; the Junk message ends in INBOX; the
    daemon serves /api/warmup and the warmup_* metrics."""
    a = new_box(lmtp_dovecot, DOMAINS[0])
    b = new_box(lmtp_dovecot, DOMAINS[1], junk_all=True)
    ids = []
    for box in (a, b):
        code, out = await cli(
            "accounts", "add", "--tenant", "tk", "--address", box.address,
            "--imap-host", lmtp_dovecot.host, "--imap-port", str(lmtp_dovecot.port),
            "--imap-security", "none", "--password-env", "PW", "--smtp-host", relay.host,
            "--smtp-port", str(relay.port), "--smtp-security", "none", PW=box.password,
        )  # fmt: skip
        assert code == 0, out
        ids.append(out.strip())
    for account, start in zip(ids, ("1", "0"), strict=True):
        code, out = await cli(
            "warmup", "enable", account, "--daily-start", start, "--daily-increment", "0",
            "--reply-rate", "1", "--window", "0-24",
        )  # fmt: skip
        assert code == 0, out
    http_port = free_port()
    secret = settings.secret_key.get_secret_value() if settings.secret_key else ""
    env = mailgate_env(
        settings,
        http_port,
        secret_key=secret,
        components="worker,warmup",
        stalled_timeout_s="2",
        warmup_inbound_delay_s="0",
        warmup_retry_find_s="0.1",
        warmup_send_lease_s="1",
        warmup_flag_rate="1",
        warmup_tick_s="3600",
        delivery_dkim_signer_process="false",
    )
    log = tmp_path / "run.log"
    proc = spawn_mailgate(env, log)
    try:
        await poll(lambda: asyncio.to_thread(_get, http_port, "/readyz"), lambda r: r[0] == 200)
        code, out = await cli("warmup", "tick", "--now-all")
        assert code == 0, out  # the daemon's own first tick may have planned it already
        assert await app.db.fetchval("SELECT count(*) FROM warmup_messages") == 1
        await poll(
            lambda: app.db.fetchval("SELECT count(*) FROM warmup_messages WHERE depth = 1"),
            lambda n: n == 1,
            30,
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc = spawn_mailgate(env, log)
        row = await poll(
            lambda: app.db.fetchrow(
                "SELECT * FROM warmup_messages WHERE depth = 0 AND replied_at IS NOT NULL"
            ),
            lambda r: r is not None,
            60,
        )
        reply = await app.db.fetchrow("SELECT * FROM warmup_messages WHERE depth = 1")
        assert reply["message_id"] == row["reply_message_id"]
        assert reply["in_reply_to"] == row["message_id"]
        assert row["moved_to_inbox_at"] is not None and row["read_at"] is not None
        found = await poll(
            lambda: asyncio.to_thread(
                lmtp_dovecot.doveadm,
                "search",
                "-u",
                a.address,
                "mailbox",
                "*",
                "header",
                "message-id",
                reply["message_id"],
            ),
            lambda out: bool(out.strip()),
            30,
        )
        await asyncio.sleep(1.5)  # past the send lease: a second send would have happened
        found = lmtp_dovecot.doveadm(
            "search", "-u", a.address, "mailbox", "*", "header", "message-id", reply["message_id"]
        )
        assert len(found.split()) == 2, found  # one message
        assert lmtp_dovecot.status(b.address, "Junk").get("messages", 0) == 0
        status, body = await asyncio.to_thread(_get, http_port, "/api/warmup")
        assert status == 200 and ids[0] in body
        _, metrics = await asyncio.to_thread(_get, http_port, "/metrics")
        assert "warmup_sent_total" in metrics and "warmup_placement_total" in metrics
    finally:
        await stop_mailgate(proc)
    assert await app.db.fetchval("SELECT count(*) FROM warmup_messages WHERE depth = 1") == 1
