"""The standing fuzz suite (issue 16), against real PostgreSQL and Redis:

* hypothesis-generated SMTP sessions (random command orders, pipelining, line endings,
  sizes, long lines, junk) against the listener: never a crash, never an unhandled
  event-loop exception (the autouse fixture fails the test on one), the session always
  answered or closed, and every message answered 250 is stored;
* hypothesis-generated MIME trees and DSNs through ingest's parser, the classifier, the
  mailbox store and bounce processing: never a crash, and the raw is always stored whole.

Each test runs its examples on one event loop of its own (hypothesis drives a plain
function), with one listener or one database connection for all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bounces.classify import classify
from bounces.intake import Intake
from bounces.listener import Listener
from bounces.metrics import METRICS
from bounces.processing import create_handler
from gateway.app import App, Urls, open_app
from gateway.jobs.contracts import BOUNCE
from gateway.jobs.envelope import new_job, parse_job
from gateway.messages import MailboxPosition
from gateway.services import Services
from gateway.settings import Settings
from ingest.accounts import Account
from ingest.store import Pending, analyse, store_batch
from tests.bounces.test_listener import wait_for

# -- a loop of the test's own -----------------------------------------------------------------


@dataclass
class Running:
    loop: asyncio.AbstractEventLoop
    app: App
    listener: Listener
    services: Services

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)


@pytest.fixture
def running(settings: Settings) -> Iterator[Running]:
    """An App, its services and a started listener on a loop of this test's own."""
    assert settings.database_url is not None and settings.redis_url is not None
    urls = Urls(settings.database_url.get_secret_value(), settings.redis_url.get_secret_value())
    quick = settings.model_copy(
        update={"smtp_idle_timeout_s": 2.0, "smtp_data_timeout_s": 5.0, "smtp_max_line_bytes": 2000}
    )
    loop = asyncio.new_event_loop()
    stack = contextlib.AsyncExitStack()
    try:
        app = loop.run_until_complete(stack.enter_async_context(open_app(quick, urls)))
        services = Services(app)
        listener = Listener(app, Intake(app), services.get(METRICS))
        loop.run_until_complete(listener.start())
        try:
            yield Running(loop, app, listener, services)
        finally:
            loop.run_until_complete(listener.stop(loop.time() + 5))
            loop.run_until_complete(services.aclose())
    finally:
        loop.run_until_complete(stack.aclose())
        loop.close()


# -- SMTP sessions ----------------------------------------------------------------------------

ADDRESSES = st.sampled_from(
    [
        "<>",
        "<mailer-daemon@mx.test>",
        "<b+x@bounces.test>",
        "<postmaster>",
        "<victim@elsewhere.test>",
        "<@bounces.test:x@evil.test>",
        "<a\udcffb@mx.test>",
        "<a\x00b@mx.test>",
        "<>SIZE=99999999999",
        "<x@mx.test> SMTPUTF8",
        "",
        "no-brackets@bounces.test",
    ]
)
COMMAND = st.one_of(
    st.sampled_from(["EHLO fuzz.test", "HELO fuzz.test", "RSET", "NOOP", "HELP", "VRFY x",
                     "STARTTLS", "AUTH PLAIN AGFhAGI=", "BDAT 10", "DATA extra", "QUIT"]),
    ADDRESSES.map(lambda a: f"MAIL FROM:{a}"),
    ADDRESSES.map(lambda a: f"RCPT TO:{a}"),
    st.text(max_size=40)
    .map(lambda t: t.replace("\r", "").replace("\n", ""))
    .filter(lambda t: not t.strip().upper().startswith("DATA")),
)  # fmt: skip


@st.composite
def message_body(draw: st.DrawFn) -> bytes:
    """Message content with a unique marker: random lines, line endings and sizes
    (dot-led lines, bare CR/LF, SMTP smuggling look-alikes, long lines, large bodies)."""
    marker = f"X-Fuzz: {uuid.uuid4().hex}".encode()
    lines = draw(
        st.lists(
            st.one_of(
                st.binary(max_size=80).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
                st.sampled_from([b".", b"..", b".x", b"\n.\n", b"\r.\r", b"MAIL FROM:<a@b>"]),
                st.integers(0, 3000).map(lambda n: b"L" * n),
            ),
            max_size=20,
        )
    )
    ending = draw(st.sampled_from([b"\r\n", b"\n", b"\r"]))
    padding = draw(st.sampled_from([0, 0, 0, 50_000, 300_000]))
    body = marker + b"\r\n\r\n" + ending.join(lines)
    body += b"\r\n" + b"p" * 70 + b"\r\n" if padding else b""
    body += (b"q" * 998 + b"\r\n") * (padding // 1000)
    # Dot-stuff as a client must; the content ends with CRLF before the terminator.
    stuffed = b"\r\n".join(b"." + ln if ln.startswith(b".") else ln for ln in body.split(b"\r\n"))
    return stuffed + b"\r\n"


@st.composite
def session(draw: st.DrawFn) -> list[tuple[str, Any]]:
    """Steps: ("cmd", line), ("data", body) or ("pipeline", [lines]); each with its own
    line ending."""
    steps: list[tuple[str, Any]] = []
    for _ in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(["cmd", "cmd", "txn", "pipeline"]))
        if kind == "cmd":
            steps.append(("cmd", draw(COMMAND)))
        elif kind == "pipeline":
            steps.append(("pipeline", draw(st.lists(COMMAND, min_size=1, max_size=6))))
        else:
            steps.append(("cmd", draw(ADDRESSES.map(lambda a: f"MAIL FROM:{a}"))))
            steps.append(("cmd", draw(ADDRESSES.map(lambda a: f"RCPT TO:{a}"))))
            steps.append(("data", draw(message_body())))
    return steps


class Peer:
    """A raw client: one reply (multi-line aware) per command line, bounded waits."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, eol: bytes):
        self.reader, self.writer, self.eol = reader, writer, eol
        self.closed = False

    async def reply(self) -> str:
        lines: list[str] = []
        while True:
            try:
                async with asyncio.timeout(10):
                    line = await self.reader.readline()
            except (TimeoutError, ConnectionError):
                line = b""
            if not line:
                self.closed = True
                return "".join(lines) or "<closed>"
            text = line.decode("utf-8", "replace")
            lines.append(text)
            if len(text) < 4 or text[3] != "-":
                return "".join(lines)

    async def send(self, data: bytes) -> None:
        with contextlib.suppress(ConnectionError):
            self.writer.write(data)
            await self.writer.drain()


async def run_session(port: int, steps: list[tuple[str, Any]], eol: bytes) -> list[str]:
    """Plays ``steps``; the markers of the messages answered 250 2.0.0."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    peer = Peer(reader, writer, eol)
    accepted: list[str] = []
    try:
        greeting = await peer.reply()
        assert greeting.startswith(("220", "421")), greeting
        for kind, value in steps:
            if peer.closed:
                break
            if kind == "cmd":
                await peer.send(value.encode("utf-8", "surrogateescape") + eol)
                reply = await peer.reply()
                assert reply[:1] in "245<", reply
            elif kind == "pipeline":
                await peer.send(b"".join(v.encode("utf-8", "surrogateescape") + eol for v in value))
                for _ in value:
                    reply = await peer.reply()
                    assert reply[:1] in "245<", reply
                    if peer.closed:
                        break
            else:
                await peer.send(b"DATA" + eol)
                if not (await peer.reply()).startswith("354"):
                    continue
                await peer.send(value + b".\r\n")
                reply = await peer.reply()
                assert reply[:1] in "245<", reply
                if reply.startswith("250 2.0.0"):
                    accepted.append(value.split(b"\r\n", 1)[0].decode())
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return accepted


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
)  # fmt: skip
@given(steps=session(), eol=st.sampled_from([b"\r\n", b"\r\n", b"\n"]))
def test_smtp_sessions_never_crash_and_every_250_is_stored(
    running: Running, steps: list[tuple[str, Any]], eol: bytes
) -> None:
    """Any session gets a reply to every command (or a closed connection), never an
    internal error, and each message answered 250 is in email_content."""
    accepted = running.run(run_session(running.listener.port, steps, eol))
    for marker in accepted:
        found = running.run(
            running.app.db.fetchval(
                "SELECT count(*) FROM email_content WHERE position($1::bytea in raw) > 0",
                marker.encode(),
            )
        )
        assert found >= 1, marker
    running.run(budget_back(running.listener))


async def budget_back(listener: Listener) -> None:
    """Every byte a session held comes back once its session and commit are over."""
    await wait_for(lambda: _value(listener.budget.used == 0), 10)


async def _value(value: Any) -> Any:
    return value


def test_fuzz_sessions_take_every_path(running: Running) -> None:
    """The generators reach the paths the fuzz test is about: a 250, a 5xx refusal at
    MAIL, a size or line refusal after DATA (a fixed session, so it cannot go unseen)."""
    steps: list[tuple[str, Any]] = [
        ("cmd", "EHLO fuzz.test"),
        ("cmd", "MAIL FROM:<a\udcffb@mx.test>"),
        ("cmd", "MAIL FROM:<>"),
        ("cmd", "RCPT TO:<b+x@bounces.test>"),
        ("data", b"X-Fuzz: fixed-1\r\n\r\nok\r\n"),
        ("cmd", "MAIL FROM:<>"),
        ("cmd", "RCPT TO:<b+x@bounces.test>"),
        ("data", b"X-Fuzz: fixed-2\r\n\r\n" + b"L" * 3000 + b"\r\n"),
    ]
    accepted = running.run(run_session(running.listener.port, steps, b"\r\n"))
    assert accepted == ["X-Fuzz: fixed-1"]
    rejections = running.app.metrics.registry.get_sample_value
    assert rejections("smtp_listener_rejections_total", {"cause": "envelope"}) == 1
    assert rejections("smtp_listener_rejections_total", {"cause": "line_length"}) == 1


# -- MIME trees and DSNs through parser, classifier, store and processing -------------------


def _leaf() -> st.SearchStrategy[bytes]:
    return st.builds(
        lambda ctype, charset, cte, body: (
            f"Content-Type: {ctype}; charset={charset}\r\nContent-Transfer-Encoding: {cte}\r\n\r\n"
        ).encode()
        + body,
        st.sampled_from(["text/plain", "text/html", "application/pdf", "text/rfc822-headers",
                         "message/delivery-status", "message/feedback-report"]),
        st.sampled_from(["utf-8", "iso-8859-1", "x-unknown", ""]),
        st.sampled_from(["7bit", "base64", "quoted-printable", "8bit"]),
        st.binary(max_size=120),
    )  # fmt: skip


DSN_FIELDS = st.lists(
    st.tuples(
        st.sampled_from(["Final-Recipient", "Original-Recipient", "Action", "Status",
                         "Diagnostic-Code", "Remote-MTA", "Reporting-MTA", "Arrival-Date",
                         "X-Postfix-Queue-ID", "Last-Attempt-Date", "Feedback-Type"]),
        st.one_of(
            st.sampled_from(["rfc822; gone@rcpt.test", "failed", "delayed", "5.1.1", "4.4.7",
                             "smtp; 550 5.1.1 user unknown", "dns; mx.rcpt.test", "abuse",
                             "rfc822; b+x@bounces.test", "9.9.9", "", "x" * 300]),
            st.text(max_size=40).map(lambda t: t.replace("\r", " ").replace("\n", " ")),
        ),
    ),
    max_size=10,
)  # fmt: skip


@st.composite
def mime_tree(draw: st.DrawFn, depth: int = 3) -> bytes:
    """A multipart/report (or any multipart, or a single part) with DSN-like fields,
    returned headers, bad boundaries and nesting."""
    if depth == 0 or draw(st.integers(0, 3)) == 0:
        if draw(st.booleans()):
            fields = draw(DSN_FIELDS)
            text = "".join(f"{k}: {v}\r\n" for k, v in fields)
            return b"Content-Type: message/delivery-status\r\n\r\n" + text.encode(
                "utf-8", "surrogateescape"
            )
        return draw(_leaf())
    parts = draw(st.lists(mime_tree(depth - 1), max_size=4))
    boundary = draw(st.sampled_from(["B", "b-1", "=_x", "", "very" * 20]))
    sub = draw(
        st.sampled_from(
            [
                "report; report-type=delivery-status",
                "report; report-type=feedback-report",
                "mixed",
                "alternative",
            ]
        )
    )
    head = f'Content-Type: multipart/{sub}; boundary="{boundary}"\r\n\r\n'.encode()
    sep = b"--" + boundary.encode()
    body = b"".join(sep + b"\r\n" + p + b"\r\n" for p in parts)
    closing = draw(st.sampled_from([sep + b"--\r\n", b"", sep + b"\r\n"]))
    return head + body + closing


@st.composite
def report(draw: st.DrawFn) -> bytes:
    headers = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["From", "To", "Subject", "Message-ID", "Return-Path",
                                 "Auto-Submitted", "X-Failed-Recipients", "In-Reply-To"]),
                st.one_of(
                    st.sampled_from(["MAILER-DAEMON@mx.test", "b+x@bounces.test",
                                     "Undelivered Mail Returned to Sender", "auto-replied",
                                     "<m@x.test>", "gone@rcpt.test"]),
                    st.binary(max_size=40).map(
                        lambda b: b.replace(b"\r", b"").replace(b"\n", b"").decode("latin-1")
                    ),
                ),
            ),
            max_size=6,
        )
    )  # fmt: skip
    head = "".join(f"{k}: {v}\r\n" for k, v in headers).encode("utf-8", "surrogateescape")
    return head + b"MIME-Version: 1.0\r\n" + draw(mime_tree())


@pytest.fixture
def mailbox(running: Running) -> Account:
    """A mailbox account row for the stored reports (never connected to)."""
    account = Account(
        id=f"acct_{uuid.uuid4().hex[:8]}",
        tenant_id="t1",
        address="box@fuzz.test",
        imap_host="127.0.0.1",
        imap_port=1,
        imap_security="none",
        imap_username="box@fuzz.test",
        password_enc=b"",
        master_user=None,
        folders=("INBOX",),
    )
    running.run(
        running.app.db.execute(
            "INSERT INTO email_accounts (id, tenant_id, address) VALUES ($1, 't1', $2)",
            account.id,
            account.address,
        )
    )
    running.run(
        running.app.db.execute(
            "INSERT INTO email_deliveries (id, tenant_id, recipient_email, idempotency_key,"
            " message_id, status, sent_at, email_account_id)"
            " VALUES ('d1', 't1', 'gone@rcpt.test', 'k1', '<m@x.test>', 'sent', now(), $1)",
            account.id,
        )
    )
    return account


_uid = iter(range(1, 10**9))


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
)  # fmt: skip
@given(raw=report())
def test_reports_parse_classify_store_and_process(
    running: Running, mailbox: Account, raw: bytes
) -> None:
    """Any report: ingest's parser and the classifier never raise, the mailbox store keeps
    the raw byte for byte, and bounce processing of the stored copy completes."""
    results = classify(raw)
    assert results and all(r.kind in ("dsn", "complaint", "auto_reply", "not_bounce")
                           for r in results)  # fmt: skip
    analysed = analyse(raw, 1 << 20)
    assert analysed.raw == raw
    position = MailboxPosition(mailbox.id, "INBOX", 1, next(_uid))

    async def store_and_process() -> dict[str, Any]:
        async with running.app.db.acquire() as conn:
            [outcome] = await store_batch(conn, [Pending(mailbox, position, analysed)])
        stored = await running.app.db.fetchval(
            "SELECT raw FROM email_content WHERE storage_key = $1", outcome.storage_key
        )
        assert bytes(stored) == raw
        handler = create_handler(running.app, running.services)
        body = new_job({"tenant_id": "t1", "storage_key": outcome.storage_key,
                        "source": "mailbox"}, queue_name=BOUNCE)  # fmt: skip
        job = parse_job(json.dumps(body).encode(), BOUNCE)
        result: dict[str, Any] = await handler.run(job, handler.parse(job.payload))
        return result

    result = running.run(store_and_process())
    assert result["success"] is True
    # Evidence or nothing: the fuzzed report carries no genuine token; only the exact
    # Message-ID of d1 sent to gone@rcpt.test from this account may attribute it.
    changed = running.run(
        running.app.db.fetchval("SELECT status FROM email_deliveries WHERE id = 'd1'")
    )
    if changed != "sent":
        assert b"<m@x.test>" in raw
