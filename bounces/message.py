"""Parsed view of a report message: headers, text parts and the returned original.

The classifier needs little of MIME: header values, the decoded text of the human-readable
parts, the machine-readable report part (``message/delivery-status`` or
``message/feedback-report``) as text, and the headers of the returned original message. The
stdlib parser with ``compat32`` gives that fastest (it does no header object construction), and
line endings are normalised to LF first so CRLF and CR-only copies parse identically.
"""

from __future__ import annotations

import email
import re
from dataclasses import dataclass, field
from email.header import Header, decode_header, make_header
from email.message import Message
from email.policy import compat32

_MAX_PARTS = 200
_REPORT_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status",
                           "message/feedback-report", "message/disposition-notification"})
#: Parts whose children are not parts of the report (a returned message, report field blocks).
_OPAQUE = _REPORT_TYPES | {"message/rfc822", "message/global"}
_HEADER_LINE = re.compile(r"^([A-Za-z][A-Za-z0-9-]*):[ \t]*(.*)$")


@dataclass(slots=True)
class ParsedReport:
    """The parts of a message the classifier reads, each already decoded to text."""

    headers: Message
    text_parts: list[str] = field(default_factory=list)
    report_parts: list[tuple[str, str]] = field(default_factory=list)  # (content type, text)
    original_headers: list[tuple[str, str]] = field(default_factory=list)
    original_text: str = ""
    content_type: str = ""
    report_type: str = ""

    def header(self, name: str) -> str:
        """Return the decoded, unfolded value of a header of the report itself ("" if absent)."""
        return header_text(self.headers.get(name))

    def original(self, name: str) -> str:
        """Return the first value of a header of the returned original message ("" if absent)."""
        lname = name.lower()
        for key, value in self.original_headers:
            if key.lower() == lname:
                return value
        return ""


def normalise_newlines(raw: bytes) -> bytes:
    """Turn CRLF and lone CR line endings into LF (CR-only copies exist in the wild)."""
    if b"\r" not in raw:
        return raw
    return raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")


def header_text(value: object) -> str:
    """Decode an RFC 2047 header value to one line of text; never raises."""
    if value is None:
        return ""
    if isinstance(value, Header):
        # compat32 wraps a header with raw 8-bit bytes in a Header whose str() loses them:
        # take the bytes back and read them as UTF-8 (the usual truth).
        text = "".join(chunk.decode("utf-8", "replace") if isinstance(chunk, bytes) else chunk
                       for chunk, _ in decode_header(value))
        return " ".join(text.split())
    text = str(value)
    if not text.isascii():
        # compat32 keeps raw 8-bit header bytes as surrogate escapes: read them as UTF-8.
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if "=?" in text:
        try:
            text = str(make_header(decode_header(text)))
        except Exception:  # noqa: BLE001 - malformed encoded words: keep the raw text
            text = str(value)
    return " ".join(text.split())


def part_text(part: Message) -> str:
    """Decode a leaf part's body with its declared charset, replacing undecodable bytes."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        raw = part.get_payload()
        return raw if isinstance(raw, str) else ""
    charset = part.get_content_charset() or "utf-8"
    for candidate in (charset, "utf-8"):
        try:
            return payload.decode(candidate)
        except (LookupError, UnicodeDecodeError):
            continue  # a wrong or unknown declared charset: UTF-8 is the usual truth
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:
        return payload.decode("latin-1", errors="replace")


def _block_text(part: Message) -> str:
    """Rebuild the text of a ``message/delivery-status``-like part that compat32 split up."""
    payload = part.get_payload()
    if isinstance(payload, list):
        blocks = []
        for sub in payload:
            if isinstance(sub, Message):
                blocks.append("\n".join(f"{k}: {v}" for k, v in sub.items()))
                body = sub.get_payload()
                if isinstance(body, str) and body.strip():
                    blocks.append(body)
        return "\n\n".join(blocks)
    return part_text(part)


def parse_header_block(text: str) -> list[tuple[str, str]]:
    """Parse RFC 5322-style ``Name: value`` lines with folding; tolerant of junk lines."""
    fields: list[tuple[str, str]] = []
    for line in text.split("\n"):
        if line[:1] in (" ", "\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, f"{value} {line.strip()}".strip())
            continue
        match = _HEADER_LINE.match(line)
        if match:
            fields.append((match.group(1), match.group(2).strip()))
        elif not line.strip() and fields:
            break
    return fields


def _headers_of(msg: Message) -> list[tuple[str, str]]:
    return [(k, header_text(v)) for k, v in msg.items()]


def _take_original(report: ParsedReport, part: Message, ctype: str) -> None:
    if report.original_headers:
        return
    if ctype == "message/rfc822":
        payload = part.get_payload()
        inner = payload[0] if isinstance(payload, list) and payload else None
        if isinstance(inner, Message):
            report.original_headers = _headers_of(inner)
            body = inner.get_payload()
            if isinstance(body, str):
                report.original_text = body[:2000]
        return
    report.original_headers = parse_header_block(part_text(part).lstrip("\n"))


def parse_report(raw: bytes) -> ParsedReport:
    """Parse raw message bytes into a :class:`ParsedReport`; never raises on malformed input."""
    msg = email.message_from_bytes(normalise_newlines(raw), policy=compat32)
    report = ParsedReport(headers=msg, content_type=msg.get_content_type())
    param = msg.get_param("report-type") if report.content_type == "multipart/report" else None
    report.report_type = param if isinstance(param, str) else ""
    for part in _walk(msg):
        ctype = part.get_content_type()
        if ctype in ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers",
                     "message/partial", "message/global", "message/global-headers"):
            _take_original(report, part, "message/rfc822" if ctype in (
                "message/rfc822", "message/global") else ctype)
            continue
        if ctype in _REPORT_TYPES:
            report.report_parts.append((ctype, _block_text(part)))
        elif part.is_multipart():
            continue
        elif ctype.startswith(("text/", "multipart/")):
            # (a multipart whose boundary parameter was lost is a leaf: read it as text)
            text = part_text(part)
            if ctype == "text/html":
                text = _strip_html(text)
            report.text_parts.append(text)
    if not report.text_parts and not report.report_parts:
        # A multipart declared without usable boundaries parses as one opaque body: read it.
        body = msg.get_payload()
        if isinstance(body, str):
            report.text_parts.append(body)
    return report


def _walk(msg: Message) -> list[Message]:
    """List the parts depth-first, not descending into a returned message (the original's parts
    are not the report's), and stopping at a bound so a hostile message cannot blow up."""
    out: list[Message] = []
    stack = [msg]
    while stack and len(out) < _MAX_PARTS:
        part = stack.pop()
        out.append(part)
        if part.get_content_type() in _OPAQUE:
            inner = _forwarded_report(part)
            if inner is not None and len(out) < _MAX_PARTS // 2:
                stack.append(inner)
            continue
        payload = part.get_payload()
        if part.is_multipart() and isinstance(payload, list):
            stack.extend(p for p in reversed(payload) if isinstance(p, Message))
    return out


def _forwarded_report(part: Message) -> Message | None:
    """A delivery report returned or forwarded inside ``message/rfc822`` (its parts are read as
    the report's own), else None."""
    if part.get_content_type() != "message/rfc822":
        return None
    payload = part.get_payload()
    inner = payload[0] if isinstance(payload, list) and payload else None
    if isinstance(inner, Message) and inner.get_content_type() == "multipart/report":
        return inner
    return None


_TAG = re.compile(r"<[^>]*>")
_ENTITY = {"&nbsp;": " ", "&lt;": "<", "&gt;": ">", "&amp;": "&", "&quot;": '"', "&#39;": "'"}


def _strip_html(text: str) -> str:
    """Reduce HTML to text well enough to read addresses and diagnostic sentences."""
    text = re.sub(r"(?is)<(script|style)\b.*?</\1>", " ", text)
    text = re.sub(r"(?i)<br\s*/?>|</p>|</div>|</tr>", "\n", text)
    text = _TAG.sub(" ", text)
    for ent, rep in _ENTITY.items():
        text = text.replace(ent, rep)
    return text
