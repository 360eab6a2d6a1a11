"""Migrations and schema: idempotent, concurrent-safe, tenant-scoped, deduplicating."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from gateway.storage import available_migrations, connect, migrate, schema_version


async def test_migrate_twice_is_a_no_op(empty_database_url: str) -> None:
    """The first migrate applies every migration, the second applies none."""
    conn = await connect(empty_database_url)
    try:
        assert await schema_version(conn) == 0
        first = await migrate(conn)
        assert [m.version for m in first] == [m.version for m in available_migrations()]
        assert await migrate(conn) == []
        assert await schema_version(conn) == first[-1].version
    finally:
        await conn.close()


async def test_parallel_migrations_apply_once(empty_database_url: str) -> None:
    """Two instances migrating an empty database at once: one applies, one no-ops."""
    a = await connect(empty_database_url)
    b = await connect(empty_database_url)
    try:
        results = await asyncio.gather(migrate(a), migrate(b))
    finally:
        await a.close()
        await b.close()
    sizes = sorted(len(r) for r in results)
    assert sizes == [0, len(available_migrations())]


async def test_every_table_carries_tenant_id(database_url: str) -> None:
    """Every business table has a NOT NULL-able tenant_id column (design §2)."""
    conn = await asyncpg.connect(database_url)
    try:
        tables = {
            r["table_name"]
            for r in await conn.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema='public'"
            )
        }
        with_tenant = {
            r["table_name"]
            for r in await conn.fetch(
                "SELECT table_name FROM information_schema.columns "
                "WHERE table_schema='public' AND column_name='tenant_id'"
            )
        }
    finally:
        await conn.close()
    expected = {
        "email_content",
        "email_messages",
        "attachments",
        "email_accounts",
        "jobs",
        "job_executions",
        "campaigns",
        "email_templates",
        "contacts",
        "email_deliveries",
        "suppressions",
        "warmup_configs",
        "campaign_metrics",
        "events",
        "webhook_endpoints",
        "webhook_attempts",
        "mailbox_sync",
    }
    assert expected <= tables
    assert tables - with_tenant == {"schema_migrations"}


async def test_unique_keys_make_redelivery_a_no_op(database_url: str) -> None:
    """The same message identity for the same tenant inserts once; another tenant is apart."""
    conn = await asyncpg.connect(database_url)
    try:
        for key, tenant in (("k1", "tenant_a"), ("k2", "tenant_a"), ("k3", "tenant_b")):
            await conn.execute(
                "INSERT INTO email_content (storage_key, tenant_id) VALUES ($1, $2)", key, tenant
            )
        insert = (
            "INSERT INTO email_messages (storage_key, tenant_id, direction, dedupe_key) "
            "VALUES ($1, $2, 'inbound', $3) ON CONFLICT (tenant_id, dedupe_key) DO NOTHING"
        )
        assert await conn.execute(insert, "k1", "tenant_a", "job:acct_1:<m@x>") == "INSERT 0 1"
        assert await conn.execute(insert, "k2", "tenant_a", "job:acct_1:<m@x>") == "INSERT 0 0"
        assert await conn.execute(insert, "k3", "tenant_b", "job:acct_1:<m@x>") == "INSERT 0 1"
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(
                "INSERT INTO suppressions (tenant_id, email, reason) VALUES "
                "('t', 'a@b.c', 'manual'), ('t', 'a@b.c', 'complaint')"
            )
    finally:
        await conn.close()


async def test_opaque_text_ids(database_url: str) -> None:
    """Producer ids such as tenant_abc, camp_xyz, tpl_123 and acct_1 are stored as given."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO email_templates (id, tenant_id, subject) "
            "VALUES ('tpl_123', 'tenant_abc', 's')"
        )
        await conn.execute(
            "INSERT INTO campaigns (id, tenant_id, template_id, email_account_id) "
            "VALUES ('camp_xyz', 'tenant_abc', 'tpl_123', 'acct_1')"
        )
        row = await conn.fetchrow("SELECT * FROM campaigns WHERE id = 'camp_xyz'")
    finally:
        await conn.close()
    assert row is not None and row["template_id"] == "tpl_123"
