"""Pure parts of delivery: reply classification, payloads,
rendering and DKIM signing (verified with dkimpy)."""

from __future__ import annotations

from typing import Any

import dkim
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from delivery.compose import Envelope, compose
from delivery.dkimsign import (
    CANONICALIZATION,
    DkimKey,
    sign_message,
    signature_headers,
    signed_header_list,
    split_headers,
)
from delivery.errors import PayloadError, RenderError
from delivery.payload import SendRequest, parse_request
from delivery.render import Rendered, Renderer
from delivery.reply import SmtpReply, classify, retry_hint_s
from gateway.jobs.contracts import EMAIL_SENDING, PayloadInvalid, family_of
from tests.delivery.conftest import pem_of


@pytest.mark.parametrize(
    ("code", "text", "result", "kind", "reason"),
    [
        (250, "2.0.0 ok", "sent", None, None),
        (451, "4.7.1 greylisted", "retry", None, None),
        (550, "5.1.1 user unknown", "failed", "hard", "userunknown"),
        (552, "5.2.2 mailbox full", "failed", "soft", "mailboxfull"),
        (554, "5.7.1 blocked by policy", "failed", "soft", "policyviolation"),
        (550, "mailbox unavailable", "failed", "hard", "userunknown"),
        (554, "rejected", "failed", "soft", "undefined"),
    ],
)
def test_classify(code: int, text: str, result: str, kind: str | None, reason: str | None) -> None:
    """Reply classes: 2xx sent, 4xx retry, 5xx failed with a hard/soft reason."""
    d = classify(SmtpReply.parse(code, text))
    assert (d.result, d.bounce_type, d.reason) == (result, kind, reason)


def test_retry_hints() -> None:
    """'try again in N seconds/minutes' hints are read and bounded."""
    assert retry_hint_s("4.7.1 try again in 30 seconds") == 30
    assert retry_hint_s("please retry after 2 minutes") == 120
    assert retry_hint_s("try again in 999999 seconds") == 3600
    assert retry_hint_s("later") is None


@given(st.integers(min_value=0, max_value=999), st.text(max_size=2000))
def test_reply_parser_never_raises(code: int, text: str) -> None:
    """Any code and text parse and classify into one of the three results."""
    reply = SmtpReply.parse(code, text)
    assert len(reply.text) <= 1000
    assert classify(reply).result in ("sent", "retry", "failed")


def _request(payload: dict[str, Any]) -> SendRequest:
    return parse_request(family_of(EMAIL_SENDING).validate(payload))


def test_payload_shapes_and_errors() -> None:
    """Both seed payload shapes parse; a recipient that cannot go on the wire is a
    PayloadError, a missing one is refused by the family's model."""
    a = _request(
        {"campaign_id": "c", "email_template": "t", "personalizations": {"email": "x@y.org"}}
    )
    b = _request(
        {"tenant_id": "t", "template_id": "t", "recipient": {"email": "x@y.org", "name": "X"}}
    )
    assert a.recipient_email == b.recipient_email == "x@y.org" and b.recipient_name == "X"
    assert a.template_id == "t" and a.campaign_id == "c" and a.variables == {"email": "x@y.org"}
    with pytest.raises(PayloadError, match="recipient"):
        _request({"tenant_id": "t", "template_id": "t", "recipient": "x@y.org\r\nBcc: z@q"})
    with pytest.raises(PayloadInvalid, match=r"personalizations\.email"):
        _request({"campaign_id": "c", "personalizations": {}})


def test_render_is_sandboxed_and_strict() -> None:
    """A missing variable names itself; sandbox escapes are refused; HTML is escaped."""
    r = Renderer()
    with pytest.raises(RenderError, match="'who' is undefined"):
        r.render("Hi {{ who }}", None, "x", {})
    with pytest.raises(RenderError, match=r"not allowed|unsafe|Security"):
        r.render("{{ ''.__class__.__mro__ }}", None, "x", {})
    out = r.render("S", "<p>{{ v }}</p>", None, {"v": "<b>"})
    assert out.html == "<p>&lt;b&gt;</p>"


@settings(deadline=None)  # RSA signing under a loaded CI machine can pass 200 ms
@given(st.text(min_size=1, max_size=300), st.text(max_size=3000))
def test_signatures_verify_for_any_content(subject: str, body: str) -> None:
    """Whatever the subject and body, both key types sign messages dkimpy verifies."""
    keys = [
        DkimKey.from_pem("s.test", "r", pem_of(RSA_KEY)),
        DkimKey.from_pem("s.test", "e", pem_of(ED_KEY)),
    ]
    dns = {f"{k.selector}._domainkey.s.test.".encode(): k.dns_record() for k in keys}
    env = Envelope(
        "a@s.test",
        "Ä Name",
        "b@x.org",
        None,
        None,
        "b+x@bounces.test",
        "<1@s.test>",
        "u@s.test",
        "https://s.test/u/1",
    )
    msg = sign_message(compose(env, Rendered(subject, None, body), date=0.0), keys)
    d = dkim.DKIM(msg)
    assert d.verify(idx=0, dnsfunc=lambda n, timeout=5: dns.get(n))
    assert d.verify(idx=1, dnsfunc=lambda n, timeout=5: dns.get(n))


@settings(max_examples=25, deadline=None)
@given(
    st.text(min_size=1, max_size=200),
    st.text(max_size=2000),
    st.sampled_from(["Ä Name", None]),
    st.sampled_from(["r@s.test", None]),
)
def test_signature_header_is_dkimpys_own(
    subject: str,
    body: str,
    name: str | None,
    reply_to: str | None,
) -> None:
    """Byte for byte what ``dkim.sign`` (pure-Python RSA) writes for the same message, key,
    time and header list: only the signature arithmetic is done elsewhere."""
    key = DkimKey.from_pem("s.test", "r", pem_of(RSA_KEY))
    env = Envelope(
        "a@s.test",
        name,
        "b@x.org",
        None,
        reply_to,
        "b+x@bounces.test",
        "<1@s.test>",
        "u@s.test",
        "https://s.test/u/1",
    )
    message = compose(env, Rendered(subject, None, body), date=0.0)
    headers, _ = split_headers(message)
    include = signed_header_list([n for n, _ in headers])
    with pytest.MonkeyPatch.context() as m:
        m.setattr(dkim.time, "time", lambda: 1_700_000_000.0)
        theirs = dkim.sign(
            message,
            b"r",
            b"s.test",
            pem_of(RSA_KEY),
            include_headers=include,
            canonicalize=CANONICALIZATION,
        )
    assert signature_headers(message, [key], now=1_700_000_000.0) == theirs


RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ED_KEY = ed25519.Ed25519PrivateKey.generate()
