"""The two email-sending job payloads (design §2), validated into one :class:`SendRequest`.

* seed 000 (``processEmailSending``): ``campaign_id, recipient_id, email_template,
  personalizations`` with ``personalizations.email`` the recipient; no tenant (it is the
  campaign's);
* seed 004 (``email.send``): ``recipient`` (an address, or ``{email, name}``),
  ``template_id, variables, tenant_id, campaign_id``.

Both may name ``email_account_id`` (else the campaign's account sends).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from delivery.compose import check_address
from delivery.errors import PayloadError

MAX_VARIABLES_JSON = 64 * 1024


def _opt_str(payload: dict[str, Any], name: str, limit: int = 200) -> str | None:
    value = payload.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise PayloadError(f"payload.{name} must be a string, got {type(value).__name__}")
    text = str(value).strip()
    if len(text) > limit:
        raise PayloadError(f"payload.{name} is longer than {limit} characters")
    return text or None


def _variables(value: Any, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PayloadError(f"payload.{name} must be an object")
    if len(repr(value)) > MAX_VARIABLES_JSON:
        raise PayloadError(f"payload.{name} is larger than {MAX_VARIABLES_JSON} bytes")
    return {str(k): v for k, v in value.items()}


@dataclass(frozen=True)
class SendRequest:
    """One recipient to send one template to."""

    tenant_id: str | None
    campaign_id: str | None
    recipient_email: str
    recipient_name: str | None = None
    recipient_id: str | None = None
    template_id: str | None = None
    email_account_id: str | None = None
    variables: dict[str, Any] = field(default_factory=dict)


def parse_request(payload: dict[str, Any]) -> SendRequest:
    """Validate either payload shape; a bad one is a :class:`PayloadError`."""
    tenant = _opt_str(payload, "tenant_id")
    campaign = _opt_str(payload, "campaign_id")
    account = _opt_str(payload, "email_account_id")
    if "personalizations" in payload or "email_template" in payload:
        variables = _variables(payload.get("personalizations"), "personalizations")
        email = variables.get("email")
        if not isinstance(email, str):
            raise PayloadError("payload.personalizations.email (the recipient) is required")
        name = variables.get("name")
        template = _opt_str(payload, "email_template")
    else:
        recipient = payload.get("recipient")
        name = None
        if isinstance(recipient, dict):
            email, name = recipient.get("email"), recipient.get("name")
        else:
            email = recipient
        if not isinstance(email, str):
            raise PayloadError("payload.recipient (an address or {email, name}) is required")
        variables = _variables(payload.get("variables"), "variables")
        template = _opt_str(payload, "template_id")
    if tenant is None and campaign is None:
        raise PayloadError("payload needs tenant_id or campaign_id")
    if campaign is None and template is None:
        raise PayloadError("payload needs campaign_id or a template (template_id/email_template)")
    return SendRequest(
        tenant_id=tenant,
        campaign_id=campaign,
        recipient_email=check_address(email, "recipient"),
        recipient_name=str(name)[:200] if isinstance(name, str) and name.strip() else None,
        recipient_id=_opt_str(payload, "recipient_id"),
        template_id=template,
        email_account_id=account,
        variables=variables,
    )
