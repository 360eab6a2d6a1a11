"""Provider selection at send time (seed 004 email.send step 3): the account's own
endpoint, else the tenant's relay, else the global relay; the fallback relay after a 4xx
or an unreachable primary; the provider recorded on the delivery."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from delivery.jobs import create_handler
from gateway.app import App
from gateway.embedded import free_port
from gateway.jobs.contracts import EMAIL_SENDING
from gateway.services import Services
from tests.campaigns.conftest import TENANT, job
from tests.delivery.peer import ScriptedPeer


@pytest.fixture
async def other() -> AsyncIterator[ScriptedPeer]:
    """A second SMTP peer (the account's own server, or the tenant's relay)."""
    peer = await ScriptedPeer().start()
    yield peer
    await peer.stop()


async def send(
    app: App, services: Services, to: str, campaign: str, tenant: str = TENANT
) -> dict[str, Any]:
    handler = create_handler(app, services)
    payload = {"tenant_id": tenant, "campaign_id": campaign, "recipient": to}
    the_job = job(EMAIL_SENDING, payload, id=f"s-{to}")
    result: dict[str, Any] = await handler.run(the_job, handler.parse(payload))
    return result


async def provider_of(app: App, to: str) -> str:
    return str(
        await app.db.fetchval(
            "SELECT provider FROM email_deliveries WHERE recipient_email = $1", to
        )
    )


async def account_and_campaign(app: App, tenant: str, name: str, port: int | None) -> None:
    """Account ``acct_<name>`` (its own endpoint on ``port``, or none) and campaign
    ``camp_<name>`` sending through it."""
    await app.db.execute(
        "INSERT INTO email_accounts (id, tenant_id, address, smtp_host, smtp_port,"
        " smtp_security) VALUES ($1, $2, $1 || '@sender.test', $3, $4, 'none')",
        f"acct_{name}",
        tenant,
        "127.0.0.1" if port else None,
        port,
    )
    await app.db.execute(
        "INSERT INTO email_templates (id, tenant_id, subject, text) VALUES ($1, $2, 'Hi',"
        " 'Hello') ON CONFLICT DO NOTHING",
        f"tpl_{name}",
        tenant,
    )
    await app.db.execute(
        "INSERT INTO campaigns (id, tenant_id, status, email_account_id, template_id,"
        " from_email) VALUES ($1, $2, 'sending', $3, $4, 'ops@sender.test')",
        f"camp_{name}",
        tenant,
        f"acct_{name}",
        f"tpl_{name}",
    )


async def test_provider_selection_and_fallback(
    app: App, services: Services, sink: ScriptedPeer, other: ScriptedPeer
) -> None:
    """Global relay (the sink) when nothing else; the tenant's relay when it has one; the
    account's own endpoint above both; a 4xx there goes to the fallback relay at once, and
    so does an unreachable primary (delivery_fallback_after_s = 0)."""
    app.settings = app.settings.model_copy(
        update={
            "delivery_fallback_relay": f"127.0.0.1:{sink.port}",
            "delivery_fallback_security": "none",
            "delivery_fallback_after_s": 0.0,
        }
    )
    await account_and_campaign(app, TENANT, "plain", None)
    await account_and_campaign(app, "tenant_b", "b", None)
    await account_and_campaign(app, TENANT, "own", other.port)
    await account_and_campaign(app, TENANT, "dead", free_port())
    await app.db.execute(
        "INSERT INTO tenant_relays (tenant_id, host, port, security) VALUES ('tenant_b',"
        " '127.0.0.1', $1, 'none')",
        other.port,
    )
    other.script.rcpt["c@x.test"] = "451 4.7.1 greylisted, try again"
    cases = [
        ("a@x.test", "camp_plain", TENANT, "relay"),
        ("b@x.test", "camp_b", "tenant_b", "tenant_relay"),
        ("o@x.test", "camp_own", TENANT, "account"),
        ("c@x.test", "camp_own", TENANT, "fallback"),
        ("d@x.test", "camp_dead", TENANT, "fallback"),
    ]
    for to, campaign, tenant, provider in cases:
        result = await send(app, services, to, campaign, tenant)
        assert result["status"] == "sent", (to, result)
        assert await provider_of(app, to) == provider, to
    assert [m.rcpt_tos for m in other.messages] == [["b@x.test"], ["o@x.test"]]
    assert sorted(r for m in sink.messages for r in m.rcpt_tos) == [
        "a@x.test",
        "c@x.test",
        "d@x.test",
    ]
