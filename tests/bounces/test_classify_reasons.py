"""Reason families: one diagnostic of each, as MTAs word it, through the decision rules."""

from __future__ import annotations

import pytest

from bounces.reasons import bounce_type, decide, smtp_command

CASES = [
    ("5.2.2", "552 5.2.2 Mailbox full", "failed", "mailboxfull"),
    ("5.3.4", "552 5.3.4 Message size exceeds fixed limit", "failed", "mesgtoobig"),
    ("5.2.3", "552 5.2.3 message too large for this recipient", "failed", "exceedlimit"),
    ("5.0.0", "550 Account has been suspended", "failed", "suspend"),
    ("5.1.6", "550 5.1.6 recipient no longer on server", "failed", "hasmoved"),
    ("5.7.1", "554 5.7.1 <a@b.test>: Relay access denied", "failed", "norelaying"),
    ("5.7.26", "550 5.7.26 Unauthenticated email; DMARC policy reject", "failed", "authfailure"),
    (
        "5.1.1",
        "550 5.1.1 <a@b.test>: Recipient address rejected: User unknown (in reply to "
        "RCPT TO command)",
        "failed",
        "userunknown",
    ),
    ("5.2.1", "550 5.2.1 user refuses to receive mail from you", "failed", "filtered"),
    (
        "5.7.25",
        "550 5.7.25 The IP address sending this message does not have a PTR record",
        "failed",
        "requireptr",
    ),
    ("5.1.8", "553 5.1.8 Sender address rejected: Domain not found", "failed", "rejected"),
    (
        "5.1.2",
        "550 5.1.2 Host unknown (Name server: x.test: host not found)",
        "failed",
        "hostunknown",
    ),
    ("5.7.1", "550 5.7.1 Message rejected as spam by Content Filtering", "failed", "spamdetected"),
    ("4.7.0", "421 4.7.0 Too many connections from your host", "failed", "toomanyconn"),
    ("5.7.1", "554 5.7.1 Client host blocked using zen.spamhaus.org", "failed", "blocked"),
    ("5.7.1", "550 5.7.1 Message not accepted for policy reasons", "failed", "policyviolation"),
    ("5.7.1", "554 5.7.1 Virus found in the message: Eicar-Test", "failed", "virusdetected"),
    ("5.7.0", "530 5.7.0 Must issue a STARTTLS command first", "failed", "securityerror"),
    ("5.3.5", "554 5.3.5 local configuration error", "failed", "systemerror"),
    ("4.4.1", "connect to mx.b.test: Connection timed out", "delayed", "expired"),
    ("5.6.0", "554 5.6.0 invalid MIME structure", "failed", "contenterror"),
    ("5.3.1", "452 5.3.1 Mail system full", "failed", "systemfull"),
    ("5.1.10", "", "failed", "userunknown"),
    ("", "Command died with status 1: /usr/bin/procmail", "failed", "mailererror"),
    ("", "500 5.5.1 syntax error, command unrecognized", "failed", "syntaxerror"),
    ("2.0.0", "250 OK", "delivered", "delivered"),
    ("", "something nobody can read", "failed", "onhold"),
    ("", "", "failed", "undefined"),
]


@pytest.mark.parametrize(("status", "diagnostic", "action", "reason"), CASES)
def test_reason_family(status: str, diagnostic: str, action: str, reason: str) -> None:
    """Each reason family is recognised from its status code and typical wording."""
    assert decide(status, diagnostic, action) == reason


def test_unknown_user_after_data_is_a_content_filter() -> None:
    """'User unknown' answered to DATA (not RCPT) is a filter, as Sisimai reads it."""
    assert (
        decide("5.0.0", "550 Unknown user a@b.test (in reply to end of DATA command)", "failed")
        == "filtered"
    )


def test_smtp_command_detection() -> None:
    """The refused SMTP command is read from the usual MTA phrasings."""
    assert smtp_command("(in reply to RCPT TO command)") == "RCPT"
    assert smtp_command("SMTP error from remote mail server after end of data:") == "DATA"
    assert smtp_command(">>> MAIL From:<a@b.test>") == "MAIL"
    assert smtp_command("no command here") == ""


@pytest.mark.parametrize(
    ("reason", "status", "code", "action", "expected"),
    [
        ("userunknown", "5.1.1", 550, "failed", "hard"),
        ("hostunknown", "5.1.2", None, "failed", "hard"),
        ("hasmoved", "5.1.6", 550, "failed", "hard"),
        ("notaccept", "5.1.10", 556, "failed", "hard"),
        ("notaccept", "4.3.2", 421, "failed", "soft"),
        ("mailboxfull", "5.2.2", 552, "failed", "soft"),
        ("expired", "4.4.7", None, "failed", "soft"),
        ("userunknown", "4.1.1", 450, "delayed", "soft"),
        ("feedback", "", None, "", None),
    ],
)
def test_hard_soft(
    reason: str, status: str, code: int | None, action: str, expected: str | None
) -> None:
    """Hard only for unknown users/hosts, moved addresses and a permanent notaccept."""
    assert bounce_type(reason, status, code, action) == expected
