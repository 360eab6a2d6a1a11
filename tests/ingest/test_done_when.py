"""The issue's done-when, end to end: `mailgate accounts add` x3, `mailgate run` with the
ingest component, 300 APPENDs (every fifth with a 200 KB PDF), then a SIGKILL while 300 more
arrive and a restart: exactly 600 distinct messages, none twice."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from gateway.app import App
from gateway.embedded import free_port
from gateway.settings import Settings
from tests.daemon import mailgate_env, spawn_mailgate, stop_mailgate
from tests.ingest.helpers import Appender, Mailbox, message, new_mailbox, poll
from tests.peers.dovecot import Dovecot


def _idling(http_port: int) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith('imap_connections{state="idling"}'):
            return float(line.split()[-1])
    return 0.0


async def _append_all(
    dovecot: Dovecot, boxes: list[Mailbox], numbers: range, sent: dict[str, float]
) -> None:
    async def one(box: Mailbox) -> None:
        async with Appender(dovecot, box) as client:
            for n in numbers:
                raw = message(n, to=box.address, pdf=n % 5 == 0, Message_ID=f"<{n}.{box.address}>")
                await client.append(raw)
                sent[f"<{n}.{box.address}>"] = time.time()
                await asyncio.sleep(0.03)

    await asyncio.gather(*(one(b) for b in boxes))


async def test_done_when(app: App, settings: Settings, dovecot: Dovecot, tmp_path: Path) -> None:
    """Three CLI-added mailboxes, 300 messages stored once with attachments, APPEND->stored
    p99 < 1 s; SIGKILL during 300 more and a restart: exactly 600 distinct messages."""
    http_port = free_port()
    env = mailgate_env(
        settings,
        http_port,
        components="ingest",
        ingest_start_stagger_s="0",
        ingest_account_poll_s="1",
        ingest_lease_ttl_s="3",
        ingest_backoff_base_s="0.2",
    )
    boxes = [new_mailbox(dovecot, "dw") for _ in range(3)]
    for box in boxes:
        cli_env = {**env, "TEST_IMAP_PASSWORD": box.password}
        out = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "accounts", "add", "--tenant", "tenant_dw",
             "--address", box.address, "--imap-host", dovecot.host, "--imap-port",
             str(dovecot.port), "--imap-security", "none", "--username", box.address,
             "--password-env", "TEST_IMAP_PASSWORD"],
            env=cli_env, capture_output=True, check=False, timeout=60,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr.decode()[-2000:]
        assert out.stdout.decode().startswith("acct_")
        assert box.password.encode() not in out.stdout + out.stderr
    log = tmp_path / "run.log"
    proc = spawn_mailgate(env, log)
    try:
        await poll(lambda: asyncio.to_thread(_idling, http_port), lambda n: n == 3, 30)
        sent: dict[str, float] = {}
        await _append_all(dovecot, boxes, range(100), sent)
        total = lambda: app.db.fetchval("SELECT count(*) FROM email_messages")  # noqa: E731
        await poll(total, lambda n: n == 300, 30)
        rows = await app.db.fetch("SELECT message_id, created_at FROM email_messages")
        latencies = sorted(r["created_at"].timestamp() - sent[r["message_id"]] for r in rows)
        p99 = latencies[int(len(latencies) * 0.99) - 1]
        assert p99 < 1.0, f"APPEND->stored p99 {p99:.3f} s (p50 {latencies[150]:.3f})"
        assert await app.db.fetchval("SELECT count(*) FROM attachments") == 60

        appending = asyncio.create_task(_append_all(dovecot, boxes, range(100, 200), sent))
        await poll(total, lambda n: n >= 390, 30)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        await appending
        assert await total() < 600, "the kill came too late to test anything"
        proc = spawn_mailgate(env, log)
        await poll(total, lambda n: n >= 600, 60)
    finally:
        assert await stop_mailgate(proc, log) == 0, log.read_text()[-3000:]
    assert await app.db.fetchval("SELECT count(*) FROM email_messages") == 600
    assert await app.db.fetchval("SELECT count(DISTINCT message_id) FROM email_messages") == 600
    assert (
        await app.db.fetchval("SELECT count(DISTINCT (email_account_id, uid)) FROM email_messages")
        == 600
    )
    assert await app.db.fetchval("SELECT count(*) FROM attachments") == 120
    assert await app.db.fetchval("SELECT min(size_bytes) FROM attachments") > 200 * 1024
