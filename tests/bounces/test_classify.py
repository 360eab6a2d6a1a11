"""Bounce classification over small, hand-written fixtures: one per format and line ending."""

from __future__ import annotations

from pathlib import Path

import pytest

from bounces.classify import classify
from bounces.model import BounceResult

FIXTURES = Path(__file__).parent / "fixtures"


def _one(name: str) -> BounceResult:
    results = classify((FIXTURES / name).read_bytes())
    assert len(results) == 1
    return results[0]


@pytest.mark.parametrize("variant", ["", "_crlf", "_cr"])
def test_postfix_dsn_user_unknown_every_line_ending(variant: str) -> None:
    """A Postfix RFC 3464 DSN reads the same with LF, CRLF and CR-only line endings."""
    res = _one(f"postfix_dsn_userunknown{variant}.eml")
    assert (res.kind, res.recipient, res.reason, res.bounce_type) == (
        "dsn",
        "nobody@rcpt.test",
        "userunknown",
        "hard",
    )
    assert (res.status, res.reply_code, res.action) == ("5.1.1", 550, "failed")
    assert res.remote_mta == "mx.rcpt.test"
    assert "User unknown" in res.diagnostic


def test_original_headers_give_attribution_without_verp() -> None:
    """The returned message's Message-ID and custom headers are reported for attribution."""
    res = _one("postfix_dsn_userunknown.eml")
    assert res.original_message_id == "<c1.d42@sender.test>"
    assert ("X-Campaign-Id", "42") in res.original_headers


def test_delayed_dsn_is_reported_as_delay() -> None:
    """Action: delayed is kept as the action, soft and 'expired', never a failed bounce."""
    res = _one("dsn_delayed.eml")
    assert (res.action, res.reason, res.bounce_type, res.status) == (
        "delayed",
        "expired",
        "soft",
        "4.4.1",
    )
    assert not res.is_bounce


def test_expired_failure_with_4xx_status_is_failed_not_delayed() -> None:
    """A queue-lifetime expiry reports Action: failed with 4.x.x; the Action decides."""
    res = _one("dsn_expired_failed_4xx.eml")
    assert (res.action, res.reason, res.bounce_type) == ("failed", "expired", "soft")
    assert res.is_bounce


@pytest.mark.parametrize("variant", ["", "_crlf", "_cr"])
def test_qmail_text_mailbox_full(variant: str) -> None:
    """qmail's plain-text failure notice: recipient line, remote reply, full mailbox."""
    res = _one(f"qmail_mailboxfull{variant}.eml")
    assert (res.kind, res.recipient, res.reason, res.bounce_type, res.status) == (
        "dsn",
        "full@rcpt.test",
        "mailboxfull",
        "soft",
        "5.2.2",
    )
    assert res.original_message_id == "<q1@sender.test>"


def test_exim_text_unrouteable_domain_is_hard() -> None:
    """Exim's indented-address format: an unrouteable domain is a hard hostunknown."""
    res = _one("exim_hostunknown.eml")
    assert (res.recipient, res.reason, res.bounce_type) == (
        "someone@no-such-domain.test",
        "hostunknown",
        "hard",
    )


def test_sendmail_text_blocklisted_client() -> None:
    """A Sendmail text report refused at MAIL FROM for a DNSBL listing is 'blocked'."""
    res = _one("sendmail_text_blocked.eml")
    assert (res.recipient, res.reason, res.status, res.reply_code) == (
        "ceo@corp.test",
        "blocked",
        "5.7.1",
        554,
    )


def test_gmail_text_spam() -> None:
    """Gmail's text bounce with a remote 'rejected as spam' reply is spamdetected."""
    res = _one("gmail_text_spam.eml")
    assert (res.recipient, res.reason, res.bounce_type) == (
        "reader@mail.test",
        "spamdetected",
        "soft",
    )


def test_charset_encoded_diagnostic_is_decoded() -> None:
    """A quoted-printable Latin-1 Exchange report decodes; a disabled mailbox is 'suspend'."""
    res = _one("exchange_latin1_suspend.eml")
    assert (res.recipient, res.reason) == ("gone@corp.test", "suspend")
    assert "Résultat" in res.diagnostic


def test_arf_complaint() -> None:
    """An RFC 5965 report yields a complaint for the Original-Rcpt-To with its type."""
    res = _one("arf_complaint.eml")
    assert (res.kind, res.recipient, res.reason, res.feedback_type, res.bounce_type) == (
        "complaint",
        "annoyed@provider.test",
        "feedback",
        "abuse",
        None,
    )
    assert res.original_message_id == "<c2.d43@sender.test>"


def test_auto_reply() -> None:
    """An RFC 3834 out-of-office reply is an auto_reply from its sender, not a bounce."""
    res = _one("autoreply_vacation.eml")
    assert (res.kind, res.recipient, res.reason, res.bounce_type) == (
        "auto_reply",
        "jane@corp.test",
        "vacation",
        None,
    )


def test_ordinary_mail_is_not_a_bounce() -> None:
    """Person-to-person mail that mentions an address gives a single not_bounce result."""
    assert classify((FIXTURES / "not_bounce.eml").read_bytes()) == [BounceResult("not_bounce")]


def test_empty_and_garbage_input() -> None:
    """Empty input and binary junk are not bounces, and do not raise."""
    for raw in (b"", b"\x00\xff" * 50, b"Content-Type: multipart/report\n\n--"):
        assert [r.kind for r in classify(raw)] == ["not_bounce"]
