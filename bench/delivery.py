"""Outbound delivery benchmark: the SMTP ceilings, then mailgate sending queued jobs end to
end with DKIM, then three worker processes under a per-domain limit.

    python bench/delivery.py [--messages 20000] [--quick]

(a) ceilings against Postfix's smtp-sink on loopback, 5 KB messages: smtp-source with
    connection reuse (the machine), and a bare aiosmtplib loop over the same number of
    connections as mailgate's pool, no DKIM, queue or database (the library);
(b) mailgate: N email-sending jobs LPUSHed, one real Worker with the delivery handler,
    real PostgreSQL and Redis (embedded, temp dir), RSA-2048 DKIM; the sink dumps every
    message, and each is DKIM-verified with dkimpy against the public key. Timed from the
    worker's start to the empty queue, with the DKIM signer process already up as in a
    running daemon (its start, ~0.1 s of interpreter and imports, is also reported counted
    in: ``cold_start_msgs_per_s``);
    the same again with two worker processes (two mailgate instances on this host), timed
    from the first to the last ``sent_at``, reported beside (b), not instead of it;
(c) the same with Ed25519 (one process);
(d) three worker processes, a 600/minute limit on one recipient domain, for a minute and
    a bit: sends per rolling minute counted from the delivery rows' sent_at.

The last line is a JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiosmtplib
import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from delivery.dkimsign import DkimKey
from delivery.jobs import create_handler
from delivery.service import SENDER
from gateway.app import App, Urls, open_app
from gateway.daemon import settle_heap
from gateway.embedded import EmbeddedServers
from gateway.jobs.contracts import EMAIL_SENDING
from gateway.jobs.envelope import new_job
from gateway.jobs.worker import Worker
from gateway.secretkey import CredentialBox
from gateway.services import Services
from gateway.settings import Settings, load_settings
from gateway.storage import connect, migrate
from tests.peers.smtpsink import smtp_sink, smtp_source_path

CONNECTIONS = 50
# Job slots above the connection count, so one job's database and DKIM work overlaps other
# jobs' SMTP; the pool still opens at most CONNECTIONS (measured: 50 slots 970 msg/s, 200
# slots 1,127 msg/s, same run conditions).
JOB_SLOTS = 4 * CONNECTIONS
DOMAIN = "sender.test"
BODY = (
    "Hello {{ first_name }}, " + "this is line {{ n }} of a five kilobyte message. " * 2 + "\n"
) * 44
SECRET = "d" * 40


def message_5k() -> bytes:
    body = ("x" * 70 + "\r\n") * 70
    return (f"From: ops@{DOMAIN}\r\nTo: r@example.org\r\nSubject: bench\r\n\r\n{body}").encode()


# -- (a) ceilings -----------------------------------------------------------------------------


def bench_smtp_source(port: int, n: int, sessions: int = 20) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        [
            smtp_source_path(),
            "-d",
            "-s",
            str(sessions),
            "-m",
            str(n),
            "-l",
            "5120",
            "-f",
            f"ops@{DOMAIN}",
            "-t",
            "r@example.org",
            f"127.0.0.1:{port}",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return n / (time.perf_counter() - t0)


async def bench_aiosmtplib(port: int, n: int) -> float:
    msg = message_5k()

    async def one_connection(count: int) -> None:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await smtp.connect()
        for _ in range(count):
            await smtp.sendmail(f"ops@{DOMAIN}", ["r@example.org"], msg)
        await smtp.quit()

    t0 = time.perf_counter()
    await asyncio.gather(*(one_connection(n // CONNECTIONS) for _ in range(CONNECTIONS)))
    return (n // CONNECTIONS * CONNECTIONS) / (time.perf_counter() - t0)


# -- (b), (c) mailgate end to end ---------------------------------------------------------------


async def seed(app: App, port: int, key_pem: bytes, selector: str) -> bytes:
    box = CredentialBox(app.secret_key)
    key = DkimKey.from_pem(DOMAIN, selector, key_pem)
    async with app.db.acquire() as conn:
        await conn.execute(
            "TRUNCATE email_accounts, email_templates, campaigns, contacts, email_deliveries,"
            " dkim_keys, jobs, job_executions CASCADE"
        )
        await conn.execute(
            "INSERT INTO email_accounts (id, tenant_id, address, smtp_host, smtp_port,"
            " smtp_security) VALUES ('acct_1', 't1', $1, '127.0.0.1', $2, 'none')",
            f"ops@{DOMAIN}",
            port,
        )
        await conn.execute(
            "INSERT INTO email_templates (id, tenant_id, subject, text) VALUES"
            " ('tpl_1', 't1', 'Hello {{ first_name }}', $1)",
            BODY,
        )
        await conn.execute(
            "INSERT INTO campaigns (id, tenant_id, email_account_id, template_id, from_email)"
            " VALUES ('camp_1', 't1', 'acct_1', 'tpl_1', $1)",
            f"ops@{DOMAIN}",
        )
        await conn.execute(
            "INSERT INTO dkim_keys (tenant_id, domain, selector, algorithm, private_key_enc)"
            " VALUES ('t1', $1, $2, $3, $4)",
            DOMAIN,
            selector,
            key.algorithm,
            box.seal(key_pem.decode()),
        )
    await app.redis.flushdb()
    return key.dns_record()


async def push_jobs(app: App, n: int, domain_of: Any, prefix: str) -> None:
    for start in range(0, n, 1000):
        jobs = [
            json.dumps(
                new_job(
                    {
                        "tenant_id": "t1",
                        "campaign_id": "camp_1",
                        "template_id": "tpl_1",
                        "recipient": f"r{i}@{domain_of(i)}",
                        "variables": {"first_name": f"N{i}", "n": i},
                    },
                    id=f"{prefix}{i}",
                )
            )
            for i in range(start, min(n, start + 1000))
        ]
        await app.redis.lpush(EMAIL_SENDING, *jobs)


def split_dump(folder: Path) -> list[bytes]:
    """Messages from smtp-sink's dump file: each transaction starts with X-Client-Addr and
    the envelope lines (X-Helo-Args, X-Mail-Args, X-Rcpt-Args), then the message."""
    out = []
    for path in folder.parent.glob(folder.name + "*"):
        data = path.read_bytes().replace(b"\r\n", b"\n")
        for chunk in re.split(rb"(?m)^(?=X-Client-Addr: )", data):
            lines = chunk.split(b"\n")
            i = 0
            while i < len(lines) and re.match(rb"^X-(Client|Helo|Mail|Rcpt)", lines[i]):
                i += 1
            if i:
                out.append(b"\r\n".join(lines[i:]))
    return out


def dump_parent() -> str:
    """Where the sink keeps its copy of every message (for the DKIM check): memory (tmpfs)
    where there is one. On this machine's ext4 its appends cost smtp-sink 0.06-0.18 ms a
    message, varying run to run, on the cores the system under test needs."""
    return "/dev/shm" if os.path.isdir("/dev/shm") else "/tmp"


async def bench_mailgate(
    settings: Settings, urls: Urls, n: int, algorithm: str, processes: int = 0
) -> dict[str, Any]:
    """``processes`` 0: one Worker on this loop, timed from start to the empty queue; N:
    N worker processes (N mailgate instances), timed by the first and last ``sent_at``."""
    dump = Path(tempfile.mkdtemp(prefix="mailgate-dump-", dir=dump_parent()))
    dump.chmod(0o755)  # noqa: ASYNC240 - set-up before timing
    sink = smtp_sink(dump_dir=dump / "d")
    try:
        if algorithm == "rsa":
            k: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            k = ed25519.Ed25519PrivateKey.generate()
        pem = k.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        cpu: dict[str, float] = {}
        helpers_s = 0.0
        async with open_app(settings, urls) as app:
            services = Services(app)
            record = await seed(app, sink.port, pem, algorithm)
            await push_jobs(app, n, lambda i: f"d{i % 100}.example.org", f"{algorithm}-")
            if processes:
                await drain_in_processes(urls, processes, settings)
                elapsed = await app.db.fetchval(
                    "SELECT extract(epoch FROM max(sent_at) - min(sent_at))"
                    " FROM email_deliveries WHERE status = 'sent'"
                )
                elapsed = float(elapsed) * n / max(n - 1, 1)
            else:
                worker = Worker(app, {"email-sending": create_handler(app, services)})
                # A running daemon has its DKIM signer process up: its start (an interpreter
                # and its imports, ~0.1 s) is start-up, not sending. Reported apart.
                t_start = time.perf_counter()
                await services.get(SENDER).helpers_started()
                helpers_s = time.perf_counter() - t_start
                settle_heap()  # as the daemon does once started (its cost is start-up too)
                before = cpu_by_process()
                t0 = time.perf_counter()
                await worker.start()
                await worker.run_until_empty(timeout_s=600)
                elapsed = time.perf_counter() - t0
                cpu = {k: v / n * 1000 for k, v in cpu_delta(before, cpu_by_process()).items()}
                await worker.stop(asyncio.get_running_loop().time() + 10)
            sent = await app.db.fetchval(
                "SELECT count(*) FROM email_deliveries WHERE status = 'sent'"
            )
            await services.aclose()
        messages = split_dump(dump / "d" / "dump")
        ids = [re.search(rb"(?im)^Message-ID: (<[^>]+>)", m) for m in messages]
        distinct = {x.group(1) for x in ids if x}
        dns = {f"{algorithm}._domainkey.{DOMAIN}.".encode(): record}
        verified = sum(
            1 for m in messages if dkim.verify(m, dnsfunc=lambda name, timeout=5: dns.get(name))
        )
        return {
            "msgs_per_s": n / elapsed,
            # with the signer's start counted too, as for a daemon started onto a backlog
            "cold_msgs_per_s": n / (elapsed + helpers_s),
            "cpu_ms_per_msg": {k: round(v, 3) for k, v in cpu.items()} if not processes else {},
            "sent": int(sent),
            "received": len(messages),
            "duplicates": len(messages) - len(distinct),
            "dkim_verified": verified,
        }
    finally:
        sink.stop()
        shutil.rmtree(dump, ignore_errors=True)


def cpu_by_process() -> dict[str, float]:
    """CPU seconds so far of this process, its children (the DKIM signer) and the peers,
    by kind, plus the whole machine's busy time, from /proc (Linux)."""
    tick = os.sysconf("SC_CLK_TCK")
    me = os.getpid()
    out: dict[str, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()
        pid, ppid = int(stat.parent.name), int(fields[1])
        kind = (
            "worker"
            if pid == me
            else "signer"
            if ppid == me and comm.startswith("python")
            else comm
            if comm in ("postgres", "smtp-sink", "redis-server")
            else None
        )
        if kind:
            out[kind] = out.get(kind, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    first = Path("/proc/stat").read_text().splitlines()[0].split()
    out["machine"] = (sum(map(int, first[1:4])) + sum(map(int, first[6:9]))) / tick
    return out


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0.0) for k in after}


async def run_children(processes: int, *args: str) -> None:
    """``processes`` copies of this script with ``args``, waited for."""
    procs = [
        subprocess.Popen([sys.executable, __file__, *args])  # noqa: ASYNC220 - waited below
        for _ in range(processes)
    ]
    for p in procs:
        await asyncio.to_thread(p.wait)


async def drain_in_processes(urls: Urls, processes: int, settings: Settings) -> None:
    await run_children(
        processes, "--drain-child", urls.database, urls.redis, str(settings.data_dir)
    )


async def drain_child(db_url: str, redis_url: str, tmp: str) -> None:
    """One worker process (as one ``mailgate run`` would run it) until the queue is empty."""
    settings = bench_settings(db_url, redis_url, str(Path(tmp).parent))
    async with open_app(settings, Urls(db_url, redis_url)) as app:
        services = Services(app)
        worker = Worker(app, {"email-sending": create_handler(app, services)})
        await worker.start()
        settle_heap()
        await worker.run_until_empty(timeout_s=600)
        await worker.stop(asyncio.get_running_loop().time() + 10)
        await services.aclose()


# -- (d) three processes under a domain limit --------------------------------------------------


async def child(db_url: str, redis_url: str, seconds: float, tmp: str) -> None:
    settings = bench_settings(db_url, redis_url, tmp, limits="limited.example=600/0")
    async with open_app(settings, Urls(db_url, redis_url)) as app:
        services = Services(app)
        worker = Worker(app, {"email-sending": create_handler(app, services)})
        await worker.start()
        settle_heap()
        await asyncio.sleep(seconds)
        await worker.stop(asyncio.get_running_loop().time() + 5)
        await services.aclose()


async def bench_limited(
    settings: Settings, urls: Urls, tmp: str, seconds: float, n: int
) -> dict[str, Any]:
    sink = smtp_sink()
    try:
        k = ed25519.Ed25519PrivateKey.generate()
        pem = k.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        async with open_app(settings, urls) as app:
            await seed(app, sink.port, pem, "ed")
            await push_jobs(app, n, lambda i: "limited.example", "lim-")
            await run_children(3, "--child", urls.database, urls.redis, str(seconds), tmp)
            rows = await app.db.fetch(
                "SELECT extract(epoch FROM sent_at) AS t FROM email_deliveries"
                " WHERE status = 'sent' ORDER BY sent_at"
            )
            workers = await app.db.fetchval("SELECT count(DISTINCT worker_id) FROM job_executions")
        times = [float(r["t"]) for r in rows]
        worst = 0
        j = 0
        for i, t in enumerate(times):
            while times[j] < t - 60.0:
                j += 1
            worst = max(worst, i - j + 1)
        return {
            "sent": len(times),
            "max_per_rolling_minute": worst,
            "violations": max(0, worst - 600),
            "worker_processes": int(workers or 0),
        }
    finally:
        sink.stop()


def bench_settings(db_url: str, redis_url: str, tmp: str, limits: str = "") -> Settings:
    return load_settings(
        database_url=db_url,
        redis_url=redis_url,
        data_dir=Path(tmp) / "data",
        secret_key=SECRET,
        log_level="WARNING",
        db_pool_max=20,
        bounce_domains="bounces.test",
        delivery_account_per_minute=0,
        delivery_account_per_hour=0,
        delivery_account_per_day=0,
        delivery_domain_per_minute=0,
        delivery_domain_concurrency=0,
        delivery_domain_limits=limits,
        delivery_pool_max_per_endpoint=CONNECTIONS,
        delivery_pool_max_messages=100000,
        delivery_concurrency=JOB_SLOTS,
    )


async def main(args: argparse.Namespace) -> dict[str, Any]:
    tmp = tempfile.mkdtemp(prefix="mailgate-bench-")
    servers = EmbeddedServers(Path(tmp), postgres=True, redis=True)
    db_url, redis_url = await asyncio.to_thread(servers.start)
    assert db_url and redis_url
    try:
        conn = await connect(db_url)
        await migrate(conn)
        await conn.close()
        urls = Urls(db_url, redis_url)
        settings = bench_settings(db_url, redis_url, tmp)
        sink = smtp_sink()
        try:
            source = bench_smtp_source(sink.port, args.messages)
            bare = await bench_aiosmtplib(sink.port, args.messages)
        finally:
            sink.stop()
        print(f"(a) smtp-source -> smtp-sink, reuse, 20 sessions: {source:8.0f} msg/s")
        print(f"(a) bare aiosmtplib, {CONNECTIONS} connections:        {bare:8.0f} msg/s")
        b = await bench_mailgate(settings, urls, args.messages, "rsa")
        print(
            f"(b) mailgate end to end, RSA-2048 DKIM:       {b['msgs_per_s']:8.0f} msg/s "
            f"({b['sent']} sent, {b['received']} received, {b['dkim_verified']} verified, "
            f"{b['duplicates']} duplicates); {b['cold_msgs_per_s']:.0f} msg/s counting the "
            "signer process's start"
        )
        print(
            "    CPU ms per message: "
            + ", ".join(f"{k} {v:.3f}" for k, v in sorted(b["cpu_ms_per_msg"].items()))
        )
        b2 = await bench_mailgate(settings, urls, args.messages, "rsa", processes=2)
        print(
            f"(b) the same, two worker processes:          {b2['msgs_per_s']:8.0f} msg/s "
            f"({b2['sent']} sent, {b2['dkim_verified']} verified, {b2['duplicates']} duplicates)"
        )
        c = await bench_mailgate(settings, urls, args.messages, "ed25519")
        print(
            f"(c) mailgate end to end, Ed25519 DKIM:        {c['msgs_per_s']:8.0f} msg/s "
            f"({c['sent']} sent, {c['dkim_verified']} verified, {c['duplicates']} duplicates)"
        )
        d = await bench_limited(settings, urls, tmp, args.limit_seconds, args.limit_jobs)
        print(
            f"(d) 3 processes, 600/min on one domain, {args.limit_seconds:.0f} s: "
            f"{d['sent']} sent, "
            f"max {d['max_per_rolling_minute']} in a rolling minute, "
            f"{d['violations']} over the limit ({d['worker_processes']} workers)"
        )
        ratio = b["msgs_per_s"] / bare
        print(f"ratio (b) / bare aiosmtplib = {ratio:.2f}")
        return {
            "messages": args.messages,
            "msgs_per_s": round(b["msgs_per_s"]),
            "cold_start_msgs_per_s": round(b["cold_msgs_per_s"]),
            "two_process_msgs_per_s": round(b2["msgs_per_s"]),
            "two_process_ratio": round(b2["msgs_per_s"] / bare, 3),
            "ed25519_msgs_per_s": round(c["msgs_per_s"]),
            "ceiling_msgs_per_s": round(bare),
            "smtp_source_msgs_per_s": round(source),
            "ratio": round(ratio, 3),
            "cpu_ms_per_msg": b["cpu_ms_per_msg"],
            "dkim_verified": b["dkim_verified"] + b2["dkim_verified"] + c["dkim_verified"],
            "dkim_checked": b["received"] + b2["received"] + c["received"],
            "duplicates": b["duplicates"] + b2["duplicates"] + c["duplicates"],
            "sent_rows": b["sent"] + b2["sent"] + c["sent"],
            "rate_limit_sent": d["sent"],
            "rate_limit_max_per_minute": d["max_per_rolling_minute"],
            "rate_limit_violations": d["violations"],
        }
    finally:
        await asyncio.to_thread(servers.stop)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--drain-child"]:
        asyncio.run(drain_child(sys.argv[2], sys.argv[3], sys.argv[4]))
        sys.exit(0)
    if sys.argv[1:2] == ["--child"]:
        asyncio.run(child(sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5]))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--limit-seconds", type=float, default=75.0)
    parser.add_argument("--limit-jobs", type=int, default=1500)
    parser.add_argument("--quick", action="store_true", help="6,000 messages")
    ns = parser.parse_args()
    if ns.quick:
        # 6,000, not 3,000: at ~1,500 msg/s a 3,000-message part is ~10 % start-up (50 SMTP
        # connections, the database pool, prepared statements); the ceiling runs as many.
        ns.messages = 6000
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    print(json.dumps(asyncio.run(main(ns))))
