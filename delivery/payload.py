"""The two email-sending job payloads (design §2), read into one :class:`SendRequest`.

The shapes are checked by :class:`gateway.jobs.contracts.EmailSendPayload` (the worker
validates every job against it); this module adds what delivery alone knows: a recipient
address that can be put on the wire, and a bound on the template variables.

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
from gateway.jobs.contracts import EmailSendPayload

MAX_VARIABLES_JSON = 64 * 1024


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


def parse_request(payload: EmailSendPayload) -> SendRequest:
    """The send request of a validated payload (either shape); a recipient address that
    cannot be sent to, or variables too large, are a :class:`PayloadError`."""
    variables = payload.template_variables
    if len(repr(variables)) > MAX_VARIABLES_JSON:
        name = "personalizations" if payload.seed_000 else "variables"
        raise PayloadError(f"payload.{name} is larger than {MAX_VARIABLES_JSON} bytes")
    return SendRequest(
        tenant_id=payload.tenant_id,
        campaign_id=payload.campaign_id,
        recipient_email=check_address(payload.recipient_email, "recipient"),
        recipient_name=payload.recipient_name,
        recipient_id=payload.recipient_id,
        template_id=payload.template,
        email_account_id=payload.email_account_id,
        variables=variables,
    )
