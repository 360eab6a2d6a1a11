"""Amazon SES JSON notifications sent by mail (directly or wrapped by SNS). Messages written for
the test."""

from __future__ import annotations

import json

from bounces.classify import classify
from bounces.sesjson import events

HEAD = (
    b"From: SES <no-reply@sns.amazonaws.com>\nTo: ops@b.test\n"
    b"Subject: AWS Notification Message\nContent-Type: text/plain; charset=UTF-8\n\n"
)
FOOTER = b"\n--\nIf you wish to stop receiving notifications from this topic, click here.\n"


def _mail(obj: dict[str, object]) -> bytes:
    return HEAD + json.dumps(obj).encode() + FOOTER


BOUNCE = {
    "notificationType": "Bounce",
    "bounce": {
        "bounceType": "Permanent",
        "bounceSubType": "General",
        "bouncedRecipients": [
            {
                "emailAddress": "A@c.test",
                "action": "failed",
                "status": "5.1.1",
                "diagnosticCode": "smtp; 550 5.1.1 user unknown",
            }
        ],
    },
    "mail": {"source": "s@b.test", "destination": ["A@c.test"]},
}


def test_ses_bounce() -> None:
    (res,) = classify(_mail(BOUNCE))
    assert (res.kind, res.recipient, res.reason, res.status, res.bounce_type) == (
        "dsn",
        "a@c.test",
        "userunknown",
        "5.1.1",
        "hard",
    )


def test_ses_complaint_and_delivery() -> None:
    complaint = {
        "notificationType": "Complaint",
        "complaint": {
            "complainedRecipients": [{"emailAddress": "x@c.test"}],
            "complaintFeedbackType": "abuse",
        },
    }
    (res,) = classify(_mail(complaint))
    assert (res.kind, res.recipient, res.reason, res.feedback_type) == (
        "complaint",
        "x@c.test",
        "feedback",
        "abuse",
    )
    delivery = {
        "notificationType": "Delivery",
        "delivery": {"recipients": ["y@c.test"], "smtpResponse": "250 2.6.0 Message received"},
    }
    (res,) = classify(_mail(delivery))
    assert (res.kind, res.recipient, res.reason, res.status, res.bounce_type) == (
        "dsn",
        "y@c.test",
        "delivered",
        "2.6.0",
        None,
    )


def test_sns_envelope_and_wrapped_lines() -> None:
    wrapped = {"Type": "Notification", "Message": json.dumps(BOUNCE)}
    (res,) = classify(_mail(wrapped))
    assert res.recipient == "a@c.test"
    text = json.dumps(BOUNCE)
    assert events(text[:40] + "\n" + text[40:])[0].recipient == "A@c.test"


def test_not_ses_json() -> None:
    assert events('{"hello": 1}') == []
    assert events('{"notificationType": ') == []
    assert classify(HEAD + b"{notificationType broken")[0].kind == "not_bounce"
