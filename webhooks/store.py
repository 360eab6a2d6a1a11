"""PostgreSQL for webhooks: endpoints (tenant-scoped), their sealed secrets, the
(event, endpoint) deliveries the dispatcher fans out, and every attempt.

Secrets are sealed with the process secret (:class:`gateway.secretkey.CredentialBox`,
Fernet) like mailbox passwords: never stored or logged in clear. ``secrets_enc`` keeps
them newest first; all of them sign (rotation).
"""

from __future__ import annotations

import datetime as dt
import secrets as _secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from gateway.events import EventType
from gateway.secretkey import CredentialBox

ALL_EVENTS = "*"
KNOWN_EVENTS = frozenset(e.value for e in EventType) | {ALL_EVENTS}


@dataclass(frozen=True)
class Endpoint:
    """An endpoint with its secrets opened (newest first)."""

    id: str
    tenant_id: str
    url: str
    secrets: tuple[str, ...]
    event_types: tuple[str, ...]
    enabled: bool
    concurrency: int
    failing_since: dt.datetime | None = None
    disabled_reason: str | None = None

    def wants(self, event_type: str) -> bool:
        return ALL_EVENTS in self.event_types or event_type in self.event_types


def parse_event_types(text: str) -> tuple[str, ...]:
    """``email.sent,email.bounced`` → the types; an unknown one is a ValueError naming it."""
    types = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    if not types:
        raise ValueError("no event types given (comma-separated, e.g. email.sent,email.bounced)")
    unknown = [t for t in types if t not in KNOWN_EVENTS]
    if unknown:
        raise ValueError(
            f"unknown event type {', '.join(unknown)} (known: {', '.join(sorted(KNOWN_EVENTS))})"
        )
    return types


class EndpointStore:
    """Endpoints of every tenant; each call names the tenant."""

    def __init__(self, pool: asyncpg.Pool, box: CredentialBox):
        self.pool = pool
        self.box = box

    def _endpoint(self, row: asyncpg.Record) -> Endpoint:
        return Endpoint(
            id=row["id"],
            tenant_id=row["tenant_id"],
            url=row["url"],
            secrets=tuple(self.box.open(bytes(s)) for s in row["secrets_enc"]),
            event_types=tuple(row["event_types"]),
            enabled=row["enabled"],
            concurrency=row["concurrency"],
            failing_since=row["failing_since"],
            disabled_reason=row["disabled_reason"],
        )

    async def add(
        self,
        tenant: str,
        url: str,
        event_types: Sequence[str],
        secret: str,
        *,
        concurrency: int = 4,
    ) -> Endpoint:
        endpoint_id = "ep_" + _secrets.token_hex(8)
        row = await self.pool.fetchrow(
            "INSERT INTO webhook_endpoints (id, tenant_id, url, secrets_enc, event_types,"
            " concurrency) VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
            endpoint_id,
            tenant,
            url,
            [self.box.seal(secret)],
            list(event_types),
            concurrency,
        )
        return self._endpoint(row)

    async def get(self, tenant: str, endpoint_id: str) -> Endpoint | None:
        row = await self.pool.fetchrow(
            "SELECT * FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2", tenant, endpoint_id
        )
        return self._endpoint(row) if row else None

    async def list(self, tenant: str) -> list[Endpoint]:
        rows = await self.pool.fetch(
            "SELECT * FROM webhook_endpoints WHERE tenant_id = $1 ORDER BY created_at, id", tenant
        )
        return [self._endpoint(r) for r in rows]

    async def remove(self, tenant: str, endpoint_id: str) -> bool:
        done = await self.pool.execute(
            "DELETE FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2", tenant, endpoint_id
        )
        return bool(done.endswith(" 1"))

    async def add_secret(self, tenant: str, endpoint_id: str, secret: str, *, keep: int) -> bool:
        """Put ``secret`` first; keep at most ``keep`` secrets in all (1: drop the old)."""
        done = await self.pool.execute(
            "UPDATE webhook_endpoints SET secrets_enc = (ARRAY[$3::bytea] || secrets_enc)[1:$4],"
            " updated_at = now() WHERE tenant_id = $1 AND id = $2",
            tenant,
            endpoint_id,
            self.box.seal(secret),
            keep,
        )
        return bool(done.endswith(" 1"))

    async def enable(self, tenant: str, endpoint_id: str) -> bool:
        done = await self.pool.execute(
            "UPDATE webhook_endpoints SET enabled = true, disabled_at = NULL,"
            " disabled_reason = NULL, failing_since = NULL, updated_at = now()"
            " WHERE tenant_id = $1 AND id = $2",
            tenant,
            endpoint_id,
        )
        return bool(done.endswith(" 1"))


# -- the (event, endpoint) a job is about -----------------------------------------------------

_WORK = """
SELECT e.id AS event_id, e.type, e.subject_id, e.payload, e.created_at,
       w.id AS endpoint_id, w.tenant_id, w.url, w.secrets_enc, w.event_types, w.enabled,
       w.concurrency, w.failing_since, w.disabled_reason,
       d.status AS delivery_status, d.attempts
FROM events e
JOIN webhook_endpoints w ON w.tenant_id = e.tenant_id AND w.id = $3
LEFT JOIN webhook_deliveries d ON d.event_id = e.id AND d.endpoint_id = w.id
WHERE e.tenant_id = $1 AND e.id = $2
"""


@dataclass(frozen=True)
class Work:
    """One event for one endpoint, and how far its delivery got."""

    event_id: int
    event_type: str
    subject_id: str | None
    payload: dict[str, Any]
    created_at: dt.datetime
    endpoint: Endpoint
    delivery_status: str | None
    attempts: int


async def load_work(
    pool: asyncpg.Pool, store: EndpointStore, tenant: str, event_id: int, endpoint_id: str
) -> Work | None:
    row = await pool.fetchrow(_WORK, tenant, event_id, endpoint_id)
    if row is None:
        return None
    endpoint = Endpoint(
        id=row["endpoint_id"],
        tenant_id=row["tenant_id"],
        url=row["url"],
        secrets=tuple(store.box.open(bytes(s)) for s in row["secrets_enc"]),
        event_types=tuple(row["event_types"]),
        enabled=row["enabled"],
        concurrency=row["concurrency"],
        failing_since=row["failing_since"],
        disabled_reason=row["disabled_reason"],
    )
    payload = row["payload"] if isinstance(row["payload"], dict) else {}
    return Work(
        row["event_id"],
        row["type"],
        row["subject_id"],
        payload,
        row["created_at"],
        endpoint,
        row["delivery_status"],
        int(row["attempts"] or 0),
    )


@dataclass(frozen=True)
class Attempt:
    """What one POST got: the code (None: no answer), latency and error text."""

    code: int | None
    latency_ms: float
    error: str | None = None
    body: str = ""

    @property
    def ok(self) -> bool:
        return self.code is not None and 200 <= self.code < 300

    @property
    def status(self) -> str:
        if self.ok:
            return "success"
        return "gone" if self.code == 410 else "failed"


async def record_attempt(
    conn: asyncpg.Connection,
    work: Work,
    attempt: Attempt,
    *,
    number: int,
    webhook_id: str,
    job_id: str | None,
) -> None:
    """The attempt row and the delivery's state (the caller's transaction)."""
    ep = work.endpoint
    await conn.execute(
        "INSERT INTO webhook_attempts (tenant_id, event_id, endpoint_id, status, response_code,"
        " error, attempt, latency_ms, webhook_id, job_id)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        ep.tenant_id,
        work.event_id,
        ep.id,
        attempt.status,
        attempt.code,
        (attempt.error or "")[:500] or None,
        number,
        attempt.latency_ms,
        webhook_id,
        job_id,
    )
    await conn.execute(
        """
        INSERT INTO webhook_deliveries (tenant_id, event_id, endpoint_id, attempts, status,
            last_code, delivered_at)
        VALUES ($1, $2, $3, 1, $4, $5, CASE WHEN $4 = 'delivered' THEN now() END)
        ON CONFLICT (event_id, endpoint_id) DO UPDATE SET
            attempts = webhook_deliveries.attempts + 1, last_code = EXCLUDED.last_code,
            status = CASE WHEN webhook_deliveries.status = 'delivered' THEN 'delivered'
                          ELSE EXCLUDED.status END,
            delivered_at = coalesce(webhook_deliveries.delivered_at, EXCLUDED.delivered_at)
        """,
        ep.tenant_id,
        work.event_id,
        ep.id,
        "delivered" if attempt.ok else "pending",
        attempt.code,
    )
    if attempt.ok:
        await conn.execute(
            "UPDATE webhook_endpoints SET failing_since = NULL WHERE tenant_id = $1 AND id = $2"
            " AND failing_since IS NOT NULL",
            ep.tenant_id,
            ep.id,
        )
    else:
        await conn.execute(
            "UPDATE webhook_endpoints SET failing_since = coalesce(failing_since, now())"
            " WHERE tenant_id = $1 AND id = $2",
            ep.tenant_id,
            ep.id,
        )


async def failing_for_s(conn: asyncpg.Connection, tenant: str, endpoint_id: str) -> float:
    """Seconds the endpoint has failed every attempt (0 when it is not failing)."""
    value = await conn.fetchval(
        "SELECT extract(epoch FROM now() - failing_since)::float8 FROM webhook_endpoints"
        " WHERE tenant_id = $1 AND id = $2",
        tenant,
        endpoint_id,
    )
    return float(value or 0.0)


async def disable(conn: asyncpg.Connection, tenant: str, endpoint_id: str, reason: str) -> bool:
    """Disable an endpoint with its reason; True when this call disabled it."""
    done = await conn.fetchval(
        "UPDATE webhook_endpoints SET enabled = false, disabled_at = now(),"
        " disabled_reason = $3, updated_at = now()"
        " WHERE tenant_id = $1 AND id = $2 AND enabled RETURNING 1",
        tenant,
        endpoint_id,
        reason,
    )
    return done is not None


async def mark(conn: asyncpg.Connection, work: Work, status: str) -> None:
    """Set the delivery's status without an attempt (dropped: the endpoint is disabled)."""
    await conn.execute(
        "INSERT INTO webhook_deliveries (tenant_id, event_id, endpoint_id, status)"
        " VALUES ($1, $2, $3, $4) ON CONFLICT (event_id, endpoint_id) DO UPDATE"
        " SET status = EXCLUDED.status WHERE webhook_deliveries.status = 'pending'",
        work.endpoint.tenant_id,
        work.event_id,
        work.endpoint.id,
        status,
    )
