"""The ``mailgate`` command line.

``mailgate run`` runs the daemon; ``check-config`` prints the effective settings (secrets
masked) or names the bad one and exits 2; ``migrate`` applies the schema. Other packages add
commands through entry points of group ``mailgate.commands``: each is a function
``register(subparsers)`` that adds a subparser and sets ``handler=fn(args) -> int`` on it.

Commands that need the database or Redis reach the configured servers or, when a URL is
unset, the embedded ones (the same servers ``mailgate run`` uses: started for the command
and stopped after it unless a running daemon owns them).

Errors a user can cause (:class:`gateway.errors.UserFacingError`: a bad setting, a missing
file, a server that cannot be reached) print one line, ``mailgate: <what> (<how to fix>)``,
and exit non-zero; ``--debug`` adds the traceback. Any other exception is a bug and shows
its traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, NoReturn, TextIO, TypeVar

from gateway.errors import CliError, UserFacingError
from gateway.logs import setup_logging
from gateway.settings import Settings, load_settings

COMMANDS_GROUP = "mailgate.commands"

T = TypeVar("T")
log = logging.getLogger("mailgate")


def settings_from_args(args: argparse.Namespace, *, daemon: bool = False) -> Settings:
    """Load settings for a command (a bad one is a SettingsError naming the setting).

    One-off commands log warnings and errors only, unless ``log_level`` is set explicitly
    or ``--debug`` is given: their output is the answer, not the daemon's chatter."""
    settings = load_settings(getattr(args, "config", None))
    level = settings.log_level
    if not daemon and "log_level" not in settings.model_fields_set:
        level = "WARNING"
    if getattr(args, "debug", False):
        level = "DEBUG"
    setup_logging(level, settings.log_format)
    return settings


def read_input(value: str, what: str = "file") -> str:
    """Text given inline, or ``@path`` to read it from a file (``-`` after @: stdin)."""
    if not value.startswith("@"):
        return value
    path = value[1:]
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        message = f"cannot read the {what} {path}: {reason} (check the path after @)"
        raise CliError(message) from None


class Progress:
    """A one-line progress bar on stderr when it is a terminal; silent when piped."""

    WIDTH = 30

    def __init__(self, total: int, label: str, *, stream: TextIO | None = None):
        self.total = max(total, 0)
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() and self.total > 0
        self.done = 0

    def advance(self, count: int = 1) -> None:
        self.done += count
        if self.enabled:
            filled = int(self.WIDTH * min(self.done, self.total) / self.total)
            bar = "#" * filled + "." * (self.WIDTH - filled)
            self.stream.write(f"\r{self.label} [{bar}] {self.done}/{self.total}")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


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

    settings = settings_from_args(args, daemon=True)
    # The standard loop: uvloop was measured here (bench/delivery.py) and gave no gain.
    return asyncio.run(Daemon(settings).run())


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = load_settings(getattr(args, "config", None))
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


class Parser(argparse.ArgumentParser):
    """argparse with mistakes reported as the one line every other error uses."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"mailgate: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    from gateway.daemon import mailgate_version

    parser = Parser(
        prog="mailgate",
        description="Mail edge daemon: IMAP ingest, bounce listener, SMTP delivery, job runtime.",
        epilog="`mailgate enqueue --list` lists every queue and its payload fields.",
    )
    parser.add_argument("--version", action="version", version=f"mailgate {mailgate_version()}")
    parser.add_argument(
        "--config", metavar="FILE", help="TOML settings file (default: $MAILGATE_CONFIG)"
    )
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of a failure, not one line"
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


def describe(exc: UserFacingError) -> str:
    """The one line printed for a user-facing failure."""
    from gateway.settings import SettingsError

    text = " ".join(str(exc).split())
    if isinstance(exc, SettingsError):
        return f"invalid configuration: {text} (fix it in the environment or the --config file)"
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `mailgate ... | head`: the reader left; not an error worth a traceback.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except UserFacingError as exc:
        if args.debug:
            raise
        print(f"mailgate: {describe(exc)}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
