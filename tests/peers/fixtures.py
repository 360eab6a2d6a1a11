"""Pytest fixtures for the real-server peers.

Loaded by conftest as a plugin: ``pytest_plugins = ["tests.peers.fixtures"]``.

* ``dovecot`` (session): a started private ``Dovecot``; stopped at session end.
* ``postfix_factory`` (function): ``postfix_factory(**Postfix kwargs) -> Postfix``, started;
  every instance made by the test is stopped at its end. A fresh Postfix starts in ~20 ms, so
  each test gets its own (own queue, own log, own bounce route).
* ``postfix`` (function): ``postfix_factory()`` with the defaults (no bounce route; add one
  with ``postfix.set_transport(domain, "smtp:[127.0.0.1]:PORT")``).
* ``tcp_proxy`` (function, async factory): ``await tcp_proxy(host, port) -> TcpProxy``.
* ``smtp_sink`` (function): ``smtp_sink(**kwargs) -> SmtpSink`` (see ``smtpsink.smtp_sink``).

A missing binary FAILS the test (never skips) and names the Debian package to install.

The instance directories are private ``/tmp/mailgate-<peer>-*`` folders (mode 755), not
``tmp_path_factory`` folders: pytest keeps its base temp folder at mode 0700 (and resets it at
the start of every session, including other engineers' concurrent ones), but Dovecot's mail
processes (uid 5000) and Postfix's daemons (user postfix) must traverse the path. They are
removed at teardown after their logs are copied into a ``tmp_path_factory`` folder
(``MAILGATE_KEEP_PEERS=1`` keeps them).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.peers.dovecot import Dovecot
from tests.peers.postfix import Postfix
from tests.peers.proxy import TcpProxy
from tests.peers.smtpsink import SmtpSink
from tests.peers.smtpsink import smtp_sink as start_smtp_sink

_PACKAGES = {
    "dovecot": "dovecot-imapd (and dovecot-lmtpd)",
    "doveadm": "dovecot-core (pulled in by dovecot-imapd)",
    "postfix": "postfix",
    "smtp-sink": "postfix",
    "smtp-source": "postfix",
}


def require_binary(name: str) -> str:
    """Return the binary's path or FAIL the test naming the Debian package to install."""
    path = shutil.which(name) or (
        f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None
    )
    if path is None:
        package = _PACKAGES.get(name, "?")
        pytest.fail(
            f"{name} is not installed: this test needs a real server peer. "
            f"Install the Debian package: apt-get install {package}",
            pytrace=False,
        )
    return path


def private_dir(peer: str) -> Path:
    """A fresh ``/tmp/mailgate-<peer>-XXXX`` folder that other users can traverse (0755)."""
    path = Path(tempfile.mkdtemp(prefix=f"mailgate-{peer}-", dir="/tmp"))
    path.chmod(0o755)
    return path


def _dispose(path: Path, logs: list[Path], factory: pytest.TempPathFactory, name: str) -> None:
    keep = factory.mktemp(f"{name}-logs")
    for log in logs:
        if log.exists():
            shutil.copy(log, keep / log.name)
    if os.environ.get("MAILGATE_KEEP_PEERS") != "1":
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def dovecot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dovecot]:
    """A started private Dovecot for the whole session (stopped at the end)."""
    require_binary("dovecot")
    require_binary("doveadm")
    path = private_dir("dovecot")
    server = Dovecot(path)
    try:
        server.start()
    except Exception as exc:
        _dispose(path, [server.log_path], tmp_path_factory, "dovecot")
        pytest.fail(f"private Dovecot failed to start: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()
        _dispose(path, [server.log_path], tmp_path_factory, "dovecot")


@pytest.fixture
def postfix_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Postfix]]:
    """``postfix_factory(**kwargs)``: start a private Postfix; all are stopped after the test."""
    require_binary("postfix")
    made: list[tuple[Postfix, Path]] = []

    def make(**kwargs: Any) -> Postfix:
        path = private_dir("postfix")
        server = Postfix(path, **kwargs)
        made.append((server, path))
        server.start()
        return server

    try:
        yield make
    finally:
        for server, path in made:
            try:
                server.stop()
            finally:
                _dispose(path, [server.log_path], tmp_path_factory, "postfix")


@pytest.fixture
def postfix(postfix_factory: Callable[..., Postfix]) -> Postfix:
    """A started private Postfix with the default routes (stopped after the test)."""
    return postfix_factory()


@pytest.fixture
async def tcp_proxy() -> AsyncIterator[Callable[[str, int], Awaitable[TcpProxy]]]:
    """``await tcp_proxy(host, port)``: a started TcpProxy; all are stopped after the test."""
    proxies: list[TcpProxy] = []

    async def make(host: str, port: int) -> TcpProxy:
        proxy = TcpProxy(host, port)
        proxies.append(proxy)
        return await proxy.start()

    try:
        yield make
    finally:
        for proxy in proxies:
            await proxy.stop()


@pytest.fixture
def smtp_sink() -> Iterator[Callable[..., SmtpSink]]:
    """``smtp_sink(**kwargs)``: a started smtp-sink on 127.0.0.1; all stopped after the test."""
    require_binary("smtp-sink")
    sinks: list[SmtpSink] = []

    def make(**kwargs: Any) -> SmtpSink:
        sink = start_smtp_sink(**kwargs)
        sinks.append(sink)
        return sink

    try:
        yield make
    finally:
        for sink in sinks:
            sink.stop()
