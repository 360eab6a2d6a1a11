"""Bounce listener throughput, part (b): Postfix's smtp-source sending real DSN bodies to
mailgate's listener (every message committed to PostgreSQL and its processing job queued
in Redis before the 250), against a bare aiosmtpd handler that answers 250 at once, both
on this process's loop and measured in the same run; one message per connection.

    python bench/bounces_throughput.py [--messages 4000] [--sessions 20] [--rounds 3] [--quick]

DSN bodies: the first ``--files`` DSNs of ../shared/corpus/bounces/dev (read in place, never
copied) or, without the corpus, tests/bounces/fixtures. smtp-source runs once per file,
``-N`` makes every envelope recipient unique (so every message is a new commit, not a
deduplicated retry). (c), an extra: the bounce job handler then processes the queued jobs
(classification + attribution + effects) with a real Worker.

PostgreSQL and Redis are private embedded servers in a temporary directory unless
MAILGATE_DATABASE_URL / MAILGATE_REDIS_URL are set. The last line is a JSON object.
(Part (a), classification speed, is bench/bounces_classify_speed.py.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiosmtpd.smtp import SMTP

from bounces.intake import Intake
from bounces.listener import Listener
from bounces.metrics import METRICS
from bounces.processing import create_handler
from gateway.app import App, Urls, open_app
from gateway.embedded import EmbeddedServers
from gateway.jobs.contracts import BOUNCE
from gateway.jobs.worker import Worker
from gateway.services import Services
from gateway.settings import load_settings
from gateway.storage import connect, migrate
from tests.peers.smtpsink import smtp_source_path

REPO = Path(__file__).resolve().parents[1]
# The corpus sits beside the checkout (../shared); a worktree under wt/ is one level deeper.
CORPUS = next(
    (
        base / "shared" / "corpus" / "bounces" / "dev" / "eml"
        for base in (REPO.parent, REPO.parent.parent)
        if (base / "shared" / "corpus" / "bounces" / "dev" / "eml").is_dir()
    ),
    REPO.parent / "shared" / "corpus" / "bounces" / "dev" / "eml",
)
FIXTURES = REPO / "tests" / "bounces" / "fixtures"


def dsn_files(count: int) -> list[Path]:
    """Real DSNs (multipart/report delivery-status) to send, smallest-first within reason."""
    folder = CORPUS if CORPUS.is_dir() else FIXTURES
    found = []
    for path in sorted(folder.glob("*.eml")):
        head = path.read_bytes()[:8192].lower()
        if b"report-type=delivery-status" in head or b'report-type="delivery-status"' in head:
            found.append(path)
    if not found:
        raise SystemExit(f"no DSN files in {folder}")
    return found[:count]


class BareHandler:
    """The baseline: take the message, answer 250 at once, store nothing."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 OK"


async def start_bare() -> tuple[asyncio.Server, int]:
    loop = asyncio.get_running_loop()
    hostname = socket.gethostname()
    server = await loop.create_server(
        lambda: SMTP(BareHandler(), hostname=hostname, enable_SMTPUTF8=True, loop=loop),
        "127.0.0.1",
        0,
    )
    return server, int(server.sockets[0].getsockname()[1])


_runs = 0


async def blast(port: int, files: list[Path], messages: int, sessions: int) -> dict[str, float]:
    """smtp-source, one run per file, ``messages`` in all; messages/s over the whole.

    ``-N`` numbers the recipients from 0 in every run, so each run also gets a sender of
    its own: no message repeats an earlier envelope (a repeat would be a deduplicated
    retry, which stores nothing)."""
    global _runs
    per_file = max(1, messages // len(files))
    binary = smtp_source_path()
    cpu0 = os.times()
    t0 = time.perf_counter()
    sent = 0
    for path in files:
        _runs += 1
        proc = await asyncio.create_subprocess_exec(
            binary,
            "-s",
            str(sessions),
            "-m",
            str(per_file),
            "-N",
            "-f",
            f"mailer-daemon-{_runs}@mx.rcpt.test",
            "-t",
            "b+bench@bounces.test",
            "-M",
            "mx.rcpt.test",
            "-F",
            str(path),
            f"127.0.0.1:{port}",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"smtp-source failed on {path.name}: {err.decode()[-500:]}")
        sent += per_file
    elapsed = time.perf_counter() - t0
    cpu1 = os.times()
    own_s = cpu1.user + cpu1.system - cpu0.user - cpu0.system
    return {
        "messages": sent,
        "seconds": elapsed,
        "per_s": sent / elapsed,
        "cpu_us_per_msg": own_s / sent * 1e6,  # this process: the server under test
    }


async def bench_processing(app: App, services: Services) -> dict[str, float]:
    """(c) the bounce handler draining the jobs the listener queued."""
    queued = int(await app.redis.llen(BOUNCE))
    worker = Worker(app, {"bounce": create_handler(app, services)}, rng=random.Random(1))
    t0 = time.perf_counter()
    await worker.start()
    try:
        await worker.run_until_empty(600)
    finally:
        await worker.stop(asyncio.get_running_loop().time() + 10)
    elapsed = time.perf_counter() - t0
    return {"jobs": queued, "per_s": queued / elapsed}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    tmp = tempfile.mkdtemp(prefix="mailgate-bench-")
    db_url = os.environ.get("MAILGATE_DATABASE_URL")
    redis_url = os.environ.get("MAILGATE_REDIS_URL")
    servers = EmbeddedServers(Path(tmp), postgres=db_url is None, redis=redis_url is None)
    emb_db, emb_redis = await asyncio.to_thread(servers.start)
    db_url = db_url or emb_db
    redis_url = redis_url or emb_redis
    assert db_url and redis_url
    files = dsn_files(args.files)
    sizes = [p.stat().st_size for p in files]
    print(f"{len(files)} DSN files from {files[0].parent}, {min(sizes)}-{max(sizes)} bytes")
    try:
        conn = await connect(db_url)
        await migrate(conn)
        await conn.close()
        settings = load_settings(
            database_url=db_url,
            redis_url=redis_url,
            data_dir=Path(tmp) / "data",
            secret_key="b" * 40,
            log_level="WARNING",
            db_pool_max=args.sessions,
            smtp_listen="127.0.0.1:0",
            bounce_domains="bounces.test",
            smtp_hostname="mx.bounces.test",
        )
        async with open_app(settings, Urls(db_url, redis_url)) as app:
            await app.redis.flushdb()
            bare_server, bare_port = await start_bare()
            services = Services(app)
            listener = Listener(app, Intake(app), services.get(METRICS))
            await listener.start()
            try:
                for port in (bare_port, listener.port):  # warm-up: connections, caches
                    await blast(port, files[:1], 200, args.sessions)
                bares, fulls = [], []
                for n in range(args.rounds):  # alternated, so both see the same noise
                    bares.append(await blast(bare_port, files, args.messages, args.sessions))
                    fulls.append(await blast(listener.port, files, args.messages, args.sessions))
                    print(
                        f"round {n + 1}: bare {bares[-1]['per_s']:7.0f} msg/s "
                        f"({bares[-1]['cpu_us_per_msg']:.0f} us CPU/msg), "
                        f"listener {fulls[-1]['per_s']:7.0f} msg/s "
                        f"({fulls[-1]['cpu_us_per_msg']:.0f} us CPU/msg)"
                    )
                bare = max(bares, key=lambda r: r["per_s"])
                full = max(fulls, key=lambda r: r["per_s"])
                print(f"(b) bare aiosmtpd, 250 at once:        {bare['per_s']:8.0f} msg/s (best)")
                print(f"(b) mailgate listener, commit + queue: {full['per_s']:8.0f} msg/s (best)")
            finally:
                bare_server.close()
                await listener.stop(asyncio.get_running_loop().time() + 10)
            stored = await app.db.fetchval(
                "SELECT count(*) FROM email_messages WHERE source = 'smtp'"
            )
            ratio = full["per_s"] / bare["per_s"]
            median = sorted(f["per_s"] / b["per_s"] for f, b in zip(fulls, bares, strict=True))[
                len(bares) // 2
            ]
            print(
                f"ratio listener/bare = {ratio:.2f} best-of-{args.rounds}, "
                f"{median:.2f} median of rounds (target >= 0.75); {stored} stored"
            )
            cpu_bare = sorted(b["cpu_us_per_msg"] for b in bares)[len(bares) // 2]
            cpu_full = sorted(f["cpu_us_per_msg"] for f in fulls)[len(fulls) // 2]
            print(
                f"server CPU per message (median): bare {cpu_bare:.0f} us, listener "
                f"{cpu_full:.0f} us; CPU ratio bare/listener = {cpu_bare / cpu_full:.2f}"
            )
            processing = await bench_processing(app, services)
            print(f"(c) bounce handler, classify + attribute: {processing['per_s']:8.0f} jobs/s")
        return {
            "bare_msgs_per_s": round(bare["per_s"]),
            "listener_msgs_per_s": round(full["per_s"]),
            "ratio": round(ratio, 3),
            "ratio_median_of_rounds": round(median, 3),
            "rounds": args.rounds,
            "bare_cpu_us_per_msg": round(cpu_bare),
            "listener_cpu_us_per_msg": round(cpu_full),
            "stored": int(stored),
            "messages": int(full["messages"]),
            "sessions": args.sessions,
            "files": len(files),
            "processing_jobs_per_s": round(processing["per_s"]),
        }
    finally:
        await asyncio.to_thread(servers.stop)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=4000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="800 messages")
    ns = parser.parse_args()
    if ns.quick:
        ns.messages, ns.rounds = 800, 1
    figures = asyncio.run(main(ns))
    print(json.dumps(figures))
