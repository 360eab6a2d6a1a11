"""The SMTP listener of the bounce domain: aiosmtpd on the daemon's own loop.

Remote MTAs (or the platform's Mailu, routing the bounce domain here) deliver DSNs,
complaints and auto-replies to ``b+<token>@<bounce-domain>``. The listener:

* takes recipients of ``bounce_domains`` only (550 5.7.1 otherwise) and never relays, and
  a bare ``postmaster`` (RFC 5321 4.5.1), whose mail is kept for the operator;
* refuses at MAIL or RCPT an address that could never be stored (NUL, not UTF-8: 553),
  instead of a 451 after the data that the peer would retry for ever;
* enforces every limit of :class:`~bounces.smtp_policy.Limits`, idle (421 before closing)
  and DATA timeouts, and offers STARTTLS when a certificate is configured;
* holds message bytes within a global :class:`~bounces.smtp_policy.MemoryBudget` (a share
  per client address, a slice for small messages): past it a message gets 452 4.3.1 after
  its data, and a new connection 421 while all of it is in use. A message's bytes stay
  charged until its commit ended (even when the peer hung up meanwhile). Large buffers are
  returned to the operating system when freed (:func:`tune_allocator`), so memory comes
  back after a burst;
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
import ctypes
import ctypes.util
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
    Holding,
    Limits,
    MemoryBudget,
    RecipientPolicy,
    Replies,
)
from gateway.app import App
from gateway.compat.aiosmtpd import FastHandler, FastSMTP
from gateway.settings import Settings

log = logging.getLogger(__name__)

IDENT = "ESMTP mailgate"

#: glibc's mallopt parameters, and the size from which a buffer gets pages of its own.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_FROM_BYTES = 1024 * 1024
#: After a burst that held this much, memory is handed back once the budget is empty again.
_TRIM_AFTER_BYTES = 32 * 1024 * 1024


def _libc() -> Any:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_LIBC = _libc()


def tune_allocator() -> bool:
    """Make glibc give large buffers (messages) pages of their own, returned to the system
    when freed. Without it glibc raises its mmap threshold after the first large free (up
    to 32 MB), so later 10 MB messages come from the heap and a burst's memory stays held
    (the issue measured 2.4 GB held after 200 large messages). Process-wide, idempotent;
    False where the C library is not glibc."""
    if _LIBC is None:
        return False
    mmap = bool(_LIBC.mallopt(_M_MMAP_THRESHOLD, _MMAP_FROM_BYTES))
    return bool(_LIBC.mallopt(_M_TRIM_THRESHOLD, 2 * _MMAP_FROM_BYTES)) and mmap


def trim_heap() -> None:
    """Hand free heap pages back to the system (after a burst)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


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


class _Hooks(FastHandler):
    """aiosmtpd handler hooks: recipient policy, EHLO trimming, and the error reply."""

    def __init__(self, listener: Listener):
        self.listener = listener

    async def handle_MAIL(
        self, server: Any, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        decision = self.listener.policy.check_mail(address)
        if not decision.accepted:
            self.listener.reject(decision)
            assert decision.reply is not None
            return decision.reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

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
        """Say why before aiosmtpd closes the connection (RFC 5321 4.1.1.5 prefers a 421
        to a silent close)."""
        self.timed_out = True
        with contextlib.suppress(Exception):
            self.write_line(Replies.IDLE)

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
        holding = self.listener.budget.hold(self.peer_ip or "")
        delivering = False
        try:
            reader = DataReader(
                self.listener.limits.max_message_bytes, self.line_length_limit, holding
            )
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
            delivering = True
            try:
                reply = await self.listener.deliver(
                    SmtpEnvelope(
                        mail_from=(envelope.mail_from or "").strip("<>"),
                        rcpt_tos=tuple(envelope.rcpt_tos),
                        peer=self.peer_ip or "",
                    ),
                    content,
                    holding,
                )
            finally:
                self.busy = False
        finally:
            if not delivering:
                self.listener.release(holding)
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
        self.budget = MemoryBudget(
            self.limits.memory_budget_bytes, max_message_bytes=self.limits.max_message_bytes
        )
        self._burst_peak = 0
        self._storing: set[asyncio.Future[str]] = set()  # commits whose session may be gone
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
        tune_allocator()
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
        if self.budget.exhausted:
            decision = Decision(Replies.BUSY, "memory")
            self.reject(decision)
            return decision
        decision = self.gate.admit(ip)
        if not decision.accepted:
            self.reject(decision)
        return decision

    def release(self, ip_or_holding: str | Holding) -> None:
        """Give back a connection slot (an address) or a message's bytes (a holding);
        once a burst is over, its memory goes back to the system."""
        if isinstance(ip_or_holding, str):
            self.gate.release(ip_or_holding)
            return
        self._burst_peak = max(self._burst_peak, self.budget.used)
        ip_or_holding.release()
        if self.budget.used == 0 and self._burst_peak >= _TRIM_AFTER_BYTES:
            self._burst_peak = 0
            asyncio.get_running_loop().call_soon(trim_heap)

    def reject(self, decision: Decision) -> None:
        self.metrics.rejections.labels(decision.cause or "other").inc()

    async def deliver(self, envelope: SmtpEnvelope, raw: bytes, holding: Holding) -> str:
        """Commit and queue one message; the reply for the peer. The commit runs in a task
        of its own: a session cut meanwhile does not stop it, and the message's bytes are
        given back when it ends."""
        task = asyncio.ensure_future(self._store(envelope, raw))
        self._storing.add(task)
        task.add_done_callback(self._storing.discard)
        task.add_done_callback(lambda _: self.release(holding))
        return await asyncio.shield(task)

    async def _store(self, envelope: SmtpEnvelope, raw: bytes) -> str:
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
