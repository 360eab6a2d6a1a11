"""A scriptable SMTP peer (aiosmtpd on the test's own loop) and a test CA.

``ScriptedPeer`` answers 250 unless told otherwise per recipient: ``rcpt`` replies
("550 5.1.1 no such user", "451 4.7.1 try again in 7 seconds", "421 4.3.2 closing") at
RCPT, ``data`` replies at the end of DATA, or ``"drop"`` to cut the connection at DATA.
It advertises PIPELINING unless told not to, so both ways of the client are exercised.
It keeps every accepted message (envelope + bytes) for checking, counts connections, and
can require STARTTLS and AUTH.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes


@dataclass
class Script:
    rcpt: dict[str, str] = field(default_factory=dict)
    data: dict[str, str] = field(default_factory=dict)


class _Handler:
    def __init__(self, peer: ScriptedPeer):
        self.peer = peer

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        if self.peer.pipelining:  # aiosmtpd reads commands in order, so it can pipeline
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        reply = self.peer.script.rcpt.get(address.lower())
        if reply is not None:
            if reply.startswith("421"):
                self.peer.loop.call_soon(server.transport.close)  # type: ignore[union-attr]
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        rcpt = envelope.rcpt_tos[0].lower()
        reply = self.peer.script.data.get(rcpt)
        if reply == "drop":
            server.transport.abort()  # type: ignore[union-attr]
            self.peer.dropped += 1
            return "250 never seen"
        if reply is not None:
            return reply
        content = envelope.original_content or b""
        self.peer.messages.append(
            Received(envelope.mail_from or "", list(envelope.rcpt_tos), content)
        )
        self.peer.arrived.set()
        return "250 2.0.0 queued as X"


class ScriptedPeer:
    def __init__(
        self,
        *,
        tls: ssl.SSLContext | None = None,
        users: dict[str, str] | None = None,
        pipelining: bool = True,
        implicit_tls: ssl.SSLContext | None = None,
    ):
        self.pipelining = pipelining
        self.implicit_tls = implicit_tls
        self.script = Script()
        self.messages: list[Received] = []
        self.arrived = asyncio.Event()
        self.connections = 0
        self.dropped = 0
        self.auth_ok: list[str] = []
        self.tls = tls
        self.users = users
        self.loop = asyncio.get_running_loop()
        self.server: asyncio.Server | None = None
        self._protocols: list[SMTP] = []
        self.port = 0

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        user = data.login.decode()
        ok = self.users is not None and self.users.get(user) == data.password.decode()
        if ok:
            self.auth_ok.append(user)
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535

    def _factory(self) -> SMTP:
        self.connections += 1
        with warnings.catch_warnings():
            # aiosmtpd does not count implicit TLS (port 465 style) as TLS when deciding
            # whether to offer AUTH, and warns about AUTH without required TLS: the
            # connection is TLS from the first byte, so neither applies.
            warnings.simplefilter("ignore", UserWarning)
            proto = SMTP(
                _Handler(self),
                hostname="peer.test",
                tls_context=self.tls,
                require_starttls=self.tls is not None,
                authenticator=self._authenticate if self.users is not None else None,
                auth_required=self.users is not None,
                auth_require_tls=self.tls is not None,
            )
        self._protocols.append(proto)
        return proto

    async def start(self) -> ScriptedPeer:
        self.server = await self.loop.create_server(
            self._factory, "127.0.0.1", 0, ssl=self.implicit_tls
        )
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            for proto in self._protocols:
                if proto.transport is not None:
                    proto.transport.close()
            await asyncio.sleep(0)


@dataclass
class TestCA:
    ca_file: Path
    server_context: ssl.SSLContext


def make_test_ca(folder: Path) -> TestCA:
    """A CA and a server certificate for 127.0.0.1 / localhost signed by it."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mailgate test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = folder / "ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file, key_file = folder / "server.pem", folder / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert_file, key_file)
    return TestCA(ca_file, ctx)
