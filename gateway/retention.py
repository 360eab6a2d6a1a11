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
- ``suppressions`` whose ``expires_at`` has passed;
- files under ``data_dir/imports`` and ``data_dir/exports`` (the CSVs ``mailgate import``
  copied in, the export files) not modified for ``retention_jobs_days``: the jobs that name
  them are gone by then.

Owned by ``gateway/`` because it owns storage; the job handler and the CLI both call
:func:`cleanup`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import stat
import time
from dataclasses import dataclass
from pathlib import Path
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


#: The daemon's own file directories under data_dir (one subdirectory per tenant).
FILE_DIRS: Final = ("imports", "exports")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def tenant_dirname(tenant_id: str) -> str:
    """A tenant's directory name under ``data_dir/imports`` and ``data_dir/exports``."""
    return _UNSAFE.sub("_", tenant_id)


def old_files(settings: Settings, tenant_id: str | None = None) -> list[Path]:
    """Regular files under the daemon's file directories (one tenant's, with ``tenant_id``)
    not modified for ``retention_jobs_days``. Symbolic links are neither followed nor
    listed: nothing outside those directories is ever touched."""
    cutoff = time.time() - settings.retention_jobs_days * 86400
    roots = [Path(settings.data_dir) / d for d in FILE_DIRS]
    if tenant_id is not None:
        roots = [root / tenant_dirname(tenant_id) for root in roots]
    found: list[Path] = []
    for root in roots:
        if root.is_symlink() or not root.is_dir():
            continue
        for dirpath, _dirs, names in os.walk(root):
            for name in names:
                path = Path(dirpath) / name
                with contextlib.suppress(OSError):
                    info = path.lstat()
                    if stat.S_ISREG(info.st_mode) and info.st_mtime < cutoff:
                        found.append(path)
    return found


def _unlink(paths: list[Path]) -> int:
    deleted = 0
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            deleted += 1
    return deleted


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
    files = await asyncio.to_thread(old_files, settings, tenant_id)
    out["files"] = len(files) if dry_run else await asyncio.to_thread(_unlink, files)
    return out
