"""Provider rules (keyed by remote host or recipient domain) and vendor category fields. Every
message and reply here is written for the test."""

from __future__ import annotations

import pytest

from bounces.classify import classify
from bounces.reasons import decide
from bounces.rhost import provider, provider_reason, remote_host

PROVIDER_CASES = [
    # (remote host, recipient, diagnostic, status, command, reason)
    ("mx.b.test", "a@cox.net", "550 5.1.0 sender rejected. AUP#CXBL", "5.1.0", "MAIL", "blocked"),
    (
        "mx.b.test",
        "a@charter.net",
        "550 5.1.0 sender rejected. AUP#In-1310",
        "5.1.0",
        "",
        "toomanyconn",
    ),
    (
        "smtp-in.orange.fr",
        "a@b.test",
        "421 4.2.0 Service refused. OFR005_505 [505]",
        "4.2.0",
        "DATA",
        "systemerror",
    ),
    (
        "smtpz4.laposte.net",
        "a@b.test",
        "554 5.7.1 Client host rejected LPN000_630",
        "5.7.1",
        "RCPT",
        "policyviolation",
    ),
    (
        "smtp.secureserver.net",
        "a@b.test",
        "553 http://www.spamhaus.org/query/bl?ip=192.0.2.1",
        "5.1.3",
        "RCPT",
        "blocked",
    ),
    (
        "smtp.secureserver.net",
        "a@b.test",
        "552 Content judged to be spam. IB212",
        "",
        "",
        "spamdetected",
    ),
    ("mx.b.test", "a@ezweb.ne.jp", "550 <a@ezweb.ne.jp>: User unknown", "", "", "userunknown"),
    ("mx.b.test", "a@ezweb.ne.jp", "550 : User unknown", "", "", "filtered"),
    (
        "x.mimecast.com",
        "a@b.test",
        "554 Host network not allowed",
        "5.0.0",
        "RCPT",
        "policyviolation",
    ),
    ("mfsmax.docomo.ne.jp", "a@b.test", "550 Unknown user a@b.test", "5.0.0", "DATA", "rejected"),
    (
        "mfsmax.docomo.ne.jp",
        "a@b.test",
        "550 Unknown user a@b.test",
        "5.0.0",
        "RCPT",
        "userunknown",
    ),
    ("mfsmax.docomo.ne.jp", "a@b.test", "552 Too many recipients", "5.0.0", "RCPT", "toomanyconn"),
    (
        "mx4.hotmail.com",
        "a@b.test",
        "550 Requested action not taken: mailbox unavailable",
        "5.5.0",
        "",
        "userunknown",
    ),
    (
        "mta6.am0.yahoodns.net",
        "a@b.test",
        "421 4.7.0 [TSS04] Messages from 192.0.2.1 "
        "temporarily deferred due to unexpected volume or user complaints",
        "4.7.0",
        "MAIL",
        "rejected",
    ),
    ("mx.b.test", "a@b.test", "550 Requested action not taken: mailbox unavailable", "", "", ""),
    (
        "mx.b.test",
        "a@icloud.com",
        "554 p01-smtpin.me.com ESMTP not accepting connections",
        "",
        "",
        "blocked",
    ),
    (
        "mx.email.ua",
        "a@b.test",
        "550 Mailbox is full, see https://mail.i.ua/err/4/",
        "",
        "",
        "mailboxfull",
    ),
]


@pytest.mark.parametrize(("host", "rcpt", "diag", "status", "command", "reason"), PROVIDER_CASES)
def test_provider_tables(
    host: str, rcpt: str, diag: str, status: str, command: str, reason: str
) -> None:
    assert provider_reason(host, rcpt, diag, status, command) == reason


def test_provider_by_domain_host_and_reporting_mta() -> None:
    assert provider("", "a@hotmail.com") is not None
    assert provider("", "a@b.test", "bay004.hotmail.com") is not None
    assert provider("mx.notcox.net", "a@b.test") is None
    assert provider("", "a@x.net") is None


def test_remote_host_from_report_text() -> None:
    assert remote_host("host mx.b.test[192.0.2.1] said: 550 no") == "mx.b.test"
    assert remote_host("550 no such user") == ""


POWERMTA = b"""From: postmaster@mta.b.test
To: sender@b.test
Subject: Delivery report
Content-Type: multipart/report; report-type=delivery-status; boundary="XX"

--XX
Content-Type: text/plain

Hello, this is the mail server on mta.b.test.

--XX
Content-Type: message/delivery-status

Reporting-MTA: dns;mta.b.test

Final-Recipient: rfc822;a@c.test
Action: failed
Status: 5.2.1 (mailbox disabled, not accepting messages)
Remote-MTA: dns;mx.c.test (192.0.2.1)
Diagnostic-Code: smtp;550 5.2.1 <a@c.test>... User Unknown
X-PowerMTA-BounceCategory: bad-mailbox

--XX--
"""


def test_powermta_bounce_category_decides() -> None:
    (res,) = classify(POWERMTA)
    assert (res.recipient, res.reason, res.bounce_type) == ("a@c.test", "userunknown", "hard")
    (crlf,) = classify(POWERMTA.replace(b"\n", b"\r\n"))
    assert crlf == res


MCAFEE = b"""From: postmaster@gw.b.test
To: sender@b.test
Subject: Delivery Status Notification (Failure)
X-NAI-Header: Modified by McAfee Email and Web Security Virtual Appliance
Content-Type: text/plain

Your message could not be delivered.

<a@c.test>:
550 Unknown user a@c.test
"""


def test_appliance_report_decides_unknown_user() -> None:
    (res,) = classify(MCAFEE)
    assert (res.recipient, res.reason, res.bounce_type) == ("a@c.test", "userunknown", "hard")
    (plain,) = classify(MCAFEE.replace(b"X-NAI-Header", b"X-Other"))
    assert plain.reason == "filtered"  # without the appliance: a quoted reply of unknown stage


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("554 5.5.0 mail.local: unknown user: kim", "userunknown"),
        ("550 maildrop: invalid user specified", "userunknown"),
        ("554 5.5.0 procmail: Quota exceeded while writing '/var/mail/kim'", "mailboxfull"),
    ],
)
def test_local_delivery_agent_verdicts(text: str, reason: str) -> None:
    assert decide("5.5.0", text, "failed") == reason


def test_kddi_domain_filter_and_temporary_dns_failure() -> None:
    assert (
        provider_reason(
            "",
            "a@ezweb.ne.jp",
            "Each of the following recipients was rejected by a remote mail server.",
            "",
            "",
        )
        == "filtered"
    )
    text = "DNS Error: DNS type 'mx' lookup of c.test responded with code NXDOMAIN"
    assert decide("4.0.0", text, "failed") == "networkerror"
    assert decide("5.0.0", text, "failed") == "hostunknown"
