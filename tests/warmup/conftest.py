"""Warmup's real peers: a Dovecot with LMTP and Sieve (users' scripts may file mail into
Junk, as a spam filter would), a Postfix relaying the warmup domains into that LMTP, and
`mailgate` commands run in-process (a thread each) against the test's servers."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from gateway.cli import main as cli_main
from gateway.settings import Settings
from tests.daemon import cli_env
from tests.peers.dovecot import Dovecot
from tests.peers.fixtures import _dispose, private_dir, require_binary
from tests.peers.postfix import Postfix

DOMAINS = ("wa.test", "wb.test")
JUNK_ALL = 'require "fileinto";\nfileinto "Junk";\n'


@pytest.fixture(scope="module")
def lmtp_dovecot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dovecot]:
    """A private Dovecot with LMTP + Sieve for this module's tests."""
    require_binary("dovecot")
    path = private_dir("dovecot")
    server = Dovecot(path, lmtp=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        _dispose(path, [server.log_path], tmp_path_factory, "dovecot-lmtp")


@pytest.fixture
def relay(lmtp_dovecot: Dovecot, postfix_factory: Callable[..., Postfix]) -> Postfix:
    """A Postfix that relays the warmup domains into Dovecot's LMTP."""
    route = f"lmtp:inet:127.0.0.1:{lmtp_dovecot.lmtp_port}"
    return postfix_factory(extra_transports=dict.fromkeys(DOMAINS, route))


@dataclass
class Box:
    address: str
    password: str


def new_box(dovecot: Dovecot, domain: str, *, junk_all: bool = False) -> Box:
    box = Box(f"w{secrets.token_hex(4)}@{domain}", secrets.token_hex(8))
    dovecot.add_user(box.address, box.password)
    if junk_all:
        dovecot.set_sieve(box.address, JUNK_ALL)
    return box


class Cli:
    """`mailgate ARGS` in-process (in a thread: each command runs its own event loop)."""

    def __init__(self, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
        secret = settings.secret_key.get_secret_value() if settings.secret_key else ""
        self.env = cli_env(settings, secret_key=secret)
        self.monkeypatch = monkeypatch

    async def __call__(self, *args: str, **env: str) -> tuple[int, str]:
        with self.monkeypatch.context() as mp:
            for key in [k for k in os.environ if k.startswith("MAILGATE_")]:
                mp.delenv(key)
            for key, value in {**self.env, **env}.items():
                mp.setenv(key, value)
            out = io.StringIO()

            def run() -> int:
                with contextlib.redirect_stdout(out):
                    return cli_main(list(args))

            code = await asyncio.to_thread(run)
        return code, out.getvalue()


@pytest.fixture
def cli(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Cli:
    return Cli(settings, monkeypatch)
