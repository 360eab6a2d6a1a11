"""IMAP ingest benchmark against a private Dovecot, embedded PostgreSQL and Redis.

(a) floor: a bare aioimaplib client's IDLE push latency (APPEND from a second connection ->
    EXISTS received), p50/p99;
(b) mailgate: APPEND -> committed row latency, p50/p99, same load (same mailboxes, same pace);
(c) backlog: N messages already in a mailbox (mix of 3 KB text, 40 KB HTML, 400 KB with an
    attachment) -> all stored, msgs/s, against a bare aioimaplib UID FETCH of the same mailbox
    and, as a second baseline, PostgreSQL's own write rate for the same bytes (the raw
    sources and the decoded attachments, COPY in batches of 100 per transaction, one
    connection, no parsing), with the CPU the bench process and the machine spent;
(d) M mailboxes watched by one process: RSS, and the reconnect storm after a Dovecot restart
    (restart -> every watcher IDLE again).

Usage: python bench/ingest.py [--quick]. The last line is a JSON object of the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import secrets
import shutil
import sys
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aioimaplib

from gateway.app import Urls, open_app
from gateway.embedded import EmbeddedPostgres, EmbeddedRedis
from gateway.secretkey import CredentialBox
from gateway.settings import load_settings
from gateway.storage import connect, migrate
from ingest.accounts import add_account
from ingest.component import IngestComponent
from ingest.machine import State
from tests.peers.dovecot import MAIL_GID, MAIL_UID, Dovecot


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s)) - 1))]


def msg(n: int, kind: str) -> bytes:
    m = EmailMessage()
    m["From"] = f"s{n}@example.test"
    m["To"] = "me@bench.test"
    m["Subject"] = f"bench {n}"
    m["Message-ID"] = f"<b{n}.{secrets.token_hex(4)}@bench.test>"
    if kind == "text":
        m.set_content(("lorem ipsum dolor sit amet " * 110)[:3000])
    elif kind == "html":
        m.set_content("see html")
        m.add_alternative(
            "<html><body>" + "<p>hello <b>world</b></p>" * 1500 + "</body></html>", subtype="html"
        )
    else:
        m.set_content("see attachment")
        m.add_attachment(
            os.urandom(300 * 1024), maintype="application", subtype="pdf", filename="a.pdf"
        )
    return m.as_bytes().replace(b"\n", b"\r\n")


async def imap_client(d: Dovecot, user: str, pw: str) -> aioimaplib.IMAP4:
    c = aioimaplib.IMAP4(d.host, d.port, timeout=60)
    await c.wait_hello_from_server()
    r = await c.login(user, pw)
    assert r.result == "OK", r
    return c


async def floor(d: Dovecot, users: dict[str, str], per_box: int) -> list[float]:
    """(a) bare IDLE push latency."""

    async def one(user: str, pw: str) -> list[float]:
        watcher, appender = await imap_client(d, user, pw), await imap_client(d, user, pw)
        await watcher.select()
        out = []
        for n in range(per_box):
            idle = await watcher.idle_start(timeout=60)
            await appender.append(msg(n, "text"))
            t0 = time.monotonic()
            while True:
                push = await watcher.wait_server_push(timeout=10)
                if any(isinstance(x, bytes) and x.endswith(b"EXISTS") for x in push):
                    break
            out.append(time.monotonic() - t0)
            watcher.idle_done()
            await asyncio.wait_for(idle, 10)
        await watcher.logout()
        await appender.logout()
        return out

    results = await asyncio.gather(*(one(u, p) for u, p in users.items()))
    return [x for r in results for x in r]


async def mailgate_latency(
    app: Any, d: Dovecot, users: dict[str, str], per_box: int
) -> list[float]:
    """(b) APPEND -> committed (on_stored fires right after the commit)."""
    committed: dict[tuple[str, int], float] = {}
    events: dict[str, asyncio.Event] = {}
    component = IngestComponent(app)
    component.ctx.on_stored = lambda acct, uid, kind: (
        committed.__setitem__((acct, uid), time.monotonic()),
        events[acct].set(),
    )
    ids = {}
    box = CredentialBox(app.secret_key)
    for user, pw in users.items():
        acct = await add_account(
            app.db, box, tenant_id="bench", address=user, imap_host=d.host, imap_port=d.port,
            imap_security="none", username=user, password=pw,
        )  # fmt: skip
        ids[user] = acct.id
        events[acct.id] = asyncio.Event()
    await component.start()
    while component.states().get(State.IDLING, 0) < len(users):
        await asyncio.sleep(0.05)

    async def one(user: str, pw: str) -> list[float]:
        appender = await imap_client(d, user, pw)
        acct = ids[user]
        out = []
        for n in range(per_box):
            events[acct].clear()
            res = await appender.append(msg(n, "text"))
            t0 = time.monotonic()
            uid = int(res.lines[-1].split(b"APPENDUID ")[1].split(b"]")[0].split()[1])
            while (acct, uid) not in committed:
                await asyncio.wait_for(events[acct].wait(), 30)
                events[acct].clear()
            out.append(committed[(acct, uid)] - t0)
        await appender.logout()
        return out

    results = await asyncio.gather(*(one(u, p) for u, p in users.items()))
    await component.stop(asyncio.get_running_loop().time() + 5)
    return [x for r in results for x in r]


def fill_maildir(d: Dovecot, user: str, count: int) -> int:
    """Write ``count`` messages straight into the Maildir (fast); total bytes."""
    d.deliver(user, msg(0, "text"))  # creates the Maildir
    new = d.home(user) / "Maildir" / "new"
    kinds = ("text", "html", "attach")
    samples = {k: msg(1, k) for k in kinds}
    total = 0
    for n in range(1, count):
        raw = samples[kinds[n % 3]].replace(b"bench 1", f"bench {n}".encode(), 1)
        path = new / f"{1700000000 + n}.M{n}P1.bench"
        path.write_bytes(raw)
        os.chown(path, MAIL_UID, MAIL_GID)
        total += len(raw)
    return total


async def bare_fetch(d: Dovecot, user: str, pw: str, batch: int = 100) -> tuple[int, float]:
    c = await imap_client(d, user, pw)
    r = await c.select()
    exists = next(
        int(x.split()[0]) for x in r.lines if isinstance(x, bytes) and x.endswith(b"EXISTS")
    )
    t0 = time.monotonic()
    got = 0
    for start in range(1, exists + 1, batch):
        res = await c.fetch(f"{start}:{min(exists, start + batch - 1)}", "(UID BODY.PEEK[])")
        got += sum(1 for x in res.lines if isinstance(x, bytearray))
    elapsed = time.monotonic() - t0
    await c.logout()
    return got, elapsed


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def machine_ticks() -> tuple[int, int]:
    """(all, idle) CPU ticks of the machine since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(values), values[3] + values[4]


async def copy_baseline(app: Any, count: int) -> float:
    """PostgreSQL's write rate for the bytes mailgate stores (raw + decoded attachments):
    COPY into a scratch table, 100 messages per transaction, one connection; msgs/s."""
    from ingest.store import analyse

    kinds = ("text", "html", "attach")
    samples = {k: msg(1, k) for k in kinds}
    parts = {k: [a.content for a in analyse(samples[k], 1 << 30).parsed.attachments] for k in kinds}
    async with app.db.acquire() as conn:
        await conn.execute("CREATE TABLE bench_copy (k text, b bytea)")
        try:
            t0 = time.monotonic()
            for start in range(0, count, 100):
                rows = []
                for n in range(start, min(count, start + 100)):
                    kind = kinds[n % 3]
                    rows.append((f"r{n}", samples[kind]))
                    rows.extend((f"a{n}.{i}", part) for i, part in enumerate(parts[kind]))
                async with conn.transaction():
                    await conn.copy_records_to_table("bench_copy", records=rows)
            return count / (time.monotonic() - t0)
        finally:
            await conn.execute("DROP TABLE bench_copy")


async def backlog(app: Any, d: Dovecot, user: str, pw: str, count: int) -> dict[str, float]:
    size = await asyncio.to_thread(fill_maildir, d, user, count)
    await bare_fetch(d, user, pw, 100)  # warm: Dovecot indexes the new files once
    got, bare_s = await bare_fetch(d, user, pw)
    component = IngestComponent(app)
    acct = await add_account(
        app.db, CredentialBox(app.secret_key), tenant_id="bench", address=user,
        imap_host=d.host, imap_port=d.port, imap_security="none", username=user, password=pw,
    )  # fmt: skip
    t0, cpu0, ticks0 = time.monotonic(), cpu_s(), machine_ticks()
    await component.start()
    while True:
        n = await app.db.fetchval(
            "SELECT count(*) FROM email_messages WHERE email_account_id=$1", acct.id
        )
        if n >= count:
            break
        await asyncio.sleep(0.2)
    mg_s = time.monotonic() - t0
    cpu, ticks = cpu_s() - cpu0, machine_ticks()
    await component.stop(asyncio.get_running_loop().time() + 5)
    copy_rate = await copy_baseline(app, count)
    return {
        "backlog_messages": count,
        "backlog_mb": round(size / 1e6, 1),
        "bare_fetch_msgs_per_s": round(got / bare_s, 1),
        "mailgate_msgs_per_s": round(count / mg_s, 1),
        "backlog_ratio": round((count / mg_s) / (got / bare_s), 3),
        "pg_copy_msgs_per_s": round(copy_rate, 1),
        "pg_copy_ratio_to_bare": round(copy_rate / (got / bare_s), 3),
        "mailgate_ratio_to_pg_copy": round((count / mg_s) / copy_rate, 3),
        "bench_process_cpu_ms_per_msg": round(cpu / count * 1000, 2),
        "machine_busy_pct": round(
            100 * (1 - (ticks[1] - ticks0[1]) / max(1, ticks[0] - ticks0[0])), 1
        ),
    }


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def many(app: Any, d: Dovecot, count: int) -> dict[str, float]:
    users = {f"m{i}@many.test": secrets.token_hex(6) for i in range(count)}
    d.add_users(users)
    box = CredentialBox(app.secret_key)
    for user, pw in users.items():
        await add_account(
            app.db, box, tenant_id="many", address=user, imap_host=d.host, imap_port=d.port,
            imap_security="none", username=user, password=pw,
        )  # fmt: skip
    rss_before = rss_mb()
    component = IngestComponent(app)
    t0 = time.monotonic()
    await component.start()

    async def all_idle(timeout_s: float) -> float:
        start = time.monotonic()
        while component.states().get(State.IDLING, 0) < count:
            if time.monotonic() - start > timeout_s:
                raise TimeoutError(f"only {component.states()} after {timeout_s} s")
            await asyncio.sleep(0.1)
        return time.monotonic() - start

    await all_idle(600)
    startup_s = time.monotonic() - t0
    rss = rss_mb()
    t1 = time.monotonic()
    await asyncio.to_thread(d.restart)
    await asyncio.sleep(0.5)
    await all_idle(900)
    storm_s = time.monotonic() - t1
    await component.stop(asyncio.get_running_loop().time() + 10)
    return {
        "mailboxes": count,
        "startup_all_idle_s": round(startup_s, 2),
        "rss_mb": round(rss, 1),
        "rss_before_watchers_mb": round(rss_before, 1),
        "reconnect_storm_s": round(storm_s, 2),
    }


async def main(quick: bool) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="mailgate-bench-", dir="/tmp"))
    os.chmod(tmp, 0o755)  # noqa: S103 - Dovecot's mail processes must traverse it
    pg, rd = EmbeddedPostgres(tmp / "pg"), EmbeddedRedis(tmp / "redis")
    d = Dovecot(tmp / "dovecot")
    try:
        db_url, redis_url = pg.start(), rd.start()
        conn = await connect(db_url, timeout_s=10)
        await migrate(conn)
        await conn.close()
        d.start()
        settings = load_settings(
            database_url=db_url, redis_url=redis_url, data_dir=tmp / "data",
            secret_key="bench-secret-key-0123456789abcdef0123", log_level="ERROR",
            ingest_start_stagger_s=0, ingest_logins_per_min=100000, ingest_login_burst=2000,
            db_pool_max=20, redis_max_connections=200,
        )  # fmt: skip
        out: dict[str, Any] = {"quick": quick}
        async with open_app(settings, Urls(db_url, redis_url)) as app:
            boxes, per_box = (5, 20) if quick else (10, 50)
            lat_users = {f"l{i}@lat.test": secrets.token_hex(6) for i in range(boxes)}
            fl_users = {f"f{i}@lat.test": secrets.token_hex(6) for i in range(boxes)}
            d.add_users({**lat_users, **fl_users})
            a = await floor(d, fl_users, per_box)
            b = await mailgate_latency(app, d, lat_users, per_box)
            out.update(
                samples=len(a),
                floor_p50_ms=round(pct(a, 50) * 1000, 1),
                floor_p99_ms=round(pct(a, 99) * 1000, 1),
                mailgate_p50_ms=round(pct(b, 50) * 1000, 1),
                mailgate_p99_ms=round(pct(b, 99) * 1000, 1),
            )
            out["p99_over_floor_ms"] = round(out["mailgate_p99_ms"] - out["floor_p99_ms"], 1)
            print(f"(a)/(b) {json.dumps(out)}", flush=True)
            d.add_user("backlog@bl.test", "backlogpw1")
            c = await backlog(app, d, "backlog@bl.test", "backlogpw1", 1000 if quick else 10000)
            print(f"(c) {json.dumps(c)}", flush=True)
            out.update(c)
            m = await many(app, d, 200 if quick else 1000)
            print(f"(d) {json.dumps(m)}", flush=True)
            out.update(m)
        out["machine"] = (
            f"{platform.node()} {os.cpu_count()} cores, Python {platform.python_version()}"
        )
        return out
    finally:
        d.stop()
        rd.stop(force=True)
        pg.stop(force=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller run (about a minute)")
    result = asyncio.run(main(parser.parse_args().quick))
    print(json.dumps(result))
