"""What kind of message landed in a mailbox, from its headers alone. Pure.

* ``complaint``: an ARF report (``multipart/report; report-type=feedback-report``);
* ``bounce``: a DSN (``report-type=delivery-status``), or the shape of a non-standard one
  (a mailer-daemon/postmaster sender with a failure subject, ``X-Failed-Recipients``);
* ``auto_reply``: RFC 3834 ``Auto-Submitted`` other than ``no``, the de-facto vacation
  headers (``X-Autoreply``, ``X-Autorespond``, ``Precedence: auto_reply``, Microsoft's
  ``X-Auto-Response-Suppress`` together with an out-of-office subject), or an
  out-of-office/vacation subject in a few languages;
* ``email``: everything else. Whether it is a *reply* to platform mail is decided against
  ``email_deliveries`` by :mod:`ingest.routing`; an auto-reply is never a reply.

Checked in that order: a DSN often carries ``Auto-Submitted: auto-replied`` and is a bounce.
Deep bounce classification (hard/soft, recipient, reason) is the bounces package's job: it
gets the stored message through ``queue:bounce:process``.
"""

from __future__ import annotations

import re
from typing import Any

from ingest.parse import ParsedMessage

_DAEMON = re.compile(r"(mailer-daemon|postmaster|mail delivery (sub)?system)", re.I)
_BOUNCE_SUBJECT = re.compile(
    r"(undeliver|undelivered|delivery (status )?notification|delivery fail|failure notice|"
    r"returned mail|mail delivery failed|could not be delivered|delivery has failed|"
    r"non[- ]?remis|unzustellbar|nicht zustellbar)",
    re.I,
)
_OOO_SUBJECT = re.compile(
    r"^\s*(auto(matic)?[- ]?(reply|response|antwort)\b|out of (the )?office|"
    r"on vacation|vacation reply|away from (the )?office|abwesenheit|absence|"
    r"r[ée]ponse automatique|respuesta autom[aá]tica|risposta automatica|"
    r"fuera de la oficina|autosvar|automatisch antwoord)",
    re.I,
)
_OOO_PREFIX = re.compile(r"^\s*(auto|automatic reply|autoreply)\s*:", re.I)


def _get(headers: dict[str, Any], name: str) -> str:
    lower = name.lower()
    for key, value in headers.items():
        if key.lower() == lower:
            return str(value[0] if isinstance(value, list) else value)
    return ""


def message_type(parsed: ParsedMessage) -> str:
    """``complaint``, ``bounce``, ``auto_reply`` or ``email``."""
    h = parsed.headers
    report = (parsed.report_type or "").lower()
    if parsed.content_type == "multipart/report" and report == "feedback-report":
        return "complaint"
    if parsed.content_type == "multipart/report" and report in ("delivery-status", ""):
        return "bounce"
    subject = parsed.subject or ""
    sender = _get(h, "From") + " " + _get(h, "Return-Path")
    if _get(h, "X-Failed-Recipients"):
        return "bounce"
    if _DAEMON.search(sender) and _BOUNCE_SUBJECT.search(subject):
        return "bounce"
    if is_auto_reply(h, subject):
        return "auto_reply"
    return "email"


def is_auto_reply(headers: dict[str, Any], subject: str) -> bool:
    """RFC 3834 and the vacation responders' de-facto headers, then the subject."""
    auto = _get(headers, "Auto-Submitted").strip().lower()
    if auto and not auto.startswith("no"):
        return True
    if _get(headers, "X-Autoreply") or _get(headers, "X-Autorespond"):
        return True
    if _get(headers, "Precedence").strip().lower() == "auto_reply":
        return True
    if _get(headers, "X-Auto-Response-Suppress") and _OOO_PREFIX.search(subject):
        return True
    return bool(_OOO_SUBJECT.search(subject) or _OOO_PREFIX.search(subject))
