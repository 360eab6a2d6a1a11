"""``export.data``: a tenant's rows streamed to a file (CSV or JSON lines).

Rows come through a server-side cursor (bounded memory whatever the table's size) and are
written to a temp file next to the destination, which is renamed over the final name only
when complete and flushed to disk: a crash leaves no half file under the final name. The
result names the path, the row count, the size and the SHA-256 of the file; an
``export.completed`` event carries the same.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import hashlib
import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from campaigns import CampaignJobError
from campaigns.sources import allowed_roots, check_root, local_path
from gateway.app import App
from gateway.events import EventType, record_event
from gateway.jobs.contracts import ExportPayload
from gateway.jobs.keys import job_key
from gateway.retention import tenant_dirname

FETCH_ROWS = 2000


@dataclass(frozen=True)
class Kind:
    """One exportable kind: its columns and the query (tenant $1, filters $2.. in order:
    list_id, campaign_id, since, until)."""

    columns: tuple[str, ...]
    sql: str


_CONTACTS = """
SELECT c.id, c.email, c.name, c.fields, c.created_at, c.updated_at FROM contacts c
WHERE c.tenant_id = $1
  AND ($2::text IS NULL OR EXISTS (SELECT 1 FROM contact_list_members m
       WHERE m.tenant_id = $1 AND m.list_id = $2 AND m.contact_id = c.id))
  AND ($3::text IS NULL OR true)
  AND ($4::timestamptz IS NULL OR c.created_at >= $4)
  AND ($5::timestamptz IS NULL OR c.created_at < $5)
ORDER BY c.id
"""

_DELIVERIES = """
SELECT id, campaign_id, recipient_id, recipient_email, email_account_id, status, message_id,
       smtp_code, provider, provider_response, sent_at, bounced_at, bounce_type,
       bounce_reason, created_at
FROM email_deliveries WHERE tenant_id = $1
  AND ($2::text IS NULL OR true) AND ($3::text IS NULL OR campaign_id = $3)
  AND ($4::timestamptz IS NULL OR created_at >= $4)
  AND ($5::timestamptz IS NULL OR created_at < $5)
ORDER BY created_at, id
"""

_MESSAGES = """
SELECT storage_key, email_account_id, direction, message_type, from_email, to_email,
       subject, status, message_id, delivery_id, created_at
FROM email_messages WHERE tenant_id = $1 AND ($2::text IS NULL OR true)
  AND ($3::text IS NULL OR delivery_id IN (SELECT id FROM email_deliveries
       WHERE tenant_id = $1 AND campaign_id = $3))
  AND ($4::timestamptz IS NULL OR created_at >= $4)
  AND ($5::timestamptz IS NULL OR created_at < $5)
ORDER BY id
"""

_SUPPRESSIONS = """
SELECT email, reason, source, detail, created_at, expires_at FROM suppressions
WHERE tenant_id = $1 AND ($2::text IS NULL OR true) AND ($3::text IS NULL OR true)
  AND ($4::timestamptz IS NULL OR created_at >= $4)
  AND ($5::timestamptz IS NULL OR created_at < $5)
ORDER BY email
"""

KINDS: dict[str, Kind] = {
    "contacts": Kind(("id", "email", "name", "fields", "created_at", "updated_at"), _CONTACTS),
    "deliveries": Kind(
        (
            "id",
            "campaign_id",
            "recipient_id",
            "recipient_email",
            "email_account_id",
            "status",
            "message_id",
            "smtp_code",
            "provider",
            "provider_response",
            "sent_at",
            "bounced_at",
            "bounce_type",
            "bounce_reason",
            "created_at",
        ),
        _DELIVERIES,
    ),
    "messages": Kind(
        (
            "storage_key",
            "email_account_id",
            "direction",
            "message_type",
            "from_email",
            "to_email",
            "subject",
            "status",
            "message_id",
            "delivery_id",
            "created_at",
        ),
        _MESSAGES,
    ),
    "suppressions": Kind(
        ("email", "reason", "source", "detail", "created_at", "expires_at"), _SUPPRESSIONS
    ),
}

_SAFE = re.compile(r"[^A-Za-z0-9._-]")  # job ids in file names


def destination_for(app: App, job_id: str, payload: ExportPayload) -> Path:
    """The payload's ``file://`` destination, else ``data_dir/exports/<tenant>/``."""
    if payload.destination is not None:
        path = local_path(payload.destination)
        if not path.is_absolute():
            raise CampaignJobError(f"destination {payload.destination} is not an absolute path")
        check_root(path, allowed_roots(app.settings), "the destination")
        return path
    tenant = tenant_dirname(payload.tenant_id)
    name = f"{payload.kind}-{_SAFE.sub('_', job_id)}.{payload.format}"
    return Path(app.settings.data_dir) / "exports" / tenant / name


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return value


class Writer:
    """Encodes rows and writes them through a hash (runs in a thread, batch at a time)."""

    def __init__(self, handle: BinaryIO, columns: tuple[str, ...], fmt: str):
        self.handle = handle
        self.columns = columns
        self.fmt = fmt
        self.sha = hashlib.sha256()
        self.bytes = 0

    def _put(self, data: bytes) -> None:
        self.handle.write(data)
        self.sha.update(data)
        self.bytes += len(data)

    def header(self) -> None:
        if self.fmt == "csv":
            self.rows([self.columns], raw=True)

    def rows(self, rows: list[Any], *, raw: bool = False) -> None:
        buffer = io.StringIO()
        if self.fmt == "csv":
            out = csv.writer(buffer, lineterminator="\r\n")
            for row in rows:
                out.writerow(row if raw else [_text(row[c]) for c in self.columns])
        else:
            for row in rows:
                record = {c: _jsonable(row[c]) for c in self.columns}
                buffer.write(json.dumps(record, separators=(",", ":"), ensure_ascii=False))
                buffer.write("\n")
        self._put(buffer.getvalue().encode())


async def run_export(app: App, job_id: str, payload: ExportPayload) -> dict[str, Any]:
    """Write the export, rename it into place, record the event; the job's result."""
    kind = KINDS[payload.kind]
    final = destination_for(app, job_id, payload)
    await asyncio.to_thread(final.parent.mkdir, parents=True, exist_ok=True)
    temp = final.with_name(f".{final.name}.{_SAFE.sub('_', job_id)}.tmp")
    rows = 0
    handle = await asyncio.to_thread(temp.open, "wb")
    try:
        writer = Writer(handle, kind.columns, payload.format)
        await asyncio.to_thread(writer.header)
        async with app.db.acquire() as conn, conn.transaction(readonly=True):
            cursor = await conn.cursor(
                kind.sql,
                payload.tenant_id,
                payload.list_id,
                payload.campaign_id,
                payload.since,
                payload.until,
            )
            while True:
                batch = await cursor.fetch(FETCH_ROWS)
                if not batch:
                    break
                await asyncio.to_thread(writer.rows, batch)
                rows += len(batch)
                await app.redis.hset(job_key(job_id), mapping={"progress": rows})
        await asyncio.to_thread(_seal, handle)
        handle.close()
        await asyncio.to_thread(os.replace, temp, final)
    except BaseException:
        handle.close()
        temp.unlink(missing_ok=True)
        raise
    result = {
        "rows": rows,
        "path": str(final),
        "bytes": writer.bytes,
        "sha256": writer.sha.hexdigest(),
    }
    async with app.db.acquire() as conn:
        await record_event(
            conn,
            tenant_id=payload.tenant_id,
            event_type=EventType.EXPORT_COMPLETED,
            subject_id=job_id,
            payload={"job_id": job_id, "kind": payload.kind, **result},
            dedupe_key=f"export:{job_id}",
        )
    return result


def _seal(handle: BinaryIO) -> None:
    handle.flush()
    os.fsync(handle.fileno())
