"""The one message-kind classifier: a table of header sets and the kind each must get, the
order of the decisions (a DSN that also says auto-replied is a bounce), and that ingest's
and the bounce listener's views of the same message agree."""

from __future__ import annotations

import pytest

from bounces.intake import header_summary, provisional_type
from gateway.messagekind import Kind, classify_kind, content_type_of, is_automatic, lookup
from ingest.parse import parse_message
from ingest.store import message_type

DSN = "multipart/report; report-type=delivery-status; boundary=b"
ARF = 'multipart/report; report-type="feedback-report"; boundary=b'

CASES: list[tuple[str, dict[str, str], Kind]] = [
    ("plain human mail", {"Subject": "lunch?", "From": "a@x.test"}, Kind.EMAIL),
    ("a reply is email here", {"Subject": "Re: lunch?", "In-Reply-To": "<1@x>"}, Kind.EMAIL),
    ("list mail is email", {"List-Id": "<l.x.test>", "Precedence": "bulk"}, Kind.EMAIL),
    ("Auto-Submitted: no", {"Auto-Submitted": "no", "Subject": "hello"}, Kind.EMAIL),
    ("RFC 3834 auto-replied", {"Auto-Submitted": "auto-replied"}, Kind.AUTO_REPLY),
    ("RFC 3834 auto-generated", {"Auto-Submitted": "auto-generated"}, Kind.AUTO_REPLY),
    ("RFC 3834 with a comment", {"Auto-Submitted": "auto-replied (vacation)"}, Kind.AUTO_REPLY),
    ("X-Autoreply", {"X-Autoreply": "yes"}, Kind.AUTO_REPLY),
    ("X-Autorespond", {"X-Autorespond": "1"}, Kind.AUTO_REPLY),
    ("X-Autoresponse", {"X-Autoresponse": "yes"}, Kind.AUTO_REPLY),
    ("Precedence: auto_reply", {"Precedence": "auto_reply"}, Kind.AUTO_REPLY),
    ("Exchange out of office", {"Subject": "Automatic reply: lunch?"}, Kind.AUTO_REPLY),
    ("out of office subject", {"Subject": "Out of Office: back Monday"}, Kind.AUTO_REPLY),
    ("German OOO", {"Subject": "Abwesenheitsnotiz"}, Kind.AUTO_REPLY),
    ("French OOO", {"Subject": "Réponse automatique : absent"}, Kind.AUTO_REPLY),
    ("DSN by content type", {"Content-Type": DSN}, Kind.BOUNCE),
    ("DSN that says auto-replied", {"Content-Type": DSN, "Auto-Submitted": "auto-replied"},
     Kind.BOUNCE),
    ("untyped multipart/report", {"Content-Type": "multipart/report; boundary=b"}, Kind.BOUNCE),
    ("X-Failed-Recipients", {"X-Failed-Recipients": "gone@x.test"}, Kind.BOUNCE),
    ("non-standard bounce", {"From": "MAILER-DAEMON@mx.test", "Subject": "Undelivered Mail"},
     Kind.BOUNCE),
    ("daemon but no failure", {"From": "postmaster@x.test", "Subject": "hello"}, Kind.EMAIL),
    ("ARF complaint", {"Content-Type": ARF, "Auto-Submitted": "auto-generated"},
     Kind.COMPLAINT),
    ("BoxTrapper", {"X-Boxtrapper": "verify", "Auto-Submitted": "auto-replied"},
     Kind.CHALLENGE),
    ("challenge subject", {"Subject": "Please verify that you are a human"}, Kind.CHALLENGE),
]  # fmt: skip


@pytest.mark.parametrize(("headers", "kind"), [(h, k) for _, h, k in CASES],
                         ids=[name for name, _, _ in CASES])  # fmt: skip
def test_kind_table(headers: dict[str, str], kind: Kind) -> None:
    """Each header set gets its kind."""
    assert classify_kind(lookup(headers)) is kind


def test_warmup_only_when_the_caller_verified_the_marker() -> None:
    """A verified marker makes warmup, even with an automatic header; a report stays a
    report; without the verdict the same mail is ordinary."""
    headers = lookup({"Subject": "quick question", "Auto-Submitted": "auto-replied"})
    assert classify_kind(headers, warmup=True) is Kind.WARMUP
    assert classify_kind(headers) is Kind.AUTO_REPLY
    assert classify_kind(lookup({"Content-Type": DSN}), warmup=True) is Kind.BOUNCE


def test_lookup_and_content_type() -> None:
    """Lookups are case-blind and take a list's first value; report-type is read quoted."""
    get = lookup({"auto-submitted": ["auto-replied", "no"], "X": None})
    assert get("Auto-Submitted") == "auto-replied" and get("X") == "" and get("Y") == ""
    assert content_type_of(ARF) == ("multipart/report", "feedback-report")
    assert content_type_of("Text/Plain") == ("text/plain", "")
    assert is_automatic(lookup({"Auto-Submitted": "No"})) is False


@pytest.mark.parametrize(("headers", "kind"), [(h, k) for _, h, k in CASES],
                         ids=[name for name, _, _ in CASES])  # fmt: skip
def test_ingest_and_listener_agree(headers: dict[str, str], kind: Kind) -> None:
    """The same raw message classified by IMAP ingest and by the bounce listener's
    provisional type gets the same kind (the listener calls anything it cannot name a
    bounce: mail to the bounce domain without a sign is a non-standard bounce)."""
    raw = "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode() + b"\r\nbody\r\n"
    ingest_kind = message_type(parse_message(raw))
    assert ingest_kind == kind.value
    listener_kind = provisional_type(header_summary(raw))
    expected = kind.value if kind in (Kind.COMPLAINT, Kind.AUTO_REPLY) else Kind.BOUNCE.value
    assert listener_kind == expected
