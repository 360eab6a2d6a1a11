"""SMTP replies and what they mean for one recipient: the delivery policy, pure.

:func:`classify` maps a reply to a :class:`Disposition`: ``sent`` (2xx), ``retry`` (4xx,
with the server's "try again in N seconds" hint when it gives one), or ``failed`` (5xx)
with a bounce type (hard/soft) and a reason in the bounce module's vocabulary. A 5xx whose
enhanced status says the condition is transient by nature (mailbox full 5.2.2, message
too big for now 5.2.3... 5.7.1 policy) is a *soft* bounce: the address exists.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")
_RETRY_HINT = re.compile(
    r"(?:try|retry)\s+(?:again\s+)?(?:in|after)\s+(\d{1,6})\s*(s|sec|secs|seconds?|m|mins?|minutes?)?\b",
    re.IGNORECASE,
)
MAX_TEXT = 1000
MAX_HINT_S = 3600.0


@dataclass(frozen=True)
class SmtpReply:
    """One server reply: code, enhanced status (``5.1.1``) when given, and text."""

    code: int
    enhanced: str | None
    text: str

    @classmethod
    def parse(cls, code: int, message: str) -> SmtpReply:
        text = " ".join(message.split())[:MAX_TEXT]
        m = _ENHANCED.match(text)
        enhanced = f"{m.group(1)}.{m.group(2)}.{m.group(3)}" if m else None
        return cls(int(code), enhanced, text)

    def __str__(self) -> str:
        return f"{self.code} {self.text}".strip()


@dataclass(frozen=True)
class Disposition:
    """What to do with a recipient after a reply."""

    result: str  # sent, retry, failed
    reply: SmtpReply | None
    retry_after_s: float | None = None
    bounce_type: str | None = None  # hard, soft (failed only)
    reason: str | None = None


# Enhanced status details (RFC 3463) mapped to the bounce vocabulary; hard unless listed soft.
_REASONS: dict[str, tuple[str, str]] = {
    "5.1.1": ("hard", "userunknown"),
    "5.1.0": ("hard", "userunknown"),
    "5.1.2": ("hard", "hostunknown"),
    "5.1.3": ("hard", "userunknown"),
    "5.1.6": ("hard", "hasmoved"),
    "5.1.10": ("hard", "hostunknown"),
    "5.2.1": ("hard", "suspend"),
    "5.2.2": ("soft", "mailboxfull"),
    "5.2.3": ("soft", "mesgtoobig"),
    "5.3.4": ("soft", "mesgtoobig"),
    "5.4.1": ("hard", "rejected"),
    "5.4.4": ("hard", "hostunknown"),
    "5.5.1": ("hard", "userunknown"),
    "5.7.0": ("soft", "securityerror"),
    "5.7.1": ("soft", "policyviolation"),
    "5.7.26": ("soft", "authfailure"),
    "5.7.25": ("soft", "requireptr"),
}
_TEXT_REASONS: tuple[tuple[re.Pattern[str], str, str], ...] = (
    (
        re.compile(
            r"user unknown|no such user|unknown user|does not exist|not exist|"
            r"mailbox unavailable|invalid recipient|recipient (?:address )?rejected",
            re.I,
        ),
        "hard",
        "userunknown",
    ),
    (
        re.compile(r"mailbox (?:is )?full|quota|over ?quota|insufficient storage", re.I),
        "soft",
        "mailboxfull",
    ),
    (re.compile(r"spam|blocked|blacklist|block ?list|reputation", re.I), "soft", "blocked"),
    (re.compile(r"too (?:big|large)|size limit", re.I), "soft", "mesgtoobig"),
)


def retry_hint_s(text: str) -> float | None:
    """A "try again in N seconds/minutes" hint in a reply, bounded to an hour."""
    m = _RETRY_HINT.search(text)
    if m is None:
        return None
    value = float(m.group(1))
    unit = (m.group(2) or "s").lower()
    if unit.startswith("m"):
        value *= 60
    return min(value, MAX_HINT_S)


def classify(reply: SmtpReply) -> Disposition:
    """The disposition of one recipient after ``reply``."""
    if 200 <= reply.code < 300:
        return Disposition("sent", reply)
    if 400 <= reply.code < 500 or reply.code < 200 or reply.code >= 600:
        return Disposition("retry", reply, retry_after_s=retry_hint_s(reply.text))
    kind, reason = _REASONS.get(reply.enhanced or "", ("", ""))
    if not kind:
        for pattern, text_kind, text_reason in _TEXT_REASONS:
            if pattern.search(reply.text):
                kind, reason = text_kind, text_reason
                break
    if not kind:
        # No detail: a 550/551/553 names the mailbox (hard); other 5xx are policy (soft).
        kind, reason = (
            ("hard", "userunknown") if reply.code in (550, 551, 553) else ("soft", "undefined")
        )
    return Disposition("failed", reply, bounce_type=kind, reason=reason)
