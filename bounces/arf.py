"""RFC 5965 abuse reports (ARF) and the look-alike feedback-loop formats of large providers."""

from __future__ import annotations

from bounces.dsn import _address
from bounces.message import ParsedReport, parse_header_block


def is_apple_unsubscribe(report: ParsedReport) -> bool:
    """Apple Mail's one-click unsubscribe: a message from the recipient marked
    ``X-Apple-Unsubscribe: true`` (Apple's own header for it)."""
    return report.header("X-Apple-Unsubscribe").strip().lower() == "true"


def is_feedback(report: ParsedReport) -> bool:
    """An ARF report, or a provider's feedback-loop message that carries the original mail."""
    if report.report_type.lower() == "feedback-report" or is_apple_unsubscribe(report):
        return True
    if any(ctype == "message/feedback-report" for ctype, _ in report.report_parts):
        return True
    return bool(report.header("X-HmXmrOriginalRecipient") or report.original(
        "X-HmXmrOriginalRecipient"))


def feedback_fields(report: ParsedReport) -> tuple[str, list[str], str]:
    """Return (feedback type, complained-about recipients, the report's human text).

    Recipients come from ``Original-Rcpt-To`` when the reporter kept them, else from the
    original message's ``To`` (the person who pressed "this is spam" received it).
    """
    if is_apple_unsubscribe(report):
        sender = _address(report.header("From"))
        human = " ".join(" ".join(report.text_parts).split())[:300]
        return "opt-out", [sender] if "@" in sender else [], human
    ftype = ""
    rcpts: list[str] = []
    for ctype, text in report.report_parts:
        if ctype != "message/feedback-report":
            continue
        for name, value in parse_header_block(text):
            lname = name.lower()
            if lname == "feedback-type" and not ftype:
                ftype = value.strip().lower()
            elif lname in ("original-rcpt-to", "removal-recipient") and "@" in value:
                addr = _address(value)
                if addr not in rcpts:
                    rcpts.append(addr)
    hotmail = report.header("X-HmXmrOriginalRecipient") or report.original(
        "X-HmXmrOriginalRecipient")
    if not rcpts and "@" in hotmail:
        rcpts.append(_address(hotmail))
    if not rcpts:
        to = report.original("To")
        if "@" in to:
            rcpts.append(_address(to.split(",")[0]))
    human = " ".join(" ".join(report.text_parts).split())[:300]
    return ftype or "abuse", rcpts, human
