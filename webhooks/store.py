"""PostgreSQL for webhooks: endpoints (tenant-scoped), their sealed secrets, the
(event, endpoint) deliveries (a row from its first attempt, drop or failure on), and every attempt.

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
        self._opened: dict[bytes, str] = {}

    def open_secrets(self, sealed: Sequence[bytes]) -> tuple[str, ...]:
        """The secrets in clear (each Fernet token opened once per process: ~50 us each)."""
        out = []
        for token in sealed:
            key = bytes(token)
            secret = self._opened.get(key)
            if secret is None:
                if len(self._opened) > 10000:
                    self._opened.clear()
                secret = self._opened[key] = self.box.open(key)
            out.append(secret)
        return tuple(out)

    def _endpoint(self, row: asyncpg.Record) -> Endpoint:
        return Endpoint(
            id=row["id"],
            tenant_id=row["tenant_id"],
            url=row["url"],
            secrets=self.open_secrets(row["secrets_enc"]),
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

# One row per (tenant, event, endpoint) asked for (ordinality i); a missing one has none.
# Each lookup is a subquery by primary key that the planner may not flatten (OFFSET 0): a
# prepared statement runs on a generic plan after five executions, and one that joined
# events on `tenant_id` (an index scan of every event of the tenant per item, the ids
# filtered afterwards: 100 x 4,400 rows, 0.3 s a batch) made the read slower with every
# event recorded (bench/webhooks.py, "round-to-round decay").
_WORK = """
SELECT v.i, e.id AS event_id, e.type, e.subject_id, e.payload, e.created_at,
       w.id AS endpoint_id, w.tenant_id, w.url, w.secrets_enc, w.event_types, w.enabled,
       w.concurrency, w.failing_since, w.disabled_reason,
       d.status AS delivery_status, d.attempts
FROM unnest($1::text[], $2::bigint[], $3::text[]) WITH ORDINALITY
    AS v(tenant_id, event_id, endpoint_id, i)
JOIN LATERAL (SELECT * FROM events WHERE id = v.event_id OFFSET 0) e
    ON e.tenant_id = v.tenant_id
JOIN LATERAL (SELECT * FROM webhook_endpoints WHERE id = v.endpoint_id OFFSET 0) w
    ON w.tenant_id = v.tenant_id
LEFT JOIN LATERAL (
    SELECT status, attempts FROM webhook_deliveries
    WHERE event_id = v.event_id AND endpoint_id = v.endpoint_id OFFSET 0
) d ON true
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
    pool: asyncpg.Pool, store: EndpointStore, items: Sequence[tuple[str, int, str]]
) -> list[Work | None]:
    """The work of many (tenant, event id, endpoint id) in one query, in order."""
    rows = await pool.fetch(
        _WORK, [t for t, _, _ in items], [e for _, e, _ in items], [p for _, _, p in items]
    )
    found: list[Work | None] = [None] * len(items)
    for row in rows:
        endpoint = Endpoint(
            id=row["endpoint_id"],
            tenant_id=row["tenant_id"],
            url=row["url"],
            secrets=store.open_secrets(row["secrets_enc"]),
            event_types=tuple(row["event_types"]),
            enabled=row["enabled"],
            concurrency=row["concurrency"],
            failing_since=row["failing_since"],
            disabled_reason=row["disabled_reason"],
        )
        payload = row["payload"] if isinstance(row["payload"], dict) else {}
        found[row["i"] - 1] = Work(
            row["event_id"],
            row["type"],
            row["subject_id"],
            payload,
            row["created_at"],
            endpoint,
            row["delivery_status"],
            int(row["attempts"] or 0),
        )
    return found


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


@dataclass(frozen=True)
class Success:
    """A delivered attempt on its way into the database (batched)."""

    work: Work
    attempt: Attempt
    number: int
    webhook_id: str
    job_id: str | None


# Delivered attempts of a batch in one statement: the attempt rows, the deliveries
# delivered, the endpoints no longer failing. Two items for one (event, endpoint) in a
# batch make the upsert fail; the group commit then runs them one at a time.
_SUCCESSES = """
WITH v AS (
    SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::int[], $5::int[],
        $6::float8[], $7::text[], $8::text[])
        AS v(tenant_id, event_id, endpoint_id, code, attempt, latency_ms, webhook_id, job_id)
), a AS (
    INSERT INTO webhook_attempts (tenant_id, event_id, endpoint_id, status, response_code,
        attempt, latency_ms, webhook_id, job_id)
    SELECT tenant_id, event_id, endpoint_id, 'success', code, attempt, latency_ms,
        webhook_id, job_id FROM v
), d AS (
    INSERT INTO webhook_deliveries (tenant_id, event_id, endpoint_id, attempts, status,
        last_code, delivered_at)
    SELECT tenant_id, event_id, endpoint_id, 1, 'delivered', code, now() FROM v
    ON CONFLICT (event_id, endpoint_id) DO UPDATE SET
        attempts = webhook_deliveries.attempts + 1, last_code = EXCLUDED.last_code,
        status = 'delivered',
        delivered_at = coalesce(webhook_deliveries.delivered_at, EXCLUDED.delivered_at)
)
UPDATE webhook_endpoints w SET failing_since = NULL
FROM (SELECT DISTINCT tenant_id, endpoint_id FROM v) e
WHERE w.tenant_id = e.tenant_id AND w.id = e.endpoint_id AND w.failing_since IS NOT NULL
"""


async def record_successes(pool: asyncpg.Pool, items: Sequence[Success]) -> list[None]:
    """Record many delivered attempts in one statement (its own transaction)."""
    await pool.execute(
        _SUCCESSES,
        [s.work.endpoint.tenant_id for s in items],
        [s.work.event_id for s in items],
        [s.work.endpoint.id for s in items],
        [s.attempt.code for s in items],
        [s.number for s in items],
        [s.attempt.latency_ms for s in items],
        [s.webhook_id for s in items],
        [s.job_id for s in items],
    )
    return [None] * len(items)


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
