"""Rule families added for corpus accuracy: status table, phrase families, DSN field quirks, MIME
quirks and plain-text shapes. Every message here is written for the test."""

from __future__ import annotations

import pytest

from bounces.classify import classify
from bounces.dsn import parse_fields, valid_address
from bounces.reasons import decide, smtp_command, status_reason

STATUS_CASES = [
    ("4.7.1", "blocked"),
    ("5.7.1", "securityerror"),
    ("4.4.1", "expired"),
    ("5.7.25", "requireptr"),
    ("5.5.3", "toomanyconn"),
    ("5.5.0", ""),
    ("5.4.1", ""),
    ("4.2.1", "suspend"),
    ("5.2.1", "filtered"),
    ("5.7.23", "authfailure"),
    ("5.1.351", "userunknown"),
    ("4.0.0", ""),
]


@pytest.mark.parametrize(("status", "reason"), STATUS_CASES)
def test_status_table_tells_temporary_from_permanent(status: str, reason: str) -> None:
    assert status_reason(status) == reason


PHRASE_CASES = [
    # unknown user, no SMTP command named: MTA's own words vs a quoted remote reply
    ("", "Unknown user: a@b.test", "", "userunknown"),
    ("", "550 unknown user <a@b.test>", "", "filtered"),
    ("", "550 unknown user <a@b.test>", "RCPT", "userunknown"),
    ("", "This user doesn't have a b.test account (a@b.test) [0]", "", "filtered"),
    ("5.1.1", "550 5.1.1 Refused due to recipient preferences", "", "filtered"),
    # network wording outranks an expiry status; loops are network errors
    ("4.4.1", "Sorry, I wasn't able to establish an SMTP connection. (#4.4.1)", "", "networkerror"),
    ("4.4.7", "Deferred: Name server: b.test.: host name lookup failure", "", "networkerror"),
    ("5.4.6", "554 5.4.6 Hop count exceeded - possible mail loop", "", "networkerror"),
    ("4.4.1", "connect to b.test[192.0.2.1]:25: Connection timed out", "", "expired"),
    # null MX and missing MX
    (
        "4.0.0",
        "The domain b.test doesn't receive email according to the administrator: returned Null MX",
        "",
        "notaccept",
    ),
    ("", "No MX found for domain", "", "notaccept"),
    ("5.4.4", "Sorry, I couldn't find a mail exchanger or IP address. (#5.4.4)", "", "notaccept"),
    ("", "DNS lookup failure: host b.test not found", "", "hostunknown"),
    (
        "5.5.0",
        "554 The mail could not be delivered because the domain is not reachable",
        "",
        "hostunknown",
    ),
    # content verdicts
    ("5.0.0", "550 Virus Detected; Content Rejected", "DATA", "virusdetected"),
    (
        "5.7.1",
        "550-5.7.1 Messages with multiple 550-5.7.1 addresses in From: header are not accepted.",
        "DATA",
        "notcompliantrfc",
    ),
    ("5.0.0", "554 Mail from a@b.test rejected for policy reasons.", "", "policyviolation"),
    (
        "5.7.0",
        "552-5.7.0 Our system detected an illegal attachment on your message.",
        "DATA",
        "policyviolation",
    ),
    ("5.7.0", "554 5.7.0 Header error", "DATA", "policyviolation"),
    ("5.0.0", "550 Protocol violation", "DATA", "policyviolation"),
    (
        "5.7.1",
        "550 5.7.1 This message does not have authentication information or fails to pass "
        "authentication checks.",
        "DATA",
        "authfailure",
    ),
    (
        "4.0.0",
        "550 Adresse IP source bloquee pour incident de spam. Client host blocked for "
        "spamming issues.",
        "HELO",
        "blocked",
    ),
    # the sender refused
    ("5.7.1", "550 5.7.1 Access denied", "MAIL", "rejected"),
    (
        "5.2.0",
        "550 5.2.0 From: Domain is invalid. Please provide a valid From:",
        "DATA",
        "rejected",
    ),
    ("", "Sorry, you are sending to/from an address that has been blacklisted", "", "rejected"),
    ("5.7.0", "550 5.7.0 Please use the smtp server of your ISP.", "MAIL", "blocked"),
    # local delivery agents
    (
        "5.1.1",
        'procmail: Couldn\'t create "/var/mail/a" id: b.test: No such user',
        "",
        "mailererror",
    ),
    ("4.0.0", "temporary failure. Command output: scanner: unable to connect", "", "mailererror"),
    ("5.5.0", "503 Improper sequence of commands", "", "syntaxerror"),
    ("5.5.0", "550 5.5.0 The recipient account is blocked.", "RCPT", "suspend"),
    ("4.3.2", "452 4.3.2 Connection rate limit exceeded.", "MAIL", "toomanyconn"),
]


@pytest.mark.parametrize(("status", "text", "command", "reason"), PHRASE_CASES)
def test_phrase_families(status: str, text: str, command: str, reason: str) -> None:
    assert decide(status, text, "failed", command) == reason


def test_refused_greeting_reads_as_helo() -> None:
    assert smtp_command("host mx.b.test refused to talk to me: 550 go away") == "HELO"
    assert smtp_command("SMTP:RCPT host 192.0.2.1: 553 no such user") == "RCPT"


def test_dsn_blocks_without_blank_line_are_separate_recipients() -> None:
    text = (
        "Reporting-MTA: dns; mx.a.test\n\n"
        "Final-Recipient: rfc822; one@b.test\nAction: failed\nStatus: 5.2.2\n"
        "Final-Recipient: rfc822; two@b.test\nOriginal-Recipient: rfc822;two@b.test\n"
        "Action: failed\nStatus: 5.1.1\n"
    )
    got = [(r.recipient, r.status) for r in parse_fields(text)]
    assert got == [("one@b.test", "5.2.2"), ("two@b.test", "5.1.1")]


def test_bare_host_final_recipient_yields_to_original_of_same_mailbox() -> None:
    text = (
        "Original-Recipient: rfc822;user@b.test\nFinal-Recipient: rfc822;user@mailhost\n"
        "Action: failed\nStatus: 5.2.2\n"
    )
    assert [r.recipient for r in parse_fields(text)] == ["user@b.test"]
    other = "Final-Recipient: rfc822;user@mailhost\nOriginal-Recipient: rfc822;x@b.test\n"
    assert [r.recipient for r in parse_fields(other + "Status: 5.0.0\n")] == ["user@mailhost"]
    assert valid_address("a@b.test") and not valid_address("@b.test")


LOST_BOUNDARY = b"""\
From: post_master@sms.b.test
To: sender@a.test
Subject: Re: hello
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="OUT"

--OUT
Content-Type: multipart/alternative;
boundary="IN"

--IN
Content-Type: text/plain; charset=us-ascii

Error: Invalid user address

Error message below:
550 - Requested action not taken: no such user here

Message details:
  MAIL FROM: sender@a.test
  RCPT TO: 5551234@sms.b.test

--IN--

--OUT--
"""


def test_multipart_without_boundary_parameter_is_read_as_text() -> None:
    results = classify(LOST_BOUNDARY)
    assert "5551234@sms.b.test" in [r.recipient for r in results]
    assert all(r.kind == "dsn" for r in results)


FORWARDED = b"""\
From: Mail Delivery Subsystem <MAILER-DAEMON@relay.a.test>
To: admin@a.test
Subject: Returned mail: User unknown
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="F"

--F
Content-Type: text/plain

----- The following addresses had permanent delivery errors -----

--F
Content-Type: message/rfc822

From: Mail Delivery Subsystem <MAILER-DAEMON@mx.a.test>
To: sender@a.test
Subject: Returned mail: User unknown
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="R"

--R
Content-Type: text/plain

The original message could not be delivered.

--R
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.a.test

Final-Recipient: RFC822; gone@b.test
Action: failed
Status: 5.1.1
Diagnostic-Code: SMTP; 550 5.1.1 <gone@b.test>... User unknown

--R--

--F--
"""


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_report_forwarded_inside_message_rfc822_is_read(newline: bytes) -> None:
    (result,) = classify(FORWARDED.replace(b"\n", newline))
    assert (result.recipient, result.reason, result.status, result.bounce_type) == (
        "gone@b.test",
        "userunknown",
        "5.1.1",
        "hard",
    )


EIGHT_BIT = """\
From: no-reply@mail.b.test
To: sender@a.test
Subject: メールエラー通知
MIME-Version: 1.0
Content-Type: text/plain; charset="ISO-2022-JP"

送信できませんでした。

Your mail sent on: Thu, 29 Apr 2013 23:45:22 +0900
     Could not be delivered to: <full@b.test>
     As their mailbox is full.
""".encode()


def test_raw_utf8_header_and_mislabelled_charset_are_read() -> None:
    (result,) = classify(EIGHT_BIT)
    assert (result.kind, result.recipient, result.reason) == ("dsn", "full@b.test", "mailboxfull")


ROLE_ONLY = b"""\
From: MAILER-DAEMON@a.test
To: sender@a.test
Subject: Returned mail: see transcript

   ----- The following addresses had delivery problems -----
postmaster@b.test

   ----- Non-delivered information -----
The number of messages in recipient's mailbox exceeded the local limit.
"""

PIPE_DIVIDER = b"""\
From: <MAILER-DAEMON@a.test>
To: sender@a.test
Subject: mail failed, returning to sender

|------------------------- Message log follows: -------------------------|
 no valid recipients were found for this message
|------------------------- Failed addresses follow: ---------------------|
 someone@nowhere.b.test ... unknown host
|------------------------- Message text follows: ------------------------|
To: someone@nowhere.b.test
From: Sender <sender@a.test>
Subject: hello

hello
"""


def test_role_address_is_the_recipient_when_it_is_the_only_one() -> None:
    (result,) = classify(ROLE_ONLY)
    assert (result.kind, result.recipient) == ("dsn", "postmaster@b.test")


def test_pipe_framed_divider_cuts_the_returned_message() -> None:
    (result,) = classify(PIPE_DIVIDER)
    assert (result.recipient, result.reason) == ("someone@nowhere.b.test", "hostunknown")
    assert "Subject: hello" not in result.diagnostic


REASON_ABOVE_LIST = b"""\
From: postmaster@a.test
To: sender@a.test
Subject: Undeliverable mail

Your message:
   From:    sender@a.test
   Subject: hello

Could not be delivered because of

550 5.1.1 User unknown

The following recipients were affected:
    gone@b.test
"""


def test_reply_stated_above_the_recipient_list_applies_to_it() -> None:
    (result,) = classify(REASON_ABOVE_LIST)
    assert (result.recipient, result.status, result.reason, result.bounce_type) == (
        "gone@b.test",
        "5.1.1",
        "userunknown",
        "hard",
    )


def test_notaccept_without_a_temporary_code_is_hard() -> None:
    from bounces.reasons import bounce_type

    assert bounce_type("notaccept", "", None, "failed") == "hard"
    assert bounce_type("notaccept", "4.0.0", None, "failed") == "soft"
    assert bounce_type("notaccept", "", 421, "failed") == "soft"


MANGLED_FINAL = b"""\
From: Mail Delivery Subsystem <MAILER-DAEMON@mx.a.test>
To: sender@a.test
Subject: Returned mail: Host unknown
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

   ----- The following addresses had permanent fatal errors -----
<someone@b.test>
    (reason: 550 Host unknown)

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.a.test

Final-Recipient: RFC822; @mx.b.test
Action: failed
Status: 5.1.2

--B--
"""


def test_mangled_final_recipient_is_taken_from_the_text() -> None:
    (result,) = classify(MANGLED_FINAL)
    assert (result.recipient, result.reason, result.bounce_type) == (
        "someone@b.test",
        "hostunknown",
        "hard",
    )


PMDF_TEXT = b"""From: PMDF e-Mail Interconnect <postmaster@relay.b.test>
To: sender@b.test
Subject: Delivery Notification: Delivery has failed

Your message cannot be delivered to the following recipients:

  Recipient address: KIM@relay.b.test
  Original address: kim@c.test
%MAIL-E-OPENOUT, error opening !AS as output
-SYSTEM-F-EXDISKQUOTA, disk quota exceeded
"""

X400_TEXT = b"""From: postmaster@gw.b.test
To: sender@b.test
Subject: Undeliverable: hello

Your message did not reach some or all of the intended recipients.

The following recipient(s) could not be reached:

c=US;a= ;p=ORG;o=Gw;dda:SMTP=kim@c.test; on Fri, 4 Oct 2002
    The recipient name is not recognized
"""


def test_text_recipient_original_address_and_x400_prefix() -> None:
    assert [r.recipient for r in classify(PMDF_TEXT)] == ["kim@c.test"]
    assert [r.recipient for r in classify(X400_TEXT)] == ["kim@c.test"]


@pytest.mark.parametrize(
    ("status", "text", "reason"),
    [
        (
            "5.2.3",
            "550 5.2.3 RESOLVER.RST.RecipSizeLimit; message too large for this recipient",
            "mesgtoobig",
        ),
        ("5.1.1", "550 5.1.1 RESOLVER.ADR.RecipNotFound; not found", "userunknown"),
        ("5.4.316", "550 5.4.316 Message expired, connection refused", "expired"),
        ("5.4.312", "550 5.4.312 Message expired, DNS query failed", "networkerror"),
        ("5.0.0", "554 Transaction failed: Duplicate header 'DKIM-Signature'.", "contenterror"),
        ("5.6.1", "500 5.6.1 Message content rejected", "contenterror"),
        ("5.7.1", "550 5.7.1 message content rejected", "spamdetected"),
        ("5.6.0", "554 5.6.0 This message has been scored as spam", "spamdetected"),
        (
            "4.4.3",
            "Unable to contact LDAP server. (#4.4.3) I'm not going to try again; this "
            "message has been in the queue too long.",
            "systemerror",
        ),
    ],
)
def test_vendor_codes_and_specific_status(status: str, text: str, reason: str) -> None:
    assert decide(status, text, "failed") == reason


RAW_UTF8_SUBJECT = (
    "From: no-reply@mx.c.test\nTo: sender@b.test\nSubject: メールエラー通知\n"
    "Content-Type: text/plain; charset=utf-8\n\n"
    "Your mail sent on: Thu, 29 Apr 2013 23:45:22 +0900\n"
    "     Could not be delivered to: <kim@c.test>\n"
    "     As their mailbox is full.\n"
).encode()


def test_raw_utf8_subject_is_read() -> None:
    (res,) = classify(RAW_UTF8_SUBJECT)
    assert (res.kind, res.recipient, res.reason) == ("dsn", "kim@c.test", "mailboxfull")


def test_quoted_local_part_keeps_quotes() -> None:
    (rec,) = parse_fields(
        'Final-Recipient: rfc822; "a....b."@c.test\nAction: failed\nStatus: 5.1.1\n'
    )
    assert rec.recipient == '"a....b."@c.test'


FML_REFUSAL = b"""From: list-admin@c.test
To: sender@b.test
Subject: You sender@b.test are not member (cats ML)
X-MLServer: fml [fml 4.0.3 release (20011202/4.0.3)]

You are not a member of this mailing list <cats@c.test>.

If you know the general guide of this list, please send mail with the mail body guide.
"""


def test_fml_list_refusal() -> None:
    (res,) = classify(FML_REFUSAL)
    assert (res.kind, res.recipient, res.reason) == ("dsn", "cats@c.test", "rejected")
    assert classify(FML_REFUSAL.replace(b"X-MLServer", b"X-Other"))[0].kind == "not_bounce"


def test_emoji_local_part_is_an_address() -> None:
    raw = (
        "From: Mail Delivery Subsystem <mailer-daemon@mx.b.test>\nTo: sender@b.test\n"
        "Subject: Delivery Status Notification (Failure)\n"
        "Content-Type: text/plain; charset=UTF-8\n\n"
        "Delivery to the following recipient failed permanently:\n\n"
        "     \U0001f408@c.test\n\nTechnical details of permanent failure:\n"
        " local-part of envelope contains utf8 but remote server did not offer SMTPUTF8\n"
    ).encode()
    assert "\U0001f408@c.test" in [r.recipient for r in classify(raw)]


@pytest.mark.parametrize(
    ("status", "text", "reason"),
    [
        (
            "5.0.0",
            "Your email to group g@c.test was rejected due to spam classification. To "
            "address this issue: * Set up SPF records for your sending domain.",
            "spamdetected",
        ),
        ("5.0.0", "550 5.7.1 rejected: SPF check failed for b.test", "authfailure"),
        (
            "5.7.0",
            "550 5.7.0 Local Policy Violation (in reply to end of DATA command)",
            "policyviolation",
        ),
        (
            "5.0.0",
            "554 Message rejected: Email address is not verified. The following identities "
            "failed the check",
            "norelaying",
        ),
    ],
)
def test_phrase_windows_and_families(status: str, text: str, reason: str) -> None:
    assert decide(status, text, "failed") == reason
