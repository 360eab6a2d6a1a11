"""The job contracts: every queue's name, priority and family, and one typed payload model
per family, shared by every producer and every consumer.

This is the only module that spells a queue name. Producers (``mailgate enqueue``, ingest's
routing, delivery's bounce jobs, the campaign fan-out) build a payload model and push it
with :func:`encode_job`; the worker validates every job it takes against its family's model
before the handler runs (a job pushed with a bad payload is dead-lettered with the field
named), and the handler receives the validated model. A field one side sends and the other
ignores cannot exist: both read the same class.

Payloads keep unknown fields (``extra="allow"``): the platform's producers may send more
than mailgate reads, and the design says unknown fields are kept, not rejected.
``mailgate enqueue`` is stricter (:func:`unknown_fields`), so a typo in an optional field
name is caught at the door instead of being silently ignored.

Queues, highest priority first (design §2, seed 002 ``getQueueList``; seed 004's queues
after them)::

    queue:email:processing:high   queue:email:processing   queue:email:processing:low
    queue:email-sending:high      queue:email-sending      queue:email-sending:low
    queue:warmup:process          queue:bounce:process     queue:analytics:daily-aggregate
    queue:webhook:process         queue:campaign:process   queue:import:contacts
    queue:export:data             queue:maintenance:cleanup
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from gateway.jobs.envelope import new_job

# -- queue names ------------------------------------------------------------------------------

EMAIL_PROCESSING_HIGH: Final = "queue:email:processing:high"
EMAIL_PROCESSING: Final = "queue:email:processing"
EMAIL_PROCESSING_LOW: Final = "queue:email:processing:low"
EMAIL_SENDING_HIGH: Final = "queue:email-sending:high"
EMAIL_SENDING: Final = "queue:email-sending"
EMAIL_SENDING_LOW: Final = "queue:email-sending:low"
WARMUP: Final = "queue:warmup:process"
BOUNCE: Final = "queue:bounce:process"
ANALYTICS: Final = "queue:analytics:daily-aggregate"
WEBHOOK: Final = "queue:webhook:process"
CAMPAIGN: Final = "queue:campaign:process"
IMPORT: Final = "queue:import:contacts"
EXPORT: Final = "queue:export:data"
MAINTENANCE: Final = "queue:maintenance:cleanup"

QUEUE_PRIORITY: Final[tuple[str, ...]] = (
    EMAIL_PROCESSING_HIGH,
    EMAIL_PROCESSING,
    EMAIL_PROCESSING_LOW,
    EMAIL_SENDING_HIGH,
    EMAIL_SENDING,
    EMAIL_SENDING_LOW,
    WARMUP,
    BOUNCE,
    ANALYTICS,
    WEBHOOK,
    CAMPAIGN,
    IMPORT,
    EXPORT,
    MAINTENANCE,
)


# -- payload models ---------------------------------------------------------------------------


class Payload(BaseModel):
    """Base of every payload: unknown fields kept, numbers accepted where text is asked."""

    model_config = ConfigDict(
        extra="allow", coerce_numbers_to_str=True, str_strip_whitespace=True, frozen=True
    )

    def to_json(self) -> dict[str, Any]:
        """The payload as producers send it (aliases, unset optional fields left out)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    @classmethod
    def field_names(cls, *, required_marker: bool = False) -> list[str]:
        """The fields as producers spell them; ``name*`` for required ones if asked."""
        names = []
        for name, info in cls.model_fields.items():
            label = info.alias or name
            names.append(f"{label}*" if required_marker and info.is_required() else label)
        return names


def _blank_to_none(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


# An optional text field where producers send "" for "none".
Opt = Annotated[str | None, BeforeValidator(_blank_to_none)]


class Body(BaseModel):
    """``body`` of an email-processing payload: the plain and HTML parts."""

    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True, frozen=True)
    plain: str | None = None
    html: str | None = None


class AttachmentPayload(BaseModel):
    """One attachment of an email-processing payload (content in base64)."""

    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True, frozen=True)
    filename: str | None = None
    mime_type: str | None = None
    size: int | None = Field(default=None, ge=0)
    content: str = ""
    disposition: str | None = None
    content_id: str | None = None


class EmailProcessingPayload(Payload):
    """An email to store (seeds 000 and 003): content, message and attachments are written in
    one transaction, once per (tenant, account, Message-ID)."""

    tenant_id: str = Field(min_length=1, max_length=200)
    email_account_id: str | None = Field(default=None, max_length=200)
    direction: Literal["inbound", "outbound"] = "inbound"
    type: str | None = Field(default=None, max_length=50)
    from_: str | None = Field(default=None, alias="from")
    to: str | list[str] | None = None
    subject: str | None = None
    body: Body | str | None = None
    headers: dict[str, Any] | list[Any] | None = None
    messageId: str | None = Field(default=None, alias="messageId", max_length=998)
    message_id: str | None = Field(default=None, max_length=998)
    inReplyTo: str | None = Field(default=None, alias="inReplyTo", max_length=998)
    in_reply_to: str | None = Field(default=None, max_length=998)
    raw: str | None = None
    attachments: list[AttachmentPayload] = Field(default_factory=list)

    model_config = ConfigDict(populate_by_name=True)

    @field_validator("direction", mode="before")
    @classmethod
    def _direction_default(cls, value: Any) -> Any:
        return "inbound" if value in (None, "") else value

    @field_validator("attachments", mode="before")
    @classmethod
    def _no_attachments(cls, value: Any) -> Any:
        return [] if value is None else value

    @property
    def the_message_id(self) -> str | None:
        return self.messageId or self.message_id or None

    @property
    def the_in_reply_to(self) -> str | None:
        return self.inReplyTo or self.in_reply_to or None


class Recipient(BaseModel):
    """``recipient`` given as an object (seed 004 also allows a bare address)."""

    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True, frozen=True)
    email: str
    name: str | None = None


class EmailSendPayload(Payload):
    """One message to send. Two shapes are accepted (design §2): seed 000's
    ``campaign_id, recipient_id, email_template, personalizations`` (the recipient is
    ``personalizations.email``) and seed 004's ``recipient, template_id, variables,
    tenant_id, campaign_id``. Either may name ``email_account_id`` (else the campaign's)."""

    tenant_id: Opt = Field(default=None, max_length=200)
    campaign_id: Opt = Field(default=None, max_length=200)
    email_account_id: Opt = Field(default=None, max_length=200)
    recipient_id: Opt = Field(default=None, max_length=200)
    # seed 004
    recipient: str | Recipient | None = None
    template_id: Opt = Field(default=None, max_length=200)
    variables: dict[str, Any] | None = None
    # seed 000
    email_template: Opt = Field(default=None, max_length=200)
    personalizations: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _shape(self) -> EmailSendPayload:
        if self.personalizations is not None or self.email_template is not None:
            if not isinstance((self.personalizations or {}).get("email"), str):
                raise ValueError("personalizations.email (the recipient) is required")
        elif self.recipient is None:
            raise ValueError("recipient (an address or {email, name}) is required")
        if self.tenant_id is None and self.campaign_id is None:
            raise ValueError("tenant_id or campaign_id is required")
        if self.campaign_id is None and self.template is None:
            raise ValueError("campaign_id or a template (template_id/email_template) is required")
        return self

    @property
    def seed_000(self) -> bool:
        return self.personalizations is not None or self.email_template is not None

    @property
    def template(self) -> str | None:
        return self.email_template if self.seed_000 else self.template_id

    @property
    def recipient_email(self) -> str:
        if self.seed_000:
            return str((self.personalizations or {})["email"])
        if isinstance(self.recipient, Recipient):
            return self.recipient.email
        return str(self.recipient)

    @property
    def recipient_name(self) -> str | None:
        if self.seed_000:
            name = (self.personalizations or {}).get("name")
        elif isinstance(self.recipient, Recipient):
            name = self.recipient.name
        else:
            name = None
        return str(name)[:200] if isinstance(name, str) and name.strip() else None

    @property
    def template_variables(self) -> dict[str, Any]:
        values = self.personalizations if self.seed_000 else self.variables
        return {str(k): v for k, v in (values or {}).items()}


class WarmupPayload(Payload):
    """One warmup step for an account (seeds 000 and 002). ``email_account_id`` is the
    account acting: the sender for ``outbound``, the receiver for ``inbound`` and
    ``engagement``. The planner also names the ``warmup_messages`` row
    (``warmup_message_id``, of ``tenant_id``: the sender's) and, for an inbound step, the
    time it is due (``not_before``: the send plus ``warmup_inbound_delay_s``). A seed
    producer's bare step (no row) works too: outbound plans one send within today's quota,
    inbound and engagement take every message of the account still waiting for them.
    ``sequence_step`` orders the steps of one conversation (0 send, 1 inbound, 2
    engagement; 3-5 the same for the reply)."""

    email_account_id: str = Field(min_length=1, max_length=200)
    warmup_type: Literal["inbound", "outbound", "engagement"]
    sequence_step: int = Field(default=0, ge=0)
    tenant_id: Opt = Field(default=None, max_length=200)
    warmup_message_id: Opt = Field(default=None, max_length=200)
    not_before: dt.datetime | None = None


class BouncePayload(Payload):
    """A bounce to process. The seed's shape (``message_id, bounce_type, bounce_reason,
    recipient_email``) states the outcome; a stored report (``storage_key`` with its
    ``tenant_id``, from the listener or a mailbox) is classified by the handler; delivery's
    own 5xx at send time names its ``delivery_id`` and the SMTP reply."""

    tenant_id: Opt = Field(default=None, max_length=200)
    storage_key: Opt = Field(default=None, max_length=200)
    source: Annotated[
        Literal["smtp", "mailbox", "smtp_reply", "job"] | None, BeforeValidator(_blank_to_none)
    ] = None
    message_id: Opt = Field(default=None, max_length=998)
    bounce_type: Literal["hard", "soft"] | None = None
    bounce_reason: Opt = Field(default=None, max_length=2000)
    recipient_email: Opt = Field(default=None, max_length=320)
    delivery_id: Opt = Field(default=None, max_length=200)
    status: Opt = Field(default=None, max_length=20)
    smtp_code: int | None = Field(default=None, ge=200, le=599)
    diagnostic: Opt = Field(default=None, max_length=2000)

    @field_validator("bounce_type", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return _blank_to_none(value.strip().lower()) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _shape(self) -> BouncePayload:
        if self.storage_key is not None:
            if self.tenant_id is None:
                raise ValueError("tenant_id is required with storage_key")
            return self
        if self.delivery_id is not None and self.tenant_id is None:
            raise ValueError("tenant_id is required with delivery_id")
        if self.message_id is None and self.recipient_email is None and self.delivery_id is None:
            raise ValueError("storage_key, delivery_id, message_id or recipient_email is required")
        if self.bounce_type is None:
            raise ValueError("bounce_type is required without a stored message (storage_key)")
        return self


class AnalyticsPayload(Payload):
    """Recompute one day's ``analytics_daily`` rows (all tenants when none is named)."""

    tenant_id: str | None = Field(default=None, max_length=200)
    day: dt.date | None = None


WEBHOOK_BATCH_MAX: Final = 1000  # events one webhook job may name (a bound on its run)


class WebhookPayload(Payload):
    """Deliver events to one endpoint (``webhook.dispatch``): one event (``event_id``: every
    retry, a replay, and jobs queued before batches existed) or, for first attempts, a batch
    in outbox order (``event_ids``), so the job runtime's per-job cost is shared by the
    batch; each event of a batch that fails gets a one-event job of its own for its retries.
    Exactly one of the two is given."""

    tenant_id: str = Field(min_length=1, max_length=200)
    endpoint_id: str = Field(min_length=1, max_length=200)
    event_id: Opt = Field(default=None, max_length=200)
    event_ids: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        default=None, min_length=1, max_length=WEBHOOK_BATCH_MAX
    )

    @model_validator(mode="after")
    def _one_shape(self) -> WebhookPayload:
        if (self.event_id is None) == (self.event_ids is None):
            raise ValueError("exactly one of event_id or event_ids is required")
        return self

    @property
    def events(self) -> list[str]:
        """The event ids this job is about, in order (one for the single shape)."""
        return list(self.event_ids) if self.event_ids is not None else [str(self.event_id)]


class CampaignPayload(Payload):
    """Fan a campaign's list out into ``email.send`` jobs (``campaign.process``)."""

    campaign_id: str = Field(min_length=1, max_length=200)
    tenant_id: str = Field(min_length=1, max_length=200)


class ImportPayload(Payload):
    """Import a CSV of contacts (``import.contacts``). ``mapping`` names the column of each
    field: ``{"col_0": "email", "col_1": "name"}``, or header names with ``has_header``."""

    file_url: str = Field(min_length=1, max_length=4096)
    tenant_id: str = Field(min_length=1, max_length=200)
    mapping: dict[str, str] = Field(min_length=1)
    list_id: str | None = Field(default=None, max_length=200)
    has_header: bool = False
    delimiter: str = Field(default=",", min_length=1, max_length=1)

    @field_validator("file_url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        scheme = value.partition("://")[0].lower() if "://" in value else ""
        if scheme not in ("file", "http", "https"):
            raise ValueError(
                f"scheme {scheme or '(none)'!r} is not supported: use file://, http:// or https://"
            )
        return value

    @field_validator("mapping")
    @classmethod
    def _has_email(cls, value: dict[str, str]) -> dict[str, str]:
        if "email" not in value.values():
            raise ValueError("no column is mapped to 'email'")
        return value


class ExportPayload(Payload):
    """Export a tenant's rows to a file (``export.data``)."""

    tenant_id: str = Field(min_length=1, max_length=200)
    kind: Literal["contacts", "deliveries", "messages", "suppressions"]
    list_id: str | None = Field(default=None, max_length=200)
    campaign_id: str | None = Field(default=None, max_length=200)
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    destination: str | None = Field(default=None, max_length=4096)
    format: Literal["csv", "jsonl"] = "csv"

    @field_validator("destination")
    @classmethod
    def _file_only(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("file://"):
            raise ValueError("must be a file:// URL")
        return value


class MaintenancePayload(Payload):
    """Delete what is past retention (``maintenance.cleanup``); all tenants when none."""

    tenant_id: str | None = Field(default=None, max_length=200)


# -- families ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    """A queue family: the queues one handler consumes and the payload they carry."""

    name: str
    queues: tuple[str, ...]
    payload: type[Payload]
    example: dict[str, Any]
    summary: str
    timeout_s: float = 300.0  # one attempt's limit (settings: job_timeouts)

    def validate(self, data: dict[str, Any]) -> Payload:
        """The payload model; raises :class:`PayloadInvalid` naming the first bad field."""
        return validate(self.name, self.payload, data)


FAMILIES: Final[tuple[Family, ...]] = (
    Family(
        "email-processing",
        (EMAIL_PROCESSING_HIGH, EMAIL_PROCESSING, EMAIL_PROCESSING_LOW),
        EmailProcessingPayload,
        {
            "tenant_id": "t1",
            "email_account_id": "acc_1",
            "direction": "inbound",
            "from": "alice@example.com",
            "to": ["sales@example.net"],
            "subject": "Re: our call",
            "body": {"plain": "Thanks, Tuesday works."},
            "messageId": "<abc@example.com>",
        },
        "store an email (content, message, attachments in one transaction)",
        timeout_s=120,
    ),
    Family(
        "email-sending",
        (EMAIL_SENDING_HIGH, EMAIL_SENDING, EMAIL_SENDING_LOW),
        EmailSendPayload,
        {
            "recipient": "user@example.com",
            "template_id": "tpl_123",
            "variables": {"name": "Alice"},
            "tenant_id": "t1",
            "campaign_id": "camp_xyz",
        },
        "send one message (email.send; seed 000's shape is accepted too)",
        timeout_s=300,
    ),
    Family(
        "warmup",
        (WARMUP,),
        WarmupPayload,
        {"email_account_id": "acc_1", "warmup_type": "outbound", "sequence_step": 0},
        "one warmup step of an account",
        timeout_s=600,
    ),
    Family(
        "bounce",
        (BOUNCE,),
        BouncePayload,
        {
            "message_id": "<m1@example.com>",
            "bounce_type": "hard",
            "bounce_reason": "user unknown",
            "recipient_email": "gone@example.net",
        },
        "process a bounce (the seed's outcome, or a stored report to classify)",
        timeout_s=120,
    ),
    Family(
        "analytics",
        (ANALYTICS,),
        AnalyticsPayload,
        {"tenant_id": "t1", "day": "2026-12-05"},
        "recompute a day's analytics_daily rows",
        timeout_s=3600,
    ),
    Family(
        "webhook",
        (WEBHOOK,),
        WebhookPayload,
        {"tenant_id": "t1", "endpoint_id": "ep_1", "event_ids": ["42", "43"]},
        "deliver events (event_id, or a batch: event_ids) to one webhook endpoint",
        timeout_s=60,
    ),
    Family(
        "campaign",
        (CAMPAIGN,),
        CampaignPayload,
        {"campaign_id": "camp_xyz", "tenant_id": "t1"},
        "fan a campaign's list out into email.send jobs",
        timeout_s=3600,
    ),
    Family(
        "import",
        (IMPORT,),
        ImportPayload,
        {
            "file_url": "file:///srv/uploads/list.csv",
            "tenant_id": "t1",
            "mapping": {"col_0": "email", "col_1": "name"},
        },
        "import a CSV of contacts",
        timeout_s=14400,
    ),
    Family(
        "export",
        (EXPORT,),
        ExportPayload,
        {"tenant_id": "t1", "kind": "contacts", "format": "csv"},
        "export a tenant's rows to a file",
        timeout_s=7200,
    ),
    Family(
        "maintenance",
        (MAINTENANCE,),
        MaintenancePayload,
        {},
        "delete what is past retention",
        timeout_s=3600,
    ),
)

FAMILY_BY_NAME: Final[dict[str, Family]] = {f.name: f for f in FAMILIES}
# Routing (seed 001 executeJobLogic): the family a queue belongs to picks its handler.
QUEUE_FAMILY: Final[dict[str, str]] = {q: f.name for f in FAMILIES for q in f.queues}
assert tuple(QUEUE_FAMILY) == tuple(q for q in QUEUE_PRIORITY if q in QUEUE_FAMILY)
assert set(QUEUE_FAMILY) == set(QUEUE_PRIORITY)


def family_of(queue: str) -> Family:
    """The family of a queue name; :class:`KeyError` for an unknown queue."""
    return FAMILY_BY_NAME[QUEUE_FAMILY[queue]]


# -- errors and producing ---------------------------------------------------------------------


class PayloadInvalid(ValueError):
    """A payload does not match its family's model; ``str()`` names the field."""

    def __init__(self, family: str, detail: str):
        super().__init__(f"invalid {family} payload: {detail}")
        self.family = family
        self.detail = detail


def validate(family: str, model: type[Payload], data: dict[str, Any]) -> Payload:
    """``data`` as ``model``; raises :class:`PayloadInvalid` naming the first bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise PayloadInvalid(family, describe(exc)) from None


def describe(exc: ValidationError) -> str:
    """The first error of a validation failure as one line: ``field.path: message``."""
    first = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in first["loc"])
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def unknown_fields(payload: Payload) -> list[str]:
    """Top-level fields the model does not know (kept by the worker; refused by the CLI)."""
    return sorted(payload.model_extra or {})


def encode_job(queue: str, payload: Payload, **envelope: Any) -> bytes:
    """A new job for ``queue`` (id and defaults filled in) as the bytes to LPUSH. The
    payload's class must be the queue family's model: a producer cannot push a bounce
    payload onto a sending queue."""
    family = family_of(queue)
    if not isinstance(payload, family.payload):
        raise TypeError(f"{queue} carries {family.payload.__name__}, not {type(payload).__name__}")
    job = new_job(payload.to_json(), **envelope)
    job.setdefault("queue_name", queue)
    return json.dumps(job, separators=(",", ":")).encode()


def encode_jobs(queue: str, jobs: Sequence[tuple[str, Payload]], **envelope: Any) -> list[bytes]:
    """Many new jobs for ``queue`` with the ids given (a fan-out's ``<campaign>:<contact>``),
    each also its idempotency key: :func:`encode_job`'s checks once per batch, one
    ``created_at`` for all (about twice as fast per job)."""
    family = family_of(queue)
    for _, payload in jobs:
        if not isinstance(payload, family.payload):
            raise TypeError(
                f"{queue} carries {family.payload.__name__}, not {type(payload).__name__}"
            )
    base = new_job({}, queue_name=queue, **envelope)
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    out = []
    for job_id, payload in jobs:
        job = dict(base, id=job_id, idempotency_key=job_id, payload=payload.to_json())
        out.append(dumps(job).encode())
    return out


def reference_markdown() -> str:
    """The README's queue table: every queue, its priority, its family's payload fields
    (``*`` required) and an example, generated from the models."""
    lines = ["| priority | queue | family | payload fields | example |", "|---|---|---|---|---|"]
    for rank, queue in enumerate(QUEUE_PRIORITY, start=1):
        family = family_of(queue)
        fields = ", ".join(family.payload.field_names(required_marker=True))
        example = json.dumps(family.example, separators=(", ", ": "))
        lines.append(f"| {rank} | `{queue}` | {family.name} | {fields} | `{example}` |")
    return "\n".join(lines)
