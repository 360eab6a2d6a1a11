"""MTA formats that name their own verdict, and the status code a report ends up with.

Each report here is written for the test in the shape its MTA prints (Exim's indented address
blocks, qmail's "Remote host said:", OpenSMTPD's notice, Exchange's MSEXCH codes, Gmail's
"(state N)"). Every test asserts which path decided as well as the result: the recognised format
(``lhost.recognise``) and the stage of the decision (``explain``).
"""

from __future__ import annotations

import pytest

from bounces import lhost
from bounces.classify import classify
from bounces.codes import find_status, prefer
from bounces.message import parse_report
from bounces.model import BounceResult


def one(raw: bytes) -> BounceResult:
    """The single result of a one-recipient report, after checking the classifier ran through."""
    (result,) = classify(raw)
    assert result.error == ""
    return result


def mta_of(raw: bytes) -> str:
    """The name of the format the report is recognised as ("" for none)."""
    found = lhost.recognise(parse_report(raw))
    return found.name if found else ""


def dsn(rcpt: str, status: str, diagnostic: str, *, action: str = "failed",
        text: str = "Your message could not be delivered.",
        sender: str = "Mail Delivery Subsystem <MAILER-DAEMON@mx.a.test>",
        subject: str = "Delivery Status Notification (Failure)") -> bytes:
    """A minimal RFC 3464 report for one recipient."""
    return (
        f"From: {sender}\nTo: sender@a.test\nSubject: {subject}\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="BB"\n\n'
        f"--BB\nContent-Type: text/plain\n\n{text}\n\n"
        "--BB\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.a.test\n\n"
        f"Final-Recipient: rfc822; {rcpt}\nAction: {action}\nStatus: {status}\n"
        f"Diagnostic-Code: smtp; {diagnostic}\n\n"
        "--BB\nContent-Type: text/rfc822-headers\n\n"
        "From: sender@a.test\nTo: someone\nMessage-ID: <m1@a.test>\nSubject: hi\n\n--BB--\n"
    ).encode()


# -- Exim: retries of a temporary reply end in a failure --------------------------------------

EXIM_RETRIES = b"""\
From: Mail Delivery System <Mailer-Daemon@mx.a.test>
To: bounce@a.test
Subject: Mail delivery failed: returning message to sender
Message-Id: <E1kXyZa-0001Ab-Cd@mx.a.test>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary=160-eximdsn-99
Auto-Submitted: auto-replied

--160-eximdsn-99
Content-type: text/plain; charset=us-ascii

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  user@rcpt.test
    host mx.rcpt.test [192.0.2.25]
    SMTP error from remote mail server after RCPT TO:<user@rcpt.test>:
    451 4.2.1 Mailbox temporarily unavailable, try again later: retry timeout exceeded

--160-eximdsn-99
Content-type: message/delivery-status

Reporting-MTA: dns; mx.a.test

Action: failed
Final-Recipient: rfc822;user@rcpt.test
Status: 5.0.0
Remote-MTA: dns; mx.rcpt.test
Diagnostic-Code: smtp; 451 4.2.1 Mailbox temporarily unavailable, try again later

--160-eximdsn-99
Content-type: text/rfc822-headers

Return-path: <bounce@a.test>
From: sender@a.test
To: user@rcpt.test
Message-Id: <m2@a.test>
Subject: hello

--160-eximdsn-99--
"""


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_exim_failure_after_retries_reports_the_last_remote_status(newline: bytes) -> None:
    """Exim's DSN says 5.0.0; the remote server's own 4.2.1 is what comes back (Action
    failed, soft), and the refusal was at RCPT."""
    raw = EXIM_RETRIES.replace(b"\n", newline)
    assert mta_of(raw) == "Exim"
    res = one(raw)
    assert (res.recipient, res.status, res.reply_code, res.action) == (
        "user@rcpt.test", "4.2.1", 451, "failed")
    assert (res.reason, res.bounce_type) == ("blocked", "soft")
    assert res.is_bounce


EXIM_TEXT = b"""\
From: Mail Delivery System <Mailer-Daemon@mx.a.test>
To: sender@a.test
Subject: Mail delivery failed: returning message to sender
Message-Id: <E1kXyZa-0001Ab-Cd@mx.a.test>

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  gone@c.test
    %s

------ This is a copy of the message, including all the headers. ------

From: sender@a.test
Subject: hi
"""


@pytest.mark.parametrize(("line", "reason"), [
    (b"retry timeout exceeded", "expired"),
    (b"all relevant MX records point to non-existent hosts", "hostunknown"),
    (b"an MX or SRV record indicated no SMTP service", "notaccept"),
    (b"mailbox is full (quota exceeded while writing to file /var/mail/gone)", "mailboxfull"),
])
def test_exim_messages_name_their_reason(line: bytes, reason: str) -> None:
    """Exim's own messages (deliver.c, retry.c, routers) are its verdict."""
    raw = EXIM_TEXT % line
    assert mta_of(raw) == "Exim"
    res = one(raw)
    assert (res.recipient, res.reason) == ("gone@c.test", reason)


# -- qmail ----------------------------------------------------------------------------------

QMAIL = b"""\
From: MAILER-DAEMON@mx.a.test
To: sender@a.test
Subject: failure notice
Received: (qmail 1234 invoked for bounce); 1 Jan 2024 00:00:00 -0000

Hi. This is the qmail-send program at mx.a.test.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<user@c.test>:
%s

--- Below this line is a copy of the message.

From: sender@a.test
Subject: hi
"""


@pytest.mark.parametrize(("body", "reason", "status"), [
    (b"Sorry, I wasn't able to establish an SMTP connection. (#4.4.1)\n"
     b"I'm not going to try again; this message has been in the queue too long.",
     "networkerror", "4.4.1"),
    (b"Connected to 192.0.2.1 but sender was rejected.\n"
     b"Remote host said: 550 5.7.1 <sender@a.test>... Access denied", "rejected", "5.7.1"),
    (b"Sorry, I couldn't find a mail exchanger or IP address. (#5.4.4)", "notaccept", "5.4.4"),
    (b"192.0.2.1 does not like recipient.\nRemote host said: 550 5.1.1 <user@c.test>... "
     b"User Unknown\nGiving up on 192.0.2.1.", "userunknown", "5.1.1"),
    (b"Unable to contact LDAP server. (#4.4.3)\nI'm not going to try again; this message has "
     b"been in the queue too long.", "systemerror", "4.4.3"),
])
def test_qmail_messages(body: bytes, reason: str, status: str) -> None:
    """qmail's qmail-remote/qmail-send messages and the stage they name."""
    raw = QMAIL % body
    assert mta_of(raw) == "qmail"
    res = one(raw)
    assert (res.recipient, res.reason, res.status) == ("user@c.test", reason, status)


# -- OpenSMTPD, DragonFly, Exchange, Gmail, G Suite, Office 365 ----------------------------------

OPENSMTPD = b"""\
From: Mailer Daemon <MAILER-DAEMON@mx.a.test>
To: sender@a.test
Subject: Delivery status notification: error

    Hi!

    This is the MAILER-DAEMON, please DO NOT REPLY to this e-mail.

    An error has occurred while attempting to deliver a message for
    the following list of recipients:

user@c.test: %s

    Below is a copy of the original message:

From: sender@a.test
Subject: hi
"""


@pytest.mark.parametrize(("line", "reason", "kind"), [
    (b"Envelope expired", "expired", "soft"),
    (b"No MX found for domain", "notaccept", "hard"),
    (b"Network error on destination MXs", "networkerror", "soft"),
])
def test_opensmtpd_messages(line: bytes, reason: str, kind: str) -> None:
    """OpenSMTPD's queue and MTA messages; a domain with no MX takes no mail (hard)."""
    raw = OPENSMTPD % line
    assert mta_of(raw) == "OpenSMTPD"
    res = one(raw)
    assert (res.recipient, res.reason, res.bounce_type) == ("user@c.test", reason, kind)


def test_dragonfly_gives_up() -> None:
    """DragonFly Mail Agent's give-up message is an expiry."""
    raw = (b"From: MAILER-DAEMON\nTo: sender@a.test\nSubject: Mail delivery failed\n"
           b"Received: from MAILER-DAEMON id 1 by mx.a.test (DragonFly Mail Agent v0.13);\n\n"
           b"This is the DragonFly Mail Agent v0.13 at mx.a.test.\n\n"
           b"There was an error delivering your mail to <user@c.test>.\n\n"
           b"Could not deliver for the last 432000 seconds. Giving up.\n\n"
           b"Original message follows.\n\nFrom: sender@a.test\nSubject: hi\n")
    assert mta_of(raw) == "DragonFly"
    assert (one(raw).recipient, one(raw).reason) == ("user@c.test", "expired")


def test_exchange_2003_error_code() -> None:
    """Exchange 2003's MSEXCH code names the reason its wording leaves vague."""
    raw = (b"From: postmaster@mx.a.test\nTo: sender@a.test\nSubject: Undeliverable: hi\n"
           b"X-Mailer: Internet Mail Service (5.5.2653.19)\n\nYour message\n\n"
           b"  To:      user@c.test\n  Subject: hi\n  Sent:    Thu, 1 Jan 2004 00:00:00 +0000\n\n"
           b"did not reach the following recipient(s):\n\n"
           b"user@c.test on Thu, 1 Jan 2004 00:00:00 +0000\n"
           b"    The recipient name is not recognized\n"
           b"    MSEXCH:IMS:ORG:SITE:MX 0 (000C05A6) Unknown Recipient\n")
    assert mta_of(raw) == "Exchange2003"
    res = one(raw)
    assert (res.recipient, res.reason, res.bounce_type) == ("user@c.test", "userunknown", "hard")


def test_gmail_state_names_the_stage() -> None:
    """Gmail's '(state 14)' is RCPT: an unknown user there is an unknown user."""
    raw = (b"From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>\nTo: sender@a.test\n"
           b"Subject: Delivery Status Notification (Failure)\n\n"
           b"This is an automatically generated Delivery Status Notification\n\n"
           b"Delivery to the following recipient failed permanently:\n\n     user@c.test\n\n"
           b"Technical details of permanent failure:\nGoogle tried to deliver your message, "
           b"but it was rejected by the recipient domain. The error that the other server "
           b"returned was:\n550 550 Unknown user user@c.test (state 14).\n\n"
           b"----- Original message -----\n\nFrom: sender@a.test\nSubject: hi\n")
    assert mta_of(raw) == "Gmail"
    assert one(raw).reason == "userunknown"
    assert one(raw.replace(b"state 14", b"state 18")).reason == "filtered"


def test_office365_documented_code() -> None:
    """Exchange Online's documented enhanced codes name the reason (5.4.316: expired)."""
    raw = dsn("user@c.test", "5.4.316", "550 5.4.316 Message expired, connection refused",
              sender="Microsoft Outlook <postmaster@outlook.com>", subject="Undeliverable: hi")
    raw = raw.replace(b"MIME-Version", b"X-MS-Exchange-Message-Is-Ndr:\nMIME-Version")
    assert mta_of(raw) == "Office365"
    assert (one(raw).reason, one(raw).status) == ("expired", "5.4.316")


def test_sendmail_transcript_names_the_command() -> None:
    """Sendmail's '>>> DATA' line says the refusal came after DATA; its '<<<' replies are the
    remote server's words."""
    raw = dsn("user@c.test", "5.0.0", "550 Unknown user user@c.test",
              subject="Returned mail: see transcript for details",
              text="   ----- Transcript of session follows -----\n"
                   "... while talking to mx.c.test.:\n>>> DATA\n"
                   "<<< 550 Unknown user user@c.test\n554 5.0.0 Service unavailable")
    assert mta_of(raw) == ""  # Sendmail has no verdict table: its transcript is read
    assert one(raw).reason == "filtered"
    at_rcpt = raw.replace(b">>> DATA", b">>> RCPT To:<user@c.test>")
    assert one(at_rcpt).reason == "userunknown"


# -- which status code is reported ------------------------------------------------------------

@pytest.mark.parametrize(("field", "reply", "expected"), [
    ("4.4.7", "451 4.4.2 Timeout - closing connection", "4.4.2"),
    ("4.4.7", "421 4.7.1 Try again later", "4.7.1"),
    ("5.0.0", "452 4.4.5 Insufficient system storage", "4.4.5"),
    ("4.0.0", "452 4.2.2 Mailbox full", "4.2.2"),
    ("5.0.0", "550 5.1.1 User unknown", "5.1.1"),
    ("5.1.1", "550 5.1.1 User unknown", "5.1.1"),
    ("5.2.2", "550 Mailbox full", "5.2.2"),
])
def test_expired_and_generic_fields_report_the_code_the_text_carries(
        field: str, reply: str, expected: str) -> None:
    """A generic or 'delivery time expired' field yields to the specific code in the text."""
    res = one(dsn("user@c.test", field, reply, action="delayed" if field == "4.4.7" else "failed"))
    assert res.status == expected


def test_status_preference_rules() -> None:
    """prefer(): the reply code's class first, then specific over generic."""
    assert prefer("5.0.0", "4.2.1", "451") == "4.2.1"
    assert prefer("5.1.1", "5.7.1", "550") == "5.7.1"
    assert prefer("5.1.1", "5.5.0", "550") == "5.1.1"
    assert prefer("", "4.4.2") == "4.4.2"
    assert prefer("5.2.2", "") == "5.2.2"
    assert find_status("4.4.7 then 4.4.2 later") == "4.4.2"
    assert find_status("version v2.1.5 and 192.168.5.1.1") == ""


@pytest.mark.parametrize(("text", "reason"), [
    ("550 5.1.1 Unknown user (in reply to RCPT TO command)", "userunknown"),
    ("550 Unknown user (in reply to end of DATA command)", "filtered"),
    ("554 Message rejected as spam (in reply to end of DATA command)", "spamdetected"),
])
def test_postfix_stage_from_its_in_reply_to_phrase(text: str, reason: str) -> None:
    """Postfix's '(in reply to ... command)' gives the stage; after DATA it is a filter."""
    raw = dsn("user@c.test", "5.0.0", f"host mx.c.test[192.0.2.1] said: {text}",
              subject="Undelivered Mail Returned to Sender",
              sender="MAILER-DAEMON@mx.a.test (Mail Delivery System)")
    assert one(raw).reason == reason


def test_apple_mail_unsubscribe_is_an_opt_out() -> None:
    """Apple Mail's one-click unsubscribe comes from the recipient, marked by Apple's header."""
    raw = (b"From: reader@icloud.test\nTo: opt-out-1@a.test\nSubject: unsubscribe\n"
           b"Auto-Submitted: auto-replied\nX-Apple-Unsubscribe: true\n\n"
           b"Apple Mail sent this email to unsubscribe from the message \"hi\".\n")
    res = one(raw)
    assert (res.kind, res.recipient, res.reason, res.feedback_type) == (
        "complaint", "reader@icloud.test", "feedback", "opt-out")
    plain = classify(raw.replace(b"X-Apple-Unsubscribe", b"X-Other"))
    assert plain[0].kind == "auto_reply"  # without Apple's header: just an automatic reply
