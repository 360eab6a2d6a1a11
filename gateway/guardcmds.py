"""``mailgate accounts resume`` and ``mailgate campaigns resume|paused``: the operator's
side of the deliverability guards (:mod:`gateway.guards`).

``resume`` refuses (exit 1, naming the rate) while a guard would still trip, unless
``--force``; after a resume the guards count only the sends made since. Held sends of the
tenant are brought forward at once. ``accounts resume`` is added to ingest's ``accounts``
command (:func:`add_resume`); ``campaigns`` is a command of its own (entry point).
"""

from __future__ import annotations

import argparse
from typing import Any

from gateway import guards
from gateway.app import App
from gateway.cli import run_with_app, settings_from_args
from gateway.errors import CliError
from gateway.jobs.contracts import EMAIL_SENDING, EMAIL_SENDING_HIGH, EMAIL_SENDING_LOW

SENDING_QUEUES = (EMAIL_SENDING_HIGH, EMAIL_SENDING, EMAIL_SENDING_LOW)


def cmd_resume(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    scope: str = args.guard_scope
    subject: str = args.subject

    async def work(app: App) -> int:
        async with app.db.acquire() as conn:
            try:
                done = await guards.resume(
                    conn, settings, args.tenant, scope, subject, force=args.force
                )
            except guards.StillOverThreshold as exc:
                raise CliError(
                    f"{scope} {subject} is still over a guard threshold: {exc} "
                    "(resume anyway with --force)",
                    exit_code=1,
                ) from None
        if done is None:
            raise CliError(
                f"{scope} {subject} of tenant {args.tenant} is not paused "
                f"(`mailgate campaigns paused --tenant {args.tenant}` lists pauses)",
                exit_code=1,
            )
        moved = await guards.release_held(app.redis, SENDING_QUEUES, args.tenant)
        print(f"resumed {scope} {subject} (was: {done.reason}); {moved} held sends brought forward")
        return 0

    return run_with_app(settings, work)


def cmd_paused(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)

    async def work(app: App) -> int:
        rows = await app.db.fetch(
            "SELECT scope, subject_id, guard, reason, paused_at FROM sending_pauses"
            " WHERE tenant_id = $1 AND paused ORDER BY paused_at",
            args.tenant,
        )
        if not rows:
            print(f"nothing paused for tenant {args.tenant}")
        for r in rows:
            when = f"{r['paused_at']:%Y-%m-%d %H:%M}"
            print(f"{r['scope']:<9} {r['subject_id']:<24} {when}  {r['reason']}")
        return 0

    return run_with_app(settings, work)


def add_resume(sub: Any, scope: str) -> None:
    """Add ``resume`` to an ``accounts`` or ``campaigns`` command's actions."""
    p = sub.add_parser("resume", help=f"resume a {scope} a deliverability guard paused")
    p.add_argument("--tenant", required=True)
    p.add_argument("subject", metavar=scope.upper(), help=f"{scope} id")
    p.add_argument("--force", action="store_true", help="even while still over a threshold")
    p.set_defaults(handler=cmd_resume, guard_scope=scope)


def register(subparsers: Any) -> None:
    campaigns = subparsers.add_parser("campaigns", help="campaigns: resume after a guard paused")
    sub = campaigns.add_subparsers(dest="campaigns_command", metavar="ACTION", required=True)
    add_resume(sub, "campaign")
    p = sub.add_parser("paused", help="accounts and campaigns paused by a guard")
    p.add_argument("--tenant", required=True)
    p.set_defaults(handler=cmd_paused)
