"""Persistent SMTP connections per (endpoint, credentials), recycled on purpose.

Lifetimes, named: a *connection* (TCP + TLS + EHLO + AUTH) lives for at most
``max_messages`` transactions and ``idle_s`` of idleness, and ends at the first protocol
error, transport error or 421; a *transaction* (MAIL, RCPT, DATA) ends with the reply to
DATA, or with RSET after a refused MAIL/RCPT so the connection is clean for the next one.
Connections are opened lazily when a send needs one and there is no idle one, at most
``max_per_endpoint`` per endpoint in this process (more sends wait for a free one).

A reused connection the server has meanwhile closed fails at MAIL FROM, before anything of
the message was sent: that one send is retried once on a fresh connection. A connection
that breaks after DATA began is *not* retried here (the server may have the message): the
job runtime retries it later, which is the documented duplicate window.

The SMTP conversation itself is :mod:`delivery.smtpclient` (with PIPELINING when offered).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from delivery.errors import TransportError
from delivery.reply import SmtpReply
from delivery.smtpclient import SmtpConnection

log = logging.getLogger(__name__)

SECURITIES = ("starttls", "tls", "none")


@dataclass(frozen=True)
class Endpoint:
    """An SMTP submission endpoint and the credentials to log in with."""

    host: str
    port: int
    security: str = "starttls"
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def key(self) -> tuple[str, int, str, str, str]:
        """Pool identity: the password by hash, so it never sits in a dict key's repr."""
        digest = hashlib.sha256((self.password or "").encode()).hexdigest()[:16]
        return (self.host.lower(), self.port, self.security, self.username or "", digest)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}/{self.security}"


@dataclass
class _Connection:
    smtp: SmtpConnection
    opened: float
    last_used: float
    transactions: int = 0


class _EndpointSlots:
    def __init__(self, limit: int):
        self.idle: list[_Connection] = []
        self.open = 0
        self.free = asyncio.Semaphore(limit)


class SmtpPool:
    """Sends one transaction at a time per connection over pooled connections."""

    def __init__(
        self,
        *,
        helo_name: str | None = None,
        tls_context: ssl.SSLContext | None = None,
        max_per_endpoint: int = 20,
        max_messages: int = 100,
        idle_s: float = 30.0,
        connect_timeout_s: float = 15.0,
        command_timeout_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.helo_name = helo_name or None
        self.tls_context = tls_context
        self.max_per_endpoint = max_per_endpoint
        self.max_messages = max_messages
        self.idle_s = idle_s
        self.connect_timeout_s = connect_timeout_s
        self.command_timeout_s = command_timeout_s
        self.clock = clock
        self._endpoints: dict[tuple[str, int, str, str, str], _EndpointSlots] = {}
        self._closing = False
        self._quitting: set[asyncio.Task[None]] = set()
        self.opened_total = 0

    @property
    def open_connections(self) -> int:
        return sum(s.open for s in self._endpoints.values())

    async def send(
        self, endpoint: Endpoint, sender: str, recipient: str, message: bytes
    ) -> SmtpReply:
        """One transaction: the reply that decides the recipient (DATA's, or a refusal).

        Raises :class:`TransportError` when no reply could be had.
        """
        if self._closing:
            raise TransportError("SMTP pool is closing")
        slots = self._endpoints.get(endpoint.key)
        if slots is None:
            slots = self._endpoints[endpoint.key] = _EndpointSlots(self.max_per_endpoint)
        async with slots.free:
            conn = self._take_idle(slots)
            reused = conn is not None
            while True:
                if conn is None:
                    conn = await self._open(endpoint, slots)
                try:
                    reply = await self._transaction(conn, sender, recipient, message)
                except TransportError:
                    await self._discard(conn, slots)
                    raise
                if reply is None:  # the server dropped a reused connection before MAIL
                    await self._discard(conn, slots)
                    if reused:
                        conn, reused = None, False
                        continue
                    raise TransportError("connection closed before MAIL FROM was answered")
                self._give_back(conn, slots, reply)
                return reply

    def _take_idle(self, slots: _EndpointSlots) -> _Connection | None:
        now = self.clock()
        while slots.idle:
            conn = slots.idle.pop()
            if now - conn.last_used <= self.idle_s and conn.smtp.is_usable:
                return conn
            slots.open -= 1
            self._close_soon(conn)
        return None

    async def _open(self, endpoint: Endpoint, slots: _EndpointSlots) -> _Connection:
        if endpoint.security not in SECURITIES:
            raise TransportError(f"unknown SMTP security {endpoint.security!r}")
        if self.helo_name is None:
            # Once per pool, off the loop: getfqdn may ask DNS.
            self.helo_name = await asyncio.to_thread(socket.getfqdn)
        try:
            smtp = await SmtpConnection.open(
                endpoint.host,
                endpoint.port,
                security=endpoint.security,
                tls_context=self.tls_context,
                helo_name=self.helo_name,
                username=endpoint.username,
                password=endpoint.password,
                connect_timeout_s=self.connect_timeout_s,
                command_timeout_s=self.command_timeout_s,
            )
        except TransportError as exc:
            # Greeting, EHLO, TLS or AUTH failed: the endpoint, not the recipient, failed.
            raise TransportError(f"{endpoint}: {exc}") from None
        now = self.clock()
        slots.open += 1
        self.opened_total += 1
        return _Connection(smtp, now, now)

    async def _transaction(
        self, conn: _Connection, sender: str, recipient: str, message: bytes
    ) -> SmtpReply | None:
        """The deciding reply; None: the server was gone before MAIL FROM's reply."""
        conn.transactions += 1
        try:
            return await conn.smtp.transaction(sender, recipient, message)
        except ValueError as exc:
            # An address this server cannot take (non-ASCII without SMTPUTF8): what an MTA
            # reports for it, RFC 6531's 553 5.6.7, so it fails and bounces like one.
            return SmtpReply.parse(553, f"5.6.7 {exc} (mailgate; not sent)")

    def _give_back(self, conn: _Connection, slots: _EndpointSlots, reply: SmtpReply) -> None:
        conn.last_used = self.clock()
        healthy = (
            not self._closing
            and reply.code != 421
            and conn.smtp.is_usable
            and conn.transactions < self.max_messages
        )
        if healthy:
            slots.idle.append(conn)
        else:
            slots.open -= 1
            self._close_soon(conn)

    async def _discard(self, conn: _Connection, slots: _EndpointSlots) -> None:
        slots.open -= 1
        conn.smtp.close()

    def _close_soon(self, conn: _Connection) -> None:
        """QUIT politely in the background (bounded); close hard if that fails."""
        task = asyncio.get_running_loop().create_task(self._quit(conn.smtp))
        self._quitting.add(task)
        task.add_done_callback(self._quitting.discard)

    async def _quit(self, smtp: SmtpConnection) -> None:
        await smtp.quit(timeout_s=2.0)

    async def close(self) -> None:
        """Stop pooling: idle connections are closed now, busy ones when they come back."""
        self._closing = True
        for slots in self._endpoints.values():
            while slots.idle:
                slots.open -= 1
                self._close_soon(slots.idle.pop())
        if self._quitting:
            with contextlib.suppress(Exception):
                await asyncio.gather(*list(self._quitting), return_exceptions=True)
