"""What the bounce listener says, decided without sockets.

The listener (:mod:`bounces.listener`) is aiosmtpd glue; every decision it makes about a
peer's input lives here as pure code: which recipients it takes (only the bounce domains:
never an open relay), how many, how big a message and how long a line may be, how many
connections one address may hold, and how the DATA phase is read (dot-unstuffing, limits,
and the end-of-data rule that makes SMTP smuggling impossible: only ``CRLF . CRLF`` ends a
message, so a bare ``LF . LF`` or ``CR . CR`` inside it stays message content).

It also decides who may hold how much memory: :class:`MemoryBudget` shares a global
budget of in-flight message bytes fairly (a share per client address, a slice kept for small
messages), so a flood of large messages from a few addresses never starves a small DSN from
another, and which envelope addresses can be stored at all (:func:`storable_address`: no
NUL, valid UTF-8), so a message that could never be committed is refused at its command
instead of with a 4xx after its data.

State lifetimes: :class:`ConnectionGate` and :class:`MemoryBudget` live as long as the
listener, one :class:`Holding` and one :class:`DataReader` per DATA command.
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
    BAD_SENDER_BYTES = "553 5.1.7 Sender address cannot be stored (NUL or not UTF-8)"
    BAD_RCPT_BYTES = "553 5.1.3 Recipient address cannot be stored (NUL or not UTF-8)"
    NO_MEMORY = "452 4.3.1 Insufficient system resources, try again later"
    BUSY = "421 4.3.1 Insufficient system resources, try again later"
    IDLE = "421 4.4.2 Idle for too long, closing connection"
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
    memory_budget_bytes: int = 256 * 1024 * 1024

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            max_message_bytes=settings.smtp_max_message_bytes,
            max_recipients=settings.smtp_max_recipients,
            max_line_bytes=settings.smtp_max_line_bytes,
            max_connections=settings.smtp_max_connections,
            max_connections_per_ip=settings.smtp_max_connections_per_ip,
            memory_budget_bytes=settings.smtp_memory_budget_bytes,
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


def storable_address(address: str) -> bool:
    """True when PostgreSQL can hold ``address`` as text: no NUL, and valid UTF-8 (aiosmtpd
    hands undecodable bytes over as lone surrogates). With or without SMTPUTF8: an address
    that cannot be stored is refused at its command, never with a 451 after DATA."""
    if "\x00" in address:
        return False
    try:
        address.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def is_postmaster(address: str, domains: frozenset[str]) -> bool:
    """A bare ``postmaster`` (RFC 5321 4.5.1: always accepted) or ``postmaster@`` a bounce
    domain."""
    local, at, domain = address.strip().rpartition("@")
    if not at:
        return address.strip().lower() == "postmaster"
    return local.lower() == "postmaster" and domain.lower().rstrip(".") in domains


class RecipientPolicy:
    """Which envelope recipients the listener takes."""

    def __init__(self, domains: list[str], limits: Limits):
        self.domains = frozenset(d.lower().rstrip(".") for d in domains)
        self.limits = limits

    def check_mail(self, address: str) -> Decision:
        """The envelope sender: anything storable (the null sender included)."""
        if not storable_address(address):
            return Decision(Replies.BAD_SENDER_BYTES, "envelope")
        return ACCEPT

    def check_rcpt(self, address: str, accepted_so_far: int) -> Decision:
        """Only addresses of the bounce domains (and a bare ``postmaster``), at most
        ``max_recipients`` per message."""
        if not storable_address(address):
            return Decision(Replies.BAD_RCPT_BYTES, "envelope")
        if not is_postmaster(address, self.domains):
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


#: A message is "small" while it holds fewer bytes than this: small messages may use the
#: budget's reserved slice (DSNs are a few KB; a flood of large messages cannot take it).
SMALL_MESSAGE_BYTES = 64 * 1024
#: With less than this left (the size of a typical DSN), the budget counts as used up.
_EXHAUSTED_BELOW = 16 * 1024


@dataclass
class Holding:
    """The bytes one message holds of a :class:`MemoryBudget` (one per DATA command)."""

    budget: MemoryBudget
    ip: str
    held: int = 0
    reserved: int = 0  # the part of ``held`` drawn from the small-message slice

    def grow(self, n: int) -> bool:
        """Take ``n`` more bytes; False (nothing taken) when the budget says no."""
        return self.budget.grow(self, n)

    def release(self) -> None:
        """Give back everything held (idempotent)."""
        self.budget.release(self)


class MemoryBudget:
    """The in-flight message bytes of the whole listener, shared fairly.

    ``total`` bytes in all, of which ``small_reserve`` only messages still under
    :data:`SMALL_MESSAGE_BYTES` may use (they take the common part first); one client address
    holds at most ``per_ip``. A message that would pass a limit is refused (452 4.3.1 after
    its data; the data is read to its end and dropped); with the whole budget in use, new
    connections get 421. Defaults from the total: a quarter per address (at least one
    message of ``max_message_bytes``, so the largest message can always pass alone), an
    eighth kept for small messages.
    """

    def __init__(
        self,
        total: int,
        *,
        per_ip: int | None = None,
        small_reserve: int | None = None,
        max_message_bytes: int = 0,
    ):
        self.total = total
        self.small_reserve = total // 8 if small_reserve is None else small_reserve
        self.common = total - self.small_reserve
        self.per_ip = (
            per_ip if per_ip is not None else max(total // 4, min(max_message_bytes, self.common))
        )
        self.common_used = 0
        self.reserve_used = 0
        self.by_ip: Counter[str] = Counter()
        self.refused = 0
        self.peak = 0

    @property
    def used(self) -> int:
        return self.common_used + self.reserve_used

    @property
    def exhausted(self) -> bool:
        """Not even a small DSN's worth left, the small-message slice included (421 at
        connect)."""
        return self.total - self.used < _EXHAUSTED_BELOW

    def hold(self, ip: str) -> Holding:
        return Holding(self, ip)

    def grow(self, h: Holding, n: int) -> bool:
        if self.by_ip[h.ip] + n > self.per_ip:
            self.refused += 1
            return False
        if h.held + n < SMALL_MESSAGE_BYTES:
            if self.common_used + n <= self.common:
                self.common_used += n
            elif self.reserve_used + n <= self.small_reserve:
                self.reserve_used += n
                h.reserved += n
            else:
                self.refused += 1
                return False
        else:  # a large message: all of it from the common part
            if self.common_used + h.reserved + n > self.common:
                self.refused += 1
                return False
            self.reserve_used -= h.reserved
            self.common_used += h.reserved + n
            h.reserved = 0
        h.held += n
        self.by_ip[h.ip] += n
        self.peak = max(self.peak, self.used)
        return True

    def release(self, h: Holding) -> None:
        if not h.held:
            return
        self.reserve_used -= h.reserved
        self.common_used -= h.held - h.reserved
        left = self.by_ip[h.ip] - h.held
        if left > 0:
            self.by_ip[h.ip] = left
        else:
            self.by_ip.pop(h.ip, None)
        h.held = h.reserved = 0


class DataReader:
    """The DATA phase of one transaction, fed what the stream gives.

    The listener reads with ``readuntil(b".\r\n")``, so a piece ends at each candidate
    terminator; a stretch longer than the stream's buffer comes as pieces that contain
    none. :meth:`feed` returns True once the data ends: ``.`` CRLF at the start of a line,
    that is after CRLF (or as the very first line). A bare LF or CR never starts a line,
    so ``\n.\n``, ``\r.\r`` and the like are message content, never a boundary (SMTP
    smuggling).

    Each piece is processed as it comes, whole lines at a time (the unfinished last line
    waits for the next piece): line lengths checked and dot-stuffing undone per block, in C
    (``split``, ``replace``), and the result appended to ONE buffer, charged to
    ``holding`` (the listener's :class:`MemoryBudget`) before it is kept. So a message is
    held once, never as a list of lines or a second unstuffed copy. Over a limit (size, line
    length, memory) the data is still read to its end (RFC 5321 4.2.5: reply after the data)
    but no longer kept, and what was kept is given back at once.
    """

    def __init__(self, max_bytes: int, max_line_bytes: int, holding: Holding | None = None):
        self.max_bytes = max_bytes
        self.max_line_bytes = max_line_bytes
        self.holding = holding
        self.size = 0
        self.error: Decision | None = None
        self._data = bytearray()
        self._partial = b""  # the unfinished last line (shorter than max_line_bytes)
        self._tail = b""  # the last 5 bytes seen: a terminator may span two pieces

    def feed(self, chunk: bytes) -> bool:
        self.size += len(chunk)
        self._tail = (self._tail + chunk[-5:])[-5:]
        tail = self._tail
        ended = tail.endswith(b".\r\n") and (self.size == 3 or tail[-5:-3] == b"\r\n")
        if self.error is None:
            if self.size > self.max_bytes + 3:  # + the terminator
                self._fail(Decision(Replies.TOO_BIG, "size"))
            else:
                self._take(chunk, ended)
        return ended

    def _take(self, chunk: bytes, ended: bool) -> None:
        block = self._partial + chunk if self._partial else chunk
        if ended:
            block, self._partial = block[:-3], b""  # whole lines (or nothing) before ".CRLF"
        else:
            found = block.rfind(b"\r\n")
            cut = found + 2 if found >= 0 else 0
            block, self._partial = block[:cut], block[cut:]
            # A CR at the end may be the first half of the line's CRLF.
            if len(self._partial) - self._partial.endswith(b"\r") + 2 > self.max_line_bytes:
                self._fail(Decision(Replies.LINE_TOO_LONG, "line_length"))
                return
        if not block:
            return
        if max(map(len, block.split(b"\r\n"))) + 2 > self.max_line_bytes:
            self._fail(Decision(Replies.LINE_TOO_LONG, "line_length"))
            return
        # Transparency (RFC 5321 4.5.2): a block always starts at the start of a line.
        if block[:1] == b".":
            block = block[1:]
        block = block.replace(b"\r\n.", b"\r\n")
        if self.holding is not None and not self.holding.grow(len(block)):
            self._fail(Decision(Replies.NO_MEMORY, "memory"))
            return
        self._data += block

    def _fail(self, error: Decision) -> None:
        self.error = error
        self._data = bytearray()
        self._partial = b""
        if self.holding is not None:
            self.holding.release()

    def finish(self) -> bytes:
        """The message as the sender meant it (dot-unstuffed, line endings untouched),
        or ``b""`` with :attr:`error` set. The bytes stay charged to the holding."""
        if self.error is not None:
            return b""
        data = bytes(self._data)
        self._data = bytearray()
        if len(data) > self.max_bytes:
            self._fail(Decision(Replies.TOO_BIG, "size"))
            return b""
        return data


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
