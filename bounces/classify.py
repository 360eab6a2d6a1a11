"""Bounce classification: raw message bytes in, one typed result per reported recipient out.

Order of recognition, most explicit first:

1. abuse reports (ARF, RFC 5965) -> ``complaint``;
2. RFC 3464 delivery status fields, in a ``message/delivery-status`` part or pasted as text
   -> ``dsn``, one result per recipient block, with the human-readable text as a second source;
3. the plain-text formats of MTAs and providers (see :mod:`bounces.formats`) -> ``dsn``;
4. RFC 3834 automatic replies -> ``auto_reply``;
5. anything else -> one ``not_bounce`` result.

Pure: no I/O, no global state; :func:`classify` never raises, whatever the bytes.
"""

from __future__ import annotations

import re
from dataclasses import replace

from bounces import arf, autoreply, dsn, formats, rhost, sesjson
from bounces.codes import find_reply_code, find_status
from bounces.message import ParsedReport, parse_report
from bounces.model import NOT_BOUNCE, BounceResult, BounceType
from bounces.reasons import bounce_type, decide, smtp_command

_MAX_DIAGNOSTIC = 1000
_CUT_REPLY = re.compile(r"[245]\d\d-")
#: PowerMTA's X-PowerMTA-BounceCategory values (its own verdict on each recipient).
_CATEGORY_REASON = {
    "bad-domain": "hostunknown", "bad-mailbox": "userunknown", "inactive-mailbox": "suspend",
    "message-expired": "expired", "no-answer-from-host": "networkerror",
    "policy-related": "policyviolation", "quota-issues": "mailboxfull",
    "routing-errors": "systemerror", "spam-related": "spamdetected",
}


def classify(raw: bytes) -> list[BounceResult]:
    """Classify one message. Never raises: unreadable input is reported as ``not_bounce``."""
    try:
        return _classify(raw)
    except Exception:  # noqa: BLE001 - the contract is total: hostile bytes must not escape
        return [NOT_BOUNCE]


def _classify(raw: bytes) -> list[BounceResult]:
    report = parse_report(raw)
    text = formats.bounce_text(report)
    original = tuple(report.original_headers)
    message_id = report.original("Message-ID").strip()
    if arf.is_feedback(report):
        return _complaints(report, original, message_id)
    ses = sesjson.events(report.text_parts[0]) if report.text_parts else []
    if ses:
        return [_from_ses(event, message_id) for event in ses]
    records = _dsn_records(report)
    if records:
        return _from_dsn(report, text, records, original, message_id)
    if formats.looks_like_bounce(report, text) or formats.list_refusal(report, text):
        results = _from_text(report, text, original, message_id)
        if results:
            return results
    if autoreply.is_auto_reply(report):
        return [_auto_reply(report, original, message_id)]
    return [NOT_BOUNCE]


def _exclusions(report: ParsedReport) -> set[str]:
    """Addresses that are never the failed recipient: the report's own parties and the
    original's sender (bounce texts quote both)."""
    out: set[str] = set()
    for value in (report.header("From"), report.header("To"), report.header("Return-Path"),
                  report.header("Sender"), report.original("From"),
                  report.original("Return-Path"), report.original("Sender"),
                  report.original("Reply-To")):
        for match in formats.ADDR_RE.finditer(value):
            out.add(match.group(0).lower())
    return out


def _dsn_records(report: ParsedReport) -> list[dsn.DsnRecipient]:
    records: list[dsn.DsnRecipient] = []
    for ctype, text in report.report_parts:
        if ctype != "message/feedback-report":
            records.extend(dsn.parse_fields(text))
    if not records:
        for text in report.text_parts:
            if dsn.looks_like_dsn_text(text):
                records.extend(dsn.parse_fields(text))
    seen: set[str] = set()
    unique = []
    for rec in records:
        key = rec.recipient.lower()
        if key not in seen:
            seen.add(key)
            unique.append(rec)
    return unique


def _from_dsn(report: ParsedReport, text: str, records: list[dsn.DsnRecipient],
              original: tuple[tuple[str, str], ...], message_id: str) -> list[BounceResult]:
    scanned = {r.recipient: r for r in formats.scan(report, text, set())} if text else {}
    out = []
    for rec in records:
        if rec.recipient.startswith("@") and len(records) == 1 and len(scanned) == 1:
            # A mangled field (``@host``): the report's text names the one recipient properly.
            rec = replace(rec, recipient=next(iter(scanned)))
        extra = scanned.get(rec.recipient.lower())
        if extra is None and len(records) == 1 and len(scanned) == 1:
            extra = next(iter(scanned.values()))  # one recipient, named differently in the text
        diagnostic = rec.diagnostic or (extra.diagnostic if extra else "")
        if not diagnostic:
            diagnostic = " ".join(text.split())[:_MAX_DIAGNOSTIC]
        status = rec.status
        found = find_status(diagnostic)
        if found and (not status or (status.endswith(".0.0") and found[0] == status[0])):
            status = found
        action = rec.action or ("failed" if status.startswith(("4", "5")) else "")
        context = f"{diagnostic} {extra.diagnostic if extra else ''}"
        command = smtp_command(context) or smtp_command(text)
        remote = rec.remote_mta or rhost.remote_host(context)
        vendor = (_CATEGORY_REASON.get(rec.category, "")
                  or rhost.appliance_reason(report.header, context)
                  or rhost.provider_reason(remote, rec.recipient, context, status, command,
                                           rec.reporting_mta))
        # A multi-line reply cut to its first line ("552-5.7.0 ...") is read with the report
        # text that quotes the rest of it.
        told = context if _CUT_REPLY.match(diagnostic) else diagnostic
        reason = vendor or decide(status, told, action, command, rec.diagnostic_type)
        if reason in ("onhold", "undefined") and extra is not None and not vendor:
            reason = decide(status, extra.diagnostic, action, command, rec.diagnostic_type)
        reply = find_reply_code(diagnostic)
        kind_reason = "delivered" if action in ("delivered", "relayed", "expanded") else reason
        out.append(BounceResult(
            kind="dsn", recipient=rec.recipient.lower(),
            bounce_type=_btype(kind_reason, status, reply, action),
            reason=kind_reason, status=status, reply_code=reply,
            diagnostic=diagnostic[:_MAX_DIAGNOSTIC], remote_mta=rec.remote_mta, action=action,
            original_message_id=message_id, original_headers=original))
    return out


def _btype(reason: str, status: str, reply: int | None, action: str) -> BounceType | None:
    value = bounce_type(reason, status, reply, action)
    return "hard" if value == "hard" else "soft" if value == "soft" else None




def _from_text(report: ParsedReport, text: str, original: tuple[tuple[str, str], ...],
               message_id: str) -> list[BounceResult]:
    out = []
    for item in formats.list_refusal(report, text) or formats.scan(
            report, text, _exclusions(report)):
        status = find_status(item.diagnostic)
        reply = find_reply_code(item.diagnostic)
        action = "delayed" if item.delayed else "failed"
        command = smtp_command(item.diagnostic) or smtp_command(text)
        reason = (formats.format_hint(item.recipient)
                  or rhost.appliance_reason(report.header, item.diagnostic)
                  or rhost.provider_reason(rhost.remote_host(item.diagnostic), item.recipient,
                                           item.diagnostic, status, command)
                  or decide(status, item.diagnostic, action, command))
        out.append(BounceResult(
            kind="dsn", recipient=item.recipient, bounce_type=_btype(reason, status, reply, action),
            reason=reason, status=status, reply_code=reply,
            diagnostic=item.diagnostic[:_MAX_DIAGNOSTIC], action=action,
            original_message_id=message_id, original_headers=original))
    return out


def _from_ses(event: sesjson.SesEvent, message_id: str) -> BounceResult:
    """One result per recipient of an Amazon SES JSON notification."""
    if event.kind == "complaint":
        return BounceResult(kind="complaint", recipient=event.recipient.lower(),
                            reason="feedback", feedback_type=event.feedback_type,
                            original_message_id=message_id)
    status = event.status or find_status(event.diagnostic)
    action = event.action or ("failed" if event.permanent else "delayed")
    if event.kind == "delivery" or status.startswith("2."):
        reason = "delivered"
    else:
        reason = decide(status, event.diagnostic, action, smtp_command(event.diagnostic))
        if reason in ("onhold", "undefined"):
            reason = sesjson.SUBTYPE_REASON.get(event.subtype, reason)
    reply = find_reply_code(event.diagnostic)
    return BounceResult(
        kind="dsn", recipient=event.recipient.lower(),
        bounce_type=_btype(reason, status, reply, action), reason=reason,
        status=status or find_status(event.diagnostic), reply_code=reply,
        diagnostic=event.diagnostic[:_MAX_DIAGNOSTIC], remote_mta=event.remote_mta,
        action=action, original_message_id=message_id)


def _complaints(report: ParsedReport, original: tuple[tuple[str, str], ...],
                message_id: str) -> list[BounceResult]:
    ftype, rcpts, human = arf.feedback_fields(report)
    return [BounceResult(kind="complaint", recipient=r.lower(), reason="feedback",
                         diagnostic=human, feedback_type=ftype, original_message_id=message_id,
                         original_headers=original) for r in rcpts or [""]]


def _auto_reply(report: ParsedReport, original: tuple[tuple[str, str], ...],
                message_id: str) -> BounceResult:
    sender = formats.ADDR_RE.search(report.header("From"))
    body = " ".join(" ".join(report.text_parts).split())[:300]
    return BounceResult(kind="auto_reply", recipient=sender.group(0).lower() if sender else "",
                        reason="vacation", diagnostic=body, original_message_id=message_id,
                        original_headers=original)
