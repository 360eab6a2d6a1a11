"""export.data (JSON lines round trip, filters, a crash leaves no file, allowed roots) and
maintenance.cleanup (exactly what is past retention, in batches, while ingest writes)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
from pathlib import Path

import pytest

from campaigns import CampaignJobError, ImportFileError
from campaigns.export import Writer, run_export
from campaigns.importer import Importer
from gateway.app import App
from gateway.jobs.contracts import ExportPayload, ImportPayload
from gateway.retention import cleanup
from tests.campaigns.conftest import TENANT, write_csv


async def test_export_jsonl_round_trip_and_filters(app: App, tmp_path: Path) -> None:
    """import → export (jsonl, to a file:// destination) → the same addresses, names and
    fields; another tenant's rows and rows outside since/until are not exported."""
    path = tmp_path / "in.csv"
    valid, _, _ = write_csv(path, 300)
    payload = ImportPayload(
        file_url=path.as_uri(),
        tenant_id=TENANT,
        mapping={"Email": "email", "Name": "name", "City": "city"},
        has_header=True,
        list_id="list_1",
    )
    await Importer(app, "imp", payload).run()
    await app.db.execute(
        "INSERT INTO contacts (id, tenant_id, email) VALUES ('other', 'tenant_b', 'b@x.test')"
    )
    dest = tmp_path / "out" / "contacts.jsonl"
    result = await run_export(
        app,
        "exp-1",
        ExportPayload(
            tenant_id=TENANT,
            kind="contacts",
            list_id="list_1",
            format="jsonl",
            destination=dest.as_uri(),
        ),
    )
    lines = (await asyncio.to_thread(dest.read_text)).splitlines()
    records = [json.loads(line) for line in lines]
    assert result["rows"] == len(records) == len(valid) and result["path"] == str(dest)
    assert {r["email"] for r in records} == valid
    ada = next(r for r in records if r["email"] == "user1@example.com")
    assert ada["name"] == "Name 1" and ada["fields"] == {"city": "City1"}
    future = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    empty = await run_export(
        app, "exp-2", ExportPayload(tenant_id=TENANT, kind="contacts", since=future)
    )
    assert empty["rows"] == 0
    assert (await asyncio.to_thread(Path(empty["path"]).read_text)).startswith("id,email,")


async def test_export_crash_leaves_no_file_and_roots_are_enforced(
    app: App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure mid-export leaves neither the final file nor its temp file; with
    file_roots set, a destination (or an import file) outside them is refused."""
    await app.db.executemany(
        "INSERT INTO suppressions (tenant_id, email, reason) VALUES ($1, $2, 'manual')",
        [(TENANT, f"s{i}@x.test") for i in range(5000)],
    )
    real_rows = Writer.rows
    calls = 0

    def failing(self: Writer, rows: list[object], *, raw: bool = False) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise OSError("disk full")
        real_rows(self, rows, raw=raw)

    monkeypatch.setattr(Writer, "rows", failing)
    dest = tmp_path / "sup.csv"
    with pytest.raises(OSError, match="disk full"):
        await run_export(
            app,
            "exp-x",
            ExportPayload(tenant_id=TENANT, kind="suppressions", destination=dest.as_uri()),
        )
    assert await asyncio.to_thread(lambda: list(tmp_path.iterdir())) == []
    monkeypatch.undo()
    app.settings = app.settings.model_copy(update={"file_roots": [str(tmp_path / "allowed")]})
    with pytest.raises(CampaignJobError, match="outside the allowed"):
        await run_export(
            app,
            "exp-y",
            ExportPayload(tenant_id=TENANT, kind="suppressions", destination=dest.as_uri()),
        )
    with pytest.raises(ImportFileError, match="outside the allowed"):
        await Importer(
            app,
            "imp-y",
            ImportPayload(file_url=dest.as_uri(), tenant_id=TENANT, mapping={"col_0": "email"}),
        ).run()


async def _content(app: App, key: str, *, age_days: int, retention_days: int = 30) -> None:
    created = dt.datetime.now(dt.UTC) - dt.timedelta(days=age_days)
    async with app.db.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO email_content (storage_key, tenant_id, created, retention_days)"
            " VALUES ($1, $2, $3, $4)",
            key,
            TENANT,
            created,
            retention_days,
        )
        await conn.execute(
            "INSERT INTO email_messages (storage_key, tenant_id, direction, dedupe_key)"
            " VALUES ($1, $2, 'inbound', $1)",
            key,
            TENANT,
        )
        await conn.execute(
            "INSERT INTO attachments (parent_storage_key, tenant_id, content) VALUES ($1, $2, 'x')",
            key,
            TENANT,
        )


async def test_cleanup_removes_exactly_what_is_past_retention_while_ingest_writes(
    app: App,
) -> None:
    """Back-dated content (with its message and attachment), old completed jobs and
    executions, old dispatched events and expired suppressions go; newer rows, running
    jobs and undispatched events stay; the dry run counts the same; inserts made while the
    cleanup runs (ingest) all succeed."""
    for i in range(120):
        await _content(app, f"old{i}", age_days=40)
    await _content(app, "long", age_days=40, retention_days=365)
    await _content(app, "new", age_days=5)
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=60)
    async with app.db.acquire() as conn:
        for jid, status, at in (
            ("j-old", "completed", old),
            ("j-new", "completed", None),
            ("j-run", "running", old),
        ):
            await conn.execute(
                "INSERT INTO jobs (id, tenant_id, queue_name, status, completed_at)"
                " VALUES ($1, $2, 'queue:bounce:process', $3, coalesce($4, now()))",
                jid,
                TENANT,
                status,
                at,
            )
        await conn.execute(
            "INSERT INTO job_executions (job_id, attempt, status, duration_ms, worker_id, at)"
            " VALUES ('j-old', 1, 'success', 1, 'w', $1), ('j-new', 1, 'success', 1, 'w', now())",
            old,
        )
        await conn.execute(
            "INSERT INTO events (tenant_id, type, payload, dedupe_key, created_at, dispatched_at)"
            " VALUES ($1, 'email.sent', '{}', 'e1', $2, $2), ($1, 'email.sent', '{}', 'e2', $2,"
            " NULL), ($1, 'email.sent', '{}', 'e3', now(), now())",
            TENANT,
            old,
        )
        await conn.execute(
            "INSERT INTO suppressions (tenant_id, email, reason, expires_at) VALUES"
            " ($1, 'gone@x.test', 'soft_bounce', now() - interval '1 hour'),"
            " ($1, 'kept@x.test', 'soft_bounce', now() + interval '1 day'),"
            " ($1, 'forever@x.test', 'hard_bounce', NULL)",
            TENANT,
        )
    # Files: an old copied import and an old export go; a new one, one outside the daemon's
    # directories and a symlink's target stay.
    data = Path(app.settings.data_dir)
    stamp = (dt.datetime.now(dt.UTC) - dt.timedelta(days=31)).timestamp()
    outside = data.parent / "outside.csv"
    outside.write_text("x")
    os.utime(outside, (stamp, stamp))
    for rel, old_file in (
        (f"imports/{TENANT}/import-1.csv", True),
        (f"exports/{TENANT}/contacts-1.csv", True),
        (f"exports/{TENANT}/contacts-2.csv", False),
    ):
        path = data / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("email\n")
        if old_file:
            os.utime(path, (stamp, stamp))
    (data / "imports" / TENANT / "link.csv").symlink_to(outside)
    expected = {
        "email_content": 120,
        "jobs": 1,
        "job_executions": 1,
        "import_checkpoints": 0,
        "events": 1,
        "metric_facts": 0,
        "suppressions": 1,
        "files": 2,
    }
    assert await cleanup(app.db, app.settings, dry_run=True) == expected

    async def ingest() -> int:
        written = 0
        for i in range(40):
            await _content(app, f"live{i}", age_days=0)
            written += 1
            await asyncio.sleep(0)
        return written

    deleted, written = await asyncio.gather(
        cleanup(app.db, app.settings, batch_rows=10), asyncio.wait_for(ingest(), 20)
    )
    assert deleted == expected and written == 40
    keys = {r["storage_key"] for r in await app.db.fetch("SELECT storage_key FROM email_content")}
    assert keys == {"long", "new"} | {f"live{i}" for i in range(40)}
    assert await app.db.fetchval("SELECT count(*) FROM email_messages") == 42
    assert await app.db.fetchval("SELECT count(*) FROM attachments") == 42
    assert {r["id"] for r in await app.db.fetch("SELECT id FROM jobs")} == {"j-new", "j-run"}
    assert {r["dedupe_key"] for r in await app.db.fetch("SELECT dedupe_key FROM events")} == {
        "e2",
        "e3",
    }
    emails = {r["email"] for r in await app.db.fetch("SELECT email FROM suppressions")}
    assert emails == {"kept@x.test", "forever@x.test"}
    assert await cleanup(app.db, app.settings, dry_run=True) == dict.fromkeys(expected, 0)
    left = sorted(p.name for p in await asyncio.to_thread(lambda: list(data.rglob("*.csv"))))
    assert left == ["contacts-2.csv", "link.csv"] and outside.exists()
