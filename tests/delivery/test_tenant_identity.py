"""Tenant-scoped sending identity (issue 16): a tenant sends only From domains it owns,
and a DKIM key only ever signs its own tenant's mail (database and file keys alike)."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from delivery.dkimsign import DkimKey, DkimKeyError
from delivery.jobs import create_handler
from delivery.service import load_file_keys
from delivery.store import ContextStore
from gateway.jobs import PermanentJobError
from tests.delivery.conftest import DOMAIN, TENANT, World, pem_of
from tests.delivery.test_send import run


async def test_from_an_unowned_domain_fails_permanently(world: World) -> None:
    """A campaign whose from_email is on a domain the tenant does not own is dead-lettered
    with a clear error; nothing is sent and no delivery is claimed."""
    await world.app.db.execute("UPDATE campaigns SET from_email = 'ceo@bank.test'")
    job = world.job(world.payload("ada@example.net"))
    with pytest.raises(PermanentJobError, match=r"'bank\.test' does not belong to tenant"):
        await run(world, job)
    assert world.peer.messages == []
    assert await world.app.db.fetchval("SELECT count(*) FROM email_deliveries") == 0


async def test_a_verified_tenant_domain_may_send_an_unverified_one_not(world: World) -> None:
    """A domain registered for the tenant sends once verified; a row without verified_at,
    or a row of another tenant, does not count."""
    world.sender.contexts = ContextStore(world.app.db, ttl_s=0.0)  # see each change
    await world.app.db.execute("UPDATE campaigns SET from_email = 'news@brand.test'")
    await world.app.db.execute(
        "INSERT INTO tenant_domains (domain, tenant_id) VALUES ('brand.test', $1)", TENANT
    )
    with pytest.raises(PermanentJobError, match="does not belong"):
        await run(world, world.job(world.payload("ada@example.net")))
    await world.app.db.execute(
        "UPDATE tenant_domains SET tenant_id = 'tenant_b', verified_at = now()"
    )
    with pytest.raises(PermanentJobError, match="does not belong"):
        await run(world, world.job(world.payload("ada@example.net")))
    await world.app.db.execute("UPDATE tenant_domains SET tenant_id = $1", TENANT)
    result = await run(world, world.job(world.payload("ada@example.net")))
    assert result["status"] == "sent"
    msg = email.message_from_bytes(world.peer.messages[0].content, policy=email.policy.default)
    assert msg["From"].addresses[0].domain == "brand.test"


async def test_another_tenants_key_never_signs(world: World) -> None:
    """The seeded tenant's DKIM keys for its domain are not used for tenant_b's mail from
    the same domain: tenant_b's message goes out unsigned."""
    async with world.app.db.acquire() as conn:
        await conn.execute(
            "INSERT INTO email_accounts (id, tenant_id, address, smtp_host, smtp_port,"
            " smtp_security) VALUES ('acct_b', 'tenant_b', $1, '127.0.0.1', $2, 'none')",
            f"other@{DOMAIN}",
            world.peer.port,
        )
        await conn.execute(
            "INSERT INTO email_templates (id, tenant_id, subject, text) VALUES"
            " ('tpl_b', 'tenant_b', 'Hi', 'Hello')"
        )
    assert len(await world.sender.keys_for(TENANT, DOMAIN)) == 2
    assert await world.sender.keys_for("tenant_b", DOMAIN) == []
    handler = create_handler(world.app, world.services)
    job = world.job(
        {
            "tenant_id": "tenant_b",
            "email_account_id": "acct_b",
            "template_id": "tpl_b",
            "recipient": "ada@example.net",
        }
    )
    result = await handler.run(job, handler.parse(job.payload))
    assert result["status"] == "sent"
    assert b"DKIM-Signature" not in world.peer.messages[0].content


def test_file_keys_are_bound_to_a_tenant(tmp_path: Path) -> None:
    """delivery_dkim_keys entries name their tenant; the old unbound form is refused with
    a message that says what to write."""
    path = tmp_path / "k.pem"
    path.write_bytes(pem_of(ed25519.Ed25519PrivateKey.generate()))
    keys = load_file_keys(f"t1:Mail.Example.test:s1:{path}")
    assert list(keys) == [("t1", "mail.example.test")]
    assert isinstance(keys[("t1", "mail.example.test")][0], DkimKey)
    with pytest.raises(DkimKeyError, match="tenant:domain:selector:path"):
        load_file_keys(f"mail.example.test:s1:{path}")
