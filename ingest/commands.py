"""``mailgate accounts add|list|remove|test``: the mailboxes ingest watches.

The password comes from an environment variable (``--password-env``) or a file
(``--password-file``), never from the command line (it would show in ``ps`` and shell
history), and is never printed. ``accounts test`` logs in, prints the capabilities and
folders, and exits 1 with the server's answer when something fails.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from gateway.app import App
from gateway.cli import run_with_app, settings_from_args
from gateway.secretkey import CredentialBox
from ingest.accounts import SECURITIES, add_account, get_account, list_accounts, remove_account
from ingest.errors import AccountError, ImapError
from ingest.imap import ImapSession


def _out(text: str) -> None:
    print(text)


def _password(args: argparse.Namespace) -> str:
    if args.password_env:
        value = os.environ.get(args.password_env)
        if value is None:
            raise AccountError(f"environment variable {args.password_env} is not set")
        return value
    try:
        return Path(args.password_file).read_text().rstrip("\r\n")
    except OSError as exc:
        raise AccountError(f"cannot read the password file: {exc.strerror}") from None


def cmd_add(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    try:
        password = _password(args)
    except AccountError as exc:
        _out(f"mailgate: {exc}")
        return 2

    async def work(app: App) -> int:
        try:
            account = await add_account(
                app.db,
                CredentialBox(app.secret_key),
                tenant_id=args.tenant,
                address=args.address,
                imap_host=args.imap_host,
                imap_port=args.imap_port,
                imap_security=args.imap_security,
                username=args.username or args.address,
                password=password,
                master_user=args.master_user,
                folders=tuple(f for f in args.folders.split(",")),
            )
        except AccountError as exc:
            _out(f"mailgate: {exc}")
            return 1
        _out(account.id)
        return 0

    return run_with_app(settings, work)


def cmd_list(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)

    async def work(app: App) -> int:
        accounts = await list_accounts(app.db, args.tenant)
        _out(f"{'id':<22} {'tenant':<16} {'address':<32} {'imap':<28} folders")
        for a in accounts:
            login = f"{a.imap_host}:{a.imap_port}/{a.imap_security}"
            _out(f"{a.id:<22} {a.tenant_id:<16} {a.address:<32} {login:<28} {','.join(a.folders)}")
        return 0

    return run_with_app(settings, work)


def cmd_remove(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)

    async def work(app: App) -> int:
        if await remove_account(app.db, args.tenant, args.account):
            _out(f"removed {args.account}")
            return 0
        _out(f"mailgate: tenant {args.tenant} has no mailbox {args.account!r}")
        return 1

    return run_with_app(settings, work)


def cmd_test(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)

    async def work(app: App) -> int:
        account = await get_account(app.db, args.tenant, args.account)
        if account is None:
            _out(f"mailgate: tenant {args.tenant} has no mailbox {args.account!r}")
            return 1
        try:
            endpoint = account.endpoint(CredentialBox(app.secret_key))
            session = await ImapSession.open(
                endpoint,
                connect_timeout_s=settings.ingest_connect_timeout_s,
                command_timeout_s=settings.ingest_command_timeout_s,
            )
        except (ImapError, AccountError) as exc:
            server = getattr(exc, "server_text", None)
            _out(f"FAILED: {exc}" + (f"\nserver said: {server}" if server else ""))
            return 1
        try:
            _out(f"login OK as {endpoint.login_name} at {endpoint.host}:{endpoint.port}")
            _out("capabilities: " + " ".join(sorted(session.capabilities)))
            folders = await session.list_folders()
            _out("folders: " + ", ".join(folders))
            missing = [f for f in account.folders if f not in folders]
            if missing:
                _out(f"FAILED: watched folders missing on the server: {', '.join(missing)}")
                return 1
        except ImapError as exc:
            _out(
                f"FAILED: {exc}" + (f"\nserver said: {exc.server_text}" if exc.server_text else "")
            )
            return 1
        finally:
            await session.logout()
        return 0

    return run_with_app(settings, work)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    accounts = subparsers.add_parser("accounts", help="mailboxes IMAP ingest watches")
    sub = accounts.add_subparsers(dest="accounts_command", metavar="ACTION", required=True)

    p = sub.add_parser("add", help="add a mailbox (password from --password-env/--password-file)")
    p.add_argument("--tenant", required=True)
    p.add_argument("--address", required=True)
    p.add_argument("--imap-host", required=True)
    p.add_argument("--imap-port", type=int, default=993)
    p.add_argument("--imap-security", choices=SECURITIES, default="tls")
    p.add_argument("--username", help="login name (default: the address)")
    secret = p.add_mutually_exclusive_group(required=True)
    secret.add_argument("--password-env", metavar="VAR", help="read the password from $VAR")
    secret.add_argument("--password-file", metavar="FILE", help="read the password from FILE")
    p.add_argument(
        "--master-user",
        help="Dovecot master user: log in as USER*MASTER with the master's password",
    )
    p.add_argument("--folders", default="INBOX", help="comma-separated folders (default INBOX)")
    p.set_defaults(handler=cmd_add)

    p = sub.add_parser("list", help="list mailboxes")
    p.add_argument("--tenant", help="only this tenant's")
    p.set_defaults(handler=cmd_list)

    p = sub.add_parser("remove", help="remove a mailbox (its stored mail stays)")
    p.add_argument("--tenant", required=True)
    p.add_argument("account", help="account id or address")
    p.set_defaults(handler=cmd_remove)

    p = sub.add_parser("test", help="log in, list capabilities and folders")
    p.add_argument("--tenant", required=True)
    p.add_argument("account", help="account id or address")
    p.set_defaults(handler=cmd_test)
