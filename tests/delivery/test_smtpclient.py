"""The pool's SMTP client: the pure reply parser and DATA encoding (Hypothesis), and whole
sessions against Postfix's smtpd and smtp-sink (PIPELINING) and aiosmtpd peers (implicit TLS,
AUTH, hang-ups), every failure ending as a reply value or a TransportError."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from delivery.errors import TransportError
from delivery.smtpclient import (
    MAX_LINE,
    ProtocolError,
    ReplyParser,
    SmtpConnection,
    dot_stuffed,
    path,
)
from tests.daemon import poll
from tests.delivery.peer import ScriptedPeer, make_test_ca
from tests.peers.fixtures import private_dir
from tests.peers.postfix import Postfix
from tests.peers.smtpsink import SmtpSink

MESSAGE = b"From: a@sender.test\r\nTo: b@example.org\r\nSubject: hi\r\n\r\n.leading dot\r\nbody\r\n"


def test_reply_parser_joins_multiline_replies_split_anywhere() -> None:
    """A multi-line reply fed a byte at a time comes out once, whole, in order."""
    parser = ReplyParser()
    got = []
    for byte in b"250-peer.test\r\n250-PIPELINING\r\n250 SIZE 100\r\n354 go on\r\n":
        got += parser.feed(bytes([byte]))
    assert got == [(250, "peer.test\nPIPELINING\nSIZE 100"), (354, "go on")]


@pytest.mark.parametrize(
    "data",
    [
        b"hello there\r\n",
        b"25\r\n",
        b"250-one\r\n550 two\r\n",
        b"2" * (MAX_LINE + 10) + b"\r\n",
        b"250-x\r\n" * 101,
        b"2" * 70_000,
    ],
)
def test_reply_parser_refuses_what_is_not_smtp(data: bytes) -> None:
    """Garbage, a code change mid-reply, over-long lines, replies or buffers are errors."""
    with pytest.raises(ProtocolError):
        ReplyParser().feed(data)


@given(st.lists(st.binary(max_size=300), max_size=20))
def test_reply_parser_raises_only_protocol_errors(chunks: list[bytes]) -> None:
    """Whatever a peer sends, the parser returns replies or raises ProtocolError."""
    parser = ReplyParser()
    try:
        for chunk in chunks:
            for code, _ in parser.feed(chunk):
                assert 0 <= code <= 999
    except ProtocolError:
        pass


def unstuff(data: bytes) -> bytes:
    """What a server stores from DATA content (RFC 5321 4.5.2), terminator removed."""
    assert data.endswith(b"\r\n.\r\n")
    lines = data[: -len(b".\r\n")].split(b"\r\n")
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)


@given(
    st.lists(
        st.sampled_from([b".", b"..", b"a", b"\r\n", b"\n", b"\r", b" ."]), min_size=1, max_size=40
    )
)
def test_dot_stuffing_round_trips(parts: list[bytes]) -> None:
    """DATA content never ends early, and un-stuffing gives the message with CRLF line ends."""
    message = b"".join(parts)
    data = dot_stuffed(message)
    assert data.find(b"\r\n.\r\n") == len(data) - 5 and not data.startswith(b".\r\n")
    assert not re.search(rb"(?<!\r)\n|\r(?!\n)", data)
    expected = re.sub(rb"\r\n|\r|\n", b"\r\n", message)
    if not expected.endswith(b"\r\n"):
        expected += b"\r\n"
    assert unstuff(data) == expected


@pytest.mark.parametrize("address", ["a@b>\r\nRCPT TO:<x@y", "a b@c", "a\x00@b", "<a@b>"])
def test_paths_refuse_injection(address: str) -> None:
    """Addresses that would add a command or break the line are refused, not written."""
    with pytest.raises(ValueError, match="not usable"):
        path(address, utf8=False)
    assert path("", utf8=False) == b"<>"


async def test_pipelined_session_against_smtp_sink(smtp_sink: Callable[..., SmtpSink]) -> None:
    """smtp-sink offers PIPELINING: 50 transactions on one connection all arrive intact,
    dot-stuffing undone by the server."""
    sink = smtp_sink(dump_dir=private_dir("pipelined-dump"))
    conn = await SmtpConnection.open("127.0.0.1", sink.port, security="none", helo_name="me")
    assert "PIPELINING" in conn.extensions
    for i in range(50):
        reply = await conn.transaction("ops@sender.test", f"r{i}@example.org", MESSAGE)
        assert reply is not None and reply.code == 250
    await conn.quit()

    async def dumped() -> int:
        return sink.dumped().count(b"\n.leading dot")

    assert await poll(dumped, lambda n: n >= 50, timeout_s=10) == 50


async def test_pipelined_refusals_from_postfix_code(smtp_sink: Callable[..., SmtpSink]) -> None:
    """A refused RCPT decides the transaction (DATA's 554 is not the answer) and the session
    stays usable; a hang-up after MAIL's 250 is a TransportError."""
    sink = smtp_sink(hard_reject=["rcpt"])
    conn = await SmtpConnection.open("127.0.0.1", sink.port, security="none", helo_name="me")
    reply = await conn.transaction("ops@sender.test", "r@example.org", MESSAGE)
    assert reply is not None and reply.code // 100 == 5 and "RCPT" not in reply.text[:3]
    assert conn.is_usable
    again = await conn.transaction("ops@sender.test", "r@example.org", MESSAGE)
    assert again is not None and again.code == reply.code
    await conn.quit()
    gone = smtp_sink(disconnect=["rcpt"])
    conn = await SmtpConnection.open("127.0.0.1", gone.port, security="none", helo_name="me")
    with pytest.raises(TransportError):
        await conn.transaction("ops@sender.test", "r@example.org", MESSAGE)
    assert not conn.is_usable


async def test_stale_connection_reports_none(smtp_sink: Callable[..., SmtpSink]) -> None:
    """A connection the server closed while idle is reported as None (nothing was sent)."""
    peer = await ScriptedPeer().start()
    try:
        conn = await SmtpConnection.open("127.0.0.1", peer.port, security="none", helo_name="me")
        for proto in peer._protocols:
            assert proto.transport is not None
            proto.transport.close()
        assert await conn.transaction("ops@sender.test", "r@example.org", MESSAGE) is None
    finally:
        await peer.stop()


async def test_implicit_tls_and_auth(tmp_path: Path) -> None:
    """Port-465 style TLS verified against the test CA, AUTH with the right password; a
    wrong password and an unverifiable certificate are TransportErrors naming the cause."""
    import ssl

    ca = make_test_ca(tmp_path)
    client_ctx = ssl.create_default_context(cafile=str(ca.ca_file))
    peer = await ScriptedPeer(implicit_tls=ca.server_context, users={"ops": "pw"}).start()
    try:

        async def login(password: str) -> SmtpConnection:
            return await SmtpConnection.open(
                "127.0.0.1",
                peer.port,
                security="tls",
                tls_context=client_ctx,
                helo_name="me",
                username="ops",
                password=password,
            )

        conn = await login("pw")
        reply = await conn.transaction("ops@sender.test", "r@example.org", MESSAGE)
        assert reply is not None and reply.code == 250 and peer.auth_ok == ["ops"]
        await conn.quit()
        with pytest.raises(TransportError, match="AUTH refused: 535"):
            await login("wrong")
        with pytest.raises(TransportError, match=r"SSL|certificate"):
            await SmtpConnection.open("127.0.0.1", peer.port, security="tls", helo_name="me")
    finally:
        await peer.stop()


async def test_starttls_required_when_asked(smtp_sink: Callable[..., SmtpSink]) -> None:
    """An endpoint configured for STARTTLS that does not offer it gets no credentials."""
    peer = await ScriptedPeer().start()
    try:
        with pytest.raises(TransportError, match="does not offer STARTTLS"):
            await SmtpConnection.open(
                "127.0.0.1", peer.port, security="starttls", username="u", password="p"
            )
    finally:
        await peer.stop()


async def test_silent_server_times_out() -> None:
    """A server that accepts TCP and never greets is a TransportError after the timeout."""
    writers: list[asyncio.StreamWriter] = []
    server = await asyncio.start_server(lambda r, w: writers.append(w), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(TransportError, match="TimeoutError"):
            await SmtpConnection.open("127.0.0.1", port, security="none", connect_timeout_s=0.3)
    finally:
        for w in writers:
            w.close()
        server.close()
        await server.wait_closed()


async def test_real_postfix_takes_pipelined_transactions(postfix: Postfix) -> None:
    """Postfix's smtpd (PIPELINING, SIZE, SMTPUTF8): 20 pipelined transactions on one
    connection are accepted and its log has no "improper command pipelining"; a UTF-8
    address goes with SMTPUTF8; a message over message_size_limit is refused at MAIL by its
    SIZE, before any content is sent, and the session stays usable."""
    conn = await SmtpConnection.open(
        "127.0.0.1", postfix.port, security="none", helo_name="client.test"
    )
    assert {"PIPELINING", "SIZE", "SMTPUTF8"} <= set(conn.extensions)
    for i in range(20):
        reply = await conn.transaction("ops@sender.test", f"user{i}@local.test", MESSAGE)
        assert reply is not None and reply.code == 250, reply
    reply = await conn.transaction("ops@sender.test", "jörg@local.test", MESSAGE)
    assert reply is not None and reply.code == 250, reply
    big = MESSAGE + b"x" * (52428800 + 10) + b"\r\n"
    reply = await conn.transaction("ops@sender.test", "user@local.test", big)
    assert reply is not None and reply.code == 552 and reply.enhanced == "5.3.4", reply
    assert "exceeds fixed limit" in reply.text, reply  # refused at MAIL (after DATA: "too big")
    assert conn.is_usable
    await conn.quit()
    assert "improper command pipelining" not in postfix.log_tail(500)


async def test_transaction_deadline() -> None:
    """A server that stops answering after EHLO: the transaction ends with a TransportError
    after its deadline (three command timeouts), and the connection is closed."""
    writers: list[asyncio.StreamWriter] = []

    async def mute_after_ehlo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        writer.write(b"220 mute.test\r\n")
        await reader.readline()
        writer.write(b"250-mute.test\r\n250 PIPELINING\r\n")
        await reader.read(65536)  # the pipelined MAIL/RCPT/DATA: never answered

    server = await asyncio.start_server(mute_after_ehlo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        conn = await SmtpConnection.open(
            "127.0.0.1", port, security="none", helo_name="me", command_timeout_s=0.1
        )
        started = asyncio.get_running_loop().time()
        with pytest.raises(TransportError, match="TimeoutError"):
            await conn.transaction("ops@sender.test", "r@example.org", MESSAGE)
        assert 0.25 <= asyncio.get_running_loop().time() - started < 2
        assert not conn.is_usable
    finally:
        for w in writers:
            w.close()
        server.close()
        await server.wait_closed()
