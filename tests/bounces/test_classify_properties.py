"""Property tests: classification is total and ran to its end (not its exception fallback) on
arbitrary, mutated and generated input, and line endings never change a result."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bounces.classify import classify
from bounces.model import REASONS, BounceResult

FIXTURES = sorted((Path(__file__).parent / "fixtures").glob("*.eml"))
SEEDS = [p.read_bytes() for p in FIXTURES if not p.stem.endswith(("_cr", "_crlf"))]
KINDS = {"dsn", "complaint", "auto_reply", "not_bounce"}


def _valid(results: list[BounceResult]) -> None:
    """Well-formed results, produced by the classifier itself (``error`` empty: the catch-all
    in ``classify`` did not fire)."""
    assert results
    for res in results:
        assert res.error == "", res.error
        assert res.kind in KINDS
        assert res.reason == "" or res.reason in REASONS
        if res.kind == "dsn":
            assert res.reason and res.bounce_type in ("hard", "soft", None)


def _endings(raw: bytes) -> list[bytes]:
    lf = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return [lf, lf.replace(b"\n", b"\r\n"), lf.replace(b"\n", b"\r")]


def test_fixtures_classify_through_the_main_path() -> None:
    """Every fixture is classified without the exception fallback."""
    for seed in SEEDS:
        _valid(classify(seed))


def test_fixtures_read_the_same_with_any_line_ending() -> None:
    """LF, CRLF and CR-only copies of every fixture give identical results."""
    for seed in SEEDS:
        lf, crlf, cr = (classify(raw) for raw in _endings(seed))
        assert lf == crlf == cr


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4000))
def test_never_raises_on_arbitrary_bytes(raw: bytes) -> None:
    """Any byte string classifies to well-formed results, without the fallback."""
    _valid(classify(raw))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SEEDS), st.integers(min_value=0), st.integers(min_value=0),
       st.binary(max_size=64))
def test_never_raises_on_mutated_fixtures(seed: bytes, start: int, length: int,
                                          junk: bytes) -> None:
    """Realistic reports with a slice replaced by junk still classify, without the fallback."""
    i = start % (len(seed) + 1)
    j = min(len(seed), i + length % 200)
    _valid(classify(seed[:i] + junk + seed[j:]))


def test_a_nul_in_the_charset_name_is_an_unknown_charset() -> None:
    """A charset parameter with a NUL in it (codec lookup raises ValueError, not
    LookupError) decodes like an unknown charset: found by the property test above in CI."""
    raw = (
        b"From: postmaster@corp.test\nTo: news@sender.test\nSubject: Undeliverable\n"
        b'Content-Type: text/plain; charset="iso-8859-1\x00"\n'
        b"Content-Transfer-Encoding: quoted-printable\n\n"
        b"Delivery has failed to these recipients or groups:\n\ngone@corp.test\n"
        b"Remote Server returned '550 5.2.1 Mailbox disabled, not accepting messages'\n"
    )
    results = classify(raw)
    _valid(results)
    assert results[0].recipient == "gone@corp.test"


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(SEEDS), st.integers(min_value=1, max_value=5000))
def test_never_raises_on_truncated_fixtures(seed: bytes, cut: int) -> None:
    """A report cut off at any point (lost connection) still classifies."""
    _valid(classify(seed[: cut % (len(seed) + 1)]))


STATUSES = st.sampled_from(["5.0.0", "5.1.1", "4.2.2", "4.4.7", "5.7.1", "4.0.0", "5.2.1", ""])
REPLIES = st.sampled_from([
    "550 5.1.1 <{r}>: Recipient address rejected: User unknown",
    "552-5.2.2 The email account that you tried to reach is over quota\n 552 5.2.2 see url",
    "451 4.4.2 Timeout - closing connection",
    "554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.test",
    "550 Requested action not taken: mailbox unavailable",
    "421 Too many concurrent SMTP connections",
    "something nobody can read",
    "",
])
STAGES = st.sampled_from(["", " (in reply to RCPT TO command)",
                          " (in reply to end of DATA command)"])


@settings(max_examples=150, deadline=None)
@given(STATUSES, REPLIES, STAGES, st.sampled_from(["failed", "delayed"]),
       st.from_regex(r"[a-z]{1,8}@[a-z]{1,8}\.test", fullmatch=True))
def test_generated_reports_are_total_and_newline_blind(status: str, reply: str, stage: str,
                                                       action: str, rcpt: str) -> None:
    """Generated one-recipient DSNs give one well-formed result for that recipient, the same
    with LF, CRLF and CR line endings."""
    diagnostic = reply.format(r=rcpt) + (stage if reply else "")
    raw = (
        "From: MAILER-DAEMON@mx.a.test\nTo: s@a.test\nSubject: Undelivered Mail\n"
        'MIME-Version: 1.0\nContent-Type: multipart/report; boundary="Q"\n\n'
        "--Q\nContent-Type: text/plain\n\nThe mail system\n\n"
        "--Q\nContent-Type: message/delivery-status\n\n"
        f"Final-Recipient: rfc822; {rcpt}\nAction: {action}\nStatus: {status}\n"
        f"Diagnostic-Code: smtp; {diagnostic}\n\n--Q--\n").encode()
    lf, crlf, cr = (classify(r) for r in _endings(raw))
    assert lf == crlf == cr
    (res,) = lf
    _valid(lf)
    assert (res.kind, res.recipient, res.action) == ("dsn", rcpt, action)
    if action == "delayed":
        assert res.bounce_type == "soft"
