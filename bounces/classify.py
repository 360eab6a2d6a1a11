"""Bounce classification: raw message bytes in, one typed result per reported recipient out.

Order of recognition, most explicit first:

1. abuse reports (ARF, RFC 5965) -> ``complaint``;
2. RFC 3464 delivery status fields, in a ``message/delivery-status`` part or pasted as text
   -> ``dsn``, one result per recipient block, with the human-readable text as a second source;
3. the plain-text formats of MTAs and providers (see :mod:`bounces.formats`) -> ``dsn``;
4. RFC 3834 automatic replies -> ``auto_reply``;
5. anything else -> one ``not_bounce`` result.

For each failed recipient the evidence is gathered here (the diagnostic, the Status field and
the code the text carries, the reply code, the SMTP command the refusal answered, the remote
host) and the reason is decided by :func:`bounces.reasons.explain`, in Sisimai's order: the
report format's own verdict (:mod:`bounces.lhost`), local delivery agents, the provider's
documented replies (:mod:`bounces.rhost`), then the status code, command and phrase families.

Pure: no I/O, no global state; :func:`classify` never raises, whatever the bytes. When it had
to fall back on its catch-all, the single ``not_bounce`` result names the exception in
:attr:`~bounces.model.BounceResult.error`, so callers and tests can tell the two paths apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from bounces import arf, autoreply, dsn, formats, lhost, rhost, sesjson, smtpcommand
from bounces.codes import find_reply, find_status, prefer
from bounces.message import ParsedReport, parse_report
from bounces.model import NOT_BOUNCE, BounceResult
from bounces.reasons import Evidence, bounce_type, decide

_MAX_DIAGNOSTIC = 1000
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
    except Exception as exc:  # noqa: BLE001 - the contract is total: hostile bytes must not escape
        return [BounceResult(kind="not_bounce", error=type(exc).__name__)]


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


def _squeeze(text: str) -> str:
    return " ".join(text.split())


#: The code prefix a multi-line SMTP reply repeats on every line ("550-5.7.1 ... 550 5.7.1 ..."):
#: removed so that phrases broken across lines read as one sentence.
_CONTINUATION = re.compile(r"\b([245]\d\d)[- ](?:[245]\.\d{1,3}\.\d{1,3}\s)?")


def _join_reply_lines(text: str, reply: str) -> str:
    """Drop the repeats of a multi-line reply's prefix, keeping the first one."""
    if not reply or f"{reply}-" not in text:
        return text
    first = True

    def keep_first(match: re.Match[str]) -> str:
        nonlocal first
        if match.group(1) != reply:
            return match.group(0)
        if first:
            first = False
            return match.group(0)
        return ""
    return _squeeze(_CONTINUATION.sub(keep_first, text))


@dataclass(frozen=True, slots=True)
class _Context:
    """What the whole report says, shared by its recipients."""

    report: ParsedReport
    text: str
    mta: lhost.Mta | None
    transcript_command: str
    replies: str  # the server's replies a Sendmail transcript quotes ("<<< 550 ...")
    original: tuple[tuple[str, str], ...]
    message_id: str


def _context(report: ParsedReport, text: str, original: tuple[tuple[str, str], ...],
             message_id: str) -> _Context:
    mta = lhost.recognise(report)
    replies = lhost.sendmail_replies(report, text)
    return _Context(report, text, mta, smtpcommand.from_transcript(text), replies, original,
                    message_id)


def _result(ctx: _Context, recipient: str, diagnostic: str, told: str = "",
            status_field: str = "", action: str = "failed", diagnostic_type: str = "",
            hint: str = "", remote: str = "", reporting: str = "",
            remote_mta: str = "") -> BounceResult:
    """Decide one recipient: gather the evidence, let the MTA's own verdict, the provider's
    rules and the decision procedure speak, in that order."""
    if ctx.replies and ctx.replies not in diagnostic:
        diagnostic = f"{ctx.replies} {diagnostic}".strip()
    found = find_status(diagnostic)
    reply = find_reply(diagnostic, found or status_field)
    status = prefer(status_field, found, reply)
    both = diagnostic if told in diagnostic else f"{diagnostic} {told}"
    said = lhost.verdict(ctx.mta, both, status)
    command = (said.command or smtpcommand.find(diagnostic) or smtpcommand.find(told)
               or ctx.transcript_command or ("EHLO" if ctx.replies else ""))
    if command not in ("EHLO", "HELO", "MAIL", "RCPT", "DATA", "QUIT"):
        command = ""
    hint = hint or said.reason or rhost.appliance_reason(ctx.report.header, diagnostic)
    dtype = diagnostic_type.upper() or "SMTP"
    if dtype in ("X-POSTFIX", "X-SMTP"):
        dtype = "SMTP"
    ev = Evidence(status=status, diagnostic=_join_reply_lines(diagnostic, reply).lower(),
                  diagnostic_type=dtype, action=action, command=command, reply_code=reply,
                  hint=hint)
    remote = remote or rhost.remote_host(both)
    vendor = rhost.provider_reason(remote, recipient, ev.diagnostic, status, command, reporting)
    reason = decide(ev, vendor)
    if action in ("delivered", "relayed", "expanded"):
        reason = "delivered"
    return BounceResult(
        kind="dsn", recipient=recipient.lower(),
        bounce_type=bounce_type(reason, status, diagnostic, action), reason=reason, status=status,
        reply_code=int(reply) if reply else None, diagnostic=diagnostic[:_MAX_DIAGNOSTIC],
        remote_mta=remote_mta, action=action, original_message_id=ctx.message_id,
        original_headers=ctx.original)


def _from_dsn(report: ParsedReport, text: str, records: list[dsn.DsnRecipient],
              original: tuple[tuple[str, str], ...], message_id: str) -> list[BounceResult]:
    scanned = {r.recipient: r for r in formats.scan(report, text, set(), check_delay=False)
               } if text else {}
    ctx = _context(report, text, original, message_id)
    if len(records) > 1:
        ctx = replace(ctx, replies="")  # one transcript cannot speak for several recipients
    out = []
    for rec in records:
        if rec.recipient.startswith("@") and len(records) == 1 and len(scanned) == 1:
            # A mangled field (``@host``): the report's text names the one recipient properly.
            rec = replace(rec, recipient=next(iter(scanned)))
        extra = scanned.get(rec.recipient.lower())
        if extra is None and len(records) == 1 and len(scanned) == 1:
            extra = next(iter(scanned.values()))  # one recipient, named differently in the text
        diagnostic = _squeeze(rec.diagnostic)
        told = _squeeze(extra.diagnostic) if extra and not ctx.replies else ""
        if not diagnostic:
            diagnostic = told or _squeeze(text)[:_MAX_DIAGNOSTIC]
        elif told and len(told) > len(diagnostic) and diagnostic.lower() in told.lower():
            diagnostic = told  # the text quotes the whole reply the field cut short
        action = rec.action or ("failed" if rec.status.startswith(("4", "5")) else "")
        out.append(_result(
            ctx, rec.recipient, diagnostic, told, rec.status, action, rec.diagnostic_type,
            hint=_CATEGORY_REASON.get(rec.category, ""), remote=rec.remote_mta,
            reporting=rec.reporting_mta, remote_mta=rec.remote_mta))
    return out


def _from_text(report: ParsedReport, text: str, original: tuple[tuple[str, str], ...],
               message_id: str) -> list[BounceResult]:
    ctx = _context(report, text, original, message_id)
    items = formats.list_refusal(report, text) or formats.scan(report, text, _exclusions(report))
    if len(items) > 1:
        ctx = replace(ctx, replies="")
    return [_result(ctx, item.recipient, _squeeze(item.diagnostic),
                    action="delayed" if item.delayed else "failed",
                    hint=formats.format_hint(item.recipient)) for item in items]


def _from_ses(event: sesjson.SesEvent, message_id: str) -> BounceResult:
    """One result per recipient of an Amazon SES JSON notification."""
    if event.kind == "complaint":
        return BounceResult(kind="complaint", recipient=event.recipient.lower(),
                            reason="feedback", feedback_type=event.feedback_type,
                            original_message_id=message_id)
    action = event.action or ("failed" if event.permanent else "delayed")
    diagnostic = _squeeze(event.diagnostic)
    found = find_status(diagnostic)
    reply = find_reply(diagnostic, found or event.status)
    status = prefer(event.status, found, reply)
    ev = Evidence(status=status, diagnostic=diagnostic.lower(), action=action,
                  command=smtpcommand.find(diagnostic), reply_code=reply)
    if event.kind == "delivery" or status.startswith("2."):
        reason = "delivered"
    else:
        reason = decide(ev)
        if reason in ("onhold", "undefined"):
            reason = sesjson.SUBTYPE_REASON.get(event.subtype, reason)
    return BounceResult(
        kind="dsn", recipient=event.recipient.lower(),
        bounce_type=bounce_type(reason, status, diagnostic, action), reason=reason, status=status,
        reply_code=int(reply) if reply else None, diagnostic=diagnostic[:_MAX_DIAGNOSTIC],
        remote_mta=event.remote_mta, action=action, original_message_id=message_id)


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
