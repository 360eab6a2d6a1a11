"""Operator commands for the job runtime.

``mailgate enqueue QUEUE JSON|@file``, ``mailgate jobs show ID``, ``mailgate jobs list``,
``mailgate queues``, ``mailgate dlq list|retry|purge`` and ``mailgate workers``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from gateway.app import App
from gateway.cli import run_with_app, settings_from_args
from gateway.jobs import keys
from gateway.jobs.envelope import DEFAULT_MAX_ATTEMPTS, new_job, utc_now_iso

# Move one dead letter back to a queue, atomically (no loss, no duplicate).
#   KEYS[1]: queue:dead   KEYS[2]: target queue   ARGV[1]: the letter   ARGV[2]: the job
RETRY_DEAD = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
redis.call('LPUSH', KEYS[2], ARGV[2])
return 1
"""

LETTER_FIELDS = ("error", "failed_at")


def _print(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def _line(text: str) -> None:
    print(text)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _read_json(value: str) -> Any:
    text = Path(value[1:]).read_text() if value.startswith("@") else value
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"mailgate: not valid JSON: {exc}") from None


def build_envelope(body: Any, max_attempts: int | None) -> dict[str, Any]:
    """A payload, or a full envelope with ``payload``; id and defaults filled in."""
    if not isinstance(body, dict):
        raise SystemExit("mailgate: the job must be a JSON object (a payload or an envelope)")
    if "payload" in body:
        envelope = dict(body)
        if not isinstance(envelope["payload"], dict):
            raise SystemExit("mailgate: payload must be a JSON object")
        fresh = new_job(envelope["payload"])
        for name, value in fresh.items():
            envelope.setdefault(name, value)
    else:
        envelope = new_job(body)
    if max_attempts is not None:
        envelope["max_attempts"] = max_attempts
    envelope.setdefault("max_attempts", DEFAULT_MAX_ATTEMPTS)
    return envelope


def cmd_enqueue(args: argparse.Namespace) -> int:
    if args.queue not in keys.QUEUE_PRIORITY:
        _line(f"mailgate: unknown queue {args.queue!r}; known: {', '.join(keys.QUEUE_PRIORITY)}")
        return 2
    envelope = build_envelope(_read_json(args.job), args.max_attempts)
    envelope.setdefault("queue_name", args.queue)
    settings = settings_from_args(args)

    async def work(app: App) -> int:
        await app.redis.lpush(args.queue, json.dumps(envelope, separators=(",", ":")))
        _line(str(envelope["id"]))
        return 0

    return run_with_app(settings, work)


def cmd_jobs_show(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)

    async def work(app: App) -> int:
        tracked = await app.redis.hgetall(keys.job_key(args.id))
        row = await app.db.fetchrow("SELECT * FROM jobs WHERE id = $1", args.id)
        executions = await app.db.fetch(
            "SELECT attempt, status, error, duration_ms, worker_id, at FROM job_executions "
            "WHERE job_id = $1 ORDER BY at, id",
            args.id,
        )
        if not tracked and row is None:
            _line(f"mailgate: no job {args.id!r}")
            return 1
        _print(
            {
                "id": args.id,
                "redis": {_text(k): _text(v) for k, v in tracked.items()},
                "postgres": dict(row) if row is not None else None,
                "executions": [dict(e) for e in executions],
            }
        )
        return 0

    return run_with_app(settings, work)


def cmd_jobs_list(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)

    async def work(app: App) -> int:
        rows = await app.db.fetch(
            "SELECT id, queue_name, status, attempt_count, max_attempts, updated_at, last_error "
            "FROM jobs WHERE ($1::text IS NULL OR status = $1) "
            "AND ($2::text IS NULL OR queue_name = $2) ORDER BY updated_at DESC LIMIT $3",
            args.status,
            args.queue,
            args.limit,
        )
        _line(f"{'id':<38} {'queue':<34} {'status':<16} {'att':>5}  updated")
        for r in rows:
            attempts = f"{r['attempt_count']}/{r['max_attempts']}"
            _line(
                f"{r['id']:<38} {r['queue_name']:<34} {r['status']:<16} {attempts:>5}  "
                f"{r['updated_at']:%Y-%m-%d %H:%M:%S}"
            )
        return 0

    return run_with_app(settings, work)


async def queue_depths(app: App) -> dict[str, int]:
    """Waiting jobs per queue, plus delayed, dead and held by workers."""
    workers = [_text(m) for m in await app.redis.smembers(keys.WORKERS)]
    async with app.redis.pipeline(transaction=False) as pipe:
        for q in keys.QUEUE_PRIORITY:
            pipe.llen(q)
        pipe.zcard(keys.DELAYED)
        pipe.llen(keys.DEAD)
        for w in workers:
            for q in keys.QUEUE_PRIORITY:
                pipe.llen(keys.processing_key(w, q))
        counts = [int(c) for c in await pipe.execute()]
    n = len(keys.QUEUE_PRIORITY)
    depths = dict(zip(keys.QUEUE_PRIORITY, counts[:n], strict=True))
    depths[keys.DELAYED] = counts[n]
    depths[keys.DEAD] = counts[n + 1]
    depths["processing"] = sum(counts[n + 2 :])
    return depths


def cmd_queues(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)

    async def work(app: App) -> int:
        depths = await queue_depths(app)
        if args.json:
            _print(depths)
        else:
            for name, depth in depths.items():
                _line(f"{name:<36} {depth:>8}")
        return 0

    return run_with_app(settings, work)


def cmd_dlq_list(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)

    async def work(app: App) -> int:
        for raw in await app.redis.lrange(keys.DEAD, 0, args.limit - 1):
            _line(_text(raw))
        return 0

    return run_with_app(settings, work)


def revive(letter: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The queue and the fresh job for a dead letter; None when it is not a job at all."""
    queue = letter.get("queue_name")
    if queue not in keys.QUEUE_PRIORITY or "id" not in letter or "payload" not in letter:
        return None
    job = {k: v for k, v in letter.items() if k not in LETTER_FIELDS}
    job["attempt_count"] = 0
    job["retried_at"] = utc_now_iso()
    return str(queue), job


def cmd_dlq_retry(args: argparse.Namespace) -> int:
    if not args.all and not args.id:
        _line("mailgate: give a job id or --all")
        return 2
    settings = settings_from_args(args)

    async def work(app: App) -> int:
        script = app.redis.register_script(RETRY_DEAD)
        retried = skipped = 0
        for raw in await app.redis.lrange(keys.DEAD, 0, -1):
            try:
                letter = json.loads(raw)
            except json.JSONDecodeError:
                letter = None
            if not isinstance(letter, dict):
                continue
            if not args.all and str(letter.get("id")) != args.id:
                continue
            revived = revive(letter)
            if revived is None:
                skipped += 1
                continue
            queue, job = revived
            retried += int(
                await script(
                    keys=[keys.DEAD, queue], args=[raw, json.dumps(job, separators=(",", ":"))]
                )
            )
        _line(f"retried {retried}" + (f"; skipped {skipped} malformed" if skipped else ""))
        return 0 if retried or args.all else 1

    return run_with_app(settings, work)


def cmd_dlq_purge(args: argparse.Namespace) -> int:
    if not args.yes:
        _line("mailgate: this deletes every dead letter; add --yes to confirm")
        return 2
    settings = settings_from_args(args)

    async def work(app: App) -> int:
        count = await app.redis.llen(keys.DEAD)
        await app.redis.delete(keys.DEAD)
        _line(f"purged {count}")
        return 0

    return run_with_app(settings, work)


def cmd_workers(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)

    async def work(app: App) -> int:
        live = []
        for member in sorted(await app.redis.smembers(keys.WORKERS)):
            health = await app.redis.hgetall(keys.worker_key(_text(member)))
            if health:
                live.append({_text(k): _text(v) for k, v in health.items()})
        if args.json:
            _print(live)
            return 0
        _line(f"{'worker':<48} {'status':<9} {'up_s':>8} {'done':>8} {'failed':>7} {'avg_ms':>8}")
        for h in live:
            _line(
                f"{h['worker_id']:<48} {h['status']:<9} {h['uptime_s']:>8} "
                f"{h['jobs_processed']:>8} {h['jobs_failed']:>7} "
                f"{h['average_processing_time_ms']:>8}"
            )
        return 0

    return run_with_app(settings, work)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("enqueue", help="push a job (JSON payload or envelope, or @file)")
    p.add_argument("queue", help="queue name, e.g. queue:email:processing")
    p.add_argument("job", help="JSON text, or @path to a JSON file")
    p.add_argument("--max-attempts", type=int, default=None)
    p.set_defaults(handler=cmd_enqueue)

    jobs = sub.add_parser("jobs", help="inspect jobs").add_subparsers(
        dest="jobs_cmd", required=True
    )
    p = jobs.add_parser("show", help="a job's tracking in Redis and PostgreSQL")
    p.add_argument("id")
    p.set_defaults(handler=cmd_jobs_show)
    p = jobs.add_parser("list", help="recent jobs from PostgreSQL")
    p.add_argument(
        "--status", choices=["queued", "running", "completed", "retry_scheduled", "failed"]
    )
    p.add_argument("--queue")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(handler=cmd_jobs_list)

    p = sub.add_parser("queues", help="queue depths (and delayed, dead, processing)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_queues)

    dlq = sub.add_parser("dlq", help="the dead-letter queue").add_subparsers(
        dest="dlq_cmd", required=True
    )
    p = dlq.add_parser("list", help="print dead letters, newest first")
    p.add_argument("--limit", type=int, default=100)
    p.set_defaults(handler=cmd_dlq_list)
    p = dlq.add_parser("retry", help="move dead letters back to their queue")
    p.add_argument("id", nargs="?")
    p.add_argument("--all", action="store_true")
    p.set_defaults(handler=cmd_dlq_retry)
    p = dlq.add_parser("purge", help="delete every dead letter")
    p.add_argument("--yes", action="store_true")
    p.set_defaults(handler=cmd_dlq_purge)

    p = sub.add_parser("workers", help="live workers and their health")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_workers)
