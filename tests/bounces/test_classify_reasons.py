"""The decision procedure: each reason family through ``explain``, with the stage that decided.

Every diagnostic here is written for the test in the way MTAs word such refusals. The stage is
asserted along with the reason, so a case cannot pass by falling through to a default.
"""

from __future__ import annotations

import pytest

from bounces.reasons import Evidence, bounce_type, decide, explain, status_reason


def ev(status: str = "", text: str = "", command: str = "", action: str = "failed",
       reply: str = "", dtype: str = "SMTP", hint: str = "") -> Evidence:
    """Evidence as the classifier builds it: lower-cased, whitespace-squeezed text."""
    return Evidence(status=status, diagnostic=" ".join(text.lower().split()),
                    diagnostic_type=dtype, action=action, command=command, reply_code=reply,
                    hint=hint)


FAMILIES = [
    # (status, diagnostic, command, reason, stage)
    ("5.2.2", "552 5.2.2 <a@b.test>... Mailbox Full", "RCPT", "mailboxfull", "first-pass"),
    ("5.3.4", "552 5.3.4 Error: message file too big", "DATA", "mesgtoobig", "first-pass"),
    ("5.2.3", "552 5.2.3 Message length exceeds administrative limit", "DATA", "exceedlimit",
     "first-pass"),
    ("5.0.0", "550 Requested action not taken: mailbox disabled", "RCPT", "suspend",
     "first-pass"),
    ("5.1.6", "550 5.1.6 recipient no longer on server", "RCPT", "hasmoved", "first-pass"),
    ("5.7.1", "554 5.7.1 <a@b.test>: Relay access denied", "RCPT", "norelaying", "first-pass"),
    ("5.7.26", "550 5.7.26 Unauthenticated mail, DMARC policy", "DATA", "authfailure",
     "first-pass"),
    ("5.1.1", "550 5.1.1 <a@b.test>: Recipient address rejected: User unknown in local "
              "recipient table", "RCPT", "userunknown", "first-pass"),
    ("5.2.1", "550 5.2.1 user refuses to receive this mail", "DATA", "filtered", "first-pass"),
    ("5.7.25", "550 5.7.25 Reverse DNS required", "RCPT", "requireptr", "first-pass"),
    ("5.1.8", "553 5.1.8 <s@a.test>... Domain of sender address does not exist", "MAIL",
     "rejected", "first-pass"),
    ("5.1.2", "550 5.1.2 Host unknown", "RCPT", "hostunknown", "first-pass"),
    ("5.7.1", "554 5.7.1 Message rejected as spam", "DATA", "spamdetected", "first-pass"),
    ("4.7.1", "451 4.7.1 Please try again slower", "RCPT", "speeding", "first-pass"),
    ("4.3.2", "452 4.3.2 Too many connections from your host", "MAIL", "toomanyconn",
     "first-pass"),
    ("5.7.1", "554 5.7.1 Service unavailable; Client host blocked using zen.test", "RCPT",
     "blocked", "first-pass"),
    ("5.7.1", "550 5.7.1 Email not accepted for policy reasons", "DATA", "policyviolation",
     "second-pass"),
    ("5.7.1", "554 5.7.1 Virus detected", "DATA", "virusdetected", "second-pass"),
    ("4.7.0", "451 4.7.0 has been temporarily rate limited due to IP reputation", "MAIL",
     "badreputation", "second-pass"),
    ("5.7.0", "530 5.7.0 Authentication required", "MAIL", "securityerror", "second-pass"),
    ("4.3.0", "451 4.3.0 Local configuration error", "DATA", "systemerror", "second-pass"),
    ("4.4.3", "Host name lookup failure for b.test", "", "networkerror", "second-pass"),
    ("5.6.0", "554 5.6.0 Improper use of 8-bit data in message header", "DATA",
     "contenterror", "second-pass"),
    ("4.3.1", "452 4.3.1 Mail system full", "DATA", "systemfull", "second-pass"),
    ("", "Host does not accept mail", "", "notaccept", "second-pass"),
    ("", "Command died with status 1", "", "mailererror", "second-pass"),
    ("", "503 Bad sequence of commands", "", "syntaxerror", "second-pass"),
]


@pytest.mark.parametrize(("status", "text", "command", "reason", "stage"), FAMILIES)
def test_reason_families(status: str, text: str, command: str, reason: str, stage: str) -> None:
    """Each reason comes from its status code or phrase family at the expected stage."""
    found = explain(ev(status, text, command, reply=text[:3] if text[:1].isdigit() else ""))
    assert (found.reason, found.stage) == (reason, stage)


# -- the families the held-out disagreements were about ---------------------------------------

@pytest.mark.parametrize(("status", "command", "reason"), [
    ("5.0.0", "DATA", "filtered"),   # after DATA: the server had the message: a filter
    ("5.0.0", "", "filtered"),       # stage unknown: not proven to be about the address
    ("5.0.0", "RCPT", "userunknown"),  # at RCPT: the address
    ("5.1.1", "", "userunknown"),    # the code itself names an unknown mailbox
    ("5.1.1", "DATA", "userunknown"),
])
def test_unknown_user_depends_on_the_stage(status: str, command: str, reason: str) -> None:
    """'Unknown user' is an unknown address only at RCPT (or when coded so); else a filter."""
    found = explain(ev(status, "550 Unknown user a@b.test", command))
    assert (found.reason, found.stage) == (reason, "first-pass")


@pytest.mark.parametrize("text", [
    "550 5.2.1 The email account that you tried to reach is disabled.",
    "554 delivery error: This account has been temporarily suspended",
    "550 Requested action not taken: mailbox currently suspended",
    "550 recipient rejected: temporarily inactive",
    "550 5.1.1 <a@b.test> is a deactivated mailbox",
])
def test_disabled_mailboxes_are_suspended_not_unknown(text: str) -> None:
    """Disabled, inactive or suspended mailboxes are 'suspend', even under a 5.x.1 code."""
    status = "5.1.1" if "5.1.1" in text else "5.0.0"
    assert decide(ev(status, text, "RCPT")) == "suspend"


@pytest.mark.parametrize("text", [
    "452 4.2.2 Quota exceeded (mailbox for user is full)",
    "550 user has too many messages on the server",
    "552 Mailbox size limit exceeded",
    "550 The account is over its quota",
    "452 Requested action not taken: not enough space left on the disk",
])
def test_unusually_phrased_full_mailboxes(text: str) -> None:
    """Full mailboxes worded many ways are 'mailboxfull', never an unknown user."""
    assert decide(ev("5.0.0", text, "RCPT")) == "mailboxfull"


@pytest.mark.parametrize(("status", "text", "command", "reason"), [
    ("4.7.0", "421 4.7.0 Too many concurrent SMTP connections", "", "toomanyconn"),
    ("4.0.0", "421 too many connections from your host", "EHLO", "toomanyconn"),
    ("5.0.0", "554 none/bad reputation of the sending host", "MAIL", "badreputation"),
    ("4.4.1", "Malformed or unexpected name server reply", "", "networkerror"),
    ("5.0.0", "Unrouteable mail domain b.test", "", "networkerror"),
    ("5.0.0", "553 sorry, your remotehost looks suspiciously like spammer", "EHLO", "blocked"),
    ("5.0.0", "550 Host unknown", "RCPT", "hostunknown"),
])
def test_connection_and_rate_refusals(status: str, text: str, command: str,
                                      reason: str) -> None:
    """Connection, rate and reputation refusals land in their own families."""
    assert decide(ev(status, text, command)) == reason


def test_onhold_versus_undefined() -> None:
    """Unreadable words are 'onhold'; no words at all are 'undefined'."""
    assert explain(ev("5.0.0", "Delivery failed for an unspecified reason")).stage == "onhold"
    assert explain(ev("5.0.0", "")).reason == "undefined"
    assert explain(ev("", "")).stage == "undefined"


def test_delays_and_expiries() -> None:
    """A delay with nothing else said is 'expired'; so is an expiry code."""
    assert decide(ev("4.0.0", "", action="delayed")) == "expired"
    assert decide(ev("4.4.7", "Message expired after sitting in queue for 5 days")) == "expired"
    assert decide(ev("4.4.1", "connect to mx.b.test: Connection timed out")) == "expired"


def test_content_verdicts_need_data() -> None:
    """A spam verdict counts in the first pass only after DATA; before it, a client block
    worded in the same reply wins, and spam words alone decide only in the second pass."""
    text = "550 5.7.1 spam detected; client host blocked using zen.test"
    assert decide(ev("5.7.1", text, "DATA")) == "spamdetected"
    assert decide(ev("5.7.1", text, "RCPT")) == "blocked"
    alone = explain(ev("5.7.1", "550 5.7.1 spam detected", "RCPT"))
    assert (alone.reason, alone.stage) == ("spamdetected", "second-pass")


def test_format_verdict_and_retry_list() -> None:
    """A format's own verdict decides unless it is a vague one, which is checked again."""
    assert explain(ev("5.0.0", "whatever", hint="mailboxfull")).stage == "verdict"
    vague = explain(ev("5.2.2", "552 5.2.2 Mailbox full", hint="onhold"))
    assert (vague.reason, vague.stage) == ("mailboxfull", "first-pass")


def test_local_delivery_agents() -> None:
    """procmail, maildrop and friends name the reason whatever code wraps them."""
    found = explain(ev("5.5.0", "554 5.5.0 procmail: Quota exceeded while writing x"))
    assert (found.reason, found.stage) == ("mailboxfull", "agent")
    assert decide(ev("5.5.0", "maildrop: invalid user specified.")) == "userunknown"
    assert decide(ev("5.5.0", "procmail: Couldn't create /var/mail/a")) == "mailererror"


def test_local_agent_words_quoted_at_rcpt_are_a_remote_reply() -> None:
    """A local agent's words in a refusal at RCPT came from a remote server, not the agent."""
    assert explain(ev("5.5.0", "procmail: user over quota", "RCPT")).stage != "agent"


def test_provider_reason_is_believed() -> None:
    """A provider's documented reply decides, 'undefined' included."""
    assert explain(ev("5.0.0", "x"), "undefined") == explain(ev("5.1.1", "y"), "undefined")
    assert explain(ev("5.0.0", "x"), "blocked").stage == "provider"


@pytest.mark.parametrize(("status", "reason"), [
    ("4.2.1", "blocked"), ("5.2.1", "filtered"), ("4.2.2", "mailboxfull"),
    ("5.7.1", "securityerror"), ("4.4.7", "expired"), ("5.1.10", "notaccept"),
    ("5.7.13", "suspend"), ("5.5.0", ""), ("2.1.5", "delivered"),
])
def test_status_table(status: str, reason: str) -> None:
    """The status table reads codes as Sisimai does (4.2.1 is a temporary refusal)."""
    assert status_reason(status) == reason


@pytest.mark.parametrize(("reason", "status", "text", "expected"), [
    ("userunknown", "5.1.1", "", "hard"),
    ("hostunknown", "5.1.2", "", "hard"),
    ("hasmoved", "5.1.6", "", "hard"),
    ("notaccept", "5.1.10", "", "hard"),
    ("notaccept", "", "no status given", "hard"),
    ("notaccept", "4.3.2", "421 4.3.2 try later", "soft"),
    ("notaccept", "", "421 temporary failure, try again", "soft"),
    ("filtered", "5.0.0", "", "soft"),
    ("suspend", "5.2.1", "", "soft"),
    ("mailboxfull", "5.2.2", "", "soft"),
    ("onhold", "", "", "soft"),
    ("feedback", "", "", None),
    ("vacation", "", "", None),
])
def test_hard_soft_follows_reason(reason: str, status: str, text: str,
                                  expected: str | None) -> None:
    """Hard only for addresses that do not exist and a permanent 'host takes no mail'."""
    assert bounce_type(reason, status, text) == expected
