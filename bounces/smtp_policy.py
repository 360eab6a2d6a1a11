"""What the bounce listener says, decided without sockets.

The listener (:mod:`bounces.listener`) is aiosmtpd glue; every decision it makes about a
peer's input lives here as pure code: which recipients it takes (only the bounce domains:
never an open relay), how many, how big a message and how long a line may be, how many
connections one address may hold, and how the DATA phase is read (dot-unstuffing, limits,
and the end-of-data rule that makes SMTP smuggling impossible: only ``CRLF . CRLF`` ends a
message, so a bare ``LF . LF`` or ``CR . CR`` inside it stays message content).

State lifetimes: :class:`ConnectionGate` lives as long as the listener, one
:class:`DataReader` per DATA command.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

from gateway.settings import Settings


class Replies:
    """Every reply the listener sends that is not aiosmtpd's own protocol chatter.

    None carries internal detail: a storage failure is a plain 451, whatever the cause.
    """

    ACCEPTED = "250 2.0.0 OK: message stored"
    RCPT_OK = "250 2.1.5 OK"
    RELAY_DENIED = "550 5.7.1 Relaying denied: this server only accepts bounces for its domains"
    BAD_ADDRESS = "501 5.1.3 Bad recipient address syntax"
    TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
    TOO_BIG = "552 5.3.4 Message size exceeds fixed maximum message size"
    LINE_TOO_LONG = "500 5.5.2 Line too long"
    TRY_AGAIN = "451 4.3.0 Temporary local problem, please try again later"
    TOO_MANY_CONNECTIONS_IP = "421 4.7.0 Too many connections from your address, try later"
    TOO_MANY_CONNECTIONS = "421 4.3.2 Too many connections, try again later"
    SHUTTING_DOWN = "421 4.3.2 Service shutting down, try again later"


@dataclass(frozen=True)
class Limits:
    """The limits the listener enforces on what a peer controls."""

    max_message_bytes: int = 10 * 1024 * 1024
    max_recipients: int = 100
    max_line_bytes: int = 8192
    max_connections: int = 1000
    max_connections_per_ip: int = 50

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            max_message_bytes=settings.smtp_max_message_bytes,
            max_recipients=settings.smtp_max_recipients,
            max_line_bytes=settings.smtp_max_line_bytes,
            max_connections=settings.smtp_max_connections,
            max_connections_per_ip=settings.smtp_max_connections_per_ip,
        )


#: Times one session may send each command before it is cut off with 421 (aiosmtpd's
#: ``command_call_limit``): generous for MTAs that reuse a connection for many bounces,
#: tight for the commands only a prober or a stalling peer repeats.
COMMAND_LIMITS: dict[str, int] = {
    "*": 5000,
    "NOOP": 50,
    "RSET": 1000,
    "HELP": 10,
    "VRFY": 10,
    "EXPN": 10,
    "EHLO": 20,
    "HELO": 20,
    "STARTTLS": 2,
    "AUTH": 5,
}


class Decision(NamedTuple):
    """A refusal (``reply`` and the metric ``cause``), or acceptance (both ``None``)."""

    reply: str | None = None
    cause: str | None = None

    @property
    def accepted(self) -> bool:
        return self.reply is None


ACCEPT = Decision()

_SIZE_PARAM = re.compile(r"(?:^|\s)SIZE=(\d{1,20})(?:\s|$)", re.IGNORECASE)


class RecipientPolicy:
    """Which envelope recipients the listener takes."""

    def __init__(self, domains: list[str], limits: Limits):
        self.domains = frozenset(d.lower().rstrip(".") for d in domains)
        self.limits = limits

    def check_rcpt(self, address: str, accepted_so_far: int) -> Decision:
        """Only addresses of the bounce domains, at most ``max_recipients`` per message."""
        local, at, domain = address.strip().rpartition("@")
        if not at or not local or not domain:
            return Decision(Replies.BAD_ADDRESS, "bad_address")
        if domain.lower().rstrip(".") not in self.domains:
            return Decision(Replies.RELAY_DENIED, "relay")
        if accepted_so_far >= self.limits.max_recipients:
            return Decision(Replies.TOO_MANY_RECIPIENTS, "recipients")
        return ACCEPT

    def check_declared_size(self, mail_arg: str | None) -> Decision:
        """Refuse at MAIL FROM when the ``SIZE=`` the sender declares is over the limit."""
        match = _SIZE_PARAM.search(mail_arg or "")
        if match and int(match.group(1)) > self.limits.max_message_bytes:
            return Decision(Replies.TOO_BIG, "size")
        return ACCEPT


@dataclass
class ConnectionGate:
    """Counts open connections, in total and per client address."""

    limits: Limits
    by_ip: Counter[str] = field(default_factory=Counter)
    total: int = 0

    def admit(self, ip: str) -> Decision:
        """Take a connection slot for ``ip``, or say why not (then nothing is taken)."""
        if self.total >= self.limits.max_connections:
            return Decision(Replies.TOO_MANY_CONNECTIONS, "connections")
        if self.by_ip[ip] >= self.limits.max_connections_per_ip:
            return Decision(Replies.TOO_MANY_CONNECTIONS_IP, "connections_per_ip")
        self.by_ip[ip] += 1
        self.total += 1
        return ACCEPT

    def release(self, ip: str) -> None:
        """Give back the slot :meth:`admit` took."""
        if self.by_ip[ip] <= 1:
            self.by_ip.pop(ip, None)
        else:
            self.by_ip[ip] -= 1
        self.total = max(0, self.total - 1)


class DataReader:
    """The DATA phase of one transaction, fed what the stream gives.

    The listener reads with ``readuntil(b".\r\n")``, so a piece ends at each candidate
    terminator; a stretch longer than the stream's buffer comes as pieces that contain
    none. :meth:`feed` returns True once the data ends: ``.`` CRLF at the start of a line,
    that is after CRLF (or as the very first line). A bare LF or CR never starts a line,
    so ``\n.\n``, ``\r.\r`` and the like are message content, never a boundary (SMTP
    smuggling). Reading in pieces instead of lines keeps the per-message work in C (``find``,
    ``split``, ``replace``) whatever the line count. Over the size limit the data is still
    read to its end (RFC 5321 4.2.5: reply after the data) but no longer kept.
    """

    def __init__(self, max_bytes: int, max_line_bytes: int):
        self.max_bytes = max_bytes
        self.max_line_bytes = max_line_bytes
        self.size = 0
        self.error: Decision | None = None
        self._data = bytearray()
        self._tail = b""  # the last 5 bytes seen: a terminator may span two pieces

    def feed(self, chunk: bytes) -> bool:
        self.size += len(chunk)
        self._tail = (self._tail + chunk[-5:])[-5:]
        if self.error is None:
            self._data += chunk
            if len(self._data) > self.max_bytes + 3:  # + the terminator
                self.error = Decision(Replies.TOO_BIG, "size")
                self._data = bytearray()
        tail = self._tail
        return tail.endswith(b".\r\n") and (self.size == 3 or tail[-5:-3] == b"\r\n")

    def finish(self) -> bytes:
        """The message as the sender meant it (dot-unstuffed, line endings untouched),
        or ``b""`` with :attr:`error` set."""
        if self.error is not None:
            return b""
        data = bytes(self._data[:-3])
        self._data = bytearray()
        if len(data) > self.max_bytes:
            self.error = Decision(Replies.TOO_BIG, "size")
            return b""
        if data and max(map(len, data.split(b"\r\n"))) + 2 > self.max_line_bytes:
            self.error = Decision(Replies.LINE_TOO_LONG, "line_length")
            return b""
        if data.startswith(b"."):  # transparency (RFC 5321 4.5.2)
            data = data[1:]
        return data.replace(b"\r\n.", b"\r\n")


def dedupe_key(mail_from: str, rcpt_tos: list[str] | tuple[str, ...], raw: bytes) -> str:
    """The identity of a received message: the same bytes for the same envelope are the
    same message, so a sender retrying after a lost 250 stores nothing new."""
    digest = hashlib.sha256()
    digest.update(mail_from.lower().encode("utf-8", "surrogateescape"))
    for rcpt in sorted(r.lower() for r in rcpt_tos):
        digest.update(b"\x00" + rcpt.encode("utf-8", "surrogateescape"))
    digest.update(b"\x00\x00")
    digest.update(raw)
    return f"smtp:{digest.hexdigest()}"
