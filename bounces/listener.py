"""The SMTP listener of the bounce domain: aiosmtpd on the daemon's own loop.

Remote MTAs (or the platform's Mailu, routing the bounce domain here) deliver DSNs,
complaints and auto-replies to ``b+<token>@<bounce-domain>``. The listener:

* takes recipients of ``bounce_domains`` only (550 5.7.1 otherwise) and never relays;
* enforces every limit of :class:`~bounces.smtp_policy.Limits`, idle and DATA timeouts,
  and offers STARTTLS when a certificate is configured;
* answers 250 only after :class:`~bounces.intake.Intake` committed the message and queued
  its processing; any failure there is a plain 451 4.3.0 (the peer retries);
* never sends internal error text: aiosmtpd's default exception reply (which quotes the
  exception) is replaced by the same 451.

Decisions are made by the pure :mod:`bounces.smtp_policy`; this module is the glue. The
commit runs in the intake's own task (a group commit), apart from the session: a peer that
hangs up during the commit does not cut the transaction in half, and :meth:`Listener.stop`
waits for it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import ssl
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from bounces.errors import BounceError
from bounces.intake import Intake, SmtpEnvelope
from bounces.metrics import BounceMetrics
from bounces.smtp_policy import (
    COMMAND_LIMITS,
    ConnectionGate,
    DataReader,
    Decision,
    Limits,
    RecipientPolicy,
    Replies,
)
from gateway.app import App
from gateway.compat.aiosmtpd import FastSMTP
from gateway.settings import Settings

log = logging.getLogger(__name__)

IDENT = "ESMTP mailgate"


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """A server context for STARTTLS, or None when no certificate is configured."""
    if settings.smtp_tls_cert_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(
        str(settings.smtp_tls_cert_file),
        str(settings.smtp_tls_key_file) if settings.smtp_tls_key_file else None,
    )
    return context


class _Hooks:
    """aiosmtpd handler hooks: recipient policy, EHLO trimming, and the error reply."""

    def __init__(self, listener: Listener):
        self.listener = listener

    async def handle_RCPT(
        self, server: Any, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        decision = self.listener.policy.check_rcpt(address, len(envelope.rcpt_tos))
        if not decision.accepted:
            self.listener.reject(decision)
            assert decision.reply is not None
            return decision.reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return Replies.RCPT_OK

    async def handle_EHLO(
        self, server: Any, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        # No AUTH here (nothing to log in to); aiosmtpd would advertise an empty list.
        return [r for r in responses if not r[4:].startswith("AUTH")]

    async def handle_exception(self, error: Exception) -> str:
        log.error("bounce listener: unexpected error in an SMTP session", exc_info=error)
        self.listener.metrics.rejections.labels("error").inc()
        return Replies.TRY_AGAIN


class BounceSMTP(FastSMTP):
    """One SMTP connection of the bounce listener (aiosmtpd's ``SMTP`` with our limits;
    its internals only through :mod:`gateway.compat.aiosmtpd`)."""

    def __init__(self, listener: Listener):
        # Read by SMTP.__init__ for the stream's buffer limit: the longest line we read.
        self.line_length_limit = listener.limits.max_line_bytes
        # aiosmtpd keeps this dict on the class and clears it per connection; give each
        # connection its own so sessions cannot change one another's limits.
        self.command_size_limits = collections.defaultdict(lambda: SMTP.command_size_limit)
        super().__init__(
            listener.hooks,
            data_size_limit=listener.limits.max_message_bytes,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=listener.hostname,
            ident=IDENT,
            tls_context=listener.tls,
            timeout=listener.settings.smtp_idle_timeout_s,
            auth_exclude_mechanism=("LOGIN", "PLAIN"),
            command_call_limit=COMMAND_LIMITS,
            loop=asyncio.get_running_loop(),
        )
        self.listener = listener
        self.peer_ip: str | None = None
        self.refused = False
        self.timed_out = False
        self.messages = 0
        self.busy = False

    # -- connection lifecycle ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if self.transport is None and self.peer_ip is None:  # not the STARTTLS re-entry
            peer = transport.get_extra_info("peername") or ("?", 0)
            ip = str(peer[0])
            decision = self.listener.admit(ip)
            if not decision.accepted:
                self.refused = True
                assert decision.reply is not None
                transport.write(decision.reply.encode() + b"\r\n")
                transport.close()
                return
            self.peer_ip = ip
            self.listener.sessions.add(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self.refused:
            self.listener.metrics.sessions.labels("refused").inc()
            return
        if self.peer_ip is not None:
            self.listener.release(self.peer_ip)
            self.listener.sessions.discard(self)
            self.peer_ip = None
            result = "accepted" if self.messages else ("timeout" if self.timed_out else "empty")
            self.listener.metrics.sessions.labels(result).inc()
        super().connection_lost(error)

    def on_idle_timeout(self) -> None:
        self.timed_out = True

    def close_if_idle(self) -> bool:
        """On shutdown: say 421 and close unless a message is being stored (True: closed)."""
        if self.busy or self.transport is None:
            return False
        with contextlib.suppress(Exception):
            self.write_line(Replies.SHUTTING_DOWN)
        self.transport.close()
        return True

    # -- commands ---------------------------------------------------------------------------

    async def smtp_MAIL(self, arg: str | None) -> None:
        decision = self.listener.policy.check_declared_size(arg)
        if decision.reply is not None:
            self.listener.reject(decision)
            await self.push(decision.reply)
            return
        await super().smtp_MAIL(arg)

    async def smtp_DATA(self, arg: str | None) -> None:
        """DATA read by :class:`DataReader`; 250 only once :class:`Intake` committed."""
        if await self.check_helo_needed():
            return
        envelope = self.envelope
        assert envelope is not None
        if not envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        self.reset_idle_timeout(self.listener.settings.smtp_data_timeout_s)
        reader = DataReader(self.listener.limits.max_message_bytes, self.line_length_limit)
        while True:
            chunk = await self.read_data_chunk()
            if chunk is None:
                return  # the peer went away mid-message: nothing was accepted
            if reader.feed(chunk):
                break
        content = reader.finish()
        self.reset_idle_timeout()
        self.end_data()
        if reader.error is not None and reader.error.reply is not None:
            self.listener.reject(reader.error)
            await self.push(reader.error.reply)
            return
        self.busy = True
        try:
            reply = await self.listener.deliver(
                SmtpEnvelope(
                    mail_from=(envelope.mail_from or "").strip("<>"),
                    rcpt_tos=tuple(envelope.rcpt_tos),
                    peer=self.peer_ip or "",
                ),
                content,
            )
        finally:
            self.busy = False
        if reply == Replies.ACCEPTED:
            self.messages += 1
        await self.push(reply)
        if self.listener.closing:
            self.close_if_idle()


class Listener:
    """The bounce listener's server: start, serve, drain on stop."""

    def __init__(self, app: App, intake: Intake, metrics: BounceMetrics):
        self.app = app
        self.settings = app.settings
        self.limits = Limits.from_settings(app.settings)
        self.policy = RecipientPolicy(app.settings.bounce_domains, self.limits)
        self.gate = ConnectionGate(self.limits)
        self.metrics: BounceMetrics = metrics
        self.intake = intake
        self.hostname = app.settings.smtp_hostname or socket.gethostname()
        self.tls = tls_context(app.settings)
        self.hooks = _Hooks(self)
        self.sessions: set[BounceSMTP] = set()
        self.closing = False
        self._server: asyncio.Server | None = None
        self.port = 0

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        listen = self.settings.smtp_listen
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: BounceSMTP(self), listen.host, listen.port, reuse_address=True
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        if not self.policy.domains:
            log.warning("bounce listener: no bounce_domains configured; every RCPT gets 550")
        log.info(
            "bounce listener serving",
            extra={"listen": f"{listen.host}:{self.port}", "tls": self.tls is not None},
        )

    @property
    def serving(self) -> bool:
        return self._server is not None and self._server.is_serving()

    async def stop(self, deadline: float) -> None:
        """Stop accepting; close idle sessions (421); let messages being stored finish
        until ``deadline``; then abort what is left (those peers never got 250: they
        retry, and the dedupe key makes a retry of a committed message a no-op)."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        loop = asyncio.get_running_loop()
        try:
            for session in list(self.sessions):
                session.close_if_idle()
            while (self.sessions or self.intake.busy) and loop.time() < deadline:
                # Bounded polling: sessions finish their reply, commits finish.
                await asyncio.sleep(max(0.0, min(0.02, deadline - loop.time())))
                for session in list(self.sessions):
                    session.close_if_idle()
        finally:
            for session in list(self.sessions):
                if isinstance(session.transport, asyncio.Transport):
                    session.transport.abort()
            await self.intake.close()
            if self._server is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._server.wait_closed(), timeout=1.0)
                self._server = None

    # -- used by sessions -------------------------------------------------------------------

    def admit(self, ip: str) -> Decision:
        if self.closing:
            return Decision(Replies.SHUTTING_DOWN, "shutting_down")
        decision = self.gate.admit(ip)
        if not decision.accepted:
            self.reject(decision)
        return decision

    def release(self, ip: str) -> None:
        self.gate.release(ip)

    def reject(self, decision: Decision) -> None:
        self.metrics.rejections.labels(decision.cause or "other").inc()

    async def deliver(self, envelope: SmtpEnvelope, raw: bytes) -> str:
        """Commit and queue one message; the reply for the peer."""
        try:
            await self.intake.accept(envelope, raw)
        except BounceError as exc:
            log.warning("bounce listener: message not accepted (451): %s", exc)
            self.metrics.rejections.labels("storage").inc()
            return Replies.TRY_AGAIN
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("bounce listener: unexpected error storing a message (451)")
            self.metrics.rejections.labels("error").inc()
            return Replies.TRY_AGAIN
        return Replies.ACCEPTED
