"""Running the real `mailgate run` in a subprocess for fault tests (SIGKILL, restart)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from gateway.settings import Settings


def cli_env(settings: Settings, **overrides: str) -> dict[str, str]:
    """The environment for a `mailgate` command on this test's servers: this process's
    environment without its MAILGATE_ variables, then the database, Redis and data dir of
    ``settings``, quiet logs, and ``overrides`` by setting name (``secret_key="..."`` ->
    MAILGATE_SECRET_KEY)."""
    assert settings.database_url is not None and settings.redis_url is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILGATE_")}
    env.update(
        MAILGATE_DATABASE_URL=settings.database_url.get_secret_value(),
        MAILGATE_REDIS_URL=settings.redis_url.get_secret_value(),
        MAILGATE_DATA_DIR=str(settings.data_dir),
        MAILGATE_LOG_LEVEL="WARNING",
    )
    if settings.file_roots:
        env["MAILGATE_FILE_ROOTS"] = ",".join(str(r) for r in settings.file_roots)
    env.update({f"MAILGATE_{name.upper()}": value for name, value in overrides.items()})
    return env


#: Runs the CLI as if the named job families' handlers were not installed (a deployment
#: without that package): the handler entry points are filtered before gateway is imported.
_WITHOUT_HANDLERS = """
import sys, importlib.metadata as md
drop = set(sys.argv.pop(1).split(","))
real = md.entry_points
def filtered(**kw):
    eps = real(**kw)
    if kw.get("group") != "mailgate.handlers":
        return eps
    return md.EntryPoints(ep for ep in eps if ep.name not in drop)
md.entry_points = filtered
from gateway.cli import main
sys.exit(main())
"""


def cli_argv(*args: str, without_handlers: tuple[str, ...] = ()) -> list[str]:
    """The command line of `mailgate ARGS` in a subprocess; ``without_handlers`` names job
    families whose handlers that process does not see installed."""
    if not without_handlers:
        return [sys.executable, "-m", "gateway.cli", *args]
    return [sys.executable, "-c", _WITHOUT_HANDLERS, ",".join(without_handlers), *args]


def mailgate_env(settings: Settings, http_port: int, **overrides: str) -> dict[str, str]:
    """The environment for `mailgate run` on this test's servers; ``overrides`` are
    settings by field name (``components="worker"`` -> MAILGATE_COMPONENTS)."""
    defaults = {
        "http_listen": f"127.0.0.1:{http_port}",
        "smtp_listen": "127.0.0.1:0",
        "secret_key": "k" * 40,
        "log_format": "json",
    }
    return cli_env(settings, **{**defaults, **overrides})


def spawn_mailgate(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start `mailgate run`, appending its output to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "run"], env=env, stdout=out, stderr=out
        )


async def stop_mailgate(
    proc: subprocess.Popen[bytes], log: Path | None = None, timeout_s: float = 40
) -> int:
    """SIGTERM ``proc`` and wait for its exit code. One that has not exited by
    ``timeout_s`` gets SIGUSR1 (the daemon logs every task's stack), then SIGKILL, and the
    test fails with the end of its log: never a daemon left running into the next test."""
    if proc.poll() is not None:
        return proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return await asyncio.to_thread(proc.wait, timeout_s)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)
        await asyncio.sleep(1.0)
        proc.kill()
        await asyncio.to_thread(proc.wait, 10)
        text = await asyncio.to_thread(log.read_text, errors="replace") if log else ""
        raise AssertionError(
            f"mailgate did not stop within {timeout_s} s of SIGTERM\n{text[-12000:]}"
        ) from None


async def poll(
    probe: Callable[[], Awaitable[Any]], done: Callable[[Any], bool], timeout_s: float = 30
) -> Any:
    """Await ``probe`` until ``done(value)``; fails the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    value = None
    while time.monotonic() < deadline:
        value = await probe()
        if done(value):
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out; last value {value!r}")
