"""PostgreSQL for delivery: what a send needs (tenant-scoped) and the delivery rows.

Every query names the tenant. The campaign, template, account, warmup ramp and DKIM keys
change rarely and are read for every send, so :class:`ContextStore` keeps them for a few
seconds (``CACHE_TTL_S``); the contact, the suppression check and the delivery row are
read and written per send.

The delivery row is the idempotency record: one row per (tenant, idempotency key), the
key being the job's ``idempotency_key`` or its id. :meth:`DeliveryStore.claim` writes it
``sending`` (or ``suppressed``) before the SMTP transaction in ONE statement, and only
while it is not final; a job run again finds a ``sent`` (or failed, suppressed, expired)
row and sends nothing.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg

from delivery.errors import PayloadError

CACHE_TTL_S = 5.0
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

    async def contact(self, tenant: str, contact_id: str | None, email: str) -> Contact | None:
        if contact_id is not None:
            row = await self.pool.fetchrow(
                "SELECT id, email, name, fields FROM contacts WHERE tenant_id = $1 AND id = $2",
                tenant,
                contact_id,
            )
        else:
            row = await self.pool.fetchrow(
                "SELECT id, email, name, fields FROM contacts"
                " WHERE tenant_id = $1 AND lower(email) = lower($2)",
                tenant,
                email,
            )
        if row is None:
            return None
        fields = row["fields"] if isinstance(row["fields"], dict) else {}
        return Contact(row["id"], row["email"], row["name"], fields)


@dataclass(frozen=True)
class Claim:
    """The delivery row after a claim: ``send`` True when this run must send."""

    delivery_id: str
    status: str
    send: bool
    smtp_code: int | None = None
    provider_response: str | None = None


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
WITH sup AS (
    SELECT EXISTS (
        SELECT 1 FROM suppressions WHERE tenant_id = $2 AND email = lower($6)
        AND (expires_at IS NULL OR expires_at > now())) AS s
)
INSERT INTO email_deliveries AS d (id, tenant_id, idempotency_key, campaign_id, recipient_id,
    recipient_email, email_account_id, job_id, status, attempt_count)
SELECT $1, $2, $3, $4, $5, $6, $7, $8,
       CASE WHEN $9::boolean THEN 'expired' WHEN sup.s THEN 'suppressed' ELSE 'sending' END, 1
FROM sup
ON CONFLICT (tenant_id, idempotency_key) DO UPDATE
    SET status = EXCLUDED.status, attempt_count = d.attempt_count + 1, updated_at = now(),
        job_id = EXCLUDED.job_id
    WHERE d.status IN ('queued', 'sending', 'deferred')
RETURNING id, status
"""


class DeliveryStore:
    """Writes ``email_deliveries`` rows (and their campaign counters)."""

    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool

    async def claim(self, new: NewDelivery, *, expired: bool) -> Claim:
        """Write the row ``sending`` (``suppressed``/``expired``) unless it is final."""
        delivery_id = delivery_id_for(new.tenant_id, new.idempotency_key)
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                _CLAIM,
                delivery_id,
                new.tenant_id,
                new.idempotency_key,
                new.campaign_id,
                new.recipient_id,
                new.recipient_email,
                new.email_account_id,
                new.job_id,
                expired,
            )
            if row is not None:
                return Claim(row["id"], row["status"], row["status"] == "sending")
            final = await conn.fetchrow(
                "SELECT id, status, smtp_code, provider_response FROM email_deliveries"
                " WHERE tenant_id = $1 AND idempotency_key = $2",
                new.tenant_id,
                new.idempotency_key,
            )
        assert final is not None
        return Claim(
            final["id"], final["status"], False, final["smtp_code"], final["provider_response"]
        )

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
    ) -> bool:
        """Set the outcome of an attempt; False when the row was already final.

        Campaign counters are not touched here: one hot ``campaign_metrics`` row updated
        by every send would serialise all senders of a campaign; the analytics job
        aggregates ``email_deliveries`` instead (bounces still count theirs).
        """
        changed = await self.pool.fetchval(
            """
            UPDATE email_deliveries SET status = $3, message_id = COALESCE($4, message_id),
                smtp_code = $5, enhanced_status = $6, provider_response = $7,
                sent_at = CASE WHEN $3 = 'sent' THEN now() ELSE sent_at END,
                bounce_type = COALESCE($8, bounce_type),
                bounce_reason = COALESCE($9, bounce_reason), updated_at = now()
            WHERE tenant_id = $1 AND id = $2 AND status IN ('queued', 'sending', 'deferred')
            RETURNING 1
            """,
            tenant,
            delivery_id,
            status,
            message_id,
            smtp_code,
            enhanced,
            (response or "")[:1000] or None,
            bounce_type,
            bounce_reason,
        )
        return bool(changed)
