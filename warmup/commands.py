"""``mailgate warmup enable|disable|status|tick``: warmup for operators.

``enable ACCOUNT_ID`` creates or changes the account's ``warmup_configs`` row (and lifts a
pause); ``disable`` stops it (its steps then change nothing in its mailbox); ``status``
prints a line (or, with ``--json``, an object) per account: its day, today's quota and
sends, where today's mail landed, what was moved and replied, and the 7-day inbox
placement; ``tick`` plans and queues every step due now (``--now-all``: today's whole
remaining quota at once).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import secrets
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.app import App
from gateway.cli import run_with_app, settings_from_args
from gateway.errors import CliError
from warmup import plan, store
from warmup.planner import tick


async def _tenant_of(app: App, account_id: str, tenant: str | None) -> str:
    found: str | None = await app.db.fetchval(
        "SELECT tenant_id FROM email_accounts WHERE id = $1 AND ($2::text IS NULL OR "
        "tenant_id = $2)",
        account_id,
        tenant,
    )
    if found is None:
        raise CliError(
            f"no email account {account_id!r}"
            + (f" in tenant {tenant!r}" if tenant else "")
            + " (see `mailgate accounts list`)"
        )
    return found


def _window(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    start, sep, end = text.partition("-")
    try:
        a, b = int(start), int(end)
    except ValueError:
        a = b = -1
    if not sep or not (0 <= a < b <= 24):
        raise CliError(f"--window {text!r}: give whole hours START-END, e.g. 8-18 (0-24)")
    return a, b


_SETTABLE = (
    "daily_start",
    "daily_increment",
    "daily_max",
    "reply_rate",
    "pool",
    "weekdays_only",
    "time_zone",
    "started_on",
)


async def enable(app: App, args: argparse.Namespace) -> str:
    tenant = await _tenant_of(app, args.account, args.tenant)
    values: dict[str, Any] = {n: getattr(args, n, None) for n in _SETTABLE}
    values = {k: v for k, v in values.items() if v is not None}
    for name in ("daily_start", "daily_increment", "daily_max"):
        if name in values and values[name] < 0:
            raise CliError(f"--{name.replace('_', '-')} must be 0 or more")
    if "reply_rate" in values and not 0 <= values["reply_rate"] <= 1:
        raise CliError("--reply-rate must be between 0 and 1")
    if "time_zone" in values:
        try:
            ZoneInfo(values["time_zone"])
        except (ZoneInfoNotFoundError, ValueError):
            raise CliError(f"--time-zone {values['time_zone']!r} is not a known zone") from None
    window = _window(args.window)
    if window is not None:
        values["window_start_hour"], values["window_end_hour"] = window
    names = list(values)
    cols = ", ".join(["id", "tenant_id", "email_account_id", *names])
    params = ", ".join(f"${i}" for i in range(1, len(names) + 4))
    sets = "".join(f", {n} = EXCLUDED.{n}" for n in names)
    await app.db.execute(
        f"INSERT INTO warmup_configs ({cols}) VALUES ({params}) "  # noqa: S608 - fixed names
        "ON CONFLICT (tenant_id, email_account_id) DO UPDATE SET enabled = true, "
        f"paused_at = NULL, paused_reason = NULL, updated_at = now(){sets}",
        "wc_" + secrets.token_hex(8),
        tenant,
        args.account,
        *values.values(),
    )
    return tenant


async def disable(app: App, args: argparse.Namespace) -> bool:
    tenant = await _tenant_of(app, args.account, args.tenant)
    result: str = await app.db.execute(
        "UPDATE warmup_configs SET enabled = false, updated_at = now() "
        "WHERE tenant_id = $1 AND email_account_id = $2",
        tenant,
        args.account,
    )
    return not result.endswith(" 0")


async def status(app: App, tenant: str | None, now: dt.datetime) -> list[dict[str, Any]]:
    """One object per warmup account (the ``status --json`` shape)."""
    out = []
    limit = app.settings.delivery_account_per_day or None
    for cfg in await store.configs(app.db, tenant):
        day = cfg.window.local_day(now)
        figures = await store.day_figures(app.db, cfg.tenant_id, cfg.account_id, day)
        inbox, judged = await store.placement(
            app.db, cfg.tenant_id, cfg.account_id, day - dt.timedelta(days=6)
        )
        out.append(
            {
                "account": cfg.account_id,
                "tenant": cfg.tenant_id,
                "address": cfg.address,
                "state": "paused" if cfg.paused_at else ("enabled" if cfg.enabled else "disabled"),
                "day": plan.day_index(cfg.ramp, day),
                "quota_today": plan.quota(cfg.ramp, day, limit),
                "sent_today": figures.sent,
                "inbox": figures.inbox,
                "spam": figures.spam,
                "other": figures.other,
                "missing": figures.missing,
                "moved_to_inbox": figures.moved_to_inbox,
                "replied": figures.replied,
                "placement_pct_7d": round(100.0 * inbox / judged, 1) if judged else None,
            }
        )
    return out


def cmd_enable(args: argparse.Namespace) -> int:
    async def work(app: App) -> int:
        tenant = await enable(app, args)
        print(f"warmup enabled for {args.account} (tenant {tenant})")
        return 0

    return run_with_app(settings_from_args(args), work)


def cmd_disable(args: argparse.Namespace) -> int:
    async def work(app: App) -> int:
        if not await disable(app, args):
            raise CliError(f"account {args.account} has no warmup (enable it first)")
        print(f"warmup disabled for {args.account}")
        return 0

    return run_with_app(settings_from_args(args), work)


def cmd_status(args: argparse.Namespace) -> int:
    async def work(app: App) -> int:
        rows = await status(app, args.tenant, dt.datetime.now(dt.UTC))
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        if not rows:
            print("no warmup accounts (enable one: mailgate warmup enable ACCOUNT_ID)")
        for r in rows:
            pct = "-" if r["placement_pct_7d"] is None else f"{r['placement_pct_7d']}%"
            print(
                f"{r['account']:<22} {r['state']:<8} day {r['day']:<3} "
                f"quota {r['quota_today']:<4} sent {r['sent_today']:<4} inbox {r['inbox']:<4} "
                f"spam {r['spam']:<4} moved {r['moved_to_inbox']:<4} replied {r['replied']:<4} "
                f"placement 7d {pct}"
            )
        return 0

    return run_with_app(settings_from_args(args), work)


def cmd_tick(args: argparse.Namespace) -> int:
    async def work(app: App) -> int:
        result = await tick(app, all_now=args.now_all, tenant_id=args.tenant)
        print(f"planned {result.total} warmup sends ({len(result.planned)} accounts)"
              + (f", requeued {result.requeued}" if result.requeued else ""))  # fmt: skip
        return 0

    return run_with_app(settings_from_args(args), work)


def register(subparsers: Any) -> None:
    warmup = subparsers.add_parser("warmup", help="mailbox warmup: enable, disable, status, tick")
    sub = warmup.add_subparsers(dest="warmup_command", metavar="ACTION", required=True)
    p = sub.add_parser("enable", help="start (or change) an account's warmup")
    p.add_argument("account", metavar="ACCOUNT_ID")
    p.add_argument("--tenant", help="the account's tenant (checked when given)")
    p.add_argument("--daily-start", type=int, help="sends on day 0 (default 5)")
    p.add_argument("--daily-increment", type=int, help="more sends each day (default 2)")
    p.add_argument("--daily-max", type=int, help="at most this many a day (default 50)")
    p.add_argument("--reply-rate", type=float, help="share of received mail answered (0.3)")
    p.add_argument("--pool", choices=("tenant", "network"), help="who it writes to")
    p.add_argument(
        "--weekdays-only", action=argparse.BooleanOptionalAction, help="no sends on weekends"
    )
    p.add_argument("--window", help="sending window, whole hours START-END (default 8-18)")
    p.add_argument("--time-zone", help="the account's time zone (default UTC)")
    p.add_argument("--started-on", type=dt.date.fromisoformat, help="day 0 (YYYY-MM-DD)")
    p.set_defaults(handler=cmd_enable)
    p = sub.add_parser("disable", help="stop an account's warmup")
    p.add_argument("account", metavar="ACCOUNT_ID")
    p.add_argument("--tenant", help="the account's tenant (checked when given)")
    p.set_defaults(handler=cmd_disable)
    p = sub.add_parser("status", help="each warmup account: quota, sends, placement")
    p.add_argument("--tenant", help="only this tenant's accounts")
    p.add_argument("--json", action="store_true", help="a JSON list of objects")
    p.set_defaults(handler=cmd_status)
    p = sub.add_parser("tick", help="plan and queue every warmup step due now")
    p.add_argument("--tenant", help="only this tenant's accounts")
    p.add_argument("--now-all", action="store_true", help="today's whole remaining quota now")
    p.set_defaults(handler=cmd_tick)
