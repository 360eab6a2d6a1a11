"""MTA formats that name their own reasons: the reporting MTA's fixed messages.

Many MTAs write a fixed English sentence for each failure they detect themselves (Exim's
"retry timeout exceeded", qmail's "Sorry, I couldn't find any host by that name", OpenSMTPD's
"Envelope expired"), and some number their errors (Exchange's ``000C05A6``, Gmail's
``(state 14)``). Those sentences are the MTA's verdict: Sisimai's per-MTA modules
(``Sisimai::Lhost::*``) read them before the generic rules, and so does this module. Each
:class:`Mta` says how to recognise the format (headers and markers its own source code writes)
and which of its messages name which reason; the verdict is a *hint* for
:func:`bounces.reasons.decide`, which lets the vague ones (``onhold``, ``expired`` ...) be
checked again against the status code and the phrase families.

The tables are keyed by the MTA's own message texts (from its source or documentation), never
by any one report.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from bounces import smtpcommand
from bounces.message import ParsedReport


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a recognised format says about one recipient: a reason and/or the SMTP command."""

    reason: str = ""
    command: str = ""


NO_VERDICT = Verdict()
_Judge = Callable[[str], Verdict]


@dataclass(frozen=True, slots=True)
class Mta:
    """A reporting MTA: how to recognise its reports and how to read its own messages."""

    name: str
    recognise: Callable[[ParsedReport], bool]
    judge: _Judge
    #: Whether the format's verdict applies to DSN records too (some MTAs send RFC 3464 parts
    #: whose Diagnostic-Code carries the same fixed messages).
    structured: bool = field(default=True)


def _table(spec: dict[str, tuple[str, ...]]) -> list[tuple[str, re.Pattern[str]]]:
    """{reason: (message, ...)} -> [(reason, one alternation)]; messages are matched as written
    (case-sensitive, as the MTA prints them)."""
    return [(reason, re.compile("|".join(re.escape(m) for m in messages)))
            for reason, messages in spec.items()]


def _first(table: list[tuple[str, re.Pattern[str]]], text: str) -> str:
    return next((reason for reason, rule in table if rule.search(text)), "")


def _received(report: ParsedReport) -> list[str]:
    values = report.headers.get_all("Received") or []
    return [str(v) for v in values]


def _any_received(report: ParsedReport, marker: str) -> bool:
    return any(marker in value for value in _received(report))


# -- Exim ------------------------------------------------------------------------------------

_EXIM_SUBJECTS = ("Delivery Status Notification", "Mail delivery failed", "Mail failure",
                  "Message frozen", "Warning: message ", "error(s) in forwarding or filtering")
_EXIM_ID = re.compile(r"^<[0-9A-Za-z]{6}-[0-9A-Za-z]{6}-[0-9A-Za-z]{2}@")


def _is_exim(report: ParsedReport) -> bool:
    score = 0
    if "Mail Delivery System" in report.header("From"):
        score += 1
    subject = report.header("Subject")
    if any(s in subject for s in _EXIM_SUBJECTS):
        score += 1
    if _EXIM_ID.match(report.header("Message-ID")):
        score += 1
    thirdparty = bool(report.header("X-MX-Bounce") or report.header("X-MXL-Hash")
                      or report.header("X-MXL-NoteHash")) or "<mxl~" in report.header(
                          "Message-ID")
    return score >= 2 or thirdparty


_EXIM_MESSAGES = _table({
    "userunknown": ("user not found",),
    "hostunknown": ("all host address lookups failed permanently",
                    "all relevant MX records point to non-existent hosts",
                    "Unrouteable address"),
    "mailboxfull": ("mailbox is full", "error: quota exceed"),
    "notaccept": ("an MX or SRV record indicated no SMTP service",
                  "no host found for existing SMTP connection"),
    "syntaxerror": ("angle-brackets nested too deep", 'expected word or "<"',
                    "domain missing in source-routed address", "malformed address:"),
    "systemerror": ("delivery to file forbidden", "delivery to pipe forbidden",
                    "local delivery failed", "LMTP error after "),
    "contenterror": ('Too many "Received" headers',),
})
_EXIM_DELAYED = re.compile(
    r"retry timeout exceeded|No action is required on your part|"
    r"retry time not reached for any host after a long failure period|"
    r"all hosts have been failing for a long time and were last tried|Delay reason: |"
    r"has been frozen|was frozen on arrival by ")


def _judge_exim(diagnostic: str) -> Verdict:
    """Exim's own messages (src/deliver.c, route.c, transports/*.c), and the stage its
    "SMTP error from remote mail server after ..." line names."""
    command = ""
    if "SMTP error from remote " in diagnostic or "LMTP error after " in diagnostic:
        command = smtpcommand.find(diagnostic)
    if command in ("EHLO", "HELO"):
        return Verdict("blocked", command)
    if command == "MAIL":
        return Verdict("onhold", command)
    reason = _first(_EXIM_MESSAGES, diagnostic)
    if not reason and _EXIM_DELAYED.search(diagnostic):
        reason = "expired"
    if not reason and "pipe to |" in diagnostic:
        reason = "mailererror"
    return Verdict(reason, command)


# -- qmail -----------------------------------------------------------------------------------

def _is_qmail(report: ParsedReport) -> bool:
    return report.header("Subject") in ("failure notice", "Failure Notice") or _any_received(
        report, "(qmail ")


_QMAIL_COMMANDS = (
    ("CONN", (" but greeting failed.",)),
    ("EHLO", (" but my name was rejected.",)),
    ("MAIL", (" but sender was rejected.",)),
    ("RCPT", (" does not like recipient.",)),
    ("DATA", (" failed on DATA command", " failed after I sent the message")),
)
_QMAIL_MESSAGES = _table({
    "hostunknown": ("Sorry, I couldn't find any host ",),
    "mailboxfull": ("disk quota exceeded",),
    "mesgtoobig": ("Message size exceeds fixed maximum message size:",),
    "networkerror": ("Sorry, I wasn't able to establish an SMTP connection",
                     "Sorry. Although I'm listed as a best-preference MX or A for that host"),
    "notaccept": ("Sorry, I couldn't find a mail exchanger or IP address",),
    "systemerror": ("bad interpreter: No such file or directory", "system error", "Unable to"),
    "systemfull": ("Requested action not taken: mailbox unavailable (not enough free space)",),
    "userunknown": ("no mailbox here by that name",),
    # qmail-ldap
    "exceedlimit": ("The message exeeded the maximum size the user accepts",),
    "suspend": ("Mailaddress is administrativly disabled",
                "Mailaddress is administrativley disabled",
                "Mailaddress is administratively disabled",
                "Mailaddress is administrativeley disabled"),
})
_QMAIL_LDAP_SYSTEM = re.compile(
    r"Automatic homedir creator crashed|Illegal value in LDAP attribute|"
    r"LDAP attribute is not given but mandatory|Timeout while performing search on LDAP server|"
    r"Too many results returned but needs to be unique|"
    r"(?:Permanent|Temporary) error while executing qmail-forward|"
    r"Temporary error in automatic homedir creation|Temporary failure in LDAP lookup|"
    r"Unable to contact LDAP server|Unable to login into LDAP server, bad credentials")
_QMAIL_EXPIRED = "this message has been in the queue too long."
_QMAIL_REMOTE = re.compile(r"Remote host said:.*")


def _judge_qmail(diagnostic: str) -> Verdict:
    """qmail's qmail-remote.c/qmail-send.c/qmail-local.c messages (and qmail-ldap's)."""
    command = next((c for c, marks in _QMAIL_COMMANDS if any(m in diagnostic for m in marks)),
                   "")
    if not command and "no SMTP connection got far enough" in diagnostic:
        command = smtpcommand.find(diagnostic)
    if command in ("EHLO", "HELO"):
        return Verdict("blocked", command)
    if " does not like recipient." in diagnostic and _QMAIL_EXPIRED in diagnostic:
        return Verdict("onhold", command)
    remote = _QMAIL_REMOTE.search(diagnostic)
    for text in (remote.group(0) if remote else "", diagnostic):
        if not text:
            continue
        reason = _first(_QMAIL_MESSAGES, text)
        if not reason and _QMAIL_LDAP_SYSTEM.search(text):
            reason = "systemerror"
        if reason:
            return Verdict(reason, command)
        if _QMAIL_EXPIRED in text:
            return Verdict("expired", command)
    return Verdict("", command)


# -- small MTAs with a fixed message table ---------------------------------------------------

def _judge_by(table: list[tuple[str, re.Pattern[str]]]) -> _Judge:
    def judge(diagnostic: str) -> Verdict:
        return Verdict(_first(table, diagnostic))
    return judge


def _is_opensmtpd(report: ParsedReport) -> bool:
    return ("Delivery status notification" in report.header("Subject")
            or "Mailer Daemon <" in report.header("From")
            or _any_received(report, " (OpenSMTPD) with "))


_OPENSMTPD = _table({
    "expired": ("Envelope expired",),
    "securityerror": ("Could not retrieve credentials",),
    "hostunknown": ("Invalid domain name", "Domain does not exist"),
    "networkerror": ("Address family mismatch on destination MXs",
                     "All routes to destination blocked", "bad DNS lookup error code",
                     "Could not retrieve source address", "Loop detected",
                     "Network error on destination MXs", "No valid route to remote MX",
                     "No valid route to destination", "Temporary failure in MX lookup"),
    "notaccept": ("Destination seem to reject all mails", "No MX found for domain",
                  "No MX found for destination"),
})


def _is_dragonfly(report: ParsedReport) -> bool:
    return "Mail delivery failed" in report.header("Subject") and _any_received(
        report, " (DragonFly Mail Agent")


_DRAGONFLY = _table({
    "expired": ("Could not deliver for the last ",),
    "hostunknown": ("DNS lookup failure: host ",),
})


def _is_imailserver(report: ParsedReport) -> bool:
    return report.header("Subject").startswith("Undeliverable Mail ") or report.header(
        "X-Mailer").startswith("<SMTP32 v")


_IMAILSERVER = _table({
    "hostunknown": ("Unknown host",),
    "userunknown": ("Unknown user", "Invalid final delivery userid"),
    "mailboxfull": ("User mailbox exceeds allowed size",),
    "virusdetected": ("Requested action not taken: virus detected",),
    "spamdetected": ("Blacklisted URL in message",),
    "expired": ("Delivery failed ",),
})


# -- Gmail (the old googlemail.com text reports) ---------------------------------------------

def _is_gmail(report: ParsedReport) -> bool:
    return ("<mailer-daemon@googlemail.com>" in report.header("From")
            and "Delivery Status Notification" in report.header("Subject"))


#: Gmail's "(state N)" numbers: the SMTP stage its client had reached, and what that means.
_GMAIL_STATES = {
    "6": ("MAIL", "securityerror"), "8": ("AUTH", "systemerror"), "9": ("AUTH", "securityerror"),
    "12": ("AUTH", "norelaying"), "13": ("EHLO", "blocked"), "14": ("RCPT", "userunknown"),
    "15": ("DATA", "filtered"), "17": ("DATA", "filtered"), "18": ("DATA", "filtered"),
}
_GMAIL_STATE = re.compile(r" \(state (\d+)\)")
_GMAIL = _table({
    "expired": ("DNS Error: Could not contact DNS servers",
                "Delivery to the following recipient has been delayed",
                "The recipient server did not accept our requests to connect"),
    "hostunknown": ("DNS Error: Domain name not found",
                    "DNS Error: DNS server returned answer with no data"),
})


def _judge_gmail(diagnostic: str) -> Verdict:
    state = _GMAIL_STATE.search(diagnostic)
    if state and state.group(1) in _GMAIL_STATES:
        command, reason = _GMAIL_STATES[state.group(1)]
        return Verdict(reason, command)
    return Verdict(_first(_GMAIL, diagnostic))


# -- Microsoft Exchange ----------------------------------------------------------------------

def _is_exchange2003(report: ParsedReport) -> bool:
    if report.header("X-MS-Embedded-Report"):
        return True
    mailer = report.header("X-Mailer")
    if mailer.startswith(("Internet Mail Service (",
                          "Microsoft Exchange Server Internet Mail Connector")):
        return True
    if report.header("X-MimeOLE").startswith("Produced By Microsoft Exchange"):
        return True
    return _any_received(report, " with Internet Mail Service (")


_EXCHANGE2003_CODES = {
    "000C05A6": "userunknown", "000C0595": "filtered", "00010256": "systemerror",
    "000D06B5": "systemerror", "00120270": "networkerror", "00050311": "contenterror",
    "000502CC": "contenterror", "000B0981": "securityerror", "000B099C": "onhold",
    "000B09AA": "onhold", "000B09B6": "onhold",
}
_EXCHANGE2003_CODE = re.compile(r"MSEXCH:.*?\(([0-9A-F]{8})\)")


def _judge_exchange2003(diagnostic: str) -> Verdict:
    code = _EXCHANGE2003_CODE.search(diagnostic)
    return Verdict(_EXCHANGE2003_CODES.get(code.group(1), "") if code else "")


#: Exchange's categorised NDR codes (``550 5.1.1 RESOLVER.ADR.RecipNotFound``), unique to
#: Exchange and Exchange Online, so they are read whichever way the report came.
_EXCHANGE_NDR = {
    "smtpsend.dns.nonexistentdomain": "hostunknown", "smtpsend.dns.mxloopback": "networkerror",
    "resolver.adr.badprimary": "systemerror", "resolver.adr.recipnotfound": "userunknown",
    "resolver.adr.recipientnotfound": "userunknown",
    "resolver.adr.exrecipnotfound": "userunknown", "resolver.adr.reciplimit": "toomanyconn",
    "resolver.adr.invalidinsmtp": "systemerror", "resolver.adr.ambiguous": "systemerror",
    "resolver.rst.authrequired": "securityerror", "resolver.rst.notauthorized": "rejected",
    "resolver.rst.recipsizelimit": "mesgtoobig", "queue.expired": "expired",
}
_EXCHANGE_NDR_CODE = re.compile(r"\b((?:resolver|queue|smtpsend)\.[a-z]+(?:\.[a-z]+)?)\b",
                                re.IGNORECASE)


def exchange_ndr_reason(diagnostic: str) -> str:
    """The reason an Exchange categorised NDR code names, or ``""``."""
    for match in _EXCHANGE_NDR_CODE.finditer(diagnostic):
        reason = _EXCHANGE_NDR.get(match.group(1).lower())
        if reason:
            return reason
    return ""


# -- the table -------------------------------------------------------------------------------

MTAS: tuple[Mta, ...] = (
    Mta("Exchange2003", _is_exchange2003, _judge_exchange2003),
    Mta("Gmail", _is_gmail, _judge_gmail),
    Mta("qmail", _is_qmail, _judge_qmail),
    Mta("Exim", _is_exim, _judge_exim),
    Mta("OpenSMTPD", _is_opensmtpd, _judge_by(_OPENSMTPD)),
    Mta("DragonFly", _is_dragonfly, _judge_by(_DRAGONFLY)),
    Mta("IMailServer", _is_imailserver, _judge_by(_IMAILSERVER)),
)


def recognise(report: ParsedReport) -> Mta | None:
    """The MTA whose format the report is in, when one of :data:`MTAS` claims it."""
    return next((mta for mta in MTAS if mta.recognise(report)), None)


def verdict(mta: Mta | None, diagnostic: str) -> Verdict:
    """The recognised MTA's verdict on one recipient's diagnostic (as written, not lower-cased),
    plus the Exchange NDR codes any report may quote."""
    found = mta.judge(diagnostic) if mta is not None else NO_VERDICT
    if not found.reason:
        ndr = exchange_ndr_reason(diagnostic)
        if ndr:
            return Verdict(ndr, found.command)
    return found
