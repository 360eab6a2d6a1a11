"""The real-server test peers work: Dovecot, Postfix (real DSNs), smtp-sink, TcpProxy."""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from functools import partial
from typing import Any

import aioimaplib
import aiosmtplib
import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.peers.dovecot import Dovecot
from tests.peers.fixtures import private_dir
from tests.peers.ports import free_port
from tests.peers.postfix import Postfix
from tests.peers.proxy import TcpProxy
from tests.peers.smtpsink import SmtpSink, smtp_source_path

pytestmark = pytest.mark.timeout(60)


def _message(
    subject: str, sender: str = "sender@example.test", to: str = "x@example.test"
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{secrets.token_hex(8)}@peers.test>"
    msg.set_content(f"body of {subject}\n")
    return msg.as_bytes(policy=email.policy.SMTP)


def _new_user(dovecot: Dovecot) -> tuple[str, str]:
    address = f"u{secrets.token_hex(4)}@example.test"
    password = secrets.token_hex(6)
    dovecot.add_user(address, password)
    return address, password


async def _imap(
    dovecot: Dovecot,
    user: str,
    password: str,
    port: int | None = None,
    lost: asyncio.Event | None = None,
) -> Any:
    client = aioimaplib.IMAP4(
        host=dovecot.host,
        port=port or dovecot.port,
        timeout=10,
        conn_lost_cb=(lambda _exc: lost.set()) if lost is not None else None,
    )
    await client.wait_hello_from_server()
    response = await client.login(user, password)
    assert response.result == "OK", response
    return client


async def _logout(client: Any) -> None:
    """LOGOUT and close the transport (aioimaplib leaves it to the server's FIN otherwise)."""
    await client.logout()
    client.protocol.transport.close()


async def _status(client: Any, folder: str = "INBOX") -> dict[str, int]:
    response = await client.status(folder, "(MESSAGES UIDNEXT UIDVALIDITY)")
    assert response.result == "OK", response
    text = b" ".join(line for line in response.lines if isinstance(line, bytes)).decode()
    return {k.lower(): int(v) for k, v in re.findall(r"(MESSAGES|UIDNEXT|UIDVALIDITY) (\d+)", text)}


@pytest.fixture
def imap_user(dovecot: Dovecot) -> tuple[str, str]:
    """A fresh mailbox on the session Dovecot."""
    return _new_user(dovecot)


# ------------------------------------------------------------------- Dovecot
async def test_dovecot_login_with_per_user_password(
    dovecot: Dovecot, imap_user: tuple[str, str]
) -> None:
    """A user logs in with its own password; a wrong one is refused (from 127.0.0.2)."""
    address, password = imap_user
    client = await _imap(dovecot, address, password)
    assert "IDLE" in client.protocol.capabilities
    await _logout(client)
    # Bad password from another loopback address, so anvil's penalty never slows 127.0.0.1.
    reply = dovecot.imap_login_reply(address, "wrong-password", source="127.0.0.2")
    assert reply.startswith(b"a NO"), reply


async def test_dovecot_master_user_login(dovecot: Dovecot, imap_user: tuple[str, str]) -> None:
    """``user*gateway`` with the master password opens that user's mailbox."""
    address, _ = imap_user
    dovecot.deliver(address, _message("for the master user"))
    client = await _imap(dovecot, dovecot.master_login_name(address), dovecot.master_password)
    assert (await _status(client))["messages"] == 1
    await _logout(client)


async def test_dovecot_idle_push_after_deliver(
    dovecot: Dovecot, imap_user: tuple[str, str]
) -> None:
    """An IDLE session gets an EXISTS push soon after ``deliver()``."""
    address, password = imap_user
    client = await _imap(dovecot, address, password)
    await client.select("INBOX")
    idle = await client.idle_start(timeout=30)
    started = time.monotonic()
    dovecot.deliver(address, _message("pushed"))
    pushed: list[bytes] = []
    while not any(line.endswith(b"EXISTS") for line in pushed):
        assert time.monotonic() - started < 10, pushed
        lines = await client.wait_server_push(timeout=10)
        pushed.extend(line for line in lines if isinstance(line, bytes))
    assert b"1 EXISTS" in pushed
    client.idle_done()
    await asyncio.wait_for(idle, 10)
    await _logout(client)


async def test_dovecot_restart_keeps_mail(dovecot: Dovecot, imap_user: tuple[str, str]) -> None:
    """After ``restart()`` the server is on the same port and the mail is still there."""
    address, password = imap_user
    dovecot.deliver(address, _message("one"))
    dovecot.deliver(address, _message("two"), folder="Archive")
    port = dovecot.port
    dovecot.restart()
    assert dovecot.port == port
    client = await _imap(dovecot, address, password)
    assert (await _status(client))["messages"] == 1
    assert (await _status(client, "Archive"))["messages"] == 1
    await _logout(client)


async def test_dovecot_change_uidvalidity(dovecot: Dovecot, imap_user: tuple[str, str]) -> None:
    """``change_uidvalidity()`` gives INBOX a new UIDVALIDITY that IMAP STATUS reports."""
    address, password = imap_user
    dovecot.deliver(address, _message("kept"))
    client = await _imap(dovecot, address, password)
    before = await _status(client)
    new = dovecot.change_uidvalidity(address)
    after = await _status(client)
    await _logout(client)
    assert after["uidvalidity"] == new != before["uidvalidity"]
    assert after["messages"] == before["messages"] == 1
    recreated = dovecot.recreate_folder(address, "Archive")
    client = await _imap(dovecot, address, password)
    assert (await _status(client, "Archive"))["uidvalidity"] == recreated
    await _logout(client)


# ------------------------------------------------------------------- Postfix
class _DsnCatcher:
    """aiosmtpd handler that records envelopes and wakes the test."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []
        self.arrived = asyncio.Event()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        self.arrived.set()
        return "250 2.0.0 OK"


async def test_postfix_bounces_unknown_local_user_with_real_dsn(
    postfix_factory: Callable[..., Postfix],
) -> None:
    """Postfix accepts mail for an unknown local user and sends a DSN to the VERP sender."""
    catcher = _DsnCatcher()
    bounce_port = free_port()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        partial(SMTP, catcher, hostname="bounces.listener.test"), "127.0.0.1", bounce_port
    )
    try:
        started = time.monotonic()
        pf = postfix_factory(bounce_domain="bounces.test", bounce_port=bounce_port)
        assert time.monotonic() - started < 5
        verp = f"b+{secrets.token_hex(4)}=nobody.local.test@bounces.test"
        await aiosmtplib.send(
            _message("will bounce", sender=verp, to="nosuchuser@local.test"),
            sender=verp,
            recipients=["nosuchuser@local.test"],
            hostname=pf.host,
            port=pf.port,
            timeout=10,
        )
        await asyncio.wait_for(catcher.arrived.wait(), 15)
    finally:
        server.close()
        await server.wait_closed()
    envelope = catcher.envelopes[0]
    assert envelope.mail_from == "<>" or envelope.mail_from == ""
    assert envelope.rcpt_tos == [verp]
    assert isinstance(envelope.content, bytes)
    dsn = email.message_from_bytes(envelope.content, policy=email.policy.default)
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    text = envelope.content.decode(errors="replace")
    assert "Action: failed" in text
    assert "Status: 5.1.1" in text
    assert "nosuchuser@local.test" in text
    pf.stop()
    assert pf.leftover_processes() == []
    assert not pf.running


# -------------------------------------------------------------------- others
async def test_tcp_proxy_forwards_and_cut_drops_connections(
    dovecot: Dovecot, tcp_proxy: Callable[[str, int], Awaitable[TcpProxy]]
) -> None:
    """TcpProxy forwards to Dovecot; ``cut()`` drops live connections; pause refuses."""
    proxy = await tcp_proxy(dovecot.host, dovecot.port)
    address, password = _new_user(dovecot)
    lost = asyncio.Event()
    client = await _imap(dovecot, address, password, port=proxy.port, lost=lost)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"* OK")
    await proxy.wait_active(2)
    assert proxy.cut() == 2
    # The raw client sees the connection end at once.
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    # aioimaplib only learns it through its connection-lost callback (a command would hang).
    await asyncio.wait_for(lost.wait(), 5)
    proxy.pause()
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    assert proxy.refused == 1
    proxy.resume()
    client = await _imap(dovecot, address, password, port=proxy.port)
    await _logout(client)
    assert proxy.accepted == 3


async def test_smtp_sink_accepts_a_message(smtp_sink: Callable[..., SmtpSink]) -> None:
    """smtp-sink accepts a message from aiosmtplib; scripted rejects and smtp-source work."""
    dump = private_dir("sink-dump")
    sink = smtp_sink(dump_dir=dump)
    errors, _ = await aiosmtplib.send(
        _message("to the sink"),
        sender="a@example.test",
        recipients=["b@example.test"],
        hostname=sink.host,
        port=sink.port,
        timeout=10,
    )
    assert errors == {}
    # smtp-sink writes the dump after replying: bounded polling, not a sleep.
    deadline = time.monotonic() + 5
    while b"Subject: to the sink" not in sink.dumped():
        assert time.monotonic() < deadline, sink.dumped()
        await asyncio.sleep(0.02)
    rejecting = smtp_sink(hard_reject=["RCPT"])
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
        await aiosmtplib.send(
            _message("refused"),
            sender="a@example.test",
            recipients=["b@example.test"],
            hostname=rejecting.host,
            port=rejecting.port,
            timeout=10,
        )
    res = await asyncio.to_thread(
        subprocess.run,
        [smtp_source_path(), "-s", "2", "-m", "20", "-c", f"127.0.0.1:{sink.port}"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    sink.stop()
    assert not sink.running
    shutil.rmtree(dump)
