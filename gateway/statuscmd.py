"""``mailgate status``: one screen for an operator (``--json`` for scripts; exit 1 when
anything is unhealthy, so it can be a monitoring check).

It reads what every daemon publishes (:mod:`gateway.status`) plus the queues and workers,
straight from PostgreSQL and Redis: an unreachable backend is a finding (printed, exit 1),
not a crash.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import asyncpg

from gateway.app import make_redis, open_urls
from gateway.cli import settings_from_args
from gateway.daemon import mailgate_version
from gateway.settings import Settings
from gateway.status import collect_status
from gateway.storage import create_pool


async def gather(settings: Settings) -> dict[str, Any]:
    """The status, opening PostgreSQL and Redis without giving up when one is down."""
    async with open_urls(settings) as urls:
        db: asyncpg.Pool | None = None
        db_error = ""
        try:
            db = await create_pool(
                urls.database,
                min_size=1,
                max_size=2,
                connect_timeout_s=min(settings.db_connect_timeout_s, 5),
                command_timeout_s=5,
            )
        except Exception as exc:  # noqa: BLE001 - reported as the finding
            db_error = f"{type(exc).__name__}: {exc}"
        redis = make_redis(urls.redis, settings)
        try:
            return await collect_status(db, redis, version=mailgate_version(), db_error=db_error)
        finally:
            await redis.aclose()
            if db is not None:
                await db.close()


def _counts(values: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in values.items()) or "none"


def render_text(status: dict[str, Any]) -> list[str]:
    """The screen, line by line."""
    lines = [
        f"mailgate {status['version']}: {'healthy' if status['healthy'] else 'UNHEALTHY'}",
        f"  PostgreSQL {status['backends']['postgres']}; Redis {status['backends']['redis']}",
    ]
    lines += [f"  problem: {p}" for p in status["problems"]]
    lines += [f"  warning: {w}" for w in status["warnings"]]
    if "instances" not in status:
        return lines
    lines.append("daemons:")
    for inst in status["instances"] or [{"instance": "none reporting"}]:
        comps = _counts(inst.get("components", {}))
        lines.append(
            f"  {inst['instance']}  {inst.get('version', '')}  http {inst.get('http', '-')}  "
            f"reported {inst.get('report_age_s', '-')} s ago  components: {comps}"
        )
    q = status["queues"]
    lines.append(
        f"queues: {q['processing']} active, {q['delayed']} delayed, {q['dead']} dead letters"
    )
    for name, depth in q["queues"].items():
        if depth["waiting"] or depth["active"] or depth["delayed"] or depth["failed"]:
            lines.append(
                f"  {name:<36} waiting {depth['waiting']:>6}  active {depth['active']:>4}  "
                f"delayed {depth['delayed']:>4}  failed {depth['failed']:>4}"
            )
    jobs = status["jobs_last_hour"]
    lines.append(
        f"jobs last hour: {jobs['completed']} completed, {jobs['failed']} failed attempts, "
        f"{jobs['dead_lettered']} dead-lettered"
    )
    lines.append(f"workers: {len(status['workers'])} live")
    for w in status["workers"]:
        lines.append(
            f"  {w['worker_id']}  {w['status']}  heartbeat {w['heartbeat_age_s']} s ago  "
            f"in flight {w['in_flight']}  done {w['jobs_processed']}"
        )
    watchers = status["watchers"]
    lines.append(f"IMAP watchers: {_counts(watchers['by_state'])}")
    for b in watchers["backoff"]:
        lines.append(
            f"  backoff {b.get('address') or b.get('account')} {b.get('folder')}: "
            f"{b.get('failures')} failures, last error: {b.get('last_error')}"
        )
    listener = status["listener"]
    lines.append(
        f"bounce listener: {listener['sessions_open']} sessions open; last hour sessions: "
        f"{_counts(listener['last_hour_sessions'])}; refused: "
        f"{_counts(listener['last_hour_refusals'])}"
    )
    delivery = status["delivery"]
    lines.append(
        f"delivery: {delivery['pool_connections']} pooled connections; last hour: "
        f"{_counts(delivery['last_hour'])}"
    )
    return lines


def cmd_status(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    status = asyncio.run(gather(settings))
    if args.json:
        print(json.dumps(status, indent=2, default=str))
    else:
        print("\n".join(render_text(status)))
    return 0 if status["healthy"] else 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "status",
        help="health of every running daemon, queues, workers, watchers (exit 1: unhealthy)",
        description="One screen for an operator: daemons and their components, queue "
        "depths, dead letters, live workers, IMAP watchers, the bounce listener and the "
        "delivery pool. Exit 1 when anything is unhealthy (a monitoring check).",
    )
    p.add_argument("--json", action="store_true", help="the same as JSON")
    p.set_defaults(handler=cmd_status)
