"""``mailgate send``: one message from an account to an address, for operators (like swaks).

From a template (``--template ID --var name=value ...``) or from flags (``--subject``,
``--text``, ``--html``). It goes through the same composer, DKIM keys and SMTP route as a
campaign send, but not through the queue, the rate limits or the delivery table (it is a
test tool, not a campaign), and prints each server reply. Exit 0 on 2xx, 1 otherwise.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from typing import Any

from delivery.compose import Envelope, check_address, compose, domain_of, message_id_for
from delivery.dkimsign import sign_message
from delivery.errors import DeliveryError
from delivery.render import Rendered, Renderer
from delivery.service import SENDER
from gateway.app import App
from gateway.cli import run_with_app, settings_from_args
from gateway.errors import CliError
from gateway.services import Services


def _variables(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise CliError(f"--var needs name=value, got {item!r}")
        out[name] = value
    return out


async def send_one(app: App, args: argparse.Namespace) -> int:
    services = Services(app)
    sender = services.get(SENDER)
    try:
        account = await sender.contexts.account(args.tenant, args.account)
        to = check_address(args.to, "--to")
        variables: dict[str, Any] = {"email": to, **_variables(args.var or [])}
        if args.template:
            template = await sender.contexts.template(args.tenant, args.template)
            content = sender.renderer.render(
                template.subject, template.html, template.text, variables
            )
        else:
            if not (args.text or args.html):
                raise CliError("give --template ID, or --text and/or --html")
            content = Rendered(args.subject or "mailgate test", args.html, args.text)
        from_email = args.from_addr or account.address
        domain = domain_of(from_email)
        op_id = "op" + secrets.token_hex(8)
        envelope = Envelope(
            from_email=from_email,
            from_name=None,
            to_email=to,
            to_name=None,
            reply_to=None,
            return_path=from_email,
            message_id=message_id_for(op_id, domain),
            unsubscribe_mailto=f"unsubscribe@{domain}",
            unsubscribe_url=f"https://{domain}/unsubscribe/{op_id}",
        )
        message = compose(envelope, content, date=time.time())
        keys = await sender.keys_for(args.tenant, domain)
        if keys:
            message = sign_message(message, keys)
        endpoint = sender.endpoint_for(account)
        print(f"=== {endpoint}  {from_email} -> {to}  ({len(message)} bytes, {len(keys)} DKIM)")
        reply = await sender.pool.send(endpoint, from_email, to, message)
    except DeliveryError as exc:
        print(f"mailgate: {exc}", file=sys.stderr)
        return 1
    finally:
        await services.aclose()
    print(f"<~  {reply}")
    return 0 if 200 <= reply.code < 300 else 1


def cmd_send(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)

    async def work(app: App) -> int:
        return await send_one(app, args)

    return run_with_app(settings, work)


def cmd_templates_add(args: argparse.Namespace) -> int:
    if not (args.text or args.html):
        raise CliError("a template needs --text and/or --html")
    settings = settings_from_args(args)

    async def work(app: App) -> int:
        # Parsed now, so a syntax error is reported here and not at the first send.
        try:
            Renderer().check(args.subject or "", args.html, args.text)
        except DeliveryError as exc:
            raise CliError(str(exc)) from None
        await app.db.execute(
            "INSERT INTO email_templates (id, tenant_id, name, subject, html, text) "
            "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO UPDATE SET "
            "name = EXCLUDED.name, subject = EXCLUDED.subject, html = EXCLUDED.html, "
            "text = EXCLUDED.text, updated_at = now() "
            "WHERE email_templates.tenant_id = EXCLUDED.tenant_id",
            args.id,
            args.tenant,
            args.name or args.id,
            args.subject or "",
            args.html,
            args.text,
        )
        owner = await app.db.fetchval("SELECT tenant_id FROM email_templates WHERE id=$1", args.id)
        if owner != args.tenant:
            raise CliError(f"template id {args.id!r} belongs to another tenant (pick another id)")
        print(args.id)
        return 0

    return run_with_app(settings, work)


def cmd_templates_list(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)

    async def work(app: App) -> int:
        rows = await app.db.fetch(
            "SELECT id, subject, updated_at FROM email_templates WHERE tenant_id = $1 ORDER BY id",
            args.tenant,
        )
        if not rows:
            print(f"no templates for tenant {args.tenant} (add one with `mailgate templates add`)")
        for r in rows:
            print(f"{r['id']:<30} {r['updated_at']:%Y-%m-%d %H:%M}  {r['subject']}")
        return 0

    return run_with_app(settings, work)


def register_templates(subparsers: Any) -> None:
    templates = subparsers.add_parser("templates", help="email templates campaigns send")
    sub = templates.add_subparsers(dest="templates_command", metavar="ACTION", required=True)
    p = sub.add_parser("add", help="add or replace a template (Jinja: {{ name }}, {{ email }})")
    p.add_argument("--tenant", required=True)
    p.add_argument("--id", required=True, help="template id (email.send's template_id)")
    p.add_argument("--name", help="a label (default: the id)")
    p.add_argument("--subject", help="subject line (may use variables)")
    p.add_argument("--text", help="text body")
    p.add_argument("--html", help="HTML body")
    p.set_defaults(handler=cmd_templates_add)
    p = sub.add_parser("list", help="a tenant's templates")
    p.add_argument("--tenant", required=True)
    p.set_defaults(handler=cmd_templates_list)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("send", help="send one message from an account (like swaks)")
    p.add_argument("--tenant", required=True, help="tenant id of the account")
    p.add_argument("--account", required=True, help="email_accounts.id that sends")
    p.add_argument("--to", required=True, help="recipient address")
    p.add_argument("--from", dest="from_addr", help="From address (default: the account's)")
    p.add_argument("--template", help="email_templates.id to render")
    p.add_argument("--var", action="append", metavar="NAME=VALUE", help="template variable")
    p.add_argument("--subject", help="subject (without --template)")
    p.add_argument("--text", help="text body (without --template)")
    p.add_argument("--html", help="HTML body (without --template)")
    p.set_defaults(handler=cmd_send)
