"""The incoming-email job and account ownership (issue 16): an email_account_id of another
tenant is refused, one of the job's own tenant is stored."""

from __future__ import annotations

import pytest

from gateway.app import App
from gateway.jobs import PermanentJobError
from ingest.jobs import handle_incoming_email
from tests.gateway.seedjobs import email_payload
from tests.gateway.test_email_processing import _job


async def test_account_of_another_tenant_is_refused(app: App) -> None:
    """An account registered for tenant_b cannot be named by tenant_abc's job (permanent
    error, nothing stored); tenant_b's own job with it is stored."""
    await app.db.execute(
        "INSERT INTO email_accounts (id, tenant_id, address) VALUES ('acct_b', 'tenant_b',"
        " 'b@b.test')"
    )
    with pytest.raises(PermanentJobError, match="'acct_b' belongs to another tenant"):
        await handle_incoming_email(app, *_job(email_payload(1, account="acct_b")))
    assert await app.db.fetchval("SELECT count(*) FROM email_messages") == 0
    stored = await handle_incoming_email(
        app, *_job(email_payload(1, account="acct_b", tenant="tenant_b"))
    )
    assert stored["created"]
    assert await app.db.fetchval("SELECT tenant_id FROM email_messages") == "tenant_b"
