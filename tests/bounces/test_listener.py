"""The bounce SMTP listener against real peers: a private Postfix bouncing to it, raw SMTP
sessions for the limits and SMTP smuggling, PostgreSQL cut by a TCP proxy, STARTTLS."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiosmtplib
import asyncpg
import pytest
import redis.exceptions
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from bounces.component import BounceComponent
from bounces.errors import (
    QueueUnavailable,
    StorageUnavailable,
    translate_queue,
    translate_storage,
)
from bounces.intake import UNATTRIBUTED_TENANT, Intake, SmtpEnvelope, header_summary
from bounces.listener import Listener
from bounces.metrics import METRICS
from bounces.processing import create_handler
from bounces.smtp_policy import DataReader, Limits, RecipientPolicy, Replies
from gateway.app import App, Urls, open_app
from gateway.jobs.worker import Worker
from gateway.services import Services
from gateway.settings import Settings
from gateway.verp import Verp
from tests.bounces.test_processing import add_delivery, make_dsn

StartListener = Callable[..., Awaitable[Listener]]


@pytest.fixture
async def start_listener(app: App, services: Services) -> AsyncIterator[StartListener]:
    """``await start_listener(**setting_overrides)``: a started Listener on a free port."""
    made: list[Listener] = []

    async def start(intake: Intake | None = None, **overrides: Any) -> Listener:
        if overrides:
            app.settings = app.settings.model_copy(update=overrides)
        listener = Listener(app, intake or Intake(app), services.get(METRICS))
        await listener.start()
        made.append(listener)
        return listener

    yield start
    loop = asyncio.get_running_loop()
    for listener in made:
        await listener.stop(loop.time() + 5)


class RawSmtp:
    """A line-level SMTP client: what a hostile or broken peer can send."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> tuple[RawSmtp, str]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        session = cls(reader, writer)
        return session, await session.reply()

    async def reply(self) -> str:
        lines = []
        async with asyncio.timeout(30):
            while True:
                line = (await self.reader.readline()).decode()
                if not line:
                    return "".join(lines) or "<eof>"
                lines.append(line)
                if len(line) < 4 or line[3] != "-":
                    return "".join(lines)

    async def cmd(self, line: str | bytes) -> str:
        data = line.encode() if isinstance(line, str) else line
        self.writer.write(data + b"\r\n")
        await self.writer.drain()
        return await self.reply()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


async def wait_for(probe: Callable[[], Awaitable[Any]], timeout_s: float = 15.0) -> Any:
    """Bounded polling until ``probe()`` returns something truthy."""
    async with asyncio.timeout(timeout_s):
        while True:
            value = await probe()
            if value:
                return value
            await asyncio.sleep(0.02)


async def drain_bounce_queue(app: App, services: Services) -> None:
    worker = Worker(app, {"bounce": create_handler(app, services)}, rng=random.Random(5))
    await worker.start()
    try:
        await worker.run_until_empty(30)
    finally:
        await worker.stop(asyncio.get_running_loop().time() + 5)


def counter(app: App, name: str, **labels: str) -> float:
    return app.metrics.registry.get_sample_value(name, labels) or 0.0


# -- a real Postfix bouncing to the listener ------------------------------------------------


async def test_postfix_dsn_is_stored_classified_and_attributed(
    app: App,
    services: Services,
    start_listener: StartListener,
    postfix_factory: Callable[..., Any],
) -> None:
    """Postfix bounces mail for an unknown local user to the VERP return path: the DSN is
    committed by the listener, classified hard/userunknown and bounces the delivery."""
    listener = await start_listener()
    postfix = postfix_factory(bounce_domain="bounces.test", bounce_port=listener.port)
    await add_delivery(app, "pf1", recipient="no-such-user@local.test")
    sender = Verp(app.secret_key).address("pf1", "bounces.test")
    message = (
        b"From: sales@sender.test\r\nTo: no-such-user@local.test\r\nSubject: hi\r\n"
        b"Message-ID: <pf1@sender.test>\r\n\r\nHello.\r\n"
    )
    await aiosmtplib.send(
        message,
        sender=sender,
        recipients=["no-such-user@local.test"],
        hostname="127.0.0.1",
        port=postfix.port,
    )
    row = await wait_for(
        lambda: app.db.fetchrow("SELECT * FROM email_messages WHERE source = 'smtp'")
    )
    assert (row["tenant_id"], row["delivery_id"], row["direction"]) == ("t1", "pf1", "inbound")
    await drain_bounce_queue(app, services)
    report = await app.db.fetchrow("SELECT * FROM bounce_reports")
    assert (report["bounce_type"], report["reason"], report["attribution"]) == (
        "hard",
        "userunknown",
        "verp",
    )
    delivery = await app.db.fetchrow("SELECT * FROM email_deliveries WHERE id = 'pf1'")
    assert (delivery["status"], delivery["bounce_type"]) == ("bounced", "hard")
    assert delivery["bounce_status"].startswith("5.1.1")
    assert counter(app, "smtp_sessions_total", result="accepted") >= 1


# -- recipients -------------------------------------------------------------------------------


async def test_open_relay_attempts_refused(app: App, start_listener: StartListener) -> None:
    """Foreign domains (and look-alikes, source routes) get 550 5.7.1; nothing stored."""
    listener = await start_listener()
    smtp, greeting = await RawSmtp.open(listener.port)
    assert greeting.startswith("220 ")
    assert (await smtp.cmd("EHLO relay.test")).startswith("250")
    assert (await smtp.cmd("MAIL FROM:<spammer@evil.test>")).startswith("250")
    for rcpt in (
        "victim@example.com",
        "b+x@bounces.test.evil.com",
        "b+x@sub.bounces.test",
        "@bounces.test:victim@example.com",
    ):
        reply = await smtp.cmd(f"RCPT TO:<{rcpt}>")
        assert reply.startswith("550 5.7.1"), (rcpt, reply)
    assert (await smtp.cmd("DATA")).startswith("503")
    await smtp.close()
    assert await app.db.fetchval("SELECT count(*) FROM email_messages") == 0
    assert counter(app, "smtp_listener_rejections_total", cause="relay") == 4


async def test_recipient_limit(app: App, start_listener: StartListener) -> None:
    """The 101st recipient of one message gets 452 4.5.3."""
    listener = await start_listener()
    smtp, _ = await RawSmtp.open(listener.port)
    await smtp.cmd("EHLO peer.test")
    await smtp.cmd("MAIL FROM:<>")
    smtp.writer.write(b"".join(b"RCPT TO:<b+r%d@bounces.test>\r\n" % i for i in range(101)))
    replies = [await smtp.reply() for _ in range(101)]
    assert all(r.startswith("250") for r in replies[:100])
    assert replies[100].startswith("452 4.5.3")
    await smtp.close()


# -- sizes and lines ------------------------------------------------------------------------


async def test_eleven_megabytes_get_552(app: App, start_listener: StartListener) -> None:
    """An 11 MB message gets 552 5.3.4 after its data (and at MAIL when SIZE says so);
    the session stays usable and the next message is stored."""
    listener = await start_listener()
    smtp, _ = await RawSmtp.open(listener.port)
    ehlo = await smtp.cmd("EHLO peer.test")
    assert "SIZE 10485760" in ehlo
    assert (await smtp.cmd("MAIL FROM:<> SIZE=11534336")).startswith("552 5.3.4")
    assert (await smtp.cmd("MAIL FROM:<>")).startswith("250")
    assert (await smtp.cmd("RCPT TO:<b+big@bounces.test>")).startswith("250")
    assert (await smtp.cmd("DATA")).startswith("354")
    line = b"x" * 998 + b"\r\n"
    smtp.writer.write(line * (11 * 1024 * 1024 // len(line) + 1))
    reply = await smtp.cmd(b".")
    assert reply.startswith("552 5.3.4"), reply
    assert (await smtp.cmd("MAIL FROM:<>")).startswith("250")
    assert (await smtp.cmd("RCPT TO:<b+small@bounces.test>")).startswith("250")
    assert (await smtp.cmd("DATA")).startswith("354")
    assert (await smtp.cmd(b"Subject: small\r\n\r\nok\r\n.")).startswith("250 2.0.0")
    await smtp.close()
    assert await app.db.fetchval("SELECT count(*) FROM email_messages") == 1
    assert counter(app, "smtp_listener_rejections_total", cause="size") == 2


async def test_line_length_limit(app: App, start_listener: StartListener) -> None:
    """A message line longer than smtp_max_line_bytes gets 500 5.5.2 and is not stored."""
    listener = await start_listener(smtp_max_line_bytes=1001)
    smtp, _ = await RawSmtp.open(listener.port)
    await smtp.cmd("EHLO peer.test")
    await smtp.cmd("MAIL FROM:<>")
    await smtp.cmd("RCPT TO:<b+x@bounces.test>")
    await smtp.cmd("DATA")
    reply = await smtp.cmd(b"Subject: long\r\n\r\n" + b"y" * 3000 + b"\r\n.")
    assert reply.startswith("500 5.5.2"), reply
    assert (await smtp.cmd("NOOP")).startswith("250")
    await smtp.close()
    assert await app.db.fetchval("SELECT count(*) FROM email_messages") == 0


# -- SMTP smuggling -------------------------------------------------------------------------

SMUGGLING_ENDINGS = [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n", b"\r.\r", b"\n.\r", b".\n"]


async def test_smtp_smuggling_does_not_split_messages(
    app: App, start_listener: StartListener
) -> None:
    """Bare-LF/CR end-of-data look-alikes stay inside the message: one 250 per DATA, the
    smuggled commands are message text, never a second transaction."""
    listener = await start_listener()
    smtp, _ = await RawSmtp.open(listener.port)
    await smtp.cmd("EHLO peer.test")
    for n, fake_end in enumerate(SMUGGLING_ENDINGS):
        await smtp.cmd("MAIL FROM:<>")
        await smtp.cmd("RCPT TO:<b+x@bounces.test>")
        assert (await smtp.cmd("DATA")).startswith("354")
        body = (
            b"Subject: smuggle %d\r\n\r\nhello" % n
            + fake_end
            + b"MAIL FROM:<evil@evil.test>\r\nRCPT TO:<b+evil@bounces.test>\r\nDATA\r\n"
            + b"smuggled\r\n"
        )
        assert (await smtp.cmd(body + b".")).startswith("250 2.0.0")
        assert (await smtp.cmd("NOOP")).startswith("250"), "a second reply was pending"
    await smtp.close()
    rows = await app.db.fetch("SELECT mail_from, rcpt_tos FROM bounce_receipts")
    assert len(rows) == len(SMUGGLING_ENDINGS)
    assert {r["mail_from"] for r in rows} == {""}
    raws = await app.db.fetch("SELECT raw FROM email_content")
    assert all(b"smuggled" in bytes(r["raw"]) for r in raws)


def stream_pieces(wire: bytes, limit: int) -> list[bytes]:
    """What ``readuntil(b".\\r\\n")`` on a stream with buffer ``limit`` hands out."""
    pieces, pos = [], 0
    while pos < len(wire):
        found = wire.find(b".\r\n", pos)
        if found != -1 and found - pos <= limit:
            pieces.append(wire[pos : found + 3])
            pos = found + 3
        else:
            pieces.append(wire[pos : pos + limit])
            pos += limit
    return pieces


@hsettings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=60), max_size=12), st.integers(min_value=4, max_value=64))
def test_data_reader_round_trip(lines: list[bytes], limit: int) -> None:
    """Any content, dot-stuffed and cut as the stream cuts it, comes back unchanged and
    ends only at the terminator (bare CR/LF never end it)."""
    content = b"".join(line.replace(b"\r\n", b"\n") + b"\r\n" for line in lines)
    wire = b"".join(
        (b"." + piece if piece.startswith(b".") else piece) + b"\r\n"
        for piece in content.split(b"\r\n")[:-1]
    )
    wire += b".\r\n"
    reader = DataReader(10**6, 10**6)
    pieces = stream_pieces(wire, limit)
    ends = [reader.feed(piece) for piece in pieces]
    assert ends == [False] * (len(pieces) - 1) + [True]
    assert reader.finish() == content
    assert reader.error is None


def test_data_reader_limits() -> None:
    """Too much data or too long a line: read to the end, then refused with the cause."""
    big = DataReader(10, 1000)
    assert not big.feed(b"0123456789abcdef\r\n")
    assert big.feed(b".\r\n")
    assert big.finish() == b""
    assert big.error is not None and big.error.cause == "size"
    long_line = DataReader(1000, 20)
    assert long_line.feed(b"x" * 30 + b"\r\n.\r\n")
    assert long_line.finish() == b""
    assert long_line.error is not None and long_line.error.cause == "line_length"
    empty = DataReader(10, 10)
    assert empty.feed(b".\r\n")
    assert empty.finish() == b""
    assert empty.error is None


@hsettings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000))
def test_header_summary_never_raises(raw: bytes) -> None:
    """The pre-commit header scan takes any bytes and returns short strings."""
    summary = header_summary(raw)
    assert all(isinstance(v, str) and len(v) <= 2000 for v in summary.values())


async def test_noop_flood_is_cut_off(app: App, start_listener: StartListener) -> None:
    """A peer stalling with NOOPs is disconnected with 421 after the command budget."""
    listener = await start_listener()
    smtp, _ = await RawSmtp.open(listener.port)
    smtp.writer.write(b"NOOP\r\n" * 51)
    replies = [await smtp.reply() for _ in range(51)]
    assert all(r.startswith("250") for r in replies[:50])
    assert replies[50].startswith("421 4.7.0")
    await smtp.close()


def test_recipient_policy() -> None:
    """Bounce domains only (case and trailing dot ignored), and the per-message cap."""
    policy = RecipientPolicy(["bounces.test"], Limits(max_recipients=2))
    assert policy.check_rcpt("b+x@Bounces.Test.", 0).accepted
    assert policy.check_rcpt("x@other.test", 0).cause == "relay"
    assert policy.check_rcpt("no-at-sign", 0).cause == "bad_address"
    assert policy.check_rcpt("b+x@bounces.test", 2).reply == Replies.TOO_MANY_RECIPIENTS
    assert policy.check_declared_size("SIZE=999999999999").cause == "size"
    assert policy.check_declared_size("BODY=8BITMIME size=10").accepted


# -- PostgreSQL outage ------------------------------------------------------------------------


async def test_postgres_down_gives_451_then_accepts(
    settings: Settings, redis_url: str, tcp_proxy: Callable[..., Awaitable[Any]]
) -> None:
    """With PostgreSQL unreachable the peer gets 451 4.3.0 (it retries); once it is back
    the same message is accepted and stored once."""
    assert settings.database_url is not None
    db_url = settings.database_url.get_secret_value()
    parts = urlsplit(db_url)
    proxy = await tcp_proxy(parts.hostname, parts.port)
    netloc = parts.netloc.rsplit(":", 1)[0] + f":{proxy.port}"
    proxied = urlunsplit(parts._replace(netloc=netloc))
    quick = settings.model_copy(
        update={"smtp_commit_timeout_s": 3.0, "db_pool_min": 1, "db_connect_timeout_s": 2.0}
    )
    async with open_app(quick, Urls(proxied, redis_url)) as app:
        listener = Listener(app, Intake(app), Services(app).get(METRICS))
        await listener.start()
        try:
            proxy.pause()
            proxy.cut()
            raw = make_dsn("nobody@rcpt.test")
            with pytest.raises(aiosmtplib.SMTPDataError) as refused:
                await aiosmtplib.send(
                    raw,
                    sender="mailer-daemon@rcpt.test",
                    recipients=["b+x@bounces.test"],
                    hostname="127.0.0.1",
                    port=listener.port,
                )
            assert refused.value.code == 451
            assert refused.value.message.startswith("4.3.0")
            assert counter(app, "smtp_listener_rejections_total", cause="storage") == 1
            proxy.resume()
            response, _ = await aiosmtplib.send(
                raw,
                sender="mailer-daemon@rcpt.test",
                recipients=["b+x@bounces.test"],
                hostname="127.0.0.1",
                port=listener.port,
            )
            assert response == {}
        finally:
            await listener.stop(asyncio.get_running_loop().time() + 5)
    conn = await asyncpg.connect(db_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM email_messages") == 1
        assert await conn.fetchval("SELECT tenant_id FROM bounce_receipts") == UNATTRIBUTED_TENANT
    finally:
        await conn.close()


async def test_internal_errors_never_reach_the_peer(
    app: App, start_listener: StartListener
) -> None:
    """An unexpected failure while storing is a bare 451 4.3.0 without its text."""

    class Broken(Intake):
        async def accept(self, envelope: SmtpEnvelope, raw: bytes) -> list[tuple[str, str]]:
            raise RuntimeError("password=hunter2 at db.internal")

    listener = await start_listener(intake=Broken(app))
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await aiosmtplib.send(
            b"Subject: x\r\n\r\nx\r\n",
            sender="mailer-daemon@rcpt.test",
            recipients=["b+x@bounces.test"],
            hostname="127.0.0.1",
            port=listener.port,
        )
    assert refused.value.code == 451
    assert "hunter2" not in refused.value.message
    assert refused.value.message == Replies.TRY_AGAIN[4:]


# -- connections and timeouts ---------------------------------------------------------------


async def test_connections_per_ip_and_idle_timeout(app: App, start_listener: StartListener) -> None:
    """The third connection from one address gets 421 4.7.0; an idle session is told 421
    4.4.2 and closed after smtp_idle_timeout_s, and its slot comes back."""
    listener = await start_listener(smtp_max_connections_per_ip=2, smtp_idle_timeout_s=0.5)
    first, g1 = await RawSmtp.open(listener.port)
    second, g2 = await RawSmtp.open(listener.port)
    assert g1.startswith("220") and g2.startswith("220")
    third, g3 = await RawSmtp.open(listener.port)
    assert g3.startswith("421 4.7.0"), g3
    await third.close()
    async with asyncio.timeout(10):
        # Told why, then closed for idleness.
        assert await first.reader.read() == (Replies.IDLE + "\r\n").encode()
        assert await second.reader.read() == (Replies.IDLE + "\r\n").encode()
    await first.close()
    await second.close()
    await wait_for(lambda: _async(listener.gate.total == 0))
    again, g4 = await RawSmtp.open(listener.port)
    assert g4.startswith("220")
    await again.close()
    assert counter(app, "smtp_listener_rejections_total", cause="connections_per_ip") == 1
    assert counter(app, "smtp_sessions_total", result="timeout") == 2


async def _async(value: Any) -> Any:
    return value


async def test_stop_says_421_to_idle_sessions(app: App, services: Services) -> None:
    """Stopping the component closes idle sessions with 421 and refuses new ones."""
    component = BounceComponent(app, services)
    await component.start()
    assert component.ready()
    smtp, _ = await RawSmtp.open(component.listener.port)
    await smtp.cmd("EHLO peer.test")
    await component.stop(asyncio.get_running_loop().time() + 5)
    assert (await smtp.reply()).startswith("421 4.3.2")
    await smtp.close()
    assert not component.ready()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", component.listener.port)


async def test_stop_lets_a_commit_in_flight_finish(app: App) -> None:
    """A message being committed when the stop begins is committed and answered 250;
    the listener refuses new connections meanwhile."""
    release = asyncio.Event()

    class Slow(Intake):
        async def _store_all(self, batch: Any) -> Any:
            await release.wait()
            return await super()._store_all(batch)

    listener = Listener(app, Slow(app), Services(app).get(METRICS))
    await listener.start()
    sending = asyncio.create_task(
        aiosmtplib.send(
            make_dsn("a@b.test"),
            sender="mailer-daemon@rcpt.test",
            recipients=["b+x@bounces.test"],
            hostname="127.0.0.1",
            port=listener.port,
        )
    )
    await wait_for(lambda: _async(listener.intake.busy))
    stopping = asyncio.create_task(listener.stop(asyncio.get_running_loop().time() + 10))
    await wait_for(lambda: _async(listener.closing))
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", listener.port)
    release.set()
    response, _ = await sending
    assert response == {}
    await stopping
    assert await app.db.fetchval("SELECT count(*) FROM email_messages") == 1


# -- STARTTLS -------------------------------------------------------------------------------


def _self_signed(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mx.bounces.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_starttls_when_a_certificate_is_configured(
    app: App, start_listener: StartListener, tmp_path: Path
) -> None:
    """With a certificate STARTTLS is offered and a message is accepted over TLS."""
    cert, key = _self_signed(tmp_path)
    listener = await start_listener(smtp_tls_cert_file=cert, smtp_tls_key_file=key)
    client = aiosmtplib.SMTP(
        hostname="127.0.0.1", port=listener.port, start_tls=False, validate_certs=False
    )
    await client.connect()
    try:
        await client.ehlo()
        assert client.supports_extension("starttls")
        assert not client.supports_extension("auth")
        await client.starttls()
        response, _ = await client.sendmail("", ["b+tls@bounces.test"], make_dsn("a@b.test"))
        assert response == {}
    finally:
        await client.quit()
    assert await app.db.fetchval("SELECT count(*) FROM email_messages") == 1


# -- error translation ----------------------------------------------------------------------


def _subclasses(cls: type[BaseException]) -> set[type[BaseException]]:
    out: set[type[BaseException]] = set()
    todo = [cls]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in out:
                out.add(sub)
                todo.append(sub)
    return out


def test_error_translation_is_complete() -> None:
    """Every asyncpg and redis exception class maps into the bounce error tree."""
    pg = {asyncpg.PostgresError, asyncpg.InterfaceError} | _subclasses(asyncpg.PostgresError)
    pg |= _subclasses(asyncpg.InterfaceError)
    for cls in pg:
        assert isinstance(translate_storage(cls.__new__(cls)), StorageUnavailable), cls
    for cls in {redis.exceptions.RedisError} | _subclasses(redis.exceptions.RedisError):
        assert isinstance(translate_queue(cls.__new__(cls)), QueueUnavailable), cls
    # Which path each takes, by the reason it gives: a timeout is a timeout, not an outage.
    cases = {
        ConnectionRefusedError(): ("postgresql unreachable: ConnectionRefusedError",
                                   "redis unreachable: ConnectionRefusedError"),
        TimeoutError(): ("postgresql: timed out", "redis: timed out"),
        ValueError(): ("postgresql: unexpected ValueError", "redis: unexpected ValueError"),
    }  # fmt: skip
    for exc, (storage, queue) in cases.items():
        assert str(translate_storage(exc)) == storage
        assert str(translate_queue(exc)) == queue
    assert str(translate_storage(asyncpg.UniqueViolationError())) == (
        "postgresql: UniqueViolationError"
    )
    already = QueueUnavailable("redis: x")
    assert translate_storage(already) is already
