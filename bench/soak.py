"""Soak (issue 16): mixed load on the real daemon while it is SIGKILLed every 2 minutes and
PostgreSQL is restarted once; then counts what was lost or duplicated.

    python bench/soak.py [--minutes 10] [--kill-every-s 120] [--pg-restart-at-s 300]

The daemon is `mailgate run` with every component (worker, ingest, bounces, delivery) on a
private PostgreSQL and Redis (embedded), a private Dovecot (5 mailboxes watched by ingest)
and an SMTP sink on this process's loop (what delivery sends to). Four paths run at once:

* imap: APPENDs into the watched mailboxes (each message a unique Message-ID); latency is
  APPEND done -> email_messages row committed;
* dsn: small DSNs to the bounce listener; a 4xx or a cut connection is retried as an MTA
  would; latency is one SMTP transaction that got its 250;
* send: email-sending jobs (one account, one template); latency is LPUSH -> delivery
  ``sent_at``; the sink counts each Message-ID it receives;
* job: email:processing jobs; latency is LPUSH -> row committed.

After the load the daemon runs until the queues are empty (at most ``--drain-s``). Lost:
an APPEND, a 250'd DSN or a job not stored, a send not ``sent`` or never received.
Duplicated: stored twice (want 0), or received twice by the sink (want at most the sends in
flight when the daemon was killed: an SMTP transaction cut before its result was recorded is
sent again). Also the daemon's peak RSS and each path's p50 / p99. Last line: JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aioimaplib
import aiosmtplib
import asyncpg
import redis.asyncio as aioredis
from aiosmtpd.smtp import SMTP

from gateway.embedded import EmbeddedPostgres, EmbeddedRedis
from gateway.jobs.contracts import (
    BOUNCE,
    EMAIL_PROCESSING,
    EMAIL_SENDING,
    EmailProcessingPayload,
    EmailSendPayload,
    encode_job,
)
from gateway.secretkey import CredentialBox
from gateway.storage import migrate
from ingest.accounts import add_account
from tests.peers.dovecot import Dovecot
from tests.peers.fixtures import private_dir
from tests.peers.ports import free_port, wait_for_greeting

SECRET = "s" * 40
TENANT = "t1"
MAILBOXES = 5


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)


class Sink:
    """The SMTP server delivery sends to: counts every Message-ID it receives."""

    def __init__(self) -> None:
        self.received: Counter[str] = Counter()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content: bytes = envelope.content
        for line in content.split(b"\r\n", 60)[:60]:
            if line.lower().startswith(b"message-id:"):
                self.received[line.split(b":", 1)[1].strip().decode()] += 1
                break
        return "250 OK"


class Daemon:
    """`mailgate run` in a subprocess, killed and started again on demand."""

    def __init__(self, env: dict[str, str], log: Path):
        self.env, self.log = env, log
        self.proc: asyncio.subprocess.Process | None = None
        self.peak_kb = 0
        self.kills = 0

    async def start(self, smtp_port: int) -> None:
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway.cli", "run", env=self.env, stdout=out, stderr=out
            )
        await asyncio.to_thread(wait_for_greeting, "127.0.0.1", smtp_port, b"220", 60.0)

    def sample(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.peak_kb = max(self.peak_kb, int(line.split()[1]))

    async def kill(self) -> None:
        assert self.proc is not None
        self.sample()
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()
        self.kills += 1

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.sample()
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 45)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


class Soak:
    def __init__(self, args: argparse.Namespace, db_url: str, redis_url: str, dovecot: Dovecot):
        self.args = args
        self.db_url, self.redis_url, self.dovecot = db_url, redis_url, dovecot
        self.smtp_port = free_port()
        self.stop = asyncio.Event()
        self.sink = Sink()
        self.boxes: list[tuple[str, str]] = []
        self.account_id = ""
        # what was done, with its time: id -> t
        self.appended: dict[str, float] = {}
        self.dsn_ok: dict[str, float] = {}
        self.dsn_latency: list[float] = []
        self.sends: dict[str, float] = {}
        self.jobs: dict[str, float] = {}
        self.in_flight_at_kill = 0
        self.errors: Counter[str] = Counter()

    # -- set-up -------------------------------------------------------------------------------

    async def seed(self, sink_port: int) -> None:
        conn = await asyncpg.connect(self.db_url)
        try:
            await migrate(conn)
            box = CredentialBox(SECRET.encode())
            for n in range(MAILBOXES):
                address, password = f"soak{n}@ingest.test", secrets.token_hex(8)
                self.dovecot.add_user(address, password)
                self.boxes.append((address, password))
                await add_account(
                    conn,
                    box,
                    tenant_id=TENANT,
                    address=address,
                    imap_host=self.dovecot.host,
                    imap_port=self.dovecot.port,
                    imap_security="none",
                    username=address,
                    password=password,
                )
            self.account_id = "acct_send"
            await conn.execute(
                "INSERT INTO email_accounts (id, tenant_id, address, smtp_host, smtp_port,"
                " smtp_security) VALUES ($1, $2, 'sales@send.test', '127.0.0.1', $3, 'none')",
                self.account_id,
                TENANT,
                sink_port,
            )
            await conn.execute(
                "INSERT INTO email_templates (id, tenant_id, subject, text) VALUES"
                " ('tpl', $1, 'Hello {{ n }}', 'Hello number {{ n }}.')",
                TENANT,
            )
        finally:
            await conn.close()

    # -- the four paths -----------------------------------------------------------------------

    async def imap_path(self, rate_s: float) -> None:
        clients: list[aioimaplib.IMAP4 | None] = [None] * len(self.boxes)
        n = 0
        while not self.stop.is_set():
            i = n % len(self.boxes)
            mid = f"<imap-{n}@soak.test>"
            raw = (
                f"From: a{n}@peer.test\r\nTo: {self.boxes[i][0]}\r\nSubject: soak {n}\r\n"
                f"Message-ID: {mid}\r\n\r\nHello {n}.\r\n"
            ).encode()
            try:
                client = clients[i]
                if client is None:
                    client = aioimaplib.IMAP4(self.dovecot.host, self.dovecot.port, timeout=20)
                    await client.wait_hello_from_server()
                    await client.login(*self.boxes[i])
                    clients[i] = client
                res = await client.append(raw, mailbox="INBOX")
                if res.result == "OK":
                    self.appended[mid] = time.time()
                    n += 1
            except Exception as exc:
                self.errors[f"imap: {type(exc).__name__}"] += 1
                clients[i] = None
            await asyncio.sleep(rate_s)

    async def dsn_path(self, rate_s: float) -> None:
        n = 0
        while not self.stop.is_set():
            mid = f"<dsn-{n}@soak.test>"
            raw = (
                "From: MAILER-DAEMON@mx.soak.test\r\nTo: postmaster@bounces.test\r\n"
                f"Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: {mid}\r\n"
                "MIME-Version: 1.0\r\nContent-Type: multipart/report; "
                'report-type=delivery-status; boundary="B"\r\n\r\n--B\r\n'
                "Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.soak.test\r\n"
                f"\r\nFinal-Recipient: rfc822; r{n}@rcpt.test\r\nAction: failed\r\n"
                "Status: 5.1.1\r\n\r\n--B--\r\n"
            ).encode()
            while not self.stop.is_set():  # an MTA retries until it gets its 250
                t0 = time.perf_counter()
                try:
                    await aiosmtplib.send(
                        raw,
                        sender="mailer-daemon@mx.soak.test",
                        recipients=["postmaster@bounces.test"],
                        hostname="127.0.0.1",
                        port=self.smtp_port,
                        timeout=30,
                    )
                except Exception as exc:
                    self.errors[f"dsn: {type(exc).__name__}"] += 1
                    await asyncio.sleep(0.5)
                    continue
                self.dsn_latency.append(time.perf_counter() - t0)
                self.dsn_ok[mid] = time.time()
                break
            n += 1
            await asyncio.sleep(rate_s)

    async def send_path(self, redis: aioredis.Redis, rate_s: float) -> None:
        n = 0
        while not self.stop.is_set():
            job_id = f"send-{n}"
            payload = EmailSendPayload(
                tenant_id=TENANT,
                email_account_id=self.account_id,
                template_id="tpl",
                recipient=f"r{n}@rcpt.test",
                variables={"n": n},
            )
            try:
                await redis.lpush(EMAIL_SENDING, encode_job(EMAIL_SENDING, payload, id=job_id))
                self.sends[job_id] = time.time()
                n += 1
            except Exception as exc:
                self.errors[f"send: {type(exc).__name__}"] += 1
            await asyncio.sleep(rate_s)

    async def job_path(self, redis: aioredis.Redis, rate_s: float) -> None:
        n = 0
        while not self.stop.is_set():
            mid = f"<job-{n}@soak.test>"
            payload = EmailProcessingPayload.model_validate(
                {
                    "tenant_id": TENANT,
                    "email_account_id": "acct_jobs",
                    "from": "x@peer.test",
                    "to": ["y@soak.test"],
                    "subject": f"job {n}",
                    "body": {"plain": f"Body {n}"},
                    "messageId": mid,
                }
            )
            try:
                await redis.lpush(EMAIL_PROCESSING, encode_job(EMAIL_PROCESSING, payload))
                self.jobs[mid] = time.time()
                n += 1
            except Exception as exc:
                self.errors[f"job: {type(exc).__name__}"] += 1
            await asyncio.sleep(rate_s)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    root: Path = args.root
    pg = EmbeddedPostgres(root / "postgres")
    rd = EmbeddedRedis(root / "redis")
    db_url = await asyncio.to_thread(pg.start)
    redis_url = await asyncio.to_thread(rd.start)
    dovecot = Dovecot(private_dir("dovecot"))
    await asyncio.to_thread(dovecot.start)
    loop = asyncio.get_running_loop()
    sink = Sink()
    sink_server = await loop.create_server(
        lambda: SMTP(sink, hostname="sink.test", loop=loop), "127.0.0.1", 0
    )
    sink_port = int(sink_server.sockets[0].getsockname()[1])
    soak = Soak(args, db_url, redis_url, dovecot)
    soak.sink = sink
    await soak.seed(sink_port)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILGATE_")}
    env.update(
        MAILGATE_DATABASE_URL=db_url,
        MAILGATE_REDIS_URL=redis_url,
        MAILGATE_DATA_DIR=str(root / "data"),
        MAILGATE_SECRET_KEY=SECRET,
        MAILGATE_SMTP_LISTEN=f"127.0.0.1:{soak.smtp_port}",
        MAILGATE_HTTP_LISTEN=f"127.0.0.1:{free_port()}",
        MAILGATE_BOUNCE_DOMAINS="bounces.test",
        MAILGATE_SMTP_HOSTNAME="mx.bounces.test",
        MAILGATE_LOG_LEVEL="WARNING",
        MAILGATE_INGEST_ACCOUNT_POLL_S="2",
        MAILGATE_INGEST_START_STAGGER_S="0",
        MAILGATE_DELIVERY_ACCOUNT_PER_MINUTE="0",
        MAILGATE_DELIVERY_ACCOUNT_PER_HOUR="0",
        MAILGATE_DELIVERY_ACCOUNT_PER_DAY="0",
        MAILGATE_DELIVERY_DOMAIN_PER_MINUTE="0",
        MAILGATE_BOUNCE_REQUEUE_AFTER_S="30",
    )
    daemon = Daemon(env, root / "daemon.log")
    redis = aioredis.Redis.from_url(redis_url)
    events: list[str] = []
    t_start = time.monotonic()
    try:
        await daemon.start(soak.smtp_port)
        paths = [
            asyncio.create_task(soak.imap_path(args.imap_every_s)),
            asyncio.create_task(soak.dsn_path(args.dsn_every_s)),
            asyncio.create_task(soak.send_path(redis, args.send_every_s)),
            asyncio.create_task(soak.job_path(redis, args.job_every_s)),
        ]
        duration = args.minutes * 60
        next_kill = args.kill_every_s
        pg_restarted = False
        while (elapsed := time.monotonic() - t_start) < duration:
            daemon.sample()
            if elapsed >= next_kill:
                in_flight = await redis.llen(EMAIL_SENDING)
                await daemon.kill()
                events.append(f"{elapsed:.0f}s SIGKILL (sends queued {in_flight})")
                await asyncio.sleep(random.uniform(0.5, 2.0))
                await daemon.start(soak.smtp_port)
                next_kill += args.kill_every_s
            if not pg_restarted and elapsed >= args.pg_restart_at_s:
                await asyncio.to_thread(pg.stop, force=True)
                events.append(f"{elapsed:.0f}s PostgreSQL stopped")
                await asyncio.sleep(args.pg_down_s)
                await asyncio.to_thread(pg.start)
                events.append(f"{time.monotonic() - t_start:.0f}s PostgreSQL started")
                pg_restarted = True
            await asyncio.sleep(0.5)
        soak.stop.set()
        await asyncio.gather(*paths)
        # Drain: until the queues are empty and the last stores are visible.
        deadline = time.monotonic() + args.drain_s
        queues = (EMAIL_SENDING, EMAIL_PROCESSING, BOUNCE)
        while time.monotonic() < deadline:
            daemon.sample()
            depth = sum([await redis.llen(q) for q in queues])
            conn = await asyncpg.connect(db_url)
            try:
                stored = await conn.fetchval(
                    "SELECT count(*) FROM email_messages WHERE source = 'imap'"
                )
                unsent = await conn.fetchval(
                    "SELECT count(*) FROM email_deliveries WHERE status <> 'sent'"
                )
            finally:
                await conn.close()
            if depth == 0 and stored >= len(soak.appended) and unsent == 0:
                break
            await asyncio.sleep(2)
        results = await collect(db_url, soak)
    finally:
        await daemon.stop()
        await redis.aclose()
        sink_server.close()
        await asyncio.to_thread(dovecot.stop)
        await asyncio.to_thread(rd.stop, force=True)
        await asyncio.to_thread(pg.stop, force=True)
    results.update(
        minutes=args.minutes,
        kills=daemon.kills,
        events=events,
        peak_rss_mb=round(daemon.peak_kb / 1024),
        client_errors=dict(soak.errors.most_common(8)),
    )
    for name, value in results.items():
        print(f"{name:24s} {value}")
    return results


async def collect(db_url: str, soak: Soak) -> dict[str, Any]:
    conn = await asyncpg.connect(db_url)
    try:
        imap_rows = await conn.fetch(
            "SELECT message_id, count(*) AS n, extract(epoch FROM min(created_at)) AS at"
            " FROM email_messages WHERE source = 'imap' GROUP BY message_id"
        )
        dsn_rows = await conn.fetch(
            "SELECT m.message_id, count(*) AS n FROM email_messages m"
            " WHERE m.source = 'smtp' GROUP BY m.message_id"
        )
        job_rows = await conn.fetch(
            "SELECT message_id, count(*) AS n, extract(epoch FROM min(created_at)) AS at"
            " FROM email_messages WHERE source = 'job' GROUP BY message_id"
        )
        send_rows = await conn.fetch(
            "SELECT job_id, status, message_id, extract(epoch FROM sent_at) AS at"
            " FROM email_deliveries"
        )
        dsn_unprocessed = await conn.fetchval(
            "SELECT count(*) FROM bounce_receipts WHERE processed_at IS NULL"
        )
    finally:
        await conn.close()
    imap = {r["message_id"]: r for r in imap_rows}
    dsn = {r["message_id"]: r for r in dsn_rows}
    jobs = {r["message_id"]: r for r in job_rows}
    sends = {r["job_id"]: r for r in send_rows}
    sent_ids = {r["message_id"] for r in send_rows if r["status"] == "sent"}

    def latencies(done: dict[str, float], rows: dict[str, Any]) -> list[float]:
        return [float(rows[k]["at"]) - t for k, t in done.items() if k in rows and rows[k]["at"]]

    send_lat = latencies(soak.sends, sends)
    return {
        "imap": {
            "appended": len(soak.appended),
            "lost": sum(1 for m in soak.appended if m not in imap),
            "duplicated": sum(1 for r in imap_rows if r["n"] > 1),
            "p50_ms": percentile(latencies(soak.appended, imap), 0.5),
            "p99_ms": percentile(latencies(soak.appended, imap), 0.99),
        },
        "dsn": {
            "accepted": len(soak.dsn_ok),
            "lost": sum(1 for m in soak.dsn_ok if m not in dsn),
            "duplicated": sum(1 for r in dsn_rows if r["n"] > 1),
            "unprocessed": int(dsn_unprocessed),
            "p50_ms": percentile(soak.dsn_latency, 0.5),
            "p99_ms": percentile(soak.dsn_latency, 0.99),
        },
        "send": {
            "queued": len(soak.sends),
            "lost": sum(1 for j in soak.sends if j not in sends or sends[j]["status"] != "sent"),
            "not_received": sum(1 for m in sent_ids if soak.sink.received[m] == 0),
            "received_twice": sum(1 for n in soak.sink.received.values() if n > 1),
            "p50_ms": percentile(send_lat, 0.5),
            "p99_ms": percentile(send_lat, 0.99),
        },
        "job": {
            "queued": len(soak.jobs),
            "lost": sum(1 for m in soak.jobs if m not in jobs),
            "duplicated": sum(1 for r in job_rows if r["n"] > 1),
            "p50_ms": percentile(latencies(soak.jobs, jobs), 0.5),
            "p99_ms": percentile(latencies(soak.jobs, jobs), 0.99),
        },
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--kill-every-s", type=float, default=120.0)
    parser.add_argument("--pg-restart-at-s", type=float, default=300.0)
    parser.add_argument("--pg-down-s", type=float, default=5.0)
    parser.add_argument("--drain-s", type=float, default=180.0)
    parser.add_argument("--imap-every-s", type=float, default=0.2)
    parser.add_argument("--dsn-every-s", type=float, default=0.1)
    parser.add_argument("--send-every-s", type=float, default=0.1)
    parser.add_argument("--job-every-s", type=float, default=0.1)
    ns = parser.parse_args()
    ns.root = Path(tempfile.mkdtemp(prefix="mailgate-soak-"))
    ns.root.chmod(0o755)  # the embedded PostgreSQL runs as nobody when we are root
    print(json.dumps(asyncio.run(main(ns)), default=str))
