"""Amazon SES notifications delivered by mail: a JSON body, not a delivery report.

SES (directly, or through an SNS subscription that wraps the same object as a JSON string in
``Message``) reports each event as ``{"notificationType": "Bounce" | "Complaint" | "Delivery",
...}`` with the recipients in ``bounce.bouncedRecipients``, ``complaint.complainedRecipients``
or ``delivery.recipients``. :func:`events` reads one such body into neutral records; the
classifier turns them into results.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

#: SES bounce sub-types that name a reason where the diagnostic says nothing more.
SUBTYPE_REASON = {
    "noemail": "userunknown", "mailboxfull": "mailboxfull", "messagetoolarge": "mesgtoobig",
    "contentrejected": "contenterror", "attachmentrejected": "contenterror",
}


@dataclass(frozen=True, slots=True)
class SesEvent:
    """One recipient of one SES notification."""

    kind: str  # "bounce", "complaint" or "delivery"
    recipient: str
    status: str = ""
    action: str = ""
    diagnostic: str = ""
    permanent: bool = False
    subtype: str = ""
    feedback_type: str = ""
    remote_mta: str = ""


_DECODER = json.JSONDecoder(strict=False)


def _load(text: str) -> dict[str, object] | None:
    body = text.strip()
    if not body.startswith("{") or "notificationType" not in body:
        return None
    try:
        # the object may be followed by a text footer and wrapped across lines
        data, _ = _DECODER.raw_decode(body)
        if isinstance(data, dict) and isinstance(data.get("Message"), str):
            data, _ = _DECODER.raw_decode(data["Message"])  # an SNS envelope around it
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _dict(value: object) -> dict[str, object]:
    return value if isinstance(value, dict) else {}


def _items(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def events(text: str) -> list[SesEvent]:
    """The recipients an SES notification body reports on; ``[]`` if it is not one."""
    data = _load(text)
    if data is None:
        return []
    ntype = _str(data.get("notificationType")).lower()
    if ntype == "bounce":
        info = _dict(data.get("bounce"))
        permanent = _str(info.get("bounceType")).lower() == "permanent"
        subtype = _str(info.get("bounceSubType")).lower()
        return [SesEvent("bounce", _str(r.get("emailAddress")), _str(r.get("status")),
                         _str(r.get("action")).lower(), _str(r.get("diagnosticCode")),
                         permanent, subtype, remote_mta=_str(info.get("remoteMtaIp")))
                for r in map(_dict, _items(info.get("bouncedRecipients")))]
    if ntype == "complaint":
        info = _dict(data.get("complaint"))
        ftype = _str(info.get("complaintFeedbackType")).lower() or "abuse"
        return [SesEvent("complaint", _str(r.get("emailAddress")), feedback_type=ftype)
                for r in map(_dict, _items(info.get("complainedRecipients")))]
    if ntype == "delivery":
        info = _dict(data.get("delivery"))
        reply = _str(info.get("smtpResponse"))
        return [SesEvent("delivery", _str(r), action="delivered", diagnostic=reply,
                         remote_mta=_str(info.get("reportingMTA")))
                for r in _items(info.get("recipients"))]
    return []
