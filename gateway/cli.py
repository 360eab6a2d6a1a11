"""The ``mailgate`` command line.

``mailgate run`` runs the daemon; ``check-config`` prints the effective settings (secrets
masked) or names the bad one and exits 2; ``migrate`` applies the schema. Other packages add
commands through entry points of group ``mailgate.commands``: each is a function
``register(subparsers)`` that adds a subparser and sets ``handler=fn(args) -> int`` on it.

Commands that need the database or Redis reach the configured servers or, when a URL is
unset, the embedded ones (the same servers ``mailgate run`` uses: started for the command
and stopped after it unless a running daemon owns them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from importlib.metadata import entry_points
from typing import Any, TypeVar

from gateway.logs import setup_logging
from gateway.settings import Settings, SettingsError, load_settings

COMMANDS_GROUP = "mailgate.commands"
EXIT_CONFIG = 2

T = TypeVar("T")
log = logging.getLogger("mailgate")


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Load settings for a command; exits 2 with the offending setting named."""
    try:
        settings = load_settings(getattr(args, "config", None))
    except SettingsError as exc:
        print(f"mailgate: invalid configuration: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None
    setup_logging(settings.log_level, settings.log_format)
    return settings


def run_with_app(settings: Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``work(app)`` with the pools open (embedded servers started if needed)."""
    from gateway.app import open_app, open_urls

    async def main() -> T:
        async with open_urls(settings) as urls, open_app(settings, urls) as app:
            return await work(app)

    return asyncio.run(main())


# -- built-in commands ----------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from gateway.daemon import Daemon

    settings = settings_from_args(args)
    # The standard loop: uvloop was measured here (bench/delivery.py) and gave no gain.
    return asyncio.run(Daemon(settings).run())


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(getattr(args, "config", None))
    except SettingsError as exc:
        print(f"mailgate: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(json.dumps(settings.masked(), indent=2, default=str))
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from gateway.app import open_urls
    from gateway.storage import connect, migrate, schema_version

    settings = settings_from_args(args)

    async def main() -> int:
        async with open_urls(settings) as urls:
            conn = await connect(urls.database, timeout_s=settings.db_connect_timeout_s)
            try:
                applied = await migrate(conn)
                current = await schema_version(conn)
            finally:
                await conn.close()
        if applied:
            names = ", ".join(f"{m.version:04d}_{m.name}" for m in applied)
            print(f"applied {len(applied)} migration(s): {names}; schema version {current}")
        else:
            print(f"schema up to date (version {current})")
        return 0

    return asyncio.run(main())


# -- parser -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mailgate",
        description="Mail edge daemon: IMAP ingest, bounce listener, SMTP delivery, job runtime.",
    )
    parser.add_argument(
        "--config", metavar="FILE", help="TOML settings file (default: $MAILGATE_CONFIG)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("run", help="run the daemon (embedded PostgreSQL/Redis when unset)")
    p.set_defaults(handler=cmd_run)
    p = sub.add_parser("check-config", help="print the effective settings, secrets masked")
    p.set_defaults(handler=cmd_check_config)
    p = sub.add_parser("migrate", help="apply pending database migrations")
    p.set_defaults(handler=cmd_migrate)

    for ep in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        register = ep.load()
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
