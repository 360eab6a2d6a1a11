"""PostgreSQL for delivery: what a send needs (tenant-scoped) and the delivery rows.

Every query names the tenant. The campaign, template, account, warmup ramp and DKIM keys
change rarely and are read for every send, so :class:`ContextStore` keeps them for a few
seconds (``CACHE_TTL_S``); the contact, the suppression check and the delivery row are
read and written per send, but the sends in flight share statements: contacts, claims
and outcomes each go through a :class:`~gateway.groupcommit.GroupCommit` (one ``unnest``
statement for everything submitted during the previous round trip).

The delivery row is the idempotency record: one row per (tenant, idempotency key), the
key being the job's ``idempotency_key`` or its id. :meth:`DeliveryStore.claim` writes it
``sending`` (or ``suppressed``) before the SMTP transaction in one statement (with the
other claims of its batch), and only while it is not final; a job run again finds a
``sent`` (or failed, suppressed, expired) row and sends nothing.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg

from delivery.errors import PayloadError
from gateway import guards
from gateway.events import EventType, record_events
from gateway.groupcommit import GroupCommit

# Sends sharing one statement at most (200 rows: one unnest round trip, a few ms).
BATCH = 200

CACHE_TTL_S = 5.0
PAUSE_TTL_S = 1.0
FINAL = ("sent", "failed", "bounced", "suppressed", "expired", "complained")
T = TypeVar("T")


def delivery_id_for(tenant_id: str, idempotency_key: str) -> str:
    """A short delivery id (fits a VERP token), the same whenever the job runs."""
    digest = hashlib.blake2b(f"{tenant_id}\0{idempotency_key}".encode(), digest_size=12).digest()
    return "d" + base64.b32encode(digest).decode().rstrip("=").lower()


@dataclass(frozen=True)
class Account:
    id: str
    address: str
    smtp_host: str | None
    smtp_port: int | None
    smtp_security: str | None
    smtp_username: str | None
    smtp_password_enc: bytes | None
    enabled: bool


@dataclass(frozen=True)
class Campaign:
    id: str
    email_account_id: str | None
    template_id: str | None
    from_email: str | None
    from_name: str | None
    reply_to: str | None


@dataclass(frozen=True)
class TenantRelay:
    host: str
    port: int
    security: str
    username: str | None
    password_enc: bytes | None


@dataclass(frozen=True)
class Template:
    id: str
    subject: str
    html: str | None
    text: str | None


@dataclass(frozen=True)
class Contact:
    id: str
    email: str
    name: str | None
    fields: dict[str, Any]


@dataclass(frozen=True)
class Warmup:
    daily_start: int
    daily_increment: int
    daily_max: int
    started_on: dt.date

    def cap(self, today: dt.date) -> int:
        """Today's cap: start + increment x days since the start, at most max."""
        days = max(0, (today - self.started_on).days)
        return min(self.daily_max, self.daily_start + self.daily_increment * days)


class _TtlCache:
    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic):
        self._ttl = ttl_s
        self._clock = clock
        self._data: dict[tuple[str, ...], tuple[float, Any]] = {}

    async def get(self, key: tuple[str, ...], load: Callable[[], Awaitable[T]]) -> T:
        now = self._clock()
        hit = self._data.get(key)
        if hit is not None and hit[0] > now:
            value: T = hit[1]
            return value
        value = await load()
        if len(self._data) > 10000:
            self._data.clear()
        self._data[key] = (now + self._ttl, value)
        return value


class ContextStore:
    """Reads what a send needs, tenant-scoped, with a short cache for the slow-changing."""

    def __init__(self, pool: asyncpg.Pool, ttl_s: float = CACHE_TTL_S):
        self.pool = pool
        self._cache = _TtlCache(ttl_s)
        self._pauses = _TtlCache(PAUSE_TTL_S)
        self._contacts: GroupCommit[tuple[str, str | None, str], Contact | None] = GroupCommit(
            "contacts", self._contacts_many, one=self._contact_one, max_items=BATCH
        )

    async def campaign_status(self, tenant: str, campaign_id: str) -> str | None:
        """The campaign's status now (not cached: a pause must be seen by the next send)."""
        status = await self.pool.fetchval(
            "SELECT status FROM campaigns WHERE tenant_id = $1 AND id = $2", tenant, campaign_id
        )
        return str(status) if status is not None else None

    async def tenant_relay(self, tenant: str) -> TenantRelay | None:
        """The tenant's own relay (``tenant_relays``), if it has one."""

        async def load() -> TenantRelay | None:
            row = await self.pool.fetchrow(
                "SELECT host, port, security, username, password_enc FROM tenant_relays"
                " WHERE tenant_id = $1",
                tenant,
            )
            if row is None:
                return None
            sealed = row["password_enc"]
            return TenantRelay(
                row["host"],
                row["port"],
                row["security"],
                row["username"],
                bytes(sealed) if sealed is not None else None,
            )

        return await self._cache.get(("relay", tenant), load)

    async def tenant_of_campaign(self, campaign_id: str) -> str:
        """Seed 000 jobs carry no tenant: it is the campaign's (ids are global keys)."""

        async def load() -> str | None:
            value: str | None = await self.pool.fetchval(
                "SELECT tenant_id FROM campaigns WHERE id = $1", campaign_id
            )
            return value

        tenant = await self._cache.get(("tenant", campaign_id), load)
        if tenant is None:
            raise PayloadError(f"campaign {campaign_id!r} does not exist")
        return tenant

    async def campaign(self, tenant: str, campaign_id: str) -> Campaign:
        async def load() -> Campaign | None:
            row = await self.pool.fetchrow(
                "SELECT id, email_account_id, template_id, from_email, from_name, reply_to"
                " FROM campaigns WHERE tenant_id = $1 AND id = $2",
                tenant,
                campaign_id,
            )
            return Campaign(**dict(row)) if row else None

        found = await self._cache.get(("campaign", tenant, campaign_id), load)
        if found is None:
            raise PayloadError(f"campaign {campaign_id!r} does not exist for tenant {tenant!r}")
        return found

    async def template(self, tenant: str, template_id: str) -> Template:
        async def load() -> Template | None:
            row = await self.pool.fetchrow(
                "SELECT id, subject, html, text FROM email_templates"
                " WHERE tenant_id = $1 AND id = $2",
                tenant,
                template_id,
            )
            return Template(**dict(row)) if row else None

        found = await self._cache.get(("template", tenant, template_id), load)
        if found is None:
            raise PayloadError(f"template {template_id!r} does not exist for tenant {tenant!r}")
        return found

    async def account(self, tenant: str, account_id: str) -> Account:
        async def load() -> Account | None:
            row = await self.pool.fetchrow(
                "SELECT id, address, smtp_host, smtp_port, smtp_security, smtp_username,"
                " smtp_password_enc, enabled FROM email_accounts"
                " WHERE tenant_id = $1 AND id = $2",
                tenant,
                account_id,
            )
            return Account(**dict(row)) if row else None

        found = await self._cache.get(("account", tenant, account_id), load)
        if found is None:
            raise PayloadError(f"email account {account_id!r} does not exist for tenant {tenant!r}")
        return found

    async def warmup(self, tenant: str, account_id: str) -> Warmup | None:
        async def load() -> Warmup | None:
            row = await self.pool.fetchrow(
                "SELECT daily_start, daily_increment, daily_max, started_on FROM warmup_configs"
                " WHERE tenant_id = $1 AND email_account_id = $2 AND enabled",
                tenant,
                account_id,
            )
            return Warmup(**dict(row)) if row else None

        return await self._cache.get(("warmup", tenant, account_id), load)

    async def dkim_keys(self, tenant: str, domain: str) -> list[tuple[str, bytes]]:
        """(selector, sealed PEM) of the tenant's enabled keys for ``domain``."""

        async def load() -> list[tuple[str, bytes]]:
            rows = await self.pool.fetch(
                "SELECT selector, private_key_enc FROM dkim_keys"
                " WHERE tenant_id = $1 AND domain = $2 AND enabled ORDER BY selector",
                tenant,
                domain,
            )
            return [(r["selector"], bytes(r["private_key_enc"])) for r in rows]

        return await self._cache.get(("dkim", tenant, domain), load)

    async def tenant_domains(self, tenant: str) -> frozenset[str]:
        """The verified From domains of ``tenant`` (``tenant_domains``; issue 16)."""

        async def load() -> frozenset[str]:
            rows = await self.pool.fetch(
                "SELECT domain FROM tenant_domains"
                " WHERE tenant_id = $1 AND verified_at IS NOT NULL",
                tenant,
            )
            return frozenset(r["domain"] for r in rows)

        return await self._cache.get(("domains", tenant), load)

    async def pause(
        self, tenant: str, account_id: str, campaign_id: str | None
    ) -> guards.Pause | None:
        """The guard pause holding this account's or campaign's sends (cached a second:
        a send in the second after a pause may still go, none after)."""

        async def load() -> guards.Pause | None:
            return await guards.pause_of(self.pool, tenant, account_id, campaign_id)

        return await self._pauses.get(("pause", tenant, account_id, campaign_id or ""), load)

    async def contact(self, tenant: str, contact_id: str | None, email: str) -> Contact | None:
        """The contact by id, else by address (case-insensitive); batched with others."""
        return await self._contacts.submit((tenant, contact_id, email))

    async def _contact_one(self, item: tuple[str, str | None, str]) -> Contact | None:
        return (await self._contacts_many([item]))[0]

    async def _contacts_many(
        self, items: Sequence[tuple[str, str | None, str]]
    ) -> list[Contact | None]:
        rows = await self.pool.fetch(
            _CONTACTS,
            [t for t, _, _ in items],
            [c for _, c, _ in items],
            [e for _, _, e in items],
        )
        found: list[Contact | None] = [None] * len(items)
        for row in rows:
            fields = row["fields"] if isinstance(row["fields"], dict) else {}
            found[row["i"] - 1] = Contact(row["id"], row["email"], row["name"], fields)
        return found


# By id when the job names one, else by address; one row per item (ordinality i).
_CONTACTS = """
WITH v AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY
        AS v(tenant_id, contact_id, email, i)
)
SELECT v.i, c.id, c.email, c.name, c.fields FROM v
    JOIN contacts c ON c.tenant_id = v.tenant_id AND c.id = v.contact_id
    WHERE v.contact_id IS NOT NULL
UNION ALL
SELECT v.i, c.id, c.email, c.name, c.fields FROM v
    JOIN contacts c ON c.tenant_id = v.tenant_id AND lower(c.email) = lower(v.email)
    WHERE v.contact_id IS NULL
"""


@dataclass(frozen=True)
class Claim:
    """The delivery row after a claim: ``send`` True when this run must send."""

    delivery_id: str
    status: str
    send: bool
    smtp_code: int | None = None
    provider_response: str | None = None
    held_for_s: float = 0.0  # another run's claim on a `sending` row lasts this much longer


@dataclass(frozen=True)
class NewDelivery:
    tenant_id: str
    idempotency_key: str
    campaign_id: str | None
    recipient_id: str | None
    recipient_email: str
    email_account_id: str | None
    job_id: str


_CLAIM = """
WITH v AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
        $6::text[], $7::text[], $8::text[], $9::boolean[])
        AS v(id, tenant_id, idempotency_key, campaign_id, recipient_id, recipient_email,
             email_account_id, job_id, expired)
)
INSERT INTO email_deliveries AS d (id, tenant_id, idempotency_key, campaign_id, recipient_id,
    recipient_email, email_account_id, job_id, status, attempt_count)
SELECT v.id, v.tenant_id, v.idempotency_key, v.campaign_id, v.recipient_id,
       v.recipient_email, v.email_account_id, v.job_id,
       CASE WHEN v.expired THEN 'expired'
            WHEN EXISTS (
                SELECT 1 FROM suppressions s
                WHERE s.tenant_id = v.tenant_id AND s.email = lower(v.recipient_email)
                AND (s.expires_at IS NULL OR s.expires_at > now())) THEN 'suppressed'
            ELSE 'sending' END,
       1
FROM v ORDER BY v.tenant_id, v.idempotency_key
ON CONFLICT (tenant_id, idempotency_key) DO UPDATE
    SET status = EXCLUDED.status, attempt_count = d.attempt_count + 1, updated_at = now(),
        job_id = EXCLUDED.job_id
    WHERE d.status IN ('queued', 'deferred')
       OR (d.status = 'sending' AND d.updated_at <= now() - make_interval(secs => $10))
RETURNING d.id, d.status
"""

_FINAL_ROWS = """
SELECT d.id, d.status, d.smtp_code, d.provider_response,
       extract(epoch FROM now() - d.updated_at)::float8 AS age_s FROM email_deliveries d
JOIN unnest($1::text[], $2::text[]) AS v(tenant_id, id) ON d.tenant_id = v.tenant_id
    AND d.id = v.id
"""

# The outcome of an attempt, and (same statement, so they commit together) the campaign
# counters of seed 004's email.send step 5: a row becoming `sent` counts `sent` and
# `delivered` (accepted by the next hop), one becoming `failed` counts `failed`. Each fact
# is keyed by the delivery (metric_facts), so a replayed record counts nothing twice.
_RECORD = """
WITH upd AS (
    UPDATE email_deliveries AS d SET status = v.status,
        message_id = COALESCE(v.message_id, d.message_id),
        smtp_code = v.smtp_code, enhanced_status = v.enhanced, provider_response = v.response,
        sent_at = CASE WHEN v.status = 'sent' THEN now() ELSE d.sent_at END,
        bounce_type = COALESCE(v.bounce_type, d.bounce_type),
        bounce_reason = COALESCE(v.bounce_reason, d.bounce_reason),
        provider = COALESCE(v.provider, d.provider), updated_at = now()
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[], $6::text[],
        $7::text[], $8::text[], $9::text[], $10::text[])
        AS v(tenant_id, id, status, message_id, smtp_code, enhanced, response, bounce_type,
             bounce_reason, provider)
    WHERE d.tenant_id = v.tenant_id AND d.id = v.id
        AND d.status IN ('queued', 'sending', 'deferred')
    RETURNING d.id, d.tenant_id, d.campaign_id, d.status, d.recipient_email, d.message_id,
        d.email_account_id, d.smtp_code
), facts AS (
    INSERT INTO metric_facts (tenant_id, dedupe_key, campaign_id, metric)
    SELECT u.tenant_id, 'send:' || u.id || ':' || m.metric, u.campaign_id, m.metric
    FROM upd u CROSS JOIN LATERAL unnest(CASE u.status
        WHEN 'sent' THEN ARRAY['sent', 'delivered'] WHEN 'failed' THEN ARRAY['failed']
        ELSE ARRAY[]::text[] END) AS m(metric)
    WHERE u.campaign_id IS NOT NULL
    ON CONFLICT DO NOTHING RETURNING tenant_id, campaign_id, metric
), counted AS (
    INSERT INTO campaign_metrics AS cm (tenant_id, campaign_id, sent, delivered, failed)
    SELECT tenant_id, campaign_id, count(*) FILTER (WHERE metric = 'sent'),
           count(*) FILTER (WHERE metric = 'delivered'), count(*) FILTER (WHERE metric = 'failed')
    FROM facts GROUP BY tenant_id, campaign_id
    ORDER BY tenant_id, campaign_id
    ON CONFLICT (tenant_id, campaign_id) DO UPDATE SET sent = cm.sent + EXCLUDED.sent,
        delivered = cm.delivered + EXCLUDED.delivered, failed = cm.failed + EXCLUDED.failed,
        updated_at = now()
    RETURNING 1
)
SELECT id, tenant_id, status, campaign_id, recipient_email, message_id, email_account_id,
    smtp_code FROM upd
"""


@dataclass(frozen=True)
class Result:
    """The outcome of one attempt, as :meth:`DeliveryStore.record` writes it."""

    tenant_id: str
    delivery_id: str
    status: str
    message_id: str | None = None
    smtp_code: int | None = None
    enhanced: str | None = None
    response: str | None = None
    bounce_type: str | None = None
    bounce_reason: str | None = None
    provider: str | None = None


class DeliveryStore:
    """Writes ``email_deliveries`` rows, many sends' rows per statement (:mod:`.batch`)."""

    def __init__(self, pool: asyncpg.Pool, claim_lease_s: float = 0.0):
        self.pool = pool
        self.claim_lease_s = claim_lease_s
        self._claims: GroupCommit[tuple[NewDelivery, bool], Claim] = GroupCommit(
            "claims", self._claim_many, one=self._claim_one, max_items=BATCH
        )
        self._records: GroupCommit[Result, bool] = GroupCommit(
            "records", self._record_many, one=self._record_one, max_items=BATCH
        )

    async def claim(self, new: NewDelivery, *, expired: bool) -> Claim:
        """Write the row ``sending`` (``suppressed``/``expired``) unless it is final.

        Committed before this returns (the statement is its own transaction), so the row
        is ``sending`` before any byte of the SMTP transaction."""
        return await self._claims.submit((new, expired))

    async def _claim_one(self, item: tuple[NewDelivery, bool]) -> Claim:
        return (await self._claim_many([item]))[0]

    async def _claim_many(self, items: Sequence[tuple[NewDelivery, bool]]) -> list[Claim]:
        ids = [delivery_id_for(n.tenant_id, n.idempotency_key) for n, _ in items]
        cols: list[list[Any]] = [ids]
        for attr in (
            "tenant_id",
            "idempotency_key",
            "campaign_id",
            "recipient_id",
            "recipient_email",
            "email_account_id",
            "job_id",
        ):
            cols.append([getattr(n, attr) for n, _ in items])
        cols.append([expired for _, expired in items])
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(_CLAIM, *cols, self.claim_lease_s)
            claimed = {r["id"]: r["status"] for r in rows}
            missing = [(n.tenant_id, i) for (n, _), i in zip(items, ids, strict=True)]
            missing = [(t, i) for t, i in missing if i not in claimed]
            final = {}
            if missing:
                found = await conn.fetch(
                    _FINAL_ROWS, [t for t, _ in missing], [i for _, i in missing]
                )
                final = {r["id"]: r for r in found}
        out: list[Claim] = []
        for delivery_id in ids:
            if delivery_id in claimed:
                status = claimed[delivery_id]
                out.append(Claim(delivery_id, status, status == "sending"))
                continue
            row = final[delivery_id]
            held = max(0.0, self.claim_lease_s - row["age_s"]) if row["status"] == "sending" else 0
            out.append(
                Claim(
                    delivery_id,
                    row["status"],
                    False,
                    row["smtp_code"],
                    row["provider_response"],
                    held_for_s=held,
                )
            )
        return out

    async def record(
        self,
        tenant: str,
        delivery_id: str,
        status: str,
        *,
        message_id: str | None = None,
        smtp_code: int | None = None,
        enhanced: str | None = None,
        response: str | None = None,
        bounce_type: str | None = None,
        bounce_reason: str | None = None,
        provider: str | None = None,
    ) -> bool:
        """Set the outcome of an attempt (committed on return); False when the row was
        already final.

        The campaign's ``sent``/``delivered``/``failed`` counters move in the same
        statement (seed 004's "update analytics"). Outcomes are written in batches
        (group commit), so a campaign's hot ``campaign_metrics`` row is updated once per
        batch, not once per send.
        """
        return await self._records.submit(
            Result(
                tenant,
                delivery_id,
                status,
                message_id,
                smtp_code,
                enhanced,
                (response or "")[:1000] or None,
                bounce_type,
                bounce_reason,
                provider,
            )
        )

    async def _record_one(self, item: Result) -> bool:
        return (await self._record_many([item]))[0]

    async def _record_many(self, items: Sequence[Result]) -> list[bool]:
        cols = [
            [getattr(r, attr) for r in items]
            for attr in (
                "tenant_id",
                "delivery_id",
                "status",
                "message_id",
                "smtp_code",
                "enhanced",
                "response",
                "bounce_type",
                "bounce_reason",
                "provider",
            )
        ]
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(_RECORD, *cols)
            # The events of a send the server took, in the same transaction as the row.
            await record_events(
                conn,
                [ev for r in rows if r["status"] == "sent" for ev in _sent_events(r)],
            )
        changed = {r["id"] for r in rows}
        return [r.delivery_id in changed for r in items]


def _sent_events(
    row: asyncpg.Record,
) -> tuple[tuple[str, EventType, str, dict[str, Any], str], ...]:
    """``email.sent`` and ``email.delivered`` of a 2xx (the platform's contract names both,
    as its campaign counters count both): one each per delivery, whatever is replayed."""
    payload = {
        "delivery_id": row["id"],
        "campaign_id": row["campaign_id"],
        "email_account_id": row["email_account_id"],
        "recipient": row["recipient_email"],
        "message_id": row["message_id"],
        "smtp_code": row["smtp_code"],
    }
    tenant, delivery = row["tenant_id"], row["id"]
    return (
        (tenant, EventType.SENT, delivery, payload, f"delivery:{delivery}:sent"),
        (tenant, EventType.DELIVERED, delivery, payload, f"delivery:{delivery}:delivered"),
    )
