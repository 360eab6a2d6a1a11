"""RFC 3464 delivery status notifications: per-recipient fields of ``message/delivery-status``.

The machine-readable part is a block of per-message fields followed by one block per
recipient. Many MTAs also paste the same fields into a text part (or send the part with a wrong
content type), so :func:`parse_fields` reads fields from any text and :func:`looks_like_dsn_text`
recognises such a pasted report.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bounces.codes import normalise_status

_FIELD = re.compile(r"^([A-Za-z][A-Za-z0-9-]*)[ \t]*:[ \t]*(.*)$")
_RCPT_FIELDS = ("final-recipient", "original-recipient", "x-actual-recipient")


@dataclass(frozen=True, slots=True)
class DsnRecipient:
    """The fields of one per-recipient block."""

    recipient: str
    action: str
    status: str
    diagnostic: str
    diagnostic_type: str
    remote_mta: str
    reporting_mta: str
    category: str = ""  # a vendor's own bounce category field (PowerMTA), lower-cased


_QUOTED_LOCAL = re.compile(r'^"[^"\s]+"@[\w.-]+$')


def _address(value: str) -> str:
    """``rfc822; <a@b>`` -> ``a@b`` (the address type prefix and brackets removed)."""
    if ";" in value:
        value = value.split(";", 1)[1]
    value = value.strip().strip("<> ").strip()
    if _QUOTED_LOCAL.match(value):
        return value  # a quoted local part ("a..b"@c) keeps its quotes
    value = value.strip("\"' ").strip()
    if " " in value:
        for word in value.split():
            if "@" in word:
                return word.strip("<>\"'(),;")
    return value


def _blocks(text: str) -> list[list[tuple[str, str]]]:
    """Split field text into blocks of (lower-case name, unfolded value)."""
    blocks: list[list[tuple[str, str]]] = []
    current: list[tuple[str, str]] = []
    for line in text.split("\n"):
        if not line.strip():
            if current:
                blocks.append(current)
                current = []
            continue
        if line[:1] in (" ", "\t") and current:
            name, value = current[-1]
            current[-1] = (name, f"{value} {line.strip()}")
            continue
        match = _FIELD.match(line.strip())
        if match:
            name = match.group(1).lower()
            if name == "final-recipient" and any(n == name for n, _ in current):
                # A second recipient block with no blank line before it; an Original-Recipient
                # just before the new Final-Recipient belongs to the new block.
                carry = current[-1:] if current[-1][0] == "original-recipient" else []
                blocks.append(current[: len(current) - len(carry)])
                current = carry
            current.append((name, match.group(2).strip()))
        elif current:
            name, value = current[-1]
            current[-1] = (name, f"{value} {line.strip()}")
    if current:
        blocks.append(current)
    return blocks


def valid_address(addr: str) -> bool:
    """A usable mailbox: a local part, and a domain with a dot (not ``@host`` or ``a@host``)."""
    local, _, domain = addr.rpartition("@")
    return bool(local) and "." in domain.strip(".")


def _recipient(fields: dict[str, str]) -> str:
    """The failed recipient: Final-Recipient unless it is unusable (a bare host name such as
    ``user@sims-ms-daemon``), then the Original- or X-Actual-Recipient; ``""`` if none has an @."""
    found = [_address(fields[name]) for name in _RCPT_FIELDS if fields.get(name)]
    found = [addr for addr in found if "@" in addr]
    if not found:
        return ""
    first = found[0]
    if valid_address(first):
        return first
    local = first.rpartition("@")[0].lower()
    return next((addr for addr in found[1:] if valid_address(addr) and (
        not local or addr.rpartition("@")[0].lower() == local)), first)


def parse_fields(text: str) -> list[DsnRecipient]:
    """Read per-recipient blocks from delivery-status text; blocks without a recipient skipped."""
    out: list[DsnRecipient] = []
    reporting = ""
    for block in _blocks(text):
        fields: dict[str, str] = {}
        for name, value in block:
            fields.setdefault(name, value)
        if "reporting-mta" in fields and not reporting:
            reporting = _address(fields["reporting-mta"])
        rcpt = _recipient(fields)
        if not rcpt:
            continue
        diag_raw = fields.get("diagnostic-code", "")
        dtype, _, diag = diag_raw.partition(";") if ";" in diag_raw else ("", "", diag_raw)
        out.append(DsnRecipient(
            recipient=rcpt,
            action=fields.get("action", "").split()[0].lower() if fields.get("action") else "",
            status=normalise_status(fields.get("status", "")),
            diagnostic=" ".join(diag.split()),
            diagnostic_type=dtype.strip().upper(),
            remote_mta=_address(fields.get("remote-mta", "")),
            reporting_mta=reporting,
            category=fields.get("x-powermta-bouncecategory", "").strip().lower(),
        ))
    return out


_PASTED = re.compile(r"(?im)^(?:final|original)-recipient:\s*\S")
_STATUS_LINE = re.compile(r"(?im)^(?:status|action):")


def looks_like_dsn_text(text: str) -> bool:
    """True when a text part carries pasted RFC 3464 recipient fields."""
    return _PASTED.search(text) is not None and _STATUS_LINE.search(text) is not None
