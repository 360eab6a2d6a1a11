"""Typed results of bounce classification.

A classified message yields one :class:`BounceResult` per recipient it reports on (a DSN about
three recipients gives three results); a message that is not a bounce yields exactly one result
of kind ``not_bounce`` so callers never have to special-case an empty list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["dsn", "complaint", "auto_reply", "not_bounce"]
BounceType = Literal["hard", "soft"]

#: Sisimai's reason vocabulary (the names the corpus reference and downstream consumers use).
REASONS: frozenset[str] = frozenset(
    [
        "authfailure", "badreputation", "blocked", "contenterror", "delivered", "exceedlimit",
        "expired", "feedback", "filtered", "hasmoved", "hostunknown", "mailboxfull",
        "mailererror", "mesgtoobig", "networkerror", "norelaying", "notaccept",
        "notcompliantrfc", "onhold", "policyviolation", "rejected", "requireptr",
        "securityerror", "spamdetected", "speeding", "suspend", "syntaxerror", "systemerror",
        "systemfull", "toomanyconn", "undefined", "userunknown", "vacation", "virusdetected",
    ]
)


@dataclass(frozen=True, slots=True)
class BounceResult:
    """What one report says about one recipient.

    ``status`` is the enhanced status code (``5.1.1``) or ``""`` when the report carried none;
    ``bounce_type`` is ``None`` for complaints, auto-replies, non-bounces and successful
    deliveries. ``original_headers`` holds the returned message's headers as ordered pairs, so a
    bounce can be attributed by its Message-ID or custom headers when VERP is not available.
    """

    kind: Kind
    recipient: str = ""
    bounce_type: BounceType | None = None
    reason: str = ""
    status: str = ""
    reply_code: int | None = None
    diagnostic: str = ""
    remote_mta: str = ""
    action: str = ""
    original_message_id: str = ""
    original_headers: tuple[tuple[str, str], ...] = ()
    feedback_type: str = ""
    #: The exception class name when classification failed and this result is the fallback
    #: ``not_bounce``; ``""`` when the classifier ran to its end (tests assert which path ran).
    error: str = ""

    @property
    def is_bounce(self) -> bool:
        """True for a failed delivery (not a delay, a success, a complaint or an auto-reply)."""
        return self.kind == "dsn" and self.action not in ("delayed", "delivered", "relayed",
                                                          "expanded")


NOT_BOUNCE = BounceResult(kind="not_bounce")
