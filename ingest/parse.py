"""Parsing a fetched message: bytes in, the fields mailgate stores out. Pure, never raises.

:func:`parse_message` walks every MIME part with flanker (through :mod:`gateway.flankerlib`):
the first text/plain and text/html bodies (decoded from their charsets; an unknown charset
falls back to UTF-8 with replacement, never an error), every attachment and inline part
(filename, MIME type, decoded content, disposition, Content-ID), an enclosed message/rfc822
kept whole as an ``.eml`` attachment, and the threading headers. What a peer controls is
bounded: part count, nesting depth, header count.

Three outcomes, told by ``status``:

* ``received``: parsed;
* ``parse_failed``: flanker could not parse it; headers are read with the standard library
  (best effort), ``parse_error`` says why, no parts;
* ``too_large``: over the size limit; headers only, no parts.

In every case the caller stores the raw bytes: they are the lossless record.
"""

from __future__ import annotations

import email.parser
import email.policy
import re
from dataclasses import dataclass, field
from typing import Any

from gateway.flankerlib import mime
from gateway.messages import AttachmentRecord, html_to_text

MAX_PARTS = 1000
MAX_DEPTH = 30
MAX_HEADERS = 500
MAX_HEADER_CHARS = 16_384
MAX_REFERENCES = 100
_MSGID = re.compile(r"<[^<>\s]{1,900}>")
_ADDRESS = re.compile(r"[^\s<>,;:\"()\[\]]+@[^\s<>,;:\"()\[\]]+")


@dataclass(frozen=True)
class ParsedMessage:
    """What :func:`parse_message` found in a message."""

    status: str  # received / parse_failed / too_large
    headers: dict[str, Any]
    from_email: str | None = None
    to_emails: tuple[str, ...] = ()
    subject: str | None = None
    text: str | None = None
    html: str | None = None
    message_id: str | None = None
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    attachments: tuple[AttachmentRecord, ...] = ()
    parse_error: str | None = None
    content_type: str = "text/plain"
    report_type: str | None = None
    parts_truncated: bool = field(default=False)


def parse_message(raw: bytes, *, max_bytes: int = 50 * 1024 * 1024) -> ParsedMessage:
    """Parse ``raw``; never raises (a failure is a ``parse_failed`` result)."""
    if len(raw) > max_bytes:
        return _headers_only(raw, "too_large", f"message of {len(raw)} bytes exceeds {max_bytes}")
    try:
        root = mime().from_string(raw)
        return _from_flanker(root)
    except RecursionError:
        return _headers_only(raw, "parse_failed", "MIME structure nested too deeply")
    except Exception as exc:  # noqa: BLE001 - any flanker failure means "store raw"
        return _headers_only(raw, "parse_failed", f"{type(exc).__name__}: {exc}"[:1000])


_WARM_UP = (
    b"From: A <a@example.test>\r\nTo: b@example.test\r\nSubject: =?utf-8?q?warm?=\r\n"
    b"Message-ID: <w@example.test>\r\nIn-Reply-To: <x@example.test>\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
    b"Content-Type: text/plain; charset=utf-8\r\n\r\nhi\r\n--b\r\n"
    b"Content-Type: text/html; charset=iso-8859-1\r\n\r\n<p>hi</p>\r\n--b\r\n"
    b'Content-Type: application/pdf; name="a.pdf"\r\nContent-Transfer-Encoding: base64\r\n'
    b"Content-Disposition: attachment\r\n\r\nJVBERg==\r\n--b--\r\n"
)


def warm_up() -> None:
    """Parse a small multipart message once. flanker compiles its regular expressions and
    imports its parsers on first use (~100 ms): done at start, in a thread, so the first
    message of a burst does not stall the event loop for every mailbox."""
    parse_message(_WARM_UP)


# -- headers ------------------------------------------------------------------------------


def _clip(value: str) -> str:
    return value[:MAX_HEADER_CHARS]


def _header_dict(items: list[tuple[str, str]]) -> dict[str, Any]:
    """Header name (as first seen) -> value, or a list of values when repeated."""
    out: dict[str, Any] = {}
    canonical: dict[str, str] = {}
    for name, value in items[:MAX_HEADERS]:
        key = canonical.setdefault(name.lower(), name)
        text = _clip(str(value))
        if key in out:
            existing = out[key]
            out[key] = [*existing, text] if isinstance(existing, list) else [existing, text]
        else:
            out[key] = text
    return out


def _first(headers: dict[str, Any], name: str) -> str | None:
    lower = name.lower()
    for key, value in headers.items():
        if key.lower() == lower:
            return str(value[0] if isinstance(value, list) else value)
    return None


def _msgids(value: str | None) -> list[str]:
    return _MSGID.findall(value or "")


def _addresses(value: str | None) -> tuple[str, ...]:
    return tuple(dict.fromkeys(a.strip(".").lower() for a in _ADDRESS.findall(value or "")))


def _threading(headers: dict[str, Any]) -> dict[str, Any]:
    message_ids = _msgids(_first(headers, "Message-ID"))
    reply_to = _msgids(_first(headers, "In-Reply-To"))
    return {
        "message_id": message_ids[0] if message_ids else None,
        "in_reply_to": reply_to[0] if reply_to else None,
        "references": tuple(_msgids(_first(headers, "References"))[-MAX_REFERENCES:]),
        "from_email": next(iter(_addresses(_first(headers, "From"))), None),
        "to_emails": _addresses(", ".join(str(_first(headers, n) or "") for n in ("To", "Cc"))),
        "subject": _first(headers, "Subject"),
    }


def _headers_only(raw: bytes, status: str, error: str) -> ParsedMessage:
    """Best-effort headers with the standard library (it never raises on bad input)."""
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        end = raw.find(b"\n\n")
    head = raw[: end if end >= 0 else min(len(raw), 256 * 1024)][: 1024 * 1024]
    try:
        parsed = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(head)
        items = [(k, _decode_header(v)) for k, v in parsed.items()]
        content_type = parsed.get_content_type()
        report_type = parsed.get_param("report-type")
    except Exception:  # noqa: BLE001 - headers are a best effort here
        items, content_type, report_type = [], "text/plain", None
    headers = _header_dict(items)
    return ParsedMessage(
        status=status,
        headers=headers,
        parse_error=error,
        content_type=content_type,
        report_type=report_type.lower() if isinstance(report_type, str) else None,
        **_threading(headers),
    )


def _decode_header(value: Any) -> str:
    try:
        import email.header

        parts = email.header.decode_header(str(value))
        return "".join(
            p.decode(c or "utf-8", "replace") if isinstance(p, bytes) else p for p, c in parts
        )
    except Exception:  # noqa: BLE001 - unknown charset in an encoded word
        return str(value)


# -- bodies and parts ---------------------------------------------------------------------


@dataclass
class _Walk:
    texts: list[str] = field(default_factory=list)
    htmls: list[str] = field(default_factory=list)
    attachments: list[AttachmentRecord] = field(default_factory=list)
    parts: int = 0
    truncated: bool = False


def _from_flanker(root: Any) -> ParsedMessage:
    headers = _header_dict([(str(k), str(v)) for k, v in root.headers.items()])
    walk = _Walk()
    _walk(root, walk, 0)
    text = "\n".join(walk.texts) if walk.texts else None
    markup = "\n".join(walk.htmls) if walk.htmls else None
    if text is None and markup is not None:
        text = html_to_text(markup)
    content_type = str(root.content_type.value or "text/plain").lower()
    report_type = root.content_type.params.get("report-type")
    return ParsedMessage(
        status="received",
        headers=headers,
        text=text,
        html=markup,
        attachments=tuple(walk.attachments),
        content_type=content_type,
        report_type=str(report_type).lower() if report_type else None,
        parts_truncated=walk.truncated,
        **_threading(headers),
    )


def _walk(part: Any, walk: _Walk, depth: int) -> None:
    walk.parts += 1
    if walk.parts > MAX_PARTS or depth > MAX_DEPTH:
        walk.truncated = True
        return
    ctype = part.content_type
    if ctype.is_multipart():
        for child in part.parts:
            _walk(child, walk, depth + 1)
        return
    if ctype.is_message_container():
        walk.attachments.append(_enclosed(part))
        return
    disposition = str(part.content_disposition[0] or "").lower()
    filename = _filename(part)
    mime_type = str(ctype.value or "application/octet-stream").lower()
    is_body = ctype.main == "text" and ctype.sub in ("plain", "html")
    if is_body and disposition != "attachment" and not filename:
        body = _text_body(part)
        (walk.htmls if ctype.sub == "html" else walk.texts).append(body)
        return
    walk.attachments.append(
        AttachmentRecord(
            filename=filename,
            mime_type=mime_type,
            content=_content(part),
            disposition="inline" if disposition == "inline" else "attachment",
            content_id=_content_id(part),
        )
    )


def _filename(part: Any) -> str | None:
    try:
        name = part.detected_file_name
    except Exception:  # noqa: BLE001 - a malformed parameter: no file name
        return None
    return str(name)[:1000] if name else None


def _content_id(part: Any) -> str | None:
    value = part.headers.get("Content-ID")
    return str(value).strip()[:1000] if value else None


def _text_body(part: Any) -> str:
    try:
        body = part.body
    except Exception:  # noqa: BLE001 - unknown charset or broken encoding: decode ourselves
        return _content(part).decode("utf-8", "replace")
    if isinstance(body, bytes):
        return body.decode("utf-8", "replace")
    return str(body or "")


def _content(part: Any) -> bytes:
    """The decoded bytes of a leaf part (transfer encoding undone, charset not applied)."""
    try:
        body = part.body
        if isinstance(body, bytes):
            return body
        charset = part.content_type.get_charset() or "utf-8"
        try:
            return str(body or "").encode(charset)
        except (LookupError, UnicodeError, ValueError):  # ValueError: a NUL in the name
            return str(body or "").encode("utf-8")
    except Exception:  # noqa: BLE001 - undecodable: keep the part as it was sent
        raw = part.to_string()
        return raw if isinstance(raw, bytes) else str(raw).encode("utf-8", "surrogateescape")


def _enclosed(part: Any) -> AttachmentRecord:
    """A message/rfc822 part kept whole (a forwarded message, a bounce's original)."""
    inner = part.enclosed
    raw = inner.to_string() if inner is not None else b""
    content = raw if isinstance(raw, bytes) else str(raw).encode("utf-8", "surrogateescape")
    subject = None
    if inner is not None:
        subject = inner.headers.get("Subject")
    name = _filename(part) or (f"{str(subject)[:100]}.eml" if subject else "message.eml")
    disposition = str(part.content_disposition[0] or "").lower()
    return AttachmentRecord(
        filename=name,
        mime_type=str(part.content_type.value or "message/rfc822").lower(),
        content=content,
        disposition="inline" if disposition == "inline" else "attachment",
        content_id=_content_id(part),
    )
