"""Operator commands for the job runtime.

``mailgate enqueue QUEUE JSON|@file`` (``--list``: every queue and its payload),
``mailgate jobs show ID``, ``mailgate jobs list``, ``mailgate queues``,
``mailgate dlq list|retry|delete|purge`` and ``mailgate workers``.

``enqueue`` checks the payload against the queue family's model (the one the worker and the
handler use) before anything reaches Redis, refuses fields the model does not know (a typo
would otherwise be silently ignored), and refuses a queue no installed handler consumes.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from gateway.app import App
from gateway.cli import Progress, read_input, run_with_app, settings_from_args
from gateway.errors import CliError
from gateway.jobs import keys, ops
from gateway.jobs.contracts import (
    FAMILIES,
    QUEUE_PRIORITY,
    Family,
    PayloadInvalid,
    family_of,
    unknown_fields,
)
from gateway.jobs.envelope import DEFAULT_MAX_ATTEMPTS, new_job
from gateway.jobs.handlers import installed_families


def _print(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def _line(text: str) -> None:
    print(text)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _read_json(value: str) -> Any:
    text = read_input(value, "job file")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"the job is not valid JSON: {exc} (give a JSON object or @file)") from None


def build_envelope(body: Any, max_attempts: int | None) -> dict[str, Any]:
    """A payload, or a full envelope with ``payload``; id and defaults filled in."""
    if not isinstance(body, dict):
        raise CliError("the job must be a JSON object (a payload, or an envelope with payload)")
    if "payload" in body:
        envelope = dict(body)
        if not isinstance(envelope["payload"], dict):
            raise CliError("payload must be a JSON object")
        fresh = new_job(envelope["payload"])
        for name, value in fresh.items():
            envelope.setdefault(name, value)
    else:
        envelope = new_job(body)
    if max_attempts is not None:
        envelope["max_attempts"] = max_attempts
    envelope.setdefault("max_attempts", DEFAULT_MAX_ATTEMPTS)
    return envelope


def check_queue(queue: str) -> Family:
    """The family of a queue a user named; unknown or unconsumed queues are refused."""
    if queue not in QUEUE_PRIORITY:
        raise CliError(f"unknown queue {queue!r} (`mailgate enqueue --list` shows every queue)")
    family = family_of(queue)
    if family.name not in installed_families():
        raise CliError(
            f"no installed handler consumes {queue} (its jobs would wait forever; "
            "`mailgate queues` shows which queues are consumed)"
        )
    return family


def check_payload(family: Family, payload: dict[str, Any]) -> None:
    """The payload as the worker will validate it, plus no field the model does not know."""
    try:
        model = family.validate(payload)
    except PayloadInvalid as exc:
        raise CliError(f"{exc} (`mailgate enqueue --list` shows the fields)") from None
    extra = unknown_fields(model)
    if extra:
        known = ", ".join(family.payload.field_names())
        raise CliError(f"unknown payload field {extra[0]!r} for {family.name} (fields: {known})")


def cmd_enqueue_list(args: argparse.Namespace) -> int:
    consumed = installed_families()
    rank = {queue: i for i, queue in enumerate(QUEUE_PRIORITY, start=1)}
    for family in FAMILIES:
        state = "" if family.name in consumed else "  (no installed handler: refused)"
        _line(f"{family.name}: {family.summary}{state}")
        for queue in family.queues:
            _line(f"  priority {rank[queue]:>2}  {queue}")
        _line(f"  fields:  {', '.join(family.payload.field_names(required_marker=True))}")
        _line(f"  example: {json.dumps(family.example)}")
    _line("(* = required; give the payload as JSON or @file, or an envelope {id, payload, ...})")
    return 0


def cmd_enqueue(args: argparse.Namespace) -> int:
    if args.list:
        return cmd_enqueue_list(args)
    if not args.queue or args.job is None:
        raise CliError("give a queue and a job: mailgate enqueue QUEUE JSON|@file (or --list)")
    family = check_queue(args.queue)
    envelope = build_envelope(_read_json(args.job), args.max_attempts)
    check_payload(family, envelope["payload"])
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
        if not rows:
            filters = [f"{k} {v}" for k, v in (("status", args.status), ("queue", args.queue)) if v]
            _line("no jobs" + (f" with {' and '.join(filters)}" if filters else " recorded yet"))
            return 0
        _line(f"{'id':<38} {'queue':<34} {'status':<16} {'att':>5}  updated")
        for r in rows:
            attempts = f"{r['attempt_count']}/{r['max_attempts']}"
            _line(
                f"{r['id']:<38} {r['queue_name']:<34} {r['status']:<16} {attempts:>5}  "
                f"{r['updated_at']:%Y-%m-%d %H:%M:%S}"
            )
        return 0

    return run_with_app(settings, work)


def cmd_queues(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)

    async def work(app: App) -> int:
        depths = await ops.queue_depths(app.redis)
        if args.json:
            _print(depths)
            return 0
        cols = ("waiting", "active", "delayed", "failed")
        _line(f"{'queue':<36} " + " ".join(f"{c:>8}" for c in cols))
        for name, queue in depths["queues"].items():
            note = "" if queue["consumed"] else "  (no installed handler)"
            _line(f"{name:<36} " + " ".join(f"{queue[c]:>8}" for c in cols) + note)
        for name in ("delayed", "dead", "processing"):
            _line(f"{name:<36} {depths[name]:>8}")
        return 0

    return run_with_app(settings, work)


def cmd_dlq_list(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)

    async def work(app: App) -> int:
        letters = await ops.list_letters(app.redis, args.limit)
        if not letters:
            _line("dead-letter queue is empty")
        for letter in letters:
            _line(_text(letter.raw))
        return 0

    return run_with_app(settings, work)


def cmd_dlq_retry(args: argparse.Namespace) -> int:
    if not args.all and not args.id:
        raise CliError("give a job id or --all (`mailgate dlq list` shows the dead letters)")
    settings = settings_from_args(args)

    async def work(app: App) -> int:
        total = await app.redis.llen(keys.DEAD)
        if not total:
            _line("dead-letter queue is empty")
            return 0 if args.all else 1
        progress = Progress(total if args.all else 0, "retrying")
        result = await ops.retry_letters(
            app.redis, None if args.all else args.id, on_letter=progress.advance
        )
        progress.close()
        if not result.done and not args.all:
            _line(f"mailgate: no dead letter with id {args.id!r} (`mailgate dlq list` shows them)")
            return 1
        skipped = f"; skipped {result.skipped} malformed" if result.skipped else ""
        _line(f"retried {result.done}{skipped}")
        return 0

    return run_with_app(settings, work)


def cmd_dlq_delete(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)

    async def work(app: App) -> int:
        result = await ops.delete_letters(app.redis, args.id)
        if not result.done:
            _line(f"mailgate: no dead letter with id {args.id!r} (`mailgate dlq list` shows them)")
            return 1
        _line(f"deleted {result.done}")
        return 0

    return run_with_app(settings, work)


def cmd_dlq_purge(args: argparse.Namespace) -> int:
    if not args.yes:
        raise CliError("this deletes every dead letter; add --yes to confirm")
    settings = settings_from_args(args)

    async def work(app: App) -> int:
        result = await ops.delete_letters(app.redis, None)
        _line(f"purged {result.done}")
        return 0

    return run_with_app(settings, work)


def cmd_workers(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)

    async def work(app: App) -> int:
        live = await ops.live_workers(app.redis)
        if args.json:
            _print(live)
            return 0 if live else 1
        if not live:
            _line("no live worker (start one with `mailgate run`)")
            return 1
        _line(
            f"{'worker':<48} {'status':<9} {'up_s':>8} {'done':>8} {'failed':>7} "
            f"{'avg_ms':>8} {'beat_s':>6}"
        )
        for h in live:
            _line(
                f"{h['worker_id']:<48} {h['status']:<9} {h['uptime_s']:>8} "
                f"{h['jobs_processed']:>8} {h['jobs_failed']:>7} "
                f"{h['average_processing_time_ms']:>8} {h['heartbeat_age_s']!s:>6}"
            )
        return 0

    return run_with_app(settings, work)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "enqueue",
        help="push a job (JSON payload or envelope, or @file), validated against its queue",
        description="Push a job. The payload is checked against the queue family's model; "
        "`--list` prints every queue, its priority and its payload fields.",
    )
    p.add_argument("queue", nargs="?", help="queue name, e.g. queue:email-sending")
    p.add_argument("job", nargs="?", help="JSON text, or @path to a JSON file (@- for stdin)")
    p.add_argument("--max-attempts", type=int, default=None)
    p.add_argument("--list", action="store_true", help="print every queue and its payload")
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
    p = dlq.add_parser("delete", help="delete one dead letter by job id")
    p.add_argument("id")
    p.set_defaults(handler=cmd_dlq_delete)
    p = dlq.add_parser("purge", help="delete every dead letter")
    p.add_argument("--yes", action="store_true")
    p.set_defaults(handler=cmd_dlq_purge)

    p = sub.add_parser("workers", help="live workers and their health (exit 1: none alive)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_workers)
