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
from delivery.render import Rendered
from delivery.service import Sender
from gateway.app import App
from gateway.cli import run_with_app, settings_from_args


def _variables(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"mailgate send: --var needs name=value, got {item!r}")
        out[name] = value
    return out


async def send_one(app: App, args: argparse.Namespace) -> int:
    sender = Sender(app)
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
                print("mailgate send: give --template, or --text and/or --html", file=sys.stderr)
                return 2
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
        print(f"*** {exc}", file=sys.stderr)
        return 1
    finally:
        await sender.aclose()
    print(f"<~  {reply}")
    return 0 if 200 <= reply.code < 300 else 1


def cmd_send(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)

    async def work(app: App) -> int:
        return await send_one(app, args)

    return run_with_app(settings, work)


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
