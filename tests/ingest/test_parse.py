"""The pure parts of ingest: MIME parsing (with hypothesis), classification, IMAP answers,
the watcher state machine, and the error mapping."""

from __future__ import annotations

import random
from email.message import EmailMessage

import aioimaplib
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest import errors
from ingest.imapwire import parse_fetch, parse_list, parse_select, uid_set
from ingest.machine import Backoff, State, TransitionError, WatcherMachine
from ingest.parse import parse_message
from ingest.store import analyse, message_type


def _crlf(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


NESTED = _crlf(
    b"From: A <a@x.test>\nTo: b@y.test\nSubject: =?iso-8859-1?q?caf=E9?=\n"
    b"Message-ID: <m1@x.test>\nIn-Reply-To: <p1@x.test>\nReferences: <p0@x.test> <p1@x.test>\n"
    b"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=OUT\n\n"
    b"--OUT\nContent-Type: multipart/alternative; boundary=ALT\n\n"
    b"--ALT\nContent-Type: text/plain; charset=koi8-r\n"
    b"Content-Transfer-Encoding: base64\n\n8NLJ18XU\n"
    b"--ALT\nContent-Type: multipart/related; boundary=REL\n\n"
    b"--REL\nContent-Type: text/html; charset=utf-8\n\n<p>Hi <img src=cid:i1></p>\n"
    b"--REL\nContent-Type: image/png\nContent-ID: <i1>\nContent-Disposition: inline\n"
    b"Content-Transfer-Encoding: base64\n\niVBORw0KGgo=\n--REL--\n--ALT--\n"
    b"--OUT\nContent-Type: application/pdf; name=a.pdf\n"
    b"Content-Disposition: attachment; filename=a.pdf\nContent-Transfer-Encoding: base64\n\n"
    b"JVBERi0xLjQ=\n"
    b"--OUT\nContent-Type: message/rfc822\n\nFrom: z@z.test\nSubject: inner\n\ninner body\n"
    b"--OUT--\n"
)


def test_nested_multipart_bodies_parts_and_threading() -> None:
    """Nested alternative/related parts give both bodies (charsets decoded), the inline image
    and the PDF as parts, the enclosed message as an .eml part, and the threading ids."""
    p = parse_message(NESTED)
    assert p.status == "received" and p.subject == "café"
    assert p.text is not None and "Привет" in p.text
    assert p.html is not None and "<p>Hi" in p.html
    got = [(a.filename, a.mime_type, a.disposition, a.content_id) for a in p.attachments]
    assert got == [
        (None, "image/png", "inline", "<i1>"),
        ("a.pdf", "application/pdf", "attachment", None),
        ("inner.eml", "message/rfc822", "attachment", None),
    ]
    assert p.attachments[1].content == b"%PDF-1.4"
    assert b"inner body" in p.attachments[2].content
    assert (p.message_id, p.in_reply_to, p.references) == (
        "<m1@x.test>",
        "<p1@x.test>",
        ("<p0@x.test>", "<p1@x.test>"),
    )
    assert p.from_email == "a@x.test" and p.to_emails == ("b@y.test",)


def test_unknown_charset_decodes_without_error() -> None:
    """A body in a charset nobody knows is decoded (replacement characters), not refused."""
    raw = _crlf(b"Subject: x\nContent-Type: text/plain; charset=x-martian\n\nhello \xff\xfe\n")
    p = parse_message(raw)
    assert p.status == "received" and p.text is not None and "hello" in p.text


def test_malformed_mime_is_kept_raw_with_the_error() -> None:
    """A multipart without a boundary is reported parse_failed with headers and the reason."""
    raw = _crlf(b"Subject: broken\nContent-Type: multipart/mixed\n\n--x\n\nbody\n")
    p = parse_message(raw)
    assert p.status == "parse_failed" and p.parse_error and "boundary" in p.parse_error
    assert p.subject == "broken" and p.attachments == ()


def test_over_the_size_limit_is_headers_only() -> None:
    """A message above the limit keeps its headers and no parts."""
    msg = EmailMessage()
    msg["Subject"] = "big"
    msg["Message-ID"] = "<big@x.test>"
    msg.set_content("x" * 5000)
    msg.add_attachment(b"\0" * 5000, maintype="application", subtype="octet-stream")
    p = parse_message(msg.as_bytes(), max_bytes=4096)
    assert p.status == "too_large" and p.subject == "big" and p.message_id == "<big@x.test>"
    assert p.attachments == () and p.text is None


def _mime_tree(depth: int) -> st.SearchStrategy[bytes]:
    leaf = st.builds(
        lambda ctype, charset, cte, body: (
            (
                f"Content-Type: {ctype}; charset={charset}\r\n"
                f"Content-Transfer-Encoding: {cte}\r\n\r\n"
            ).encode()
            + body
        ),
        st.sampled_from(["text/plain", "text/html", "application/pdf", "image/png", "text/x"]),
        st.sampled_from(["utf-8", "iso-8859-1", "x-unknown", "", "koi8-r", "utf-7"]),
        st.sampled_from(["7bit", "base64", "quoted-printable", "8bit", "x-weird"]),
        st.binary(max_size=200),
    )
    if depth == 0:
        return leaf

    def multipart(parts: list[bytes], boundary: str, sub: str) -> bytes:
        body = b"".join(b"--" + boundary.encode() + b"\r\n" + p + b"\r\n" for p in parts)
        head = f'Content-Type: multipart/{sub}; boundary="{boundary}"\r\n\r\n'.encode()
        return head + body + b"--" + boundary.encode() + b"--\r\n"

    inner = _mime_tree(depth - 1)
    return st.one_of(
        leaf,
        st.builds(
            multipart,
            st.lists(inner, max_size=3),
            st.text("abcXYZ019'()+_,-./:=?", min_size=1, max_size=20),
            st.sampled_from(["mixed", "alternative", "related", "report"]),
        ),
        st.builds(lambda m: b"Content-Type: message/rfc822\r\n\r\n" + m, inner),
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    headers=st.lists(
        st.tuples(
            st.sampled_from(["Subject", "From", "To", "Message-ID", "References", "X-Any"]),
            st.binary(max_size=60).filter(lambda b: b"\n" not in b and b"\r" not in b),
        ),
        max_size=6,
    ),
    tree=_mime_tree(3),
)
def test_parser_never_raises_and_keeps_raw(headers: list[tuple[str, bytes]], tree: bytes) -> None:
    """Any header soup over any nesting of parts parses or fails cleanly; the raw is kept."""
    raw = b"".join(n.encode() + b": " + v + b"\r\n" for n, v in headers) + tree
    result = analyse(raw, 1 << 20)
    assert result.raw == raw
    # Which path ran: a parse, or a failure that says why (never a silent failure).
    if result.parsed.status == "received":
        assert result.parsed.parse_error is None
    else:
        assert result.parsed.status == "parse_failed" and result.parsed.parse_error
    assert result.kind in ("email", "auto_reply", "bounce", "complaint", "challenge")


def _clean_tree(depth: int) -> st.SearchStrategy[EmailMessage]:
    """Well-formed messages built by the standard library (text and binary parts, nested)."""
    text = st.text(st.characters(min_codepoint=32, max_codepoint=0x24F), max_size=200)

    def leaf(body: str, subtype: str) -> EmailMessage:
        msg = EmailMessage()
        msg.set_content(body, subtype=subtype)
        return msg

    def attach(base: EmailMessage, blob: bytes) -> EmailMessage:
        base.add_attachment(blob, maintype="application", subtype="pdf", filename="a.pdf")
        return base

    node = st.builds(leaf, text, st.sampled_from(["plain", "html"]))
    if depth > 0:
        node = st.one_of(node, st.builds(attach, _clean_tree(depth - 1), st.binary(max_size=300)))
    return node


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(message=_clean_tree(2))
def test_well_formed_messages_parse(message: EmailMessage) -> None:
    """A well-formed message takes the parse path, not the fallback: status received, no
    parse error, and its attachments found."""
    message["Subject"] = "t"
    raw = message.as_bytes()
    result = analyse(raw, 1 << 20)
    assert result.parsed.status == "received", result.parsed.parse_error
    assert result.parsed.parse_error is None
    expected = sum(1 for part in message.walk() if part.get_filename() == "a.pdf")
    assert len(result.parsed.attachments) == expected


def test_the_failure_path_says_why_and_keeps_headers() -> None:
    """Structure nested past the recursion limit takes the fallback: parse_failed with the
    reason, headers still read, raw whole."""
    nested = b"Content-Type: message/rfc822\r\n\r\n" * 5000 + b"\r\nbody"
    raw = b"Subject: deep\r\nFrom: a@b.test\r\n" + nested
    result = analyse(raw, 1 << 22)
    assert result.parsed.status == "parse_failed" and result.parsed.parse_error
    assert result.parsed.subject == "deep" and result.raw == raw


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_parser_never_raises_on_any_bytes(raw: bytes) -> None:
    """Arbitrary bytes never raise; the raw stays whole."""
    result = analyse(raw, 1 << 20)
    assert result.raw == raw
    assert (result.parsed.status == "received") == (result.parsed.parse_error is None)


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (b"Subject: Re: offer\r\nIn-Reply-To: <d1@x>\r\n\r\nyes", "email"),
        (b"Subject: Out of Office: offer\r\n\r\naway", "auto_reply"),
        (b"Subject: Automatic reply: offer\r\n\r\naway", "auto_reply"),
        (b"Subject: Re: offer\r\nAuto-Submitted: auto-replied\r\n\r\naway", "auto_reply"),
        (b"Subject: Re: offer\r\nAuto-Submitted: no\r\n\r\nhuman", "email"),
        (b"Subject: hi\r\nX-Autoreply: yes\r\n\r\naway", "auto_reply"),
        (b"Subject: hi\r\nPrecedence: auto_reply\r\n\r\naway", "auto_reply"),
        (
            b"From: MAILER-DAEMON@x.test\r\nSubject: Undelivered Mail Returned to Sender\r\n"
            b"Auto-Submitted: auto-replied\r\n\r\nsorry",
            "bounce",
        ),
        (
            b"Subject: x\r\nContent-Type: multipart/report; report-type=delivery-status;"
            b" boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nfailed\r\n--B--\r\n",
            "bounce",
        ),
        (
            b"Subject: x\r\nContent-Type: multipart/report; report-type=feedback-report;"
            b" boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nabuse\r\n--B--\r\n",
            "complaint",
        ),
        (b"Subject: x\r\nX-Failed-Recipients: a@b.test\r\n\r\nfailed", "bounce"),
    ],
)
def test_message_types(raw: bytes, kind: str) -> None:
    """Header-level classification: bounce and complaint first, then RFC 3834 auto-replies."""
    assert message_type(parse_message(raw)) == kind


def test_imap_answers() -> None:
    """SELECT, FETCH (literal bodies, unsolicited FLAGS, no body), LIST and UID sets."""
    info = parse_select(
        [b"FLAGS (\\Seen)", b"3 EXISTS", b"OK [UIDVALIDITY 1700] x", b"OK [UIDNEXT 9] x",
         b"OK [HIGHESTMODSEQ 12] x", b"[READ-WRITE] Select completed"]
    )  # fmt: skip
    assert info is not None and (info.uidvalidity, info.uidnext, info.exists) == (1700, 9, 3)
    assert info.highest_modseq == 12
    items = parse_fetch(
        [
            b'1 FETCH (UID 7 RFC822.SIZE 3 INTERNALDATE "25-Nov-2026 10:00:00 +0000" BODY[] {3}',
            bytearray(b"abc"),
            b")",
            b"2 FETCH (FLAGS (\\Seen))",
            b"3 FETCH (RFC822.SIZE 5 BODY[] {5}",
            bytearray(b"hello"),
            b" UID 9)",
            b"4 FETCH (UID 10 RFC822.SIZE 42)",
            b"Fetch completed",
        ]
    )
    assert [(i.uid, i.size, i.body) for i in items] == [
        (7, 3, b"abc"),
        (9, 5, b"hello"),
        (10, 42, None),
    ]
    assert items[0].internal_date is not None and items[0].internal_date.year == 2026
    assert parse_list([b'LIST (\\HasNoChildren) "." INBOX', b'LIST () "." "My \\"box\\""']) == [
        "INBOX",
        'My "box"',
    ]
    assert uid_set([1, 2, 3, 7, 9, 10]) == "1:3,7,9:10"


def test_state_machine_transitions_and_backoff() -> None:
    """The diagram's moves work, others are refused, backoff grows, is capped and jittered."""
    m = WatcherMachine(Backoff(base_s=1, cap_s=8))
    for state in (State.CONNECTING, State.SELECTED, State.FETCHING, State.IDLING, State.FETCHING):
        m.to(state)
    with pytest.raises(TransitionError):
        m.to(State.SELECTED)
    rng = random.Random(1)
    delays = [m.fail("x", rng)]
    for _ in range(5):
        m.to(State.CONNECTING)
        delays.append(m.fail("x", rng))
    assert m.state is State.BACKOFF and m.reconnects == 5
    assert 0.5 <= delays[0] <= 1 and all(4 <= d <= 8 for d in delays[4:])
    m.to(State.CONNECTING)
    m.to(State.SELECTED)
    m.to(State.IDLING)
    assert m.failures == 0


def test_every_library_error_is_mapped() -> None:
    """Each aioimaplib exception class (and socket/timeout errors) maps to an ImapError kind."""
    library = [
        c
        for c in vars(aioimaplib).values()
        if isinstance(c, type)
        and issubclass(c, Exception)
        and c.__module__.startswith("aioimaplib")
    ]
    assert library, "aioimaplib exposes exceptions"
    for cls in library:
        assert issubclass(cls, errors.LIBRARY_EXCEPTIONS), cls
    assert isinstance(errors.translate(aioimaplib.Abort("x"), "SELECT"), errors.ImapTemporaryError)
    assert isinstance(errors.translate(TimeoutError(), "IDLE"), errors.ImapTimeout)
    assert isinstance(errors.translate(ConnectionResetError(), "FETCH"), errors.ImapTemporaryError)
    assert isinstance(errors.translate(ValueError("odd"), "FETCH"), errors.ImapTemporaryError)
