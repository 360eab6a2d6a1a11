"""Bounce reasons: the decision procedure from a report's fields to one of Sisimai's reason names.

The order is Sisimai's (``Sisimai::Fact`` → ``Sisimai::Rhost`` → ``Sisimai::Reason``), because
the reference every consumer compares with is Sisimai's and because the order carries meaning:

1. **The report's own verdict** (:attr:`Evidence.hint`): a format that names its reason itself
   (Exim's "retry timeout exceeded", a local delivery agent's "quota exceeded") decides, unless
   the verdict is one of the vague ones worth checking again (:data:`RETRY`).
2. **Local delivery agents** (procmail, maildrop, mail.local, dovecot ...): their fixed
   messages name the reason whatever code the MTA wrapped them in.
3. **Provider rules by remote host** (:mod:`bounces.rhost`): a provider's documented replies.
4. **The structured fields with the phrase families, strictest first** (:data:`FIRST_PASS`):
   each reason has a *probe* that reads the Status code, the SMTP command the failure answered,
   the reply code and the phrase family together. An "unknown user" refused at RCPT is
   ``userunknown``; the same words after DATA (or with no command on record) are ``filtered``,
   because a server reads the message only after DATA; a spam verdict needs a command after RCPT.
5. **Broader phrase families** (:data:`SECOND_PASS`), then the status code's class
   (``X.6.Y`` content, ``X.7.Y`` security), the mailer type, a 50x syntax reply, a delay,
   a refused greeting.
6. **Nothing said**: ``onhold`` when there was a diagnostic nobody could read, ``undefined`` when
   there was none.

Everything here is pure and works on lower-cased, whitespace-squeezed text.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from bounces.phrases import says, says_rejected

#: Reasons a format's own verdict or a status code may give that deserve a second look.
RETRY = frozenset({"undefined", "onhold", "systemerror", "securityerror", "expired",
                   "networkerror", "hostunknown", "userunknown"})

#: Status codes that name a reason by themselves (RFC 3463 and its successors, read the way
#: Sisimai's ``SMTP::Status`` reads them: ``4.2.1`` is a temporary refusal, not a disabled
#: mailbox; ``5.2.1`` a mailbox that refuses this mail).
_STATUS_TABLE: dict[str, str] = {
    "delivered": "2.1.5",
    "hasmoved": "4.1.6 5.1.6 5.7.17 5.7.18",
    "rejected": "4.1.7 4.1.8 5.1.7 5.1.8",
    "systemerror": "4.1.9 4.3.3 4.3.5 4.4.3 4.5.3 4.5.5 5.1.9 5.3.0 5.3.3 5.3.5 5.4.3 5.5.4 5.5.5",
    "blocked": "4.2.1 4.7.1 4.7.2",
    "mailboxfull": "4.2.2 5.2.2",
    "exceedlimit": "4.2.3 5.2.3",
    "filtered": "4.2.4 5.1.4 5.2.0 5.2.1 5.2.4",
    "systemfull": "4.3.1 4.4.5 5.3.1",
    "notaccept": "4.3.2 5.3.2 5.1.10 5.7.27",
    "expired": "4.4.1 4.4.7",
    "networkerror": "4.4.2 4.4.4 4.4.6 4.4.8 5.4.0",
    "contenterror": "4.6.0 4.6.2 4.6.5 5.6.0 5.6.1 5.6.2 5.6.3 5.6.5 5.6.6 5.6.7 5.6.8 5.6.9",
    "securityerror": "4.7.5 4.7.6 4.7.7 4.7.12 4.7.15 5.7.0 5.7.1 5.7.2 5.7.3 5.7.4 5.7.5 5.7.6 "
                     "5.7.7 5.7.8 5.7.9 5.7.10 5.7.11 5.7.14 5.7.15 5.7.19 5.7.30",
    "mesgtoobig": "4.7.16 5.3.4 5.7.16",
    "authfailure": "4.7.24 4.7.26 5.7.20 5.7.21 5.7.22 5.7.23 5.7.24 5.7.26 5.7.29",
    "requireptr": "4.7.25 5.7.25",
    "userunknown": "5.1.0 5.1.1 5.1.3",
    "hostunknown": "5.1.2 5.4.4",
    "syntaxerror": "5.5.2 5.5.6",
    "toomanyconn": "5.5.3",
    "suspend": "5.7.13",
    "spamdetected": "5.7.28",
}
STATUS_REASON: dict[str, str] = {
    code: reason for reason, codes in _STATUS_TABLE.items() for code in codes.split()}

#: First pass (Sisimai's ``Reason.get``), most specific first.
FIRST_PASS = ("mailboxfull", "mesgtoobig", "exceedlimit", "suspend", "hasmoved", "norelaying",
              "authfailure", "userunknown", "filtered", "requireptr", "notcompliantrfc",
              "rejected", "hostunknown", "spamdetected", "speeding", "toomanyconn", "blocked")
#: Second pass (``Reason.anotherone``): phrase families only.
SECOND_PASS = ("mailboxfull", "spamdetected", "policyviolation", "virusdetected", "norelaying",
               "authfailure", "badreputation", "securityerror", "systemerror", "networkerror",
               "speeding", "suspend", "expired", "contenterror", "systemfull", "notaccept",
               "mailererror")
#: SMTP commands sent before DATA: a refusal there cannot be about the message's content.
BEFORE_DATA = frozenset({"CONN", "EHLO", "HELO", "MAIL", "RCPT"})
#: The commands a verdict may name (others, like STARTTLS or AUTH, are read as unknown).
KNOWN_COMMANDS = frozenset({"EHLO", "HELO", "MAIL", "RCPT", "DATA", "QUIT"})


@dataclass(frozen=True, slots=True)
class Evidence:
    """What a report says about one recipient, as the decision procedure reads it.

    ``diagnostic`` is lower-cased with whitespace squeezed; ``command`` is one of
    :data:`KNOWN_COMMANDS` or ``""``; ``hint`` is a reason the report's format named itself.
    """

    status: str = ""
    diagnostic: str = ""
    diagnostic_type: str = "SMTP"
    action: str = ""
    command: str = ""
    reply_code: str = ""
    hint: str = ""


def status_reason(status: str) -> str:
    """The reason an enhanced status code names on its own, or ``""``."""
    return STATUS_REASON.get(status, "")


# -- probes: one per reason of the first pass --------------------------------------------------

_Probe = Callable[["Evidence", str], bool]


def _userunknown_words(text: str) -> bool:
    return says("userunknown", text)


def _probe_userunknown(ev: Evidence, coded: str) -> bool:
    if coded == "suspend":
        return False
    if coded == "userunknown":
        # 5.1.1 and friends, unless the words say the refusal was about something else.
        return not (says("norelaying", ev.diagnostic) or says("blocked", ev.diagnostic)
                    or says("mailboxfull", ev.diagnostic) or says("hasmoved", ev.diagnostic)
                    or says_rejected(ev.diagnostic) or says("notaccept", ev.diagnostic))
    return ev.command == "RCPT" and _userunknown_words(ev.diagnostic)


def _probe_filtered(ev: Evidence, coded: str) -> bool:
    if coded == "suspend":
        return False
    text = ev.diagnostic
    if coded == "filtered":
        return _userunknown_words(text) or says("filtered", text)
    if ev.command in BEFORE_DATA:
        return False  # the server had not seen the message yet: not a content filter
    return says("filtered", text) or _userunknown_words(text)


def _probe_rejected(ev: Evidence, coded: str) -> bool:
    if coded == "rejected":
        return True
    if ev.command == "MAIL":
        return says_rejected(ev.diagnostic)
    if ev.command == "DATA" and coded != "userunknown":
        return says_rejected(ev.diagnostic)
    if coded in ("", "onhold", "undefined", "securityerror", "systemerror"):
        return says_rejected(ev.diagnostic)
    return False


def _probe_mesgtoobig(ev: Evidence, coded: str) -> bool:
    if coded == "mesgtoobig":
        return True
    if coded == "exceedlimit" or ev.status == "5.2.3":
        return False
    return says("mesgtoobig", ev.diagnostic)


def _probe_hostunknown(ev: Evidence, coded: str) -> bool:
    if coded == "hostunknown":
        return not says("networkerror", ev.diagnostic)  # a DNS failure is not a dead domain
    return says("hostunknown", ev.diagnostic)


def _probe_norelaying(ev: Evidence, _coded: str) -> bool:
    if ev.hint in ("securityerror", "systemerror", "undefined"):
        return False
    if ev.command in ("CONN", "EHLO", "HELO"):
        return False
    return says("norelaying", ev.diagnostic)


def _probe_spamdetected(ev: Evidence, coded: str) -> bool:
    if not ev.status:
        return False
    if coded == "spamdetected":
        return True
    if ev.command in BEFORE_DATA:
        return False  # content is read only after DATA
    return says("spamdetected", ev.diagnostic)


def _probe_suspend(ev: Evidence, _coded: str) -> bool:
    return ev.reply_code == "525" or says("suspend", ev.diagnostic)


def _coded_or_said(reason: str) -> _Probe:
    def probe(ev: Evidence, coded: str) -> bool:
        return coded == reason or says(reason, ev.diagnostic)
    return probe


def _said(reason: str) -> _Probe:
    def probe(ev: Evidence, _coded: str) -> bool:
        return says(reason, ev.diagnostic)
    return probe



_PROBES: dict[str, _Probe] = {
    "mailboxfull": _coded_or_said("mailboxfull"),
    "mesgtoobig": _probe_mesgtoobig,
    "exceedlimit": _coded_or_said("exceedlimit"),
    "suspend": _probe_suspend,
    "hasmoved": _coded_or_said("hasmoved"),
    "norelaying": _probe_norelaying,
    "authfailure": _coded_or_said("authfailure"),
    "userunknown": _probe_userunknown,
    "filtered": _probe_filtered,
    "requireptr": _coded_or_said("requireptr"),
    "notcompliantrfc": _said("notcompliantrfc"),
    "rejected": _probe_rejected,
    "hostunknown": _probe_hostunknown,
    "spamdetected": _probe_spamdetected,
    "speeding": _said("speeding"),
    "toomanyconn": _coded_or_said("toomanyconn"),
    "blocked": _coded_or_said("blocked"),
}


def _syntax_reply(reply_code: str) -> bool:
    """A 50x/40x reply (bad syntax, unknown command, bad sequence) with no other explanation."""
    return len(reply_code) == 3 and reply_code[0] in "45" and reply_code[1] == "0" and (
        reply_code[2] in "1234567")


def _first_pass(ev: Evidence, coded: str) -> str:
    """The first reason whose probe accepts the evidence (``Reason.get``), or ``""``."""
    for reason in FIRST_PASS:
        if ev.hint == reason or _PROBES[reason](ev, coded):
            return reason
    return ""


def _second_pass(ev: Evidence, coded: str) -> str:
    """Broader phrases, then the status class and the protocol facts (``Reason.anotherone``)."""
    if ev.hint:
        return ev.hint
    reason = coded
    if reason and reason not in RETRY and ev.diagnostic_type == "SMTP":
        return reason
    for family in SECOND_PASS:
        if says(family, ev.diagnostic):
            return family
    if reason:
        return reason
    subject = ev.status[:3]
    if subject in ("5.6", "4.6"):
        return "contenterror"
    if subject in ("5.7", "4.7"):
        return "securityerror"
    if ev.diagnostic_type.startswith("X-UNIX"):
        return "mailererror"
    if _syntax_reply(ev.reply_code):
        return "syntaxerror"
    if ev.action.startswith(("delayed", "expired")):
        return "expired"
    if ev.command in ("EHLO", "HELO"):
        return "blocked"
    return ""


Stage = Literal["verdict", "agent", "provider", "first-pass", "second-pass", "delivered",
                "onhold", "undefined", "vacation"]


@dataclass(frozen=True, slots=True)
class Decision:
    """A reason and the stage of the procedure that named it (tests and metrics read it)."""

    reason: str
    stage: Stage


def _find(ev: Evidence) -> Decision:
    """Sisimai's ``Reason.get``: the reason from status, command and phrases; never empty."""
    if ev.status.startswith("2."):
        return Decision("delivered", "delivered")
    coded = status_reason(ev.status)
    reason = ""
    if ev.diagnostic_type in ("SMTP", ""):
        reason = _first_pass(ev, coded)
    if reason:
        return Decision(reason, "first-pass")
    reason = _second_pass(ev, coded)
    if reason == "undefined":
        reason = ""
    if not reason and ev.action == "delayed":
        reason = "expired"
    if reason:
        return Decision(reason, "second-pass")
    if says("vacation", ev.diagnostic):
        return Decision("vacation", "vacation")
    return Decision("onhold", "onhold") if ev.diagnostic else Decision("undefined", "undefined")


def find(ev: Evidence) -> str:
    """The reason the status, command and phrase families give (no provider, no agent)."""
    if ev.hint and ev.hint not in RETRY:
        return ev.hint
    return _find(ev).reason


# -- local delivery agents -------------------------------------------------------------------

#: (agent marker, [(reason, phrases)]): a local delivery agent's fixed messages.
_LDA: tuple[tuple[re.Pattern[str], tuple[tuple[str, re.Pattern[str]], ...]], ...] = (
    (re.compile(r"your message to <.{0,80}> was automatically rejected:"), (
        ("mailboxfull", re.compile(r"not enough disk space|quota exceeded")),
        ("userunknown", re.compile(r"mailbox doesn't exist: ")))),
    (re.compile(r"mail\.local: "), (
        ("mailboxfull", re.compile(r"disc quota exceeded|mailbox full or quota exceeded")),
        ("systemerror", re.compile(r"temporary file write error")),
        ("userunknown", re.compile(
            r": (?:invalid mailbox path|unknown user:|user missing home directory"
            r"|user unknown)")))),
    (re.compile(r"procmail: |/procmail "), (
        ("mailboxfull", re.compile(r"quota exceeded while writing|user over quota")),
        ("systemerror", re.compile(r"service unavailable")),
        ("systemfull", re.compile(r"no space left to finish writing")))),
    (re.compile(r"maildrop: "), (
        ("mailboxfull", re.compile(r"maildir over quota\.")),
        ("userunknown", re.compile(r"cannot find system user|invalid user specified\.")))),
    (re.compile(r"vdelivermail: "), (
        ("filtered", re.compile(r"user does not exist, but will deliver to ")),
        ("mailboxfull", re.compile(r"domain is over quota|user is over quota")),
        ("suspend", re.compile(r"account is locked email bounced")),
        ("userunknown", re.compile(r"sorry, no mailbox here by that name\.")))),
    (re.compile(r"vdeliver: "), (
        ("mailboxfull", re.compile(r"delivery failed due to system quota violation")),
        ("userunknown", re.compile(
            r"invalid or unknown (?:base user or domain|virtual user)"
            r"|user name does not refer to a virtual user")))),
)


def local_agent_reason(ev: Evidence) -> str:
    """The reason a local delivery agent's own message names (``mailererror`` when the agent
    is recognised but its words are not), or ``""`` when no agent spoke."""
    if not ev.diagnostic or ev.command not in ("", "DATA"):
        return ""
    for marker, rules in _LDA:
        if marker.search(ev.diagnostic):
            return next((reason for reason, rule in rules if rule.search(ev.diagnostic)),
                        "mailererror")
    return ""


def explain(ev: Evidence, provider_reason: str = "") -> Decision:
    """The full procedure (see the module docstring), with the stage that decided.
    ``provider_reason`` is what :mod:`bounces.rhost` read from the remote host's documented
    replies, if anything."""
    if ev.hint and ev.hint not in RETRY:
        return Decision(ev.hint, "verdict")
    agent = local_agent_reason(ev)
    if agent:
        return Decision(agent, "agent")
    if provider_reason:
        # A provider documenting "no cause given" (``undefined``) is believed too.
        return Decision(provider_reason, "provider")
    return _find(ev)


def decide(ev: Evidence, provider_reason: str = "") -> str:
    """The reason :func:`explain` arrives at."""
    return explain(ev, provider_reason).reason


# -- hard or soft ----------------------------------------------------------------------------

HARD_REASONS = frozenset({"userunknown", "hostunknown", "hasmoved"})
_TEMPORARY_WORDS = re.compile(r" temporar| persistent", re.IGNORECASE)


def bounce_type(reason: str, status: str, diagnostic: str,
                action: str = "") -> Literal["hard", "soft"] | None:
    """Hard or soft: an address that does not exist (user, host, moved) is hard; a refusal
    because the host takes no mail (``notaccept``) is hard unless it said it was temporary;
    everything else is soft, and so is any delay (the MTA is still trying). No verdict for
    deliveries, complaints and auto-replies."""
    if reason in ("delivered", "feedback", "vacation"):
        return None
    if action == "delayed":
        return "soft"
    if reason in HARD_REASONS:
        return "hard"
    if reason != "notaccept":
        return "soft"
    code = status or _first_code(diagnostic)
    if code.startswith("5") or not (code.startswith("4") or _TEMPORARY_WORDS.search(diagnostic)):
        return "hard"
    return "soft"


_CODE = re.compile(r"(?<![\d.])([245])(?:\.\d{1,3}\.\d{1,3}|\d\d)(?![\d.]*\d)")


def _first_code(text: str) -> str:
    match = _CODE.search(text)
    return match.group(0) if match else ""
