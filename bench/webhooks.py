"""Webhook dispatch benchmark (issue 17): events dispatched per second to a local aiohttp
receiver answering 200, against a bare aiohttp client loop posting the same bodies, in the
same run, to the same receiver (a process of its own, so it does not share our core).

    python bench/webhooks.py [--events 5000] [--concurrency 4] [--quick]

(a) baseline: one aiohttp session, ``--concurrency`` tasks POSTing the event bodies (no
    signing, no database, no queue);
(b) mailgate: the events in the outbox; the dispatcher (outbox -> queue:webhook:process
    jobs) and the job runtime's worker running the webhook handler
    (Standard Webhooks signing, one attempt row and one delivery row per event, job
    tracking in Redis and PostgreSQL), an endpoint with concurrency ``--concurrency``;
    timed from the first dispatch round to the last job finished.

PostgreSQL and Redis are private embedded servers unless MAILGATE_DATABASE_URL /
MAILGATE_REDIS_URL are set. Target: (b)/(a) >= 0.5. The last line is a JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
from aiohttp import web

from gateway.app import App, Urls, open_app
from gateway.embedded import EmbeddedServers
from gateway.events import EventType
from gateway.jobs.worker import Worker
from gateway.secretkey import CredentialBox
from gateway.services import Services
from gateway.settings import load_settings
from gateway.storage import connect, migrate
from webhooks import signing
from webhooks.dispatch import Dispatcher
from webhooks.sender import SENDER, body_of, create_handler
from webhooks.store import EndpointStore

TENANT = "bench"


def serve(port: int) -> None:
    """The receiver: 200 to every POST, counting them (GET /count)."""
    seen = {"n": 0}

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        seen["n"] += 1
        return web.Response(text="ok")

    async def count(request: web.Request) -> web.Response:
        return web.json_response(seen)

    app = web.Application()
    app.router.add_post("/hook", hook)
    app.router.add_get("/count", count)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def payload(n: int) -> dict[str, Any]:
    return {
        "delivery_id": f"d{n:08d}",
        "campaign_id": "camp_bench",
        "recipient": f"user{n}@example.net",
        "message_id": f"<d{n:08d}@sender.example>",
        "smtp_code": 250,
    }


async def baseline(url: str, bodies: list[bytes], concurrency: int) -> float:
    """(a) events/s of a bare aiohttp loop."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)
    async with aiohttp.ClientSession() as session:

        async def post_all() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                async with session.post(
                    url, data=body, headers={"content-type": "application/json"}
                ) as response:
                    await response.read()
                    assert response.status == 200

        t0 = time.perf_counter()
        await asyncio.gather(*(post_all() for _ in range(concurrency)))
        return len(bodies) / (time.perf_counter() - t0)


async def mailgate(app: App, url: str, n: int, concurrency: int) -> dict[str, float]:
    """(b) events/s through the outbox, the dispatcher and the worker."""
    async with app.db.acquire() as conn:
        await conn.execute("TRUNCATE events, webhook_endpoints, webhook_deliveries CASCADE")
        await app.redis.flushdb()
        # The endpoint first: an endpoint receives only the events recorded after it was added.
        store = EndpointStore(app.db, CredentialBox(app.secret_key))
        await store.add(TENANT, url, ["*"], signing.new_secret(), concurrency=concurrency)
        await conn.execute(
            "INSERT INTO events (tenant_id, type, subject_id, payload, dedupe_key)"
            " SELECT $1, $2, 'd' || i, $3::jsonb, 'bench:' || i FROM generate_series(1, $4) i",
            TENANT,
            EventType.SENT.value,
            payload(0),
            n,
        )
    services = Services(app)
    worker = Worker(app, {"webhook": create_handler(app, services)})
    dispatcher = Dispatcher(app, services.get(SENDER).max_attempts)
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    await worker.start()
    await dispatcher.start()
    try:
        while await app.db.fetchval(
            "SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered'"
        ) < n:
            await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
    finally:
        loop = asyncio.get_running_loop()
        await dispatcher.stop(loop.time() + 5)
        await worker.stop(loop.time() + 10)
        await services.aclose()
    attempts = await app.db.fetchval("SELECT count(*) FROM webhook_attempts")
    return {"events_per_s": n / elapsed, "cpu_us_per_event": cpu / n * 1e6, "attempts": attempts}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    tmp = tempfile.mkdtemp(prefix="mailgate-bench-")
    db_url = os.environ.get("MAILGATE_DATABASE_URL")
    redis_url = os.environ.get("MAILGATE_REDIS_URL")
    servers = EmbeddedServers(Path(tmp), postgres=db_url is None, redis=redis_url is None)
    emb_db, emb_redis = await asyncio.to_thread(servers.start)
    db_url = db_url or emb_db
    redis_url = redis_url or emb_redis
    assert db_url and redis_url
    port = free_port()
    # Started once, before anything is measured.
    receiver = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])  # noqa: ASYNC220
    url = f"http://127.0.0.1:{port}/hook"
    try:
        conn = await connect(db_url)
        await migrate(conn)
        await conn.close()
        settings = load_settings(
            database_url=db_url, redis_url=redis_url, data_dir=Path(tmp) / "data",
            secret_key="b" * 40, log_level="WARNING", db_pool_max=20,
            webhook_allow_private=True,
        )  # fmt: skip
        for _ in range(100):  # the receiver's start
            try:
                async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/count"):
                    break
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)
        import datetime as dt

        now = dt.datetime.now(dt.UTC)
        bodies = [body_of(EventType.SENT.value, now, payload(i)) for i in range(args.events)]
        results: dict[str, Any] = {"events": args.events, "concurrency": args.concurrency}
        base_runs, ours_runs = [], []
        async with open_app(settings, Urls(db_url, redis_url)) as app:
            for _ in range(args.rounds):  # interleaved: the machine is shared
                base_runs.append(await baseline(url, bodies, args.concurrency))
                ours_runs.append(await mailgate(app, url, args.events, args.concurrency))
        base = max(base_runs)
        ours = max(r["events_per_s"] for r in ours_runs)
        cpu = min(r["cpu_us_per_event"] for r in ours_runs)
        base_text = ", ".join(f"{b:.0f}" for b in base_runs)
        ours_text = ", ".join(f"{r['events_per_s']:.0f}" for r in ours_runs)
        print(f"(a) bare aiohttp loop:  {base:8.0f} events/s  (runs: {base_text})")
        print(
            f"(b) mailgate dispatch:  {ours:8.0f} events/s  (runs: {ours_text}); "
            f"{cpu:.0f} us CPU per event in this process"
        )
        print(f"ratio (b)/(a) = {ours / base:.2f} (target >= 0.5)")
        results.update(
            baseline_events_per_s=round(base),
            mailgate_events_per_s=round(ours),
            ratio=round(ours / base, 3),
            mailgate_cpu_us_per_event=round(cpu),
        )
        return results
    finally:
        receiver.terminate()
        receiver.wait(10)
        await asyncio.to_thread(servers.stop)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1,000 events, 1 round")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    ns = parser.parse_args()
    if ns.serve:
        serve(ns.serve)
        sys.exit(0)
    if ns.quick:
        ns.events, ns.rounds = 1000, 1
    figures = asyncio.run(main(ns))
    print(json.dumps(figures))
