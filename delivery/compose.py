"""Building the RFC 5322 message bytes of one delivery: pure, no I/O.

Headers: From, To, Subject (RFC 2047 when not ASCII), Date, Message-ID on the sending
domain (derived from the delivery id, so a retried send carries the same id), MIME-Version,
Reply-To, ``List-Unsubscribe`` with a mailto and an https URL and
``List-Unsubscribe-Post: List-Unsubscribe=One-Click`` (RFC 8058: bulk senders need both).
The body is multipart/alternative (text + HTML; text derived from HTML when only HTML
exists), each part 7bit when it can be, else quoted-printable. Line ends are CRLF, the form
DKIM signs and SMTP sends. Values that came from templates never carry CR/LF into a header.
"""

from __future__ import annotations

import email.charset
import email.header
import email.utils
import hashlib
import quopri
import re
from dataclasses import dataclass

from delivery.errors import PayloadError
from delivery.render import Rendered
from gateway.messages import html_to_text

_ADDRESS = re.compile(r"^[^\s<>@,;:\"()\[\]\\]+@[A-Za-z0-9](?:[A-Za-z0-9\-.]{0,251}[A-Za-z0-9])?$")
MAX_LINE = 998


def check_address(address: str, what: str) -> str:
    """A bare mailbox (``local@domain``) or :class:`PayloadError` naming ``what``."""
    value = address.strip()
    if len(value) > 320 or not _ADDRESS.match(value):
        raise PayloadError(f"{what} is not a valid address: {address[:100]!r}")
    return value


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


def _header_text(value: str) -> str:
    """One header value: no CR/LF, RFC 2047 encoded when not ASCII."""
    flat = " ".join(value.split())
    if flat.isascii():
        return flat
    return email.header.Header(flat, "utf-8", maxlinelen=76).encode(linesep="\r\n")


def _mailbox(name: str | None, address: str) -> str:
    if not name:
        return address
    return email.utils.formataddr((" ".join(name.split()), address), charset="utf-8")


def _part(content_type: str, body: str) -> bytes:
    """A MIME part: 7bit when ASCII with short lines, else quoted-printable UTF-8."""
    if "\r" in body:
        body = body.replace("\r\n", "\n").replace("\r", "\n")
    raw = body.encode()
    if body.isascii() and max(map(len, raw.split(b"\n"))) <= MAX_LINE:
        encoded = raw.replace(b"\n", b"\r\n")
        cte = "7bit"
    else:
        encoded = quopri.encodestring(raw, quotetabs=False).replace(b"\n", b"\r\n")
        cte = "quoted-printable"
    head = (
        f"Content-Type: {content_type}; charset=utf-8\r\nContent-Transfer-Encoding: {cte}\r\n\r\n"
    )
    return head.encode() + encoded + (b"" if encoded.endswith(b"\r\n") else b"\r\n")


@dataclass(frozen=True)
class Envelope:
    """Who a message is from and to, and the identities it carries."""

    from_email: str
    from_name: str | None
    to_email: str
    to_name: str | None
    reply_to: str | None
    return_path: str  # the VERP address (MAIL FROM)
    message_id: str  # with angle brackets
    unsubscribe_mailto: str
    unsubscribe_url: str


def message_id_for(delivery_id: str, domain: str) -> str:
    """A Message-ID on the sending domain, stable for a delivery (retries keep it)."""
    tag = hashlib.blake2b(delivery_id.encode(), digest_size=6).hexdigest()
    return f"<{delivery_id}.{tag}@{domain.lower()}>"


def compose(envelope: Envelope, content: Rendered, *, date: float) -> bytes:
    """The message bytes (CRLF), ready to be DKIM-signed and sent."""
    text = content.text if content.text is not None else html_to_text(content.html or "")
    headers = [
        ("From", _mailbox(envelope.from_name, envelope.from_email)),
        ("To", _mailbox(envelope.to_name, envelope.to_email)),
        ("Subject", _header_text(content.subject)),
        ("Date", email.utils.formatdate(date, usegmt=True)),
        ("Message-ID", envelope.message_id),
        ("MIME-Version", "1.0"),
    ]
    if envelope.reply_to:
        headers.append(("Reply-To", envelope.reply_to))
    headers.append(
        (
            "List-Unsubscribe",
            f"<mailto:{envelope.unsubscribe_mailto}>, <{envelope.unsubscribe_url}>",
        )
    )
    headers.append(("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
    if content.html is None:
        headers_bytes = "".join(f"{k}: {v}\r\n" for k, v in headers).encode()
        return headers_bytes + _part("text/plain", text)
    boundary = "=_mg_" + hashlib.blake2b(envelope.message_id.encode(), digest_size=12).hexdigest()
    headers.append(("Content-Type", f'multipart/alternative; boundary="{boundary}"'))
    out = [
        "".join(f"{k}: {v}\r\n" for k, v in headers).encode(),
        b"\r\n",
        f"--{boundary}\r\n".encode(),
        _part("text/plain", text),
        f"--{boundary}\r\n".encode(),
        _part("text/html", content.html),
        f"--{boundary}--\r\n".encode(),
    ]
    return b"".join(out)
