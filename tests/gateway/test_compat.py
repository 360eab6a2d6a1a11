"""The seams into libraries' internals (gateway/compat): every internal they touch is still
there in the installed versions, a version they were not written for is refused at import,
and no module outside the seams touches those internals."""

from __future__ import annotations

import asyncio
import re
import tomllib
from pathlib import Path
from typing import Any

import aioimaplib
import dkim
import pytest
from aiosmtpd.smtp import SMTP

from gateway.compat import CompatError, require
from gateway.compat import aioimaplib as imap_seam
from gateway.compat import aiosmtpd as smtp_seam
from gateway.compat import dkimpy as dkim_seam

ROOT = Path(__file__).resolve().parents[2]
# Every package the distribution installs (a package added later is checked too).
PACKAGES = tuple(
    p.rstrip("*")
    for p in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"][
        "find"
    ]["include"]
)
# The private names the seams use; nothing else may spell them.
PRIVATE = re.compile(
    r"\._(untagged_response|handle_responses|handle_line|idle_waiter|client_task|"
    r"expected_size|resp_literal_data|reset_timeout|set_post_data_state|timeout_cb)"
)
# aiosmtpd's stream attributes: ``self._reader`` is also a common name of our own, so these
# are checked in the modules whose classes derive from aiosmtpd's SMTP.
SMTP_SUBCLASSES = ("bounces/listener.py",)
STREAMS = re.compile(r"\._(reader|writer)\b")


def test_versions_are_the_ones_written_for() -> None:
    """Each seam imported, so its library is a supported version; another is refused."""
    assert imap_seam.VERSION.startswith("2.0.")
    assert smtp_seam.VERSION.startswith("1.4.")
    assert dkim_seam.VERSION.startswith("1.1.")
    with pytest.raises(CompatError, match=r"aioimaplib .* written for 9\.9\.x"):
        require("aioimaplib", ("9.9.",))


async def test_aioimaplib_internals_exist() -> None:
    """The protocol's line handling, a command's literal state, the client's tasks."""
    loop = asyncio.get_running_loop()
    protocol = aioimaplib.IMAP4ClientProtocol(loop)
    for name in ("_untagged_response", "_handle_responses", "_handle_line", "tasks"):
        assert callable(getattr(protocol, name)) or name == "tasks", name
    assert protocol.incomplete_line == b"" and protocol.current_command is None
    command = aioimaplib.Command("FETCH", "A1", loop=loop)
    assert command.wait_literal_data() is False
    assert isinstance(command._expected_size, int)
    assert isinstance(command._resp_literal_data, bytes | bytearray)
    incomplete = aioimaplib.IncompleteRead(command, b"x")
    assert incomplete.cmd is command and incomplete.data == b"x"
    seen: list[bytes] = []
    imap_seam.install_feed(protocol, seen.append)
    protocol._untagged_response(b"3 EXISTS")
    assert seen == [b"3 EXISTS"]
    client = aioimaplib.IMAP4(port=1, loop=loop, timeout=1)
    assert hasattr(client, "_idle_waiter") and hasattr(client, "_client_task")
    imap_seam.abort(client)
    await asyncio.sleep(0)
    assert client._client_task.done()


def test_aiosmtpd_internals_exist() -> None:
    """The timer and state methods the seam calls, and the introspection it caches."""
    for name in ("_reset_timeout", "_set_post_data_state", "_timeout_cb", "smtp_DATA"):
        assert callable(getattr(SMTP, name)), name
    names = dir(object.__new__(smtp_seam.FastSMTP))
    assert "smtp_DATA" in names and "auth_LOGIN" in names
    assert all(n.startswith(("smtp_", "auth_")) for n in names)


def test_aiosmtpd_handler_introspection_is_cached_and_still_works() -> None:
    """A FastHandler lists only its hooks to dir(), carries handle_EHLO's signature, and
    aiosmtpd's SMTP still finds its hooks and takes the 5-argument EHLO form."""

    class Hooks(smtp_seam.FastHandler):
        async def handle_EHLO(
            self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
        ) -> list[str]:
            return responses

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            return "250 OK"

    hooks = Hooks()
    assert dir(hooks) == ["handle_DATA", "handle_EHLO"]
    assert "__signature__" in vars(Hooks.handle_EHLO)
    loop = asyncio.new_event_loop()
    try:
        server = SMTP(hooks, hostname="h.test", loop=loop)
    finally:
        loop.close()
    assert set(server._handle_hooks) == {"DATA", "EHLO"}
    assert server._ehlo_hook_ver == "new"


def test_dkimpy_pieces_exist_and_round_trip() -> None:
    """Canonicalisation and folding as the seam wraps them."""
    policy = dkim_seam.Canonicalization(b"relaxed", b"simple")
    assert policy.c_value == b"relaxed/simple"
    assert policy.headers([(b"Subject", b"  a   b \r\n")]) == [(b"subject", b"a b\r\n")]
    assert policy.body(b"x\r\n\r\n\r\n") == b"x\r\n"
    assert dkim_seam.fold(b"a=1; " * 30, namelen=14).count(b"\r\n") >= 1
    assert callable(dkim.fold)


def test_no_module_outside_the_seams_touches_those_internals() -> None:
    """A grep of the packages: the private names appear only under gateway/compat."""
    offenders = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if path.is_relative_to(ROOT / "gateway" / "compat"):
                continue
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                if PRIVATE.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    for name in SMTP_SUBCLASSES:
        for number, line in enumerate((ROOT / name).read_text().splitlines(), start=1):
            if STREAMS.search(line):
                offenders.append(f"{name}:{number}: {line.strip()}")
    assert offenders == []
