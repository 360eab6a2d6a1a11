"""Retention cleanup (``maintenance.cleanup``, ``mailgate cleanup``): what is past its
retention is deleted in small batches, so no statement holds locks long enough to block
ingest (each batch is its own short transaction and skips rows another one has locked).

What goes (every predicate optionally scoped to one tenant):

- ``email_content`` older than its own ``retention_days`` (its message, attachments,
  bounce receipt and ingest fingerprint go with it: ON DELETE CASCADE);
- completed ``jobs``, ``job_executions`` and import checkpoints older than
  ``retention_jobs_days``;
- dispatched ``events`` (and their webhook attempts) and counted ``metric_facts`` older than
  ``retention_events_days``;
- ``suppressions`` whose ``expires_at`` has passed.

Owned by ``gateway/`` because it owns storage; the job handler and the CLI both call
:func:`cleanup`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import asyncpg

from gateway.settings import Settings


@dataclass(frozen=True)
class Target:
    name: str
    table: str
    # $1 tenant (NULL: all), $2 jobs cutoff days, $3 events cutoff days
    where: str


TARGETS: Final[tuple[Target, ...]] = (
    Target(
        "email_content",
        "email_content",
        "created < now() - make_interval(days => retention_days)",
    ),
    Target(
        "jobs", "jobs", "status = 'completed' AND completed_at < now() - make_interval(days => $2)"
    ),
    Target("job_executions", "job_executions", "at < now() - make_interval(days => $2)"),
    Target(
        "import_checkpoints",
        "import_checkpoints",
        "updated_at < now() - make_interval(days => $2)",
    ),
    Target(
        "events",
        "events",
        "dispatched_at IS NOT NULL AND created_at < now() - make_interval(days => $3)",
    ),
    Target("metric_facts", "metric_facts", "created_at < now() - make_interval(days => $3)"),
    Target("suppressions", "suppressions", "expires_at IS NOT NULL AND expires_at < now()"),
)


def _scoped(target: Target) -> str:
    return f"({target.where}) AND ($1::text IS NULL OR tenant_id = $1)"


# The table and predicate come from TARGETS (constants), never from input.
def _count_sql(target: Target) -> str:
    return (
        f"SELECT count(*) FROM {target.table} WHERE {_scoped(target)}"  # noqa: S608
        " AND $2::int = $2 AND $3::int = $3"
    )


def _delete_sql(target: Target) -> str:
    return (
        f"DELETE FROM {target.table} WHERE ctid = ANY(ARRAY("  # noqa: S608
        f"SELECT ctid FROM {target.table} WHERE {_scoped(target)} AND $2::int = $2"
        f" AND $3::int = $3 LIMIT $4 FOR UPDATE SKIP LOCKED))"
    )


async def cleanup(
    pool: asyncpg.Pool,
    settings: Settings,
    *,
    tenant_id: str | None = None,
    dry_run: bool = False,
    batch_rows: int | None = None,
) -> dict[str, int]:
    """Rows deleted (or, with ``dry_run``, that would be) per target."""
    batch = batch_rows or settings.cleanup_batch_rows
    args = (tenant_id, settings.retention_jobs_days, settings.retention_events_days)
    out: dict[str, int] = {}
    for target in TARGETS:
        if dry_run:
            out[target.name] = int(await pool.fetchval(_count_sql(target), *args))
            continue
        total = 0
        sql = _delete_sql(target)
        while True:
            status = await pool.execute(sql, *args, batch)
            deleted = int(status.split()[-1])
            total += deleted
            if deleted < batch:
                break
        out[target.name] = total
    return out
