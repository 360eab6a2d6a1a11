"""Job runtime benchmark: the Redis ceiling, mailgate's worker end to end, and the
incoming-email handler, measured in one run on the same servers.

    python bench/jobs.py [--jobs 20000] [--emails 5000] [--quick]

(a) the ceiling: a bare redis-py loop moving jobs between two lists the way the worker takes
    them (LMOVE into a processing list, then LREM), one at a time and pipelined by 100;
(b) mailgate's Worker with a no-op handler and full tracking (Redis hash + PostgreSQL jobs
    and job_executions rows), jobs/s, and p50/p99 pick-up latency on an idle worker
    (LPUSH -> handler called);
(c) the incoming-email handler (seed payloads, 3 KB bodies) end to end.

PostgreSQL and Redis are private embedded servers in a temporary directory unless
MAILGATE_DATABASE_URL / MAILGATE_REDIS_URL are set. The last line is a JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis.asyncio as aioredis

from gateway.app import App, Urls, open_app
from gateway.embedded import EmbeddedServers
from gateway.jobs.contracts import EMAIL_PROCESSING, WARMUP, WarmupPayload
from gateway.jobs.envelope import Job
from gateway.jobs.handlers import HandlerSpec
from gateway.jobs.worker import Worker
from gateway.services import Services
from gateway.settings import load_settings
from gateway.storage import connect, migrate
from ingest.jobs import create_handler
from tests.gateway.seedjobs import email_payload, envelope

QUEUE = WARMUP


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


async def reset(app: App) -> None:
    await app.redis.flushdb()
    async with app.db.acquire() as conn:
        await conn.execute(
            "TRUNCATE jobs, job_executions, email_content, email_messages, attachments CASCADE"
        )


async def bench_ceiling(redis_url: str, n: int) -> dict[str, float]:
    """(a) LMOVE + LREM, one at a time and pipelined by 100."""
    r = aioredis.Redis.from_url(redis_url)
    payloads = [json.dumps({"id": f"c{i}", "payload": {}}).encode() for i in range(n)]
    out: dict[str, float] = {}
    await r.delete("bench:q", "bench:p")
    await r.lpush("bench:q", *payloads)
    t0 = time.perf_counter()
    while True:
        raw = await r.lmove("bench:q", "bench:p", "RIGHT", "LEFT")
        if raw is None:
            break
        await r.lrem("bench:p", -1, raw)
    out["sequential"] = n / (time.perf_counter() - t0)
    await r.lpush("bench:q", *payloads)
    t0 = time.perf_counter()
    done = 0
    while done < n:
        async with r.pipeline(transaction=False) as pipe:
            for _ in range(100):
                pipe.lmove("bench:q", "bench:p", "RIGHT", "LEFT")
            moved = [m for m in await pipe.execute() if m is not None]
        async with r.pipeline(transaction=False) as pipe:
            for m in moved:
                pipe.lrem("bench:p", -1, m)
            await pipe.execute()
        done += len(moved)
        if not moved:
            break
    out["pipelined_100"] = n / (time.perf_counter() - t0)
    await r.aclose()
    return out


async def bench_worker(app: App, n: int, latency_samples: int) -> dict[str, float]:
    """(b) no-op handler with full tracking; then idle pick-up latency."""
    await reset(app)
    seen: dict[str, float] = {}
    finished = asyncio.Event()

    async def noop(job: Job, payload: WarmupPayload) -> None:
        seen[job.id] = time.perf_counter()
        if len(seen) >= n:
            finished.set()

    # A real warmup payload, so the figure includes the worker's validation of it.
    spec = HandlerSpec("warmup", noop, concurrency=100)
    payload = {"email_account_id": "acc_1", "warmup_type": "outbound", "sequence_step": 0}
    batch = [json.dumps({"id": f"w{i}", "payload": payload}).encode() for i in range(n)]
    for i in range(0, n, 5000):
        await app.redis.lpush(QUEUE, *batch[i : i + 5000])
    worker = Worker(app, {"warmup": spec})
    t0 = time.perf_counter()
    cpu0 = os.times()
    await worker.start()
    await asyncio.wait_for(finished.wait(), 600)
    await worker.run_until_empty(120)
    elapsed = time.perf_counter() - t0
    cpu1 = os.times()
    # The bench process is the worker: its CPU per job is steady on a busy machine, where
    # jobs/s and the ratio move with the other processes' load.
    cpu_us = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / n * 1e6
    completed = await app.db.fetchval("SELECT count(*) FROM jobs WHERE status='completed'")
    # Idle pick-up latency: one job at a time into an idle worker.
    await asyncio.sleep(0.5)
    latencies = []
    for i in range(latency_samples):
        job_id = f"lat{i}"
        t = time.perf_counter()
        await app.redis.lpush(QUEUE, json.dumps({"id": job_id, "payload": payload}))
        while job_id not in seen:
            await asyncio.sleep(0)
        latencies.append((seen[job_id] - t) * 1000)
        await asyncio.sleep(0.005)
    await worker.stop(asyncio.get_running_loop().time() + 10)
    return {
        "jobs": n,
        "jobs_per_s": n / elapsed,
        "completed_in_postgres": float(completed),
        "pickup_p50_ms": pct(latencies, 0.5),
        "pickup_p99_ms": pct(latencies, 0.99),
        "finisher_batches": float(worker.finisher.batches),
        "cpu_us_per_job": cpu_us,
    }


async def bench_emails(app: App, n: int) -> dict[str, float]:
    """(c) the incoming-email handler with 3 KB messages."""
    await reset(app)
    spec = create_handler(app, Services(app))
    jobs = [envelope(email_payload(i, size=3000), id=f"e{i}") for i in range(n)]
    for i in range(0, n, 2000):
        await app.redis.lpush(EMAIL_PROCESSING, *jobs[i : i + 2000])
    worker = Worker(app, {"email-processing": spec})
    t0 = time.perf_counter()
    await worker.start()
    await worker.run_until_empty(600)
    elapsed = time.perf_counter() - t0
    stored = await app.db.fetchval("SELECT count(*) FROM email_messages")
    await worker.stop(asyncio.get_running_loop().time() + 10)
    return {"emails": n, "emails_per_s": n / elapsed, "stored": float(stored)}


async def main(args: argparse.Namespace) -> dict[str, Any]:

    tmp = tempfile.mkdtemp(prefix="mailgate-bench-")
    db_url = os.environ.get("MAILGATE_DATABASE_URL")
    redis_url = os.environ.get("MAILGATE_REDIS_URL")
    servers = EmbeddedServers(Path(tmp), postgres=db_url is None, redis=redis_url is None)
    emb_db, emb_redis = await asyncio.to_thread(servers.start)
    db_url = db_url or emb_db
    redis_url = redis_url or emb_redis
    assert db_url and redis_url
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
            db_pool_max=20,
        )
        ceiling = await bench_ceiling(redis_url, args.jobs)
        print(f"(a) ceiling, LMOVE+LREM one at a time: {ceiling['sequential']:9.0f} jobs/s")
        print(f"(a) ceiling, pipelined by 100:         {ceiling['pipelined_100']:9.0f} jobs/s")
        async with open_app(settings, Urls(db_url, redis_url)) as app:
            worker = await bench_worker(app, args.jobs, args.latency_samples)
            print(
                f"(b) mailgate worker, no-op + tracking:  {worker['jobs_per_s']:9.0f} jobs/s "
                f"({int(worker['completed_in_postgres'])} completed rows)"
            )
            print(
                f"    idle pick-up latency p50 {worker['pickup_p50_ms']:.2f} ms, "
                f"p99 {worker['pickup_p99_ms']:.2f} ms"
            )
            emails = await bench_emails(app, args.emails)
            print(
                f"(c) incoming-email handler, 3 KB:      {emails['emails_per_s']:9.0f} jobs/s "
                f"({int(emails['stored'])} stored)"
            )
        ratio = worker["jobs_per_s"] / ceiling["sequential"]
        print(
            f"ratio (b)/(a sequential) = {ratio:.2f}; (b)/(a pipelined) = "
            f"{worker['jobs_per_s'] / ceiling['pipelined_100']:.2f}"
        )
        return {
            "ceiling_jobs_per_s": round(ceiling["sequential"]),
            "ceiling_pipelined_jobs_per_s": round(ceiling["pipelined_100"]),
            "worker_jobs_per_s": round(worker["jobs_per_s"]),
            "ratio": round(ratio, 3),
            "ratio_vs_pipelined": round(worker["jobs_per_s"] / ceiling["pipelined_100"], 3),
            "pickup_p50_ms": round(worker["pickup_p50_ms"], 3),
            "pickup_p99_ms": round(worker["pickup_p99_ms"], 3),
            "worker_cpu_us_per_job": round(worker["cpu_us_per_job"], 1),
            "email_jobs_per_s": round(emails["emails_per_s"]),
            "jobs": args.jobs,
            "emails": args.emails,
        }
    finally:
        await asyncio.to_thread(servers.stop)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--emails", type=int, default=5000)
    parser.add_argument("--latency-samples", type=int, default=300)
    parser.add_argument("--quick", action="store_true", help="2,000 jobs, 1,000 emails")
    ns = parser.parse_args()
    if ns.quick:
        ns.jobs, ns.emails, ns.latency_samples = 2000, 1000, 100
    figures = asyncio.run(main(ns))
    print(json.dumps(figures))
