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
from bounces.reasons import status_reason


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
    recognise: Callable[[Signature], bool]
    judge: _Judge
    #: A reason named by the MTA's own enhanced status code (Exchange Online documents its own).
    by_status: Callable[[str], str] | None = field(default=None)


@dataclass(frozen=True, slots=True)
class Signature:
    """The header values the recognisers look at, read once per report."""

    sender: str
    subject: str
    msgid: str
    ctype: str
    mailer: str
    mimeole: str
    received: str  # every Received: value, joined by newlines
    names: frozenset[str]  # lower-cased names of the headers present

    @classmethod
    def of(cls, report: ParsedReport) -> Signature:
        """Read the signature of a report's own header block."""
        return cls(report.header("From"), report.header("Subject"),
                   report.header("Message-ID"), report.header("Content-Type"),
                   report.header("X-Mailer"), report.header("X-MimeOLE"),
                   report.headers.joined("Received"), report.headers.names())

    def has(self, name: str) -> bool:
        """Whether the report carries a header of that name."""
        return name.lower() in self.names


def _table(spec: dict[str, tuple[str, ...]]) -> list[tuple[str, re.Pattern[str]]]:
    """{reason: (message, ...)} -> [(reason, one alternation)]; messages are matched as written
    (case-sensitive, as the MTA prints them)."""
    return [(reason, re.compile("|".join(re.escape(m) for m in messages)))
            for reason, messages in spec.items()]


def _first(table: list[tuple[str, re.Pattern[str]]], text: str) -> str:
    return next((reason for reason, rule in table if rule.search(text)), "")


def _received(sig: Signature) -> list[str]:
    return sig.received.split("\n")


def _any_received(sig: Signature, marker: str) -> bool:
    return marker in sig.received


# -- Exim ------------------------------------------------------------------------------------

_EXIM_SUBJECTS = ("Delivery Status Notification", "Mail delivery failed", "Mail failure",
                  "Message frozen", "Warning: message ", "error(s) in forwarding or filtering")
_EXIM_ID = re.compile(r"^<[0-9A-Za-z]{6}-[0-9A-Za-z]{6}-[0-9A-Za-z]{2}@")


def _is_exim(sig: Signature) -> bool:
    score = 0
    if "Mail Delivery System" in sig.sender:
        score += 1
    subject = sig.subject
    if any(s in subject for s in _EXIM_SUBJECTS):
        score += 1
    if _EXIM_ID.match(sig.msgid):
        score += 1
    thirdparty = bool(sig.has("X-MX-Bounce") or sig.has("X-MXL-Hash")
                      or sig.has("X-MXL-NoteHash")) or "<mxl~" in sig.msgid
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

def _is_qmail(sig: Signature) -> bool:
    return sig.subject in ("failure notice", "Failure Notice") or _any_received(
        sig, "(qmail ")


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


def _is_opensmtpd(sig: Signature) -> bool:
    return ("Delivery status notification" in sig.subject
            or "Mailer Daemon <" in sig.sender
            or _any_received(sig, " (OpenSMTPD) with "))


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


def _is_dragonfly(sig: Signature) -> bool:
    return "Mail delivery failed" in sig.subject and _any_received(
        sig, " (DragonFly Mail Agent")


_DRAGONFLY = _table({
    "expired": ("Could not deliver for the last ",),
    "hostunknown": ("DNS lookup failure: host ",),
})


def _is_imailserver(sig: Signature) -> bool:
    return sig.subject.startswith("Undeliverable Mail ") or sig.mailer.startswith("<SMTP32 v")


_IMAILSERVER = _table({
    "hostunknown": ("Unknown host",),
    "userunknown": ("Unknown user", "Invalid final delivery userid"),
    "mailboxfull": ("User mailbox exceeds allowed size",),
    "virusdetected": ("Requested action not taken: virus detected",),
    "spamdetected": ("Blacklisted URL in message",),
    "expired": ("Delivery failed ",),
})


# -- Gmail (the old googlemail.com text reports) ---------------------------------------------

def _is_gmail(sig: Signature) -> bool:
    return ("<mailer-daemon@googlemail.com>" in sig.sender
            and "Delivery Status Notification" in sig.subject)


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


_GMAIL_CODE = re.compile(r"(?<![\d.])[245]\.[1-7]\.\d{1,3}(?!\d)")


def _judge_gmail(diagnostic: str) -> Verdict:
    """The "(state N)" stage, else Gmail's own DNS/connection messages; a specific enhanced
    code the remote server quoted overrides either (Gmail only relays the remote reply)."""
    state = _GMAIL_STATE.search(diagnostic)
    command, reason = "", ""
    if state and state.group(1) in _GMAIL_STATES:
        command, reason = _GMAIL_STATES[state.group(1)]
    else:
        reason = _first(_GMAIL, diagnostic)
    code = _GMAIL_CODE.search(diagnostic) if reason else None
    if code is not None and ".0" not in code.group(0):
        reason = status_reason(code.group(0))
    return Verdict(reason, "" if command == "AUTH" else command)


# -- Yahoo ------------------------------------------------------------------------------------

def _is_yahoo(sig: Signature) -> bool:
    return sig.has("X-YMailISG")


_ADDRESS_IN_ANGLES = re.compile(r"<[^<>@\s]+@[^<>\s]+>")


def _judge_yahoo(diagnostic: str) -> Verdict:
    """Yahoo names no reasons itself; a refusal quoting the recipient's address came at RCPT."""
    command = smtpcommand.find(diagnostic) or (
        "RCPT" if _ADDRESS_IN_ANGLES.search(diagnostic) else "")
    return Verdict("", command)


# -- Microsoft Exchange ----------------------------------------------------------------------

def _is_exchange2003(sig: Signature) -> bool:
    if sig.has("X-MS-Embedded-Report"):
        return True
    mailer = sig.mailer
    if mailer.startswith(("Internet Mail Service (",
                          "Microsoft Exchange Server Internet Mail Connector")):
        return True
    if sig.mimeole.startswith("Produced By Microsoft Exchange"):
        return True
    return _any_received(sig, " with Internet Mail Service (")


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


# -- Exim derivatives ------------------------------------------------------------------------

def _is_mailru(sig: Signature) -> bool:
    sender = sig.sender.lower()
    msgid = sig.msgid
    score = int("mailer-daemon@" in sender and "mail.ru" in sender)
    score += int(msgid.endswith((".mail.ru>", "smailru.net>")))
    score += int(any(s in sig.subject for s in _EXIM_SUBJECTS))
    return score > 2


_EXIM_AFTER = re.compile(
    r"(?:SMTP error from remote (?:mail server|mailer)|LMTP error) after (?:end of )?"
    r"([A-Za-z]{4})")


def _judge_mailru(diagnostic: str) -> Verdict:
    """mail.ru runs Exim: the same messages, and a refusal at MAIL is about the sender."""
    after = _EXIM_AFTER.search(diagnostic)
    command = after.group(1).upper() if after else ""
    if command == "MAIL":
        return Verdict("rejected", command)
    if command in ("EHLO", "HELO"):
        return Verdict("blocked", command)
    reason = _first(_EXIM_MESSAGES, diagnostic)
    if not reason and re.search(r"retry timeout exceeded|No action is required on your part",
                                diagnostic):
        reason = "expired"
    return Verdict(reason, command)


def _is_gmx(sig: Signature) -> bool:
    return sig.has("X-GMX-Antispam")


_GMX = _table({"expired": ("delivery retry timeout exceeded",)})


def _is_zoho(sig: Signature) -> bool:
    return sig.has("X-ZohoMail")


_ZOHO = _table({"expired": ("Host not reachable",)})


# -- qmail clones (Sisimai's "X4") -----------------------------------------------------------

def _is_qmail_clone(sig: Signature) -> bool:
    subject = sig.subject
    if subject.startswith(("failure notice", "Permanent Delivery Failure")):
        return True
    return "(qmail " in sig.received and any(
        "(qmail " in r and ("invoked for bounce)" in r or "network)" in r)
        for r in _received(sig))


_QMAIL_CLONE = _table({
    "userunknown": ("no mailbox here by that name", "does not like recipient."),
    "mailboxfull": ("disk quota exceeded",),
    "mesgtoobig": ("Message size exceeds fixed maximum message size:",),
    "hostunknown": ("Sorry, I couldn't find any host ",),
    "systemfull": ("Requested action not taken: mailbox unavailable (not enough free space)",),
    "systemerror": ("bad interpreter: No such file or directory", "system error", "Unable to"),
    "networkerror": ("Sorry, I wasn't able to establish an SMTP connection",
                     "Sorry, I couldn't find a mail exchanger or IP address",
                     "Sorry. Although I'm listed as a best-preference MX or A for that host"),
})


def _judge_qmail_clone(diagnostic: str) -> Verdict:
    """qmail clones word their reports like qmail-1.03 but keep the older verdicts."""
    command = next((c for c, marks in _QMAIL_COMMANDS if any(m in diagnostic for m in marks)),
                   "")
    if command == "MAIL":
        return Verdict("rejected", command)
    if command in ("EHLO", "HELO"):
        return Verdict("blocked", command)
    if " does not like recipient." in diagnostic and _QMAIL_EXPIRED in diagnostic:
        return Verdict("onhold", command)
    remote = _QMAIL_REMOTE.search(diagnostic)
    for text in (remote.group(0) if remote else "", diagnostic):
        reason = _first(_QMAIL_CLONE, text) if text else ""
        if reason:
            return Verdict(reason, command)
    if _QMAIL_LDAP_SYSTEM.search(diagnostic):
        return Verdict("systemerror", command)
    if _QMAIL_EXPIRED in diagnostic:
        return Verdict("expired", command)
    return Verdict("", command)


# -- providers and appliances with a few fixed messages --------------------------------------

def _is_notes(sig: Signature) -> bool:
    return sig.subject.startswith("Undeliverable message")


_NOTES = _table({
    "networkerror": ("Message has exceeded maximum hop count",),
    "userunknown": ("User not listed in public Name & Address Book",
                    "ディレクトリのリストにありません"),
})


def _is_domino(sig: Signature) -> bool:
    subject = sig.subject
    return subject.startswith("DELIVERY FAILURE:") or "DELIVERY_FAILURE" in subject


_DOMINO = _table({
    "filtered": ("Cannot route mail to user",),
    "systemerror": ("Several matches found in Domino Directory",),
    "userunknown": ("not listed in Domino Directory", "not listed in public Name & Address Book",
                    "no se encuentra en el Directorio de Domino",
                    "non répertorié dans l'annuaire Domino",
                    "Domino ディレクトリには見つかりません"),
})


def _is_ezweb(sig: Signature) -> bool:
    sender = sig.sender
    score = int("Postmaster@ezweb.ne.jp" in sender) + int("Postmaster@au.com" in sender)
    score += int(sig.subject == "Mail System Error - Returned Mail")
    score += int("ezweb.ne.jp (EZweb Mail) with" in sig.received or ".au.com (" in sig.received)
    msgid = sig.msgid
    score += int(".ezweb.ne.jp>" in msgid) + int(".au.com>" in msgid)
    return score >= 2


_EZWEB = _table({
    "expired": ("Your message was not delivered within ",),
    "mailboxfull": ("The user(s) account is temporarily over quota",),
    "onhold": ("Each of the following recipients was rejected by a remote mail server",),
    "suspend": ("The user(s) account is disabled.", "The user(s) account is temporarily limited."),
})


def _is_trendmicro(sig: Signature) -> bool:
    return sig.sender.startswith('"InterScan') or "InterScan" in sig.ctype


_TRENDMICRO = _table({"userunknown": ("Unable to deliver",)})


def _is_gsuite(sig: Signature) -> bool:
    return ("<mailer-daemon@googlemail.com>" in sig.sender
            and "Delivery Status Notification" in sig.subject
            and sig.has("X-Gm-Message-State"))


_GSUITE = _table({
    "userunknown": ("because the address couldn't be found. Check for typos or unnecessary "
                    "spaces and try again.",),
    "notaccept": ("Null MX",),
    "networkerror": (" had no relevant answers.", " responded with code NXDOMAIN"),
})


def _is_courier(sig: Signature) -> bool:
    subject = sig.subject
    return ("Courier mail server at " in sig.sender
            or "NOTICE: mail delivery status." in subject or "WARNING: delayed mail." in subject
            or sig.msgid.startswith("<courier."))


_COURIER = _table({
    "hostunknown": ("No such domain.",),
    "systemerror": ("This domain's DNS violates RFC 1035.",),
    "networkerror": ("DNS lookup failed.",),
})


def _is_messagingserver(sig: Signature) -> bool:
    return "Boundary_(ID_" in sig.ctype or sig.subject.startswith(
        "Delivery Notification: ")


_MESSAGINGSERVER = _table({"hostunknown": ("Illegal host/domain name found",)})


def _is_fml(sig: Signature) -> bool:
    return sig.has("X-MLServer") and "-admin@" in sig.sender and (
        ".FML" in sig.msgid)


_FML = _table({
    "rejected": (" header may cause mail loop", "NOT MEMBER article from ", "reject mail from ",
                 "reject spammers:", "You are not a member of this mailing list"),
    "notcompliantrfc": ("Duplicated Message-ID",),
    "securityerror": ("Security alert:",),
    "systemerror": (" has detected a loop condition so that", "Loop Back Warning:"),
})


def _is_office365(sig: Signature) -> bool:
    subject = sig.subject
    score = sum(int(s in subject) for s in ("Undeliverable:", "Onbestelbaar:", "Não_entregue:"))
    score += sum(int(sig.has(h)) for h in (
        "X-MS-Exchange-Message-Is-Ndr", "X-Microsoft-Antispam-PRVS",
        "X-Exchange-Antispam-Report-Test", "X-Exchange-Antispam-Report-CFA-Test",
        "X-MS-Exchange-CrossTenant-OriginalArrivalTime",
        "X-MS-Exchange-CrossTenant-FromEntityHeader",
        "X-MS-Exchange-Transport-CrossTenantHeadersStamped"))
    score += int(_OUTLOOK_HOST.search(sig.received) is not None)
    score += int(bool(_OUTLOOK_HOST.search(sig.msgid)))
    return score >= 2


_OUTLOOK_HOST = re.compile(r"\.(?:outbound\.protection|prod)\.outlook\.com\b")
#: Exchange Online's documented enhanced codes (its NDR reference), first match wins.
_OFFICE365_CODES = (
    (r"4\.4\.7", "expired"), (r"4\.4\.312", "networkerror"), (r"4\.4\.316", "expired"),
    (r"4\.7\.26", "authfailure"), (r"4\.7\.[56]\d\d", "blocked"),
    (r"4\.7\.8[5-9]\d", "blocked"), (r"5\.0\.350", "contenterror"),
    (r"5\.1\.10", "userunknown"), (r"5\.4\.1", "norelaying"), (r"5\.4\.6", "networkerror"),
    (r"5\.4\.312", "networkerror"), (r"5\.4\.316", "expired"), (r"5\.6\.11", "contenterror"),
    (r"5\.7\.1", "rejected"), (r"5\.7\.1[23]", "rejected"), (r"5\.7\.124", "rejected"),
    (r"5\.7\.13[3-6]", "rejected"), (r"5\.7\.23", "blocked"), (r"5\.7\.25", "networkerror"),
    (r"5\.7\.50[1-3]", "spamdetected"), (r"5\.7\.50[45]", "filtered"),
    (r"5\.7\.50[67]", "blocked"), (r"5\.7\.508", "toomanyconn"),
    (r"5\.7\.509", "authfailure"), (r"5\.7\.510", "notaccept"), (r"5\.7\.511", "rejected"),
    (r"5\.7\.512", "policyviolation"), (r"5\.7\.57", "securityerror"),
    (r"5\.7\.60[6-9]", "blocked"), (r"5\.7\.6[1-4]\d", "blocked"),
    (r"5\.7\.7[0-4]\d", "toomanyconn"),
)
_OFFICE365_RULES = tuple((re.compile(code), reason) for code, reason in _OFFICE365_CODES)


def office365_status_reason(status: str) -> str:
    """The reason Exchange Online documents for its own enhanced status code, or ``""``."""
    return next((reason for rule, reason in _OFFICE365_RULES if rule.fullmatch(status)), "")


def _judge_office365(diagnostic: str) -> Verdict:
    command = "RCPT" if re.search(r"unknown recipient or mailbox unavailable ->.+@", diagnostic) \
        else ""
    return Verdict("", command)


# -- Sendmail ---------------------------------------------------------------------------------

def _is_sendmail(sig: Signature) -> bool:
    subject = sig.subject
    return subject.startswith("Warning: ") or subject.endswith("see transcript for details")


_SERVER_LINE = re.compile(r"(?m)^<<< ?(.*)$")


def sendmail_replies(report: ParsedReport, text: str) -> str:
    """The server replies a Sendmail transcript quotes (``<<< 550 5.1.1 ...``), joined: Sendmail
    puts the remote server's own words there and only a summary in its DSN fields."""
    if "<<< " not in text or not _is_sendmail(Signature.of(report)):
        return ""
    seen: list[str] = []
    for match in _SERVER_LINE.finditer(text):
        line = match.group(1).strip()
        if line and line not in seen:
            seen.append(line)
    return " ".join(seen)


# -- Amazon SES receiving rules ---------------------------------------------------------------

def _is_receivingses(sig: Signature) -> bool:
    """SES receipt rules bouncing inbound mail; SES's own bounces of outbound mail carry the
    same header but come from its MAILER-DAEMON and follow no template."""
    return sig.has("X-SES-Outgoing") and "amazonses.com" not in sig.sender.lower()


#: The error texts of SES receipt-rule bounce templates (Rule sets / Actions / Template).
_RECEIVINGSES = _table({
    "filtered": ("Mailbox does not exist",),
    "mesgtoobig": ("Message too large",),
    "mailboxfull": ("Mailbox full",),
    "contenterror": ("Message content rejected",),
})


# -- the table -------------------------------------------------------------------------------

MTAS: tuple[Mta, ...] = (
    Mta("ReceivingSES", _is_receivingses, _judge_by(_RECEIVINGSES), status_reason),
    Mta("Exchange2003", _is_exchange2003, _judge_exchange2003),
    Mta("Office365", _is_office365, _judge_office365, office365_status_reason),
    Mta("GSuite", _is_gsuite, _judge_by(_GSUITE)),
    Mta("Gmail", _is_gmail, _judge_gmail),
    Mta("Yahoo", _is_yahoo, _judge_yahoo),
    Mta("MailRu", _is_mailru, _judge_mailru),
    Mta("GMX", _is_gmx, _judge_by(_GMX)),
    Mta("Zoho", _is_zoho, _judge_by(_ZOHO)),
    Mta("EZweb", _is_ezweb, _judge_by(_EZWEB)),
    Mta("Notes", _is_notes, _judge_by(_NOTES)),
    Mta("Domino", _is_domino, _judge_by(_DOMINO)),
    Mta("TrendMicro", _is_trendmicro, _judge_by(_TRENDMICRO)),
    Mta("Courier", _is_courier, _judge_by(_COURIER)),
    Mta("MessagingServer", _is_messagingserver, _judge_by(_MESSAGINGSERVER)),
    Mta("FML", _is_fml, _judge_by(_FML)),
    Mta("qmail", _is_qmail, _judge_qmail),
    Mta("qmail-clone", _is_qmail_clone, _judge_qmail_clone),
    Mta("Exim", _is_exim, _judge_exim),
    Mta("OpenSMTPD", _is_opensmtpd, _judge_by(_OPENSMTPD)),
    Mta("DragonFly", _is_dragonfly, _judge_by(_DRAGONFLY)),
    Mta("IMailServer", _is_imailserver, _judge_by(_IMAILSERVER)),
)


def recognise(report: ParsedReport) -> Mta | None:
    """The MTA whose format the report is in, when one of :data:`MTAS` claims it."""
    sig = Signature.of(report)
    return next((mta for mta in MTAS if mta.recognise(sig)), None)


def verdict(mta: Mta | None, diagnostic: str, status: str = "") -> Verdict:
    """The recognised MTA's verdict on one recipient's diagnostic (as written, not lower-cased)
    and status code, plus the Exchange NDR codes any report may quote."""
    found = mta.judge(diagnostic) if mta is not None else NO_VERDICT
    if not found.reason and mta is not None and mta.by_status is not None and status:
        coded = mta.by_status(status)
        if coded:
            found = Verdict(coded, found.command)
    if not found.reason:
        ndr = exchange_ndr_reason(diagnostic)
        if ndr:
            return Verdict(ndr, found.command)
    return found
