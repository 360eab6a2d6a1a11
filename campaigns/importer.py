"""``import.contacts``: a CSV of contacts streamed into ``contacts`` and a list, in bounded
memory, resumable after a crash with exact counts.

Per batch of rows (parsed in a thread while the previous batch is written)::

    COPY the valid rows into a temp table
    → one INSERT … ON CONFLICT (tenant, lower(email)) DO UPDATE into contacts
      (the last row of an address in the batch wins; ``import_job_id`` marks the rows this
      import wrote, so an address met again further down is a duplicate, not an update)
    → list members added, ``member_count`` raised by the members that are new
    → the checkpoint (rows done, counts, first 100 invalid rows) in the same transaction

A run of the same job after a crash reads the checkpoint, skips the rows it covers and
carries on, so every valid row lands once and ``rows = imported + updated + invalid +
duplicates``. Progress (rows done) goes to the job hash for ``mailgate jobs show``. At the
end an ``import.completed`` event is recorded (the seed's "notify the user").
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from campaigns import CampaignJobError
from campaigns.csvrows import MAX_INVALID_KEPT, Batch, RowParser, lines_of
from campaigns.sources import open_source
from gateway.app import App
from gateway.events import EventType, record_event
from gateway.jobs.contracts import ImportPayload
from gateway.jobs.keys import job_key

log = logging.getLogger(__name__)

BATCH_ROWS = 20000

_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS import_stage (
    line BIGINT, email TEXT, name TEXT, fields TEXT
) ON COMMIT DELETE ROWS
"""

# prev: each address's current writer, one index probe per address (a correlated
# subquery): a join would let the planner, with no statistics on the temp table, hash the
# tenant's whole contact set for every batch (quadratic over a large import).
_UPSERT = """
WITH src AS (
    SELECT DISTINCT ON (email) email, name, fields::jsonb AS fields
    FROM import_stage ORDER BY email, line DESC
), prev AS (
    SELECT src.email, (SELECT c.import_job_id FROM contacts c
                       WHERE c.tenant_id = $1 AND lower(c.email) = src.email) AS job
    FROM src
), up AS (
    INSERT INTO contacts AS c (id, tenant_id, email, name, fields, import_job_id)
    SELECT 'ct_' || substr(md5($1 || ':' || email), 1, 24), $1, email, name, fields, $2
    FROM src
    ON CONFLICT (tenant_id, lower(email)) DO UPDATE SET
        name = coalesce(EXCLUDED.name, c.name), fields = c.fields || EXCLUDED.fields,
        import_job_id = EXCLUDED.import_job_id, updated_at = now()
    RETURNING c.id, lower(c.email) AS email, (xmax = 0) AS inserted
), mem AS (
    INSERT INTO contact_list_members (tenant_id, list_id, contact_id)
    SELECT $1, $3, id FROM up WHERE $3::text IS NOT NULL
    ON CONFLICT DO NOTHING RETURNING 1
), counted AS (
    UPDATE contact_lists SET member_count = member_count + (SELECT count(*) FROM mem),
        updated_at = now()
    WHERE tenant_id = $1 AND id = $3 RETURNING 1
)
SELECT count(*) FILTER (WHERE up.inserted) AS imported,
       count(*) FILTER (WHERE NOT up.inserted AND prev.job IS DISTINCT FROM $2) AS updated,
       count(*) FILTER (WHERE NOT up.inserted AND prev.job = $2) AS again,
       (SELECT count(*) FROM counted) AS lists
FROM up JOIN prev USING (email)
"""

_SAVE = """
INSERT INTO import_checkpoints (job_id, tenant_id, list_id, rows_done, counts, invalid)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (job_id) DO UPDATE SET rows_done = EXCLUDED.rows_done,
    counts = EXCLUDED.counts, invalid = EXCLUDED.invalid, updated_at = now()
"""


@dataclass
class Tally:
    """The import's counts so far (what the checkpoint keeps and the result reports)."""

    rows: int = 0
    imported: int = 0
    updated: int = 0
    invalid: int = 0
    duplicates: int = 0
    invalid_rows: list[dict[str, Any]] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {
            "rows": self.rows,
            "imported": self.imported,
            "updated": self.updated,
            "invalid": self.invalid,
            "duplicates": self.duplicates,
        }

    @classmethod
    def restore(cls, counts: dict[str, Any], invalid_rows: list[Any]) -> Tally:
        return cls(**{k: int(counts.get(k, 0)) for k in cls().counts()}, invalid_rows=invalid_rows)


async def ensure_list(conn: asyncpg.Connection, tenant: str, list_id: str) -> None:
    """Create the list if it does not exist; refuse another tenant's list id."""
    await conn.execute(
        "INSERT INTO contact_lists (id, tenant_id, name) VALUES ($1, $2, $1)"
        " ON CONFLICT (id) DO NOTHING",
        list_id,
        tenant,
    )
    owner = await conn.fetchval("SELECT tenant_id FROM contact_lists WHERE id = $1", list_id)
    if owner != tenant:
        raise CampaignJobError(f"list {list_id!r} belongs to another tenant (pick another id)")


class Importer:
    """One import job's run (a new instance per attempt)."""

    def __init__(self, app: App, job_id: str, payload: ImportPayload, batch_rows: int = BATCH_ROWS):
        self.app = app
        self.job_id = job_id
        self.payload = payload
        self.batch_rows = batch_rows
        self.tally = Tally()

    async def run(self) -> dict[str, Any]:
        p = self.payload
        async with self.app.db.acquire() as conn:
            if p.list_id is not None:
                await ensure_list(conn, p.tenant_id, p.list_id)
            row = await conn.fetchrow(
                "SELECT tenant_id, rows_done, counts, invalid FROM import_checkpoints"
                " WHERE job_id = $1",
                self.job_id,
            )
            if row is not None:
                if row["tenant_id"] != p.tenant_id:
                    raise CampaignJobError(f"job id {self.job_id!r} was another tenant's import")
                self.tally = Tally.restore(row["counts"], row["invalid"])
            await conn.execute(_STAGE)
            async with open_source(p.file_url, self.app.settings) as read:
                parser = RowParser(
                    lines_of(read),
                    p.mapping,
                    has_header=p.has_header,
                    delimiter=p.delimiter,
                    skip_rows=self.tally.rows,
                    batch_size=self.batch_rows,
                )
                await self._pump(conn, parser)
            result = self.result()
            await record_event(
                conn,
                tenant_id=p.tenant_id,
                event_type=EventType.IMPORT_COMPLETED,
                subject_id=self.job_id,
                payload={"job_id": self.job_id, "file_url": p.file_url, **result},
                dedupe_key=f"import:{self.job_id}",
            )
        return result

    def result(self) -> dict[str, Any]:
        return {
            **self.tally.counts(),
            "list_id": self.payload.list_id,
            "invalid_rows": self.tally.invalid_rows,
        }

    async def _pump(self, conn: asyncpg.Connection, parser: RowParser) -> None:
        """Parse the next batch in a thread while this one is written."""
        pending = asyncio.ensure_future(asyncio.to_thread(parser.next_batch))
        try:
            while True:
                batch = await pending
                if batch is None:
                    return
                pending = asyncio.ensure_future(asyncio.to_thread(parser.next_batch))
                await self._write(conn, batch)
                await self.app.redis.hset(
                    job_key(self.job_id), mapping={"progress": self.tally.rows}
                )
        finally:
            if not pending.done():
                pending.cancel()
                # The thread finishes its batch regardless; wait so the source stays open.
                with _suppress_all():
                    await pending

    async def _write(self, conn: asyncpg.Connection, batch: Batch) -> None:
        p = self.payload
        t = self.tally
        async with conn.transaction():
            imported = updated = again = 0
            if batch.valid:
                await conn.copy_records_to_table(
                    "import_stage",
                    records=[(r.line, r.email, r.name, r.fields) for r in batch.valid],
                    columns=["line", "email", "name", "fields"],
                )
                counts = await conn.fetchrow(_UPSERT, p.tenant_id, self.job_id, p.list_id)
                imported, updated, again = counts["imported"], counts["updated"], counts["again"]
            distinct = imported + updated + again
            t.rows += batch.rows
            t.imported += imported
            t.updated += updated
            t.duplicates += again + (len(batch.valid) - distinct)
            t.invalid += len(batch.invalid)
            room = MAX_INVALID_KEPT - len(t.invalid_rows)
            t.invalid_rows.extend(i.as_dict() for i in batch.invalid[: max(room, 0)])
            await conn.execute(
                _SAVE,
                self.job_id,
                p.tenant_id,
                p.list_id,
                t.rows,
                t.counts(),
                t.invalid_rows,
            )


class _suppress_all:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True
