"""Warmup benchmark (issue 13): the planner's quota-safe planning, then whole warmup
conversations through real peers, each beside its floor measured in the same run.

    python bench/warmup.py [--accounts 200] [--quota 20] [--messages-per-account 10]

(a) planning: ``--accounts`` warmup accounts in one tenant pool, flat quota ``--quota``,
    one ``tick(all_now=True)`` (per sender: row lock on its config, count of today's rows,
    schedule, pairing, one INSERT per row, all in one transaction), rows/s; the floor: the
    same number of rows written by one bare ``executemany`` (no lock, no count, no pairing).
    A second tick is timed too (it plans nothing: the cost of a tick at quota).
(b) conversations: 4 Dovecot accounts (IMAP; SMTP through Postfix into Dovecot's LMTP,
    Sieve filing everything for one of them into Junk), quota ``--messages-per-account``,
    reply rate 0.5, flag rate 1, inbound delay 0; the real job Worker runs every step
    (send with DKIM off, inbound IMAP search in INBOX then Junk, engagement: move, flag,
    threaded reply and its own inbound/engagement). Timed from the tick to the empty queue;
    per-step p50/p99 from ``job_executions``. The floor: the same number of messages sent
    by the delivery pool straight to the relay (no database, no marker, no IMAP), plus one
    IMAP login + SEARCH per message (what an inbound step cannot do without).

PostgreSQL and Redis are private embedded servers in a temporary directory. The last line
is a JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from delivery.service import SENDER
from gateway.app import App, Urls, open_app
from gateway.embedded import EmbeddedServers
from gateway.imapendpoint import Endpoint
from gateway.jobs.worker import Worker
from gateway.secretkey import CredentialBox
from gateway.services import Services
from gateway.settings import Settings, load_settings
from gateway.storage import connect, migrate
from gateway.warmupmark import WarmupMarker
from ingest.accounts import add_account
from tests.peers.dovecot import Dovecot
from tests.peers.postfix import Postfix
from warmup.imap import ImapClient
from warmup.jobs import create_handler
from warmup.planner import tick

SECRET = "bench-secret-key-0123456789abcdef0123456789"
TENANT = "bench"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else 0.0


def settings_for(db_url: str, redis_url: str, tmp: str) -> Settings:
    return load_settings(
        database_url=db_url,
        redis_url=redis_url,
        data_dir=Path(tmp) / "data",
        secret_key=SECRET,
        log_level="WARNING",
        db_pool_max=20,
        delivery_account_per_minute=0,
        delivery_account_per_hour=0,
        delivery_account_per_day=0,
        delivery_domain_per_minute=0,
        delivery_domain_concurrency=0,
        delivery_tenant_per_minute=0,
        delivery_dkim_signer_process=False,
        warmup_inbound_delay_s=0,
        warmup_retry_find_s=0.1,
        warmup_flag_rate=1.0,
        warmup_missing_after_s=60,
        worker_concurrency=20,
    )


async def enable(app: App, account: str, quota: int, reply_rate: float) -> None:
    await app.db.execute(
        "INSERT INTO warmup_configs (id, tenant_id, email_account_id, daily_start, "
        "daily_increment, daily_max, reply_rate, window_start_hour, window_end_hour) "
        "VALUES ($1, $2, $3, $4, 0, $4, $5, 0, 24)",
        "wc_" + account,
        TENANT,
        account,
        quota,
        reply_rate,
    )


async def bench_planning(app: App, accounts: int, quota: int) -> dict[str, Any]:
    box = CredentialBox(app.secret_key)
    for i in range(accounts):
        acc = await add_account(
            app.db, box, tenant_id=TENANT, address=f"p{i}@plan{i % 7}.test",
            imap_host=f"imap.plan{i % 7}.test", imap_security="none", password="pw",
            smtp_host="127.0.0.1", smtp_port=25, smtp_security="none",
        )  # fmt: skip
        assert acc is not None
    ids = [r["id"] for r in await app.db.fetch("SELECT id FROM email_accounts ORDER BY id")]
    for account in ids:
        await enable(app, account, quota, 0.3)
    t0 = time.perf_counter()
    result = await tick(app, all_now=True, rng=random.Random(1))
    planning_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    again = await tick(app, all_now=True)
    idle_s = time.perf_counter() - t0
    rows = result.total
    # The floor: the same rows, one executemany, nothing checked.
    marker = WarmupMarker(app.secret_key)
    today = dt.date.today()
    floor_rows = [
        ("f" + secrets.token_hex(8), TENANT, ids[i % len(ids)], TENANT,
         ids[(i + 1) % len(ids)], marker.mint("floor.test"), today, "s")
        for i in range(rows)
    ]  # fmt: skip
    t0 = time.perf_counter()
    async with app.db.acquire() as conn:
        await conn.executemany(
            "INSERT INTO warmup_messages (id, tenant_id, from_account_id, to_tenant_id, "
            "to_account_id, message_id, quota_day, subject) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            floor_rows,
        )
    floor_s = time.perf_counter() - t0
    await app.db.execute("DELETE FROM warmup_messages")
    await app.db.execute("DELETE FROM warmup_configs")
    await app.db.execute("DELETE FROM email_accounts")
    await app.redis.flushdb()
    return {
        "accounts": accounts,
        "rows": rows,
        "over_quota": rows - accounts * quota,
        "tick_s": round(planning_s, 3),
        "rows_per_s": round(rows / planning_s),
        "ms_per_account": round(1000 * planning_s / accounts, 2),
        "tick_at_quota_s": round(idle_s, 3),
        "tick_at_quota_planned": again.total,
        "floor_rows_per_s": round(rows / floor_s),
        "ratio_vs_floor": round(planning_s / floor_s, 1),
    }


async def bench_conversations(
    app: App, services: Services, per_account: int, tmp: Path
) -> dict[str, Any]:
    (tmp / "dovecot").mkdir(parents=True)
    (tmp / "postfix").mkdir()
    dovecot = Dovecot(tmp / "dovecot", lmtp=True)
    for sub in (tmp, tmp / "dovecot", tmp / "postfix"):
        sub.chmod(0o755)
    users = {f"u{i}@{'wa' if i < 2 else 'wb'}.test": secrets.token_hex(6) for i in range(4)}
    dovecot.add_users(users)
    dovecot.set_sieve(list(users)[3], 'require "fileinto";\nfileinto "Junk";\n')
    dovecot.start()
    route = f"lmtp:inet:127.0.0.1:{dovecot.lmtp_port}"
    postfix = Postfix(tmp / "postfix", extra_transports={"wa.test": route, "wb.test": route})
    postfix.start()
    try:
        box = CredentialBox(app.secret_key)
        ids = []
        for address, password in users.items():
            acc = await add_account(
                app.db, box, tenant_id=TENANT, address=address, imap_host=dovecot.host,
                imap_port=dovecot.port, imap_security="none", password=password,
                smtp_host=postfix.host, smtp_port=postfix.port, smtp_security="none",
            )  # fmt: skip
            assert acc is not None
            ids.append(acc.id)
            await enable(app, acc.id, per_account, 0.5)
        worker = Worker(app, {"warmup": create_handler(app, services)})
        await worker.start()
        t0 = time.perf_counter()
        try:
            await tick(app, all_now=True)
            await worker.run_until_empty(600)
        finally:
            await worker.stop(asyncio.get_running_loop().time() + 5)
        wall = time.perf_counter() - t0
        rows = await app.db.fetch("SELECT * FROM warmup_messages")
        steps: dict[str, list[float]] = {}
        for r in await app.db.fetch(
            "SELECT job_id, duration_ms FROM job_executions WHERE job_id LIKE 'warmup-%' "
            "AND status = 'success'"
        ):
            steps.setdefault(r["job_id"].split("-")[1], []).append(float(r["duration_ms"]))
        messages = len(rows)
        # The floor: the same number of messages straight through the pool, then one
        # login + SEARCH each.
        sender = services.get(SENDER)
        account = await sender.contexts.account(TENANT, ids[0])
        endpoint = sender.endpoint_for(account)
        addresses = list(users)
        t1 = time.perf_counter()
        floor_ids = []
        for i in range(messages):
            mid = f"<floor{i}.{secrets.token_hex(4)}@wa.test>"
            floor_ids.append((addresses[1 + i % 3], mid))
            raw = (
                f"From: {addresses[0]}\r\nTo: {addresses[1 + i % 3]}\r\nSubject: floor\r\n"
                f"Message-ID: {mid}\r\n\r\nfloor\r\n"
            ).encode()
            await sender.pool.send(endpoint, addresses[0], addresses[1 + i % 3], raw)
        send_floor = time.perf_counter() - t1
        t2 = time.perf_counter()
        for address, mid in floor_ids:
            login = Endpoint(dovecot.host, dovecot.port, "none", address, users[address])
            async with await ImapClient.connect(login) as imap:
                for _ in range(200):
                    if await imap.find("INBOX", mid) or await imap.find("Junk", mid):
                        break
                    imap.selected = None
                    await asyncio.sleep(0.01)
        imap_floor = time.perf_counter() - t2
        floor_total = send_floor + imap_floor
        return {
            "messages": messages,
            "replies": sum(r["depth"] == 1 for r in rows),
            "found": sum(r["folder_found"] is not None for r in rows),
            "spam_rescued": sum(r["moved_to_inbox_at"] is not None for r in rows),
            "wall_s": round(wall, 2),
            "messages_per_s": round(messages / wall, 1),
            "steps_ms": {
                k: {"n": len(v), "p50": round(pct(v, 0.5), 1), "p99": round(pct(v, 0.99), 1)}
                for k, v in sorted(steps.items())
            },
            "floor_send_per_s": round(messages / send_floor, 1),
            "floor_send_and_find_per_s": round(messages / floor_total, 1),
            "ratio_vs_floor": round(wall / floor_total, 2),
        }
    finally:
        postfix.stop()
        dovecot.stop()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    tmp = tempfile.mkdtemp(prefix="mailgate-bench-warmup-", dir="/tmp")
    os.chmod(tmp, 0o755)  # noqa: S103 - Dovecot's and Postfix's users traverse it
    servers = EmbeddedServers(Path(tmp), postgres=True, redis=True)
    db_url, redis_url = await asyncio.to_thread(servers.start)
    assert db_url and redis_url
    try:
        conn = await connect(db_url)
        await migrate(conn)
        await conn.close()
        settings = settings_for(db_url, redis_url, tmp)
        async with open_app(settings, Urls(db_url, redis_url)) as app:
            services = Services(app)
            try:
                a = await bench_planning(app, args.accounts, args.quota)
                print(
                    f"(a) planning: {a['rows']} rows for {a['accounts']} accounts in "
                    f"{a['tick_s']} s = {a['rows_per_s']} rows/s ({a['ms_per_account']} ms "
                    f"per account), {a['over_quota']} over quota; a tick at quota "
                    f"{a['tick_at_quota_s']} s; floor (bare executemany) "
                    f"{a['floor_rows_per_s']} rows/s, ratio {a['ratio_vs_floor']}x"
                )
                b = await bench_conversations(
                    app, services, args.messages_per_account, Path(tmp) / "peers"
                )
                print(
                    f"(b) conversations: {b['messages']} messages ({b['replies']} replies, "
                    f"{b['found']} found, {b['spam_rescued']} rescued from Junk) in "
                    f"{b['wall_s']} s = {b['messages_per_s']} msg/s; floor: send "
                    f"{b['floor_send_per_s']} msg/s, send + find {b['floor_send_and_find_per_s']}"
                    f" msg/s; ratio {b['ratio_vs_floor']}x"
                )
                print("    steps ms: " + json.dumps(b["steps_ms"]))
            finally:
                await services.aclose()
        return {"planning": a, "conversations": b}
    finally:
        await asyncio.to_thread(servers.stop)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=200)
    parser.add_argument("--quota", type=int, default=20)
    parser.add_argument("--messages-per-account", type=int, default=10)
    ns = parser.parse_args()
    print(json.dumps(asyncio.run(main(ns))))
