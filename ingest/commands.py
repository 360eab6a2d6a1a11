"""``mailgate accounts add|update|list|remove|test``: the mailboxes ingest watches and
the SMTP endpoints delivery sends through.

Passwords come from an environment variable (``--password-env``, ``--smtp-password-env``)
or a file (``--password-file``, ``--smtp-password-file``), never from the command line (it
would show in ``ps`` and shell history); they are sealed at rest and never printed.
``accounts test`` logs in, prints the capabilities and folders, and exits 1 with the
server's answer when something fails.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from gateway.app import App
from gateway.cli import run_with_app, settings_from_args
from gateway.errors import CliError
from gateway.guardcmds import add_resume
from gateway.secretkey import CredentialBox
from ingest.accounts import (
    SECURITIES,
    add_account,
    get_account,
    remove_account,
    summaries,
    update_account,
)
from ingest.errors import AccountError, DuplicateAccount, ImapError
from ingest.imap import ImapSession


def _out(text: str) -> None:
    print(text)


def _no_such(args: argparse.Namespace) -> str:
    return (
        f"tenant {args.tenant} has no mailbox {args.account!r} "
        "(`mailgate accounts list` shows them)"
    )


def _secret(env: str | None, file: str | None, what: str) -> str | None:
    """A password from $ENV or a file (None when neither option was given)."""
    if env:
        value = os.environ.get(env)
        if value is None:
            raise AccountError(f"environment variable {env} is not set (it should hold the {what})")
        return value
    if file:
        try:
            return Path(file).read_text().rstrip("\r\n")
        except OSError as exc:
            raise AccountError(f"cannot read the {what} file {file}: {exc.strerror}") from None
    return None


def _smtp_changes(args: argparse.Namespace) -> dict[str, object]:
    """The SMTP options given on the command line, as account columns."""
    changes: dict[str, object] = {}
    for name in ("smtp_host", "smtp_port", "smtp_security", "smtp_username"):
        value = getattr(args, name)
        if value is not None:
            changes[name] = value
    password = _secret(args.smtp_password_env, args.smtp_password_file, "SMTP password")
    if password is not None:
        changes["smtp_password"] = password
    return changes


def cmd_add(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    try:
        password = _secret(args.password_env, args.password_file, "IMAP password")
        smtp_password = _secret(args.smtp_password_env, args.smtp_password_file, "SMTP password")
    except AccountError as exc:
        raise CliError(str(exc)) from None
    if args.imap_host and password is None:
        raise CliError("an IMAP account needs --password-env VAR or --password-file FILE")

    async def work(app: App) -> int:
        try:
            await add_account(
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
                smtp_host=args.smtp_host,
                smtp_port=args.smtp_port,
                smtp_security=args.smtp_security,
                smtp_username=args.smtp_username or (args.address if smtp_password else None),
                smtp_password=smtp_password,
            )
        except AccountError as exc:
            code = 1 if isinstance(exc, DuplicateAccount) else 2
            raise CliError(str(exc), exit_code=code) from None
        found = await summaries(app.db, args.tenant)
        _out(next(a.id for a in found if a.address.lower() == args.address.lower()))
        return 0

    return run_with_app(settings, work)


def cmd_update(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    try:
        changes = _smtp_changes(args)
        password = _secret(args.password_env, args.password_file, "IMAP password")
    except AccountError as exc:
        raise CliError(str(exc)) from None
    for option, column in (
        ("imap_host", "imap_host"),
        ("imap_port", "imap_port"),
        ("imap_security", "imap_security"),
        ("username", "imap_username"),
        ("master_user", "imap_master_user"),
    ):
        value = getattr(args, option)
        if value is not None:
            changes[column] = value
    if password is not None:
        changes["imap_password"] = password
    if args.folders is not None:
        changes["folders"] = args.folders.split(",")
    if args.enabled is not None:
        changes["enabled"] = args.enabled

    async def work(app: App) -> int:
        try:
            found = await update_account(
                app.db, CredentialBox(app.secret_key), args.tenant, args.account, changes
            )
        except AccountError as exc:
            raise CliError(str(exc)) from None
        if found is None:
            raise CliError(_no_such(args), exit_code=1)
        _out(f"updated {found}: {', '.join(sorted(changes))}")
        return 0

    return run_with_app(settings, work)


def cmd_list(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)

    async def work(app: App) -> int:
        accounts = await summaries(app.db, args.tenant)
        if not accounts:
            _out("no mailboxes" + (f" for tenant {args.tenant}" if args.tenant else "")
                 + " (add one with `mailgate accounts add`)")  # fmt: skip
            return 0
        _out(f"{'id':<22} {'tenant':<14} {'address':<30} {'imap':<28} {'smtp':<28} folders")
        for a in accounts:
            smtp = a.smtp or "(relay)"
            imap = a.imap or "-"
            state = "" if a.enabled else "  (disabled)"
            _out(
                f"{a.id:<22} {a.tenant_id:<14} {a.address:<30} {imap:<28} {smtp:<28} "
                f"{','.join(a.folders)}{state}"
            )
        return 0

    return run_with_app(settings, work)


def cmd_remove(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)

    async def work(app: App) -> int:
        if await remove_account(app.db, args.tenant, args.account):
            _out(f"removed {args.account}")
            return 0
        raise CliError(_no_such(args), exit_code=1)

    return run_with_app(settings, work)


def cmd_test(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)

    async def work(app: App) -> int:
        account = await get_account(app.db, args.tenant, args.account)
        if account is None:
            raise CliError(_no_such(args), exit_code=1)
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


def _smtp_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("SMTP endpoint (what delivery sends through; else the relay)")
    g.add_argument("--smtp-host", help="submission server host")
    g.add_argument("--smtp-port", type=int, help="port (default: 587, or 465 with tls)")
    g.add_argument("--smtp-security", choices=SECURITIES, help="default: starttls")
    g.add_argument("--smtp-username", help="AUTH user (default: the address)")
    secret = g.add_mutually_exclusive_group()
    secret.add_argument("--smtp-password-env", metavar="VAR", help="AUTH password from $VAR")
    secret.add_argument("--smtp-password-file", metavar="FILE", help="AUTH password from FILE")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    accounts = subparsers.add_parser(
        "accounts", help="mailboxes: IMAP that ingest watches, SMTP that delivery sends through"
    )
    sub = accounts.add_subparsers(dest="accounts_command", metavar="ACTION", required=True)

    p = sub.add_parser(
        "add",
        help="add an account: IMAP (--imap-host), SMTP (--smtp-host), or both",
        description="Add an account. Passwords come from --*-password-env or --*-password-file.",
    )
    p.add_argument("--tenant", required=True)
    p.add_argument("--address", required=True)
    g = p.add_argument_group("IMAP endpoint (what ingest watches)")
    g.add_argument("--imap-host")
    g.add_argument("--imap-port", type=int, default=993)
    g.add_argument("--imap-security", choices=SECURITIES, default="tls")
    g.add_argument("--username", help="login name (default: the address)")
    secret = g.add_mutually_exclusive_group()
    secret.add_argument("--password-env", metavar="VAR", help="read the password from $VAR")
    secret.add_argument("--password-file", metavar="FILE", help="read the password from FILE")
    g.add_argument(
        "--master-user",
        help="Dovecot master user: log in as USER*MASTER with the master's password",
    )
    g.add_argument("--folders", default="INBOX", help="comma-separated folders (default INBOX)")
    _smtp_options(p)
    p.set_defaults(handler=cmd_add)

    p = sub.add_parser("update", help="change an account's IMAP or SMTP settings")
    p.add_argument("--tenant", required=True)
    p.add_argument("account", help="account id or address")
    g = p.add_argument_group("IMAP endpoint")
    g.add_argument("--imap-host")
    g.add_argument("--imap-port", type=int)
    g.add_argument("--imap-security", choices=SECURITIES)
    g.add_argument("--username", help="login name")
    secret = g.add_mutually_exclusive_group()
    secret.add_argument("--password-env", metavar="VAR", help="read the password from $VAR")
    secret.add_argument("--password-file", metavar="FILE", help="read the password from FILE")
    g.add_argument("--master-user")
    g.add_argument("--folders", help="comma-separated folders")
    _smtp_options(p)
    state = p.add_mutually_exclusive_group()
    state.add_argument("--enable", dest="enabled", action="store_true", default=None)
    state.add_argument("--disable", dest="enabled", action="store_false")
    p.set_defaults(handler=cmd_update)

    p = sub.add_parser("list", help="list accounts with both endpoints (never the secrets)")
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

    # Deliverability guards (gateway.guards): resume an account a guard paused.
    add_resume(sub, "account")
