"""Fixtures for the platform jobs' tests: settings whose global relay is a scriptable SMTP
peer on the test's loop (the SMTP sink), CSV writers, a seeded campaign."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.app import App
from gateway.jobs.envelope import Job, new_job, parse_job
from gateway.settings import Settings
from tests.delivery.peer import ScriptedPeer

TENANT = "tenant_a"


@pytest.fixture
async def sink() -> AsyncIterator[ScriptedPeer]:
    """An SMTP peer that accepts everything (the relay's far side)."""
    peer = await ScriptedPeer(pipelining=True).start()
    yield peer
    await peer.stop()


@pytest.fixture
def settings(settings: Settings, sink: ScriptedPeer) -> Settings:
    """The harness's settings, with MAILGATE_DELIVERY_RELAY pointing at the sink."""
    return settings.model_copy(
        update={
            "delivery_relay": f"127.0.0.1:{sink.port}",
            "delivery_relay_security": "none",
            "delivery_dkim_signer_process": False,
            # A campaign's sends in seconds, not at a cold account's pace.
            "delivery_account_per_minute": 0,
            "delivery_account_per_hour": 0,
            "delivery_account_per_day": 0,
            "delivery_domain_per_minute": 0,
            "delivery_domain_concurrency": 0,
        }
    )


def job(queue: str, payload: dict[str, Any], **fields: Any) -> Job:
    return parse_job(json.dumps(new_job(payload, **fields)).encode(), queue)


def row_kind(i: int, invalid_every: int, duplicate_every: int) -> str:
    """``invalid``, ``duplicate`` (of row i-2, in another case) or ``new``."""
    if i % invalid_every == invalid_every - 1:
        return "invalid"
    if (
        i >= duplicate_every
        and i % duplicate_every == duplicate_every // 4
        and row_kind(i - 2, invalid_every, duplicate_every) == "new"
    ):
        return "duplicate"
    return "new"


def write_csv(
    path: Path,
    rows: int,
    *,
    header: bool = True,
    invalid_every: int = 20,
    duplicate_every: int = 20,
) -> tuple[set[str], int, int]:
    """``rows`` data rows (``Email,Name,City``): every ``invalid_every``-th address is bad,
    every ``duplicate_every``-th repeats an earlier one (upper-cased). The valid distinct
    addresses (normalised), the invalid count and the duplicate count."""
    valid: set[str] = set()
    invalid = duplicates = 0
    with path.open("w", newline="") as out:
        if header:
            out.write("Email,Name,City\r\n")
        for i in range(rows):
            kind = row_kind(i, invalid_every, duplicate_every)
            if kind == "invalid":
                email = f"broken{i}@@example"
                invalid += 1
            elif kind == "duplicate":
                email = f"USER{i - 2}@Example.com"
                duplicates += 1
            else:
                email = f"user{i}@example.com"
                valid.add(email)
            out.write(f'{email},"Name {i}",City{i % 7}\r\n')
    return valid, invalid, duplicates


async def seed_campaign(
    app: App, *, campaign: str = "camp_1", list_id: str = "list_1", status: str = "draft"
) -> None:
    """An account without its own SMTP endpoint (so the global relay sends), a template and
    a campaign on ``list_id``."""
    async with app.db.acquire() as conn:
        await conn.execute(
            "INSERT INTO email_accounts (id, tenant_id, address) VALUES ('acct_1', $1,"
            " 'ops@sender.test') ON CONFLICT DO NOTHING",
            TENANT,
        )
        await conn.execute(
            "INSERT INTO email_templates (id, tenant_id, subject, text) VALUES ('tpl_1', $1,"
            " 'Hello {{ name | default(\"there\") }}', 'Hi {{ email }}') ON CONFLICT DO NOTHING",
            TENANT,
        )
        await conn.execute(
            "INSERT INTO campaigns (id, tenant_id, status, email_account_id, template_id,"
            " from_email, list_id) VALUES ($1, $2, $3, 'acct_1', 'tpl_1', 'ops@sender.test', $4)",
            campaign,
            TENANT,
            status,
            list_id,
        )
