"""``mailgate webhooks add|list|remove|test|replay|rotate|enable``: a tenant's endpoints.

``add`` prints the endpoint id and its ``whsec_`` secret (generated, or read from
``--secret-file``): the secret is shown this once and stored sealed. ``rotate`` adds a new
secret in front (both sign until ``--drop-old``). ``test`` sends a signed test event to
the endpoint now (not through the queue) and prints the answer. ``replay --since TIME``
queues the tenant's events from that time again, to every endpoint that wants them, with
their original ``webhook-id`` (receivers deduplicate).
"""

from __future__ import annotations

import argparse
import datetime as dt
import secrets
from pathlib import Path
from typing import Any

from gateway.app import App
from gateway.cli import run_with_app, settings_from_args
from gateway.errors import CliError
from gateway.jobs.contracts import WEBHOOK, WebhookPayload, encode_job
from gateway.secretkey import CredentialBox
from gateway.services import Services
from webhooks import EndpointRefused, SecretError, signing
from webhooks.sender import SENDER, body_of
from webhooks.ssrf import check_url
from webhooks.store import EndpointStore, parse_event_types


def _store(app: App) -> EndpointStore:
    return EndpointStore(app.db, CredentialBox(app.secret_key))


def _secret(path: str | None) -> str:
    if not path:
        return signing.new_secret()
    try:
        text = Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read the secret file {path}: {exc} (check --secret-file)") from None
    if not text.startswith(signing.PREFIX):
        text = signing.PREFIX + text
    try:
        signing.secret_key(text)
    except SecretError as exc:
        raise CliError(f"{path}: {exc} (put one whsec_... secret in the file)") from None
    return text


def cmd_add(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    try:
        types = parse_event_types(args.events)
        check_url(args.url, allow_private=settings.webhook_allow_private)
    except (ValueError, EndpointRefused) as exc:
        raise CliError(str(exc)) from None
    secret = _secret(args.secret_file)

    async def work(app: App) -> int:
        endpoint = await _store(app).add(
            args.tenant, args.url, types, secret, concurrency=args.concurrency
        )
        print(f"endpoint {endpoint.id}")
        print(f"secret   {secret}")
        print("(the secret is shown this once: keep it where the receiver verifies signatures)")
        return 0

    return run_with_app(settings, work)


def cmd_list(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)

    async def work(app: App) -> int:
        endpoints = await _store(app).list(args.tenant)
        if not endpoints:
            print(f"no webhook endpoints for tenant {args.tenant} (add one: mailgate webhooks add)")
        for e in endpoints:
            state = "enabled" if e.enabled else f"disabled: {e.disabled_reason or '-'}"
            print(
                f"{e.id:<20} {e.url}  events={','.join(e.event_types)}  "
                f"secrets={len(e.secrets)}  concurrency={e.concurrency}  {state}"
            )
        return 0

    return run_with_app(settings, work)


def cmd_remove(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)

    async def work(app: App) -> int:
        if not await _store(app).remove(args.tenant, args.endpoint):
            raise CliError(_no_such(args), exit_code=1)
        print(f"removed {args.endpoint}")
        return 0

    return run_with_app(settings, work)


def cmd_enable(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)

    async def work(app: App) -> int:
        if not await _store(app).enable(args.tenant, args.endpoint):
            raise CliError(_no_such(args), exit_code=1)
        print(f"enabled {args.endpoint}")
        return 0

    return run_with_app(settings, work)


def cmd_rotate(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    secret = _secret(args.secret_file)

    async def work(app: App) -> int:
        keep = 1 if args.drop_old else 3
        if not await _store(app).add_secret(args.tenant, args.endpoint, secret, keep=keep):
            raise CliError(_no_such(args), exit_code=1)
        print(f"secret   {secret}")
        print("older secrets dropped" if args.drop_old else "older secrets still sign (at most 3)")
        return 0

    return run_with_app(settings, work)


def cmd_test(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)

    async def work(app: App) -> int:
        services = Services(app)
        try:
            sender = services.get(SENDER)
            endpoint = await sender.store.get(args.tenant, args.endpoint)
            if endpoint is None:
                raise CliError(_no_such(args), exit_code=1)
            now = dt.datetime.now(dt.UTC)
            msg_id = "msg_test_" + secrets.token_hex(6)
            body = body_of("webhook.test", now, {"endpoint_id": endpoint.id, "test": True})
            attempt = await sender.post(endpoint, msg_id, body)
        finally:
            await services.aclose()
        if attempt.code is None:
            print(f"no answer from {endpoint.url}: {attempt.error} ({attempt.latency_ms:.0f} ms)")
            return 1
        print(f"HTTP {attempt.code} from {endpoint.url} in {attempt.latency_ms:.0f} ms")
        if attempt.body:
            print(attempt.body[:500])
        return 0 if attempt.ok else 1

    return run_with_app(settings, work)


async def replay(app: App, tenant: str, since: dt.datetime, endpoint_id: str | None) -> int:
    """Queue the tenant's events since ``since`` again to the endpoints that want them;
    returns the jobs queued."""
    rows = await app.db.fetch(
        """
        SELECT e.id AS event_id, w.id AS endpoint_id FROM events e
        JOIN webhook_endpoints w ON w.tenant_id = e.tenant_id AND w.enabled
            AND ('*' = ANY(w.event_types) OR e.type = ANY(w.event_types))
            AND ($3::text IS NULL OR w.id = $3)
        WHERE e.tenant_id = $1 AND e.created_at >= $2 ORDER BY e.id, w.id
        """,
        tenant,
        since,
        endpoint_id,
    )
    if not rows:
        return 0
    stamp = secrets.token_hex(4)
    await app.db.execute(
        """
        INSERT INTO webhook_deliveries (tenant_id, event_id, endpoint_id)
        SELECT $1, * FROM unnest($2::bigint[], $3::text[])
        ON CONFLICT (event_id, endpoint_id) DO UPDATE SET status = 'pending'
        """,
        tenant,
        [r["event_id"] for r in rows],
        [r["endpoint_id"] for r in rows],
    )
    schedule = app.settings.webhook_retry_schedule_s.split(",")
    jobs = [
        encode_job(
            WEBHOOK,
            WebhookPayload(
                tenant_id=tenant, endpoint_id=r["endpoint_id"], event_id=str(r["event_id"])
            ),
            id=f"wh-{r['event_id']}-{r['endpoint_id']}-replay-{stamp}",
            max_attempts=len(schedule),
        )
        for r in rows
    ]
    await app.redis.lpush(WEBHOOK, *jobs)
    return len(jobs)


def _since(text: str) -> dt.datetime:
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CliError(f"--since {text!r} is not an ISO time (e.g. 2026-12-06T10:00Z)") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def cmd_replay(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    since = _since(args.since)

    async def work(app: App) -> int:
        queued = await replay(app, args.tenant, since, args.endpoint)
        print(f"queued {queued} webhook deliveries of events since {since.isoformat()}")
        return 0

    return run_with_app(settings, work)


def _no_such(args: argparse.Namespace) -> str:
    return (
        f"tenant {args.tenant} has no webhook endpoint {args.endpoint} "
        "(`mailgate webhooks list --tenant T` shows them)"
    )


def register(subparsers: Any) -> None:
    hooks = subparsers.add_parser("webhooks", help="webhook endpoints (Standard Webhooks)")
    sub = hooks.add_subparsers(dest="webhooks_command", metavar="ACTION", required=True)
    p = sub.add_parser("add", help="add an endpoint; prints its whsec_ secret once")
    p.add_argument("--tenant", required=True)
    p.add_argument("--url", required=True, help="https:// URL the events are POSTed to")
    p.add_argument("--events", required=True, help="event types, comma-separated (* for all)")
    p.add_argument("--secret-file", help="file holding the whsec_ secret (default: generate)")
    p.add_argument("--concurrency", type=int, default=4, choices=range(1, 65), metavar="1-64")
    p.set_defaults(handler=cmd_add)
    p = sub.add_parser("list", help="a tenant's endpoints (never the secrets)")
    p.add_argument("--tenant", required=True)
    p.set_defaults(handler=cmd_list)
    for name, fn, text in (
        ("remove", cmd_remove, "remove an endpoint"),
        ("enable", cmd_enable, "enable a disabled endpoint again"),
        ("test", cmd_test, "send a signed test event now and print the answer"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--tenant", required=True)
        p.add_argument("endpoint", help="endpoint id (webhooks list)")
        p.set_defaults(handler=fn)
    p = sub.add_parser("rotate", help="add a new secret (old ones still sign until --drop-old)")
    p.add_argument("--tenant", required=True)
    p.add_argument("endpoint")
    p.add_argument("--secret-file", help="file holding the new whsec_ secret (default: generate)")
    p.add_argument("--drop-old", action="store_true", help="keep only the new secret")
    p.set_defaults(handler=cmd_rotate)
    p = sub.add_parser("replay", help="re-send a tenant's events from a given time")
    p.add_argument("--tenant", required=True)
    p.add_argument("--since", required=True, help="ISO time, e.g. 2026-12-06T10:00Z")
    p.add_argument("--endpoint", help="only this endpoint")
    p.set_defaults(handler=cmd_replay)
