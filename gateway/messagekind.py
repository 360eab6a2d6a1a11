"""What kind of message this is, from its headers: the one classifier ingest and bounces share.

Kinds, decided in this order (the first that matches wins)::

    complaint   an ARF feedback report (RFC 5965: multipart/report; report-type=feedback-report)
    bounce      a delivery report (RFC 3464: report-type=delivery-status, or a multipart/report
                without a type), X-Failed-Recipients, or the shape of a non-standard bounce:
                a mailer-daemon/postmaster sender with a delivery-failure subject
    warmup      mail carrying a warmup marker the caller verified (see ``warmup``)
    challenge   a challenge-response system asking the sender to prove it is human
    auto_reply  an automatic response (RFC 3834): Auto-Submitted other than "no",
                the responders' de-facto headers (X-Autoreply, X-Autorespond,
                X-Autoresponse, Precedence: auto_reply), Microsoft's
                X-Auto-Response-Suppress with an out-of-office subject, or an
                out-of-office/vacation subject in a few languages
    email       everything else: human mail, and list mail (List-Id, Precedence: bulk/list)

Order matters: MTAs mark their bounces ``Auto-Submitted: auto-replied`` too, so a report is
a bounce before it is an auto-reply. Whether an ``email`` is a *reply* to platform mail is
not a property of the message but of the database (does it answer a delivery?), so it is
decided where the deliveries are (``ingest.store``), never here.

Pure: no I/O, no parsing of bodies. This is the only module that reads ``Auto-Submitted``
and the other automatic-response headers; callers give a header lookup and the content
type, and take :data:`HEADERS` when they must pick headers out of a raw message first.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any, Final


class Kind(StrEnum):
    """The kinds of message (``email_messages.message_type`` values)."""

    EMAIL = "email"
    AUTO_REPLY = "auto_reply"
    BOUNCE = "bounce"
    COMPLAINT = "complaint"
    CHALLENGE = "challenge"
    WARMUP = "warmup"


# Every header this module reads (a caller scanning raw headers keeps these).
HEADERS: Final[tuple[str, ...]] = (
    "Content-Type",
    "Subject",
    "From",
    "Return-Path",
    "Auto-Submitted",
    "X-Autoreply",
    "X-Autorespond",
    "X-Autoresponse",
    "X-Auto-Response-Suppress",
    "Precedence",
    "X-Failed-Recipients",
    "X-Boxtrapper",
    "X-Challenge",
    "X-Challenge-Response",
    "X-Spamarrest",
    "List-Id",
)

_DAEMON = re.compile(r"(mailer-daemon|postmaster|mail delivery (sub)?system)", re.I)
_FAILURE_SUBJECT = re.compile(
    r"(undeliver|undelivered|delivery (status )?notification|delivery fail|failure notice|"
    r"returned mail|mail delivery failed|could not be delivered|delivery has failed|"
    r"non[- ]?remis|unzustellbar|nicht zustellbar)",
    re.I,
)
_OUT_OF_OFFICE = re.compile(
    r"^\s*(auto(matic)?[- ]?(reply|response|antwort|respuesta)\b|auto(reply)?\s*:|"
    r"automatic reply\s*:|out of (the )?office|on vacation|vacation( reply)?\b|"
    r"away from (the )?office|abwesenheit|absence|r[ée]ponse automatique|"
    r"respuesta autom[aá]tica|risposta automatica|fuera de la oficina|autosvar|"
    r"automatisch antwoord)",
    re.I,
)
# Challenge-response systems (BoxTrapper, SpamArrest, MailWasher-style sender checks).
_CHALLENGE_HEADERS: Final = ("X-Boxtrapper", "X-Challenge", "X-Challenge-Response", "X-Spamarrest")
_CHALLENGE_SUBJECT = re.compile(
    r"(please (verify|confirm) (that )?you are (a )?(human|real person)|"
    r"(sender|e-?mail|message) verification (required|request)|"
    r"verify your (e-?mail|message) (address )?to (deliver|complete)|"
    r"confirm your (e-?mail|message) (to|so)|\[boxtrapper\]|spam ?arrest)",
    re.I,
)
_RESPONDER_HEADERS: Final = ("X-Autoreply", "X-Autorespond", "X-Autoresponse")

HeaderLookup = Callable[[str], str]


def lookup(headers: Mapping[str, Any]) -> HeaderLookup:
    """A case-insensitive lookup over a header mapping (list values: the first one)."""
    lowered = {str(k).lower(): v for k, v in headers.items()}

    def get(name: str) -> str:
        value = lowered.get(name.lower())
        if isinstance(value, list | tuple):
            value = value[0] if value else ""
        return "" if value is None else str(value)

    return get


def content_type_of(value: str) -> tuple[str, str]:
    """``(type/subtype, report-type)`` of a Content-Type header value, lowercased."""
    main, _, params = value.partition(";")
    report = re.search(r'report-type\s*=\s*"?([\w.-]+)', params, re.I)
    return main.strip().lower(), (report.group(1).lower() if report else "")


def is_automatic(header: HeaderLookup) -> bool:
    """RFC 3834 and the responders' de-facto markers: was this written by software in
    reply to a message it received (vacation, out-of-office, autoresponder)?"""
    auto = header("Auto-Submitted").strip().lower()
    if auto and not auto.startswith("no"):
        return True
    if any(header(name) for name in _RESPONDER_HEADERS):
        return True
    if header("Precedence").strip().lower() == "auto_reply":
        return True
    return _OUT_OF_OFFICE.search(header("Subject")) is not None


def is_challenge(header: HeaderLookup) -> bool:
    """A challenge-response system's request to prove the sender is human."""
    if any(header(name) for name in _CHALLENGE_HEADERS):
        return True
    return _CHALLENGE_SUBJECT.search(header("Subject")) is not None


def classify_kind(
    header: HeaderLookup,
    *,
    content_type: str | None = None,
    report_type: str | None = None,
    warmup: bool = False,
) -> Kind:
    """The kind of a message. ``content_type``/``report_type`` come from a parser when the
    caller has one, else from the Content-Type header; ``warmup`` is the caller's verdict
    on the message's signed warmup marker (a marker that does not verify is ordinary mail)."""
    if content_type is None or report_type is None:
        parsed_type, parsed_report = content_type_of(header("Content-Type"))
        content_type = parsed_type if content_type is None else content_type.lower()
        report_type = parsed_report if report_type is None else report_type.lower()
    else:
        content_type, report_type = content_type.lower(), report_type.lower()
    if content_type == "multipart/report" or report_type:
        if report_type == "feedback-report":
            return Kind.COMPLAINT
        if report_type in ("delivery-status", "") and content_type == "multipart/report":
            return Kind.BOUNCE
    if header("X-Failed-Recipients"):
        return Kind.BOUNCE
    sender = f"{header('From')} {header('Return-Path')}"
    if _DAEMON.search(sender) and _FAILURE_SUBJECT.search(header("Subject")):
        return Kind.BOUNCE
    if warmup:
        return Kind.WARMUP
    if is_challenge(header):
        return Kind.CHALLENGE
    if is_automatic(header):
        return Kind.AUTO_REPLY
    return Kind.EMAIL
