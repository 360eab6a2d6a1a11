"""Parsed view of a report message: headers, text parts and the returned original.

The classifier needs little of MIME: header values, the decoded text of the human-readable
parts, the machine-readable report part (``message/delivery-status`` or
``message/feedback-report``) as text, and the headers of the returned original message. This
module reads exactly that, straight from the bytes, instead of building the stdlib ``email``
object tree: the tree cost more than the whole classification (profiled: 30 % of the time in
``feedparser``, another 17 % in ``Message.get``). What it does:

* header blocks are split once into ``(name, raw value)`` pairs; a value is decoded (RFC 2047,
  8-bit UTF-8) the first time it is asked for and memoised;
* a ``multipart/*`` body is cut at its boundary lines, recursively, up to :data:`_MAX_PARTS`
  parts; only ``text/*`` and report parts are decoded (transfer encoding, then charset);
  attachments are never decoded;
* a returned message (``message/rfc822``) contributes its header block only, except when it is
  itself a report (a forwarded bounce), whose parts are then read as the report's own;
* a single-part message is one text part, decoded once.

Line endings are normalised to LF first so CRLF and CR-only copies parse identically. Every
function here is total: malformed input yields fewer parts, never an exception.
"""

from __future__ import annotations

import binascii
import contextlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from functools import lru_cache
from types import MappingProxyType

_MAX_PARTS = 200
_MAX_DEPTH = 8
_REPORT_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status",
                           "message/feedback-report", "message/disposition-notification"})
_RETURNED = frozenset({"message/rfc822", "message/global"})
_HEADERS_ONLY = frozenset({"text/rfc822-headers", "message/rfc822-headers", "message/partial",
                           "message/global-headers"})
_HEADER_LINE = re.compile(r"^([A-Za-z][A-Za-z0-9-]*):[ \t]*(.*)$")
#: One header field: a name at the start of a line, and its value with continuation lines.
_FIELD = re.compile(rb"(?m)^([!-9;-~]+)[ \t]*:[ \t]*(.*(?:\n[ \t].*)*)")


def normalise_newlines(raw: bytes) -> bytes:
    """Turn CRLF and lone CR line endings into LF (CR-only copies exist in the wild)."""
    if b"\r" not in raw:
        return raw
    return raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")


def header_text(value: object) -> str:
    """Decode an RFC 2047 header value to one line of text; never raises."""
    if value is None:
        return ""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    if "=?" in text:
        # malformed encoded words: keep the raw text
        with contextlib.suppress(Exception):
            text = str(make_header(decode_header(text)))
    return " ".join(text.split())


@dataclass(slots=True)
class Headers:
    """A header block: raw values in order, decoded on first use."""

    fields: list[tuple[str, bytes]] = field(default_factory=list)
    _index: dict[str, list[bytes]] = field(default_factory=dict)
    _decoded: dict[str, str] = field(default_factory=dict)
    _joined: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, block: bytes) -> Headers:
        """Split an RFC 5322 header block (LF line endings) into fields, unfolding
        continuation lines; lines that are not fields are skipped (one regex scan)."""
        fields: list[tuple[str, bytes]] = []
        index: dict[str, list[bytes]] = {}
        for match in _FIELD.finditer(block):
            value = match.group(2)
            if b"\n" in value:
                value = value.replace(b"\n", b" ")  # unfold (decoding squeezes the blanks)
            fields.append((match.group(1).decode("ascii"), value.strip()))
        for name, value in fields:
            index.setdefault(name.lower(), []).append(value)
        return cls(fields, index)

    def get(self, name: str) -> str:
        """The first value of ``name``, decoded to one line ("" if absent); memoised under the
        name as asked (callers ask with constant names), so a repeat costs one dict lookup."""
        cached = self._decoded.get(name)
        if cached is not None:
            return cached
        values = self._index.get(name.lower())
        text = header_text(values[0]) if values else ""
        self._decoded[name] = text
        return text

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``, raw bytes read as UTF-8 (for Received: chains)."""
        return [v.decode("utf-8", "replace") for v in self._index.get(name.lower(), [])]

    def joined(self, name: str) -> str:
        """Every value of ``name`` joined by newlines, memoised (for substring tests)."""
        key = name.lower()
        cached = self._joined.get(key)
        if cached is None:
            cached = b"\n".join(self._index.get(key, [])).decode("utf-8", "replace")
            self._joined[key] = cached
        return cached

    def names(self) -> frozenset[str]:
        """The lower-cased names of the fields present."""
        return frozenset(self._index)

    def raw(self, name: str) -> bytes:
        """The first raw value of ``name`` (b"" if absent)."""
        values = self._index.get(name.lower())
        return values[0] if values else b""

    def pairs(self) -> list[tuple[str, str]]:
        """Every field as (name, decoded value), in order."""
        return [(name, header_text(value)) for name, value in self.fields]


@dataclass(slots=True)
class ParsedReport:
    """The parts of a message the classifier reads, each already decoded to text."""

    headers: Headers
    text_parts: list[str] = field(default_factory=list)
    report_parts: list[tuple[str, str]] = field(default_factory=list)  # (content type, text)
    original_headers: list[tuple[str, str]] = field(default_factory=list)
    original_text: str = ""
    content_type: str = ""
    report_type: str = ""

    def header(self, name: str) -> str:
        """Return the decoded, unfolded value of a header of the report itself ("" if absent)."""
        return self.headers.get(name)

    def header_all(self, name: str) -> list[str]:
        """Every value of a header of the report itself (Received: chains)."""
        return self.headers.get_all(name)

    def original(self, name: str) -> str:
        """Return the first value of a header of the returned original message ("" if absent)."""
        lname = name.lower()
        for key, value in self.original_headers:
            if key.lower() == lname:
                return value
        return ""


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


# -- Content-Type and bodies -----------------------------------------------------------------

_PARAM = re.compile(r';\s*([A-Za-z0-9*_.-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;\s]*)')


@lru_cache(maxsize=1024)
def content_type(value: str) -> tuple[str, Mapping[str, str]]:
    """``text/plain; charset="x"`` -> ("text/plain", {"charset": "x"}); the default
    ``text/plain`` for an empty or malformed value (RFC 2045). Memoised (the same few values
    recur in every report), so the parameters come back read-only."""
    head = value.split(";", 1)[0].strip().lower()
    if head.count("/") != 1:
        head = "text/plain"
    params: dict[str, str] = {}
    if ";" in value:
        for match in _PARAM.finditer(value):
            raw = match.group(2)
            if raw.startswith('"'):
                raw = raw[1:-1].replace('\\"', '"')
            params.setdefault(match.group(1).lower(), raw)
    return head, MappingProxyType(params)


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    """Cut at the first empty line: (header block, body)."""
    if data.startswith(b"\n"):
        return b"", data[1:]
    cut = data.find(b"\n\n")
    if cut < 0:
        return data, b""
    return data[:cut], data[cut + 2:]


def _transfer_decode(body: bytes, encoding: str) -> bytes:
    """Undo a Content-Transfer-Encoding; undecodable input is returned as it was."""
    try:
        if encoding == "base64":
            return binascii.a2b_base64(body)
        if encoding == "quoted-printable":
            return binascii.a2b_qp(body)
    except (binascii.Error, ValueError):
        return body
    return body


def _charset_decode(payload: bytes, charset: str) -> str:
    """Decode with the declared charset, then UTF-8 (the usual truth), then replacement."""
    for candidate in (charset, "utf-8"):
        if not candidate:
            continue
        try:
            return payload.decode(candidate)
        except (LookupError, UnicodeDecodeError, ValueError):  # ValueError: a NUL in the name
            continue
    try:
        return payload.decode(charset or "utf-8", errors="replace")
    except (LookupError, ValueError):
        return payload.decode("latin-1", errors="replace")


def _text_of(headers: Headers, params: Mapping[str, str], body: bytes) -> str:
    encoding = headers.get("Content-Transfer-Encoding").lower().strip()
    return _charset_decode(_transfer_decode(body, encoding), params.get("charset", ""))


def _parts(body: bytes, boundary: str) -> list[bytes]:
    """The parts of a multipart body: what lies between ``--boundary`` lines (the whole line,
    so a nested boundary that merely starts the same way does not cut), preamble and epilogue
    dropped. A body without the boundary has no parts."""
    marker = b"--" + boundary.encode("utf-8", "replace")
    if marker not in body:
        return []
    delimiter = re.compile(rb"(?m)^" + re.escape(marker) + rb"(--)?[ \t]*$")
    out: list[bytes] = []
    start = -1
    for match in delimiter.finditer(body):
        if start >= 0:
            end = match.start() - 1 if match.start() > 0 else 0  # the newline before it
            out.append(body[start:max(start, end)])
            if len(out) >= _MAX_PARTS:
                return out
        if match.group(1):
            return out  # the closing delimiter
        start = match.end() + 1
    if start >= 0:
        out.append(body[start:])  # no closing delimiter: the last part runs to the end
    return out


class _Reader:
    """Walks one message's parts into a :class:`ParsedReport` (a per-call, throwaway state)."""

    def __init__(self, report: ParsedReport) -> None:
        self.report = report
        self.parts_seen = 0

    def entity(self, headers: Headers, body: bytes, depth: int) -> None:
        """Read one MIME entity (the message itself or one of its parts)."""
        self.parts_seen += 1
        if self.parts_seen > _MAX_PARTS or depth > _MAX_DEPTH:
            return
        ctype, params = content_type(headers.get("Content-Type"))
        if ctype.startswith("multipart/"):
            children = _parts(body, params.get("boundary", "")) if params.get("boundary") else []
            if children:
                for child in children:
                    head, rest = _split_head(child)
                    self.entity(Headers.parse(head), rest, depth + 1)
                return
            # (a multipart whose boundary was lost is a leaf: read it as text)
            self.report.text_parts.append(_text_of(headers, params, body))
            return
        if ctype in _RETURNED:
            self.returned(headers, params, body, depth)
        elif ctype in _HEADERS_ONLY:
            if not self.report.original_headers:
                text = _text_of(headers, params, body)
                self.report.original_headers = parse_header_block(text.lstrip("\n"))
        elif ctype in _REPORT_TYPES:
            self.report.report_parts.append((ctype, _text_of(headers, params, body)))
        elif ctype.startswith("text/"):
            text = _text_of(headers, params, body)
            self.report.text_parts.append(_strip_html(text) if ctype == "text/html" else text)

    def returned(self, headers: Headers, params: Mapping[str, str], body: bytes,
                 depth: int) -> None:
        """A returned original: keep its headers; read it as a report if it is one."""
        encoding = headers.get("Content-Transfer-Encoding").lower().strip()
        inner = _transfer_decode(body, encoding)
        head, rest = _split_head(inner.lstrip(b"\n"))
        inner_headers = Headers.parse(head)
        inner_type, inner_params = content_type(inner_headers.get("Content-Type"))
        if not self.report.original_headers:
            self.report.original_headers = inner_headers.pairs()
            if not inner_type.startswith("multipart/"):
                self.report.original_text = _text_of(inner_headers, inner_params,
                                                     rest[:4000])[:2000]
        if inner_type == "multipart/report":
            self.entity(inner_headers, rest, depth + 1)  # a bounce forwarded or returned


def parse_report(raw: bytes) -> ParsedReport:
    """Parse raw message bytes into a :class:`ParsedReport`; never raises on malformed input."""
    head, body = _split_head(normalise_newlines(raw))
    headers = Headers.parse(head)
    ctype, params = content_type(headers.get("Content-Type"))
    report = ParsedReport(headers=headers, content_type=ctype)
    if ctype == "multipart/report":
        report.report_type = params.get("report-type", "")
    _Reader(report).entity(headers, body, 0)
    if not report.text_parts and not report.report_parts and ctype.startswith("multipart/"):
        # A multipart whose parts could not be read: its body is the only text there is.
        report.text_parts.append(_text_of(headers, params, body))
    return report


_SCRIPT = re.compile(r"(?is)<(script|style)\b.*?</\1>")
_BREAK = re.compile(r"(?i)<br\s*/?>|</p>|</div>|</tr>")
_TAG = re.compile(r"<[^>]*>")
_ENTITY = {"&nbsp;": " ", "&lt;": "<", "&gt;": ">", "&amp;": "&", "&quot;": '"', "&#39;": "'"}


def _strip_html(text: str) -> str:
    """Reduce HTML to text well enough to read addresses and diagnostic sentences."""
    text = _SCRIPT.sub(" ", text)
    text = _BREAK.sub("\n", text)
    text = _TAG.sub(" ", text)
    for ent, rep in _ENTITY.items():
        if ent in text:
            text = text.replace(ent, rep)
    return text
