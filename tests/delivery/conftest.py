"""Fixtures for delivery tests: a seeded tenant (account, campaign, template, contact, DKIM
keys), a scriptable SMTP peer on the test's loop, and a Sender bound to both."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from delivery.dkimsign import DkimKey
from delivery.service import SENDER, Sender
from gateway.app import App
from gateway.jobs.envelope import Job, new_job, parse_job
from gateway.secretkey import CredentialBox
from gateway.services import Services
from tests.delivery.peer import ScriptedPeer

TENANT = "tenant_a"
DOMAIN = "sender.test"


def pem_of(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass
class World:
    app: App
    peer: ScriptedPeer
    keys: dict[bytes, bytes]  # DNS name -> TXT record
    services: Services

    @property
    def sender(self) -> Sender:
        return self.services.get(SENDER)

    def dns(self, name: bytes, timeout: int = 5) -> bytes | None:
        return self.keys.get(name)

    def job(self, payload: dict[str, Any], **fields: Any) -> Job:
        body = new_job(payload, **fields)
        return parse_job(json.dumps(body).encode(), "queue:email-sending")

    def payload(self, recipient: str, **extra: Any) -> dict[str, Any]:
        p: dict[str, Any] = {
            "tenant_id": TENANT,
            "campaign_id": "camp_1",
            "recipient": recipient,
            "template_id": "tpl_1",
            "variables": {"first_name": "Ada", "company": "Analytical"},
        }
        p.update(extra)
        return p


async def seed(
    app: App,
    port: int,
    *,
    security: str = "none",
    username: str | None = None,
    password: str | None = None,
) -> dict[bytes, bytes]:
    box = CredentialBox(app.secret_key)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ed_key = ed25519.Ed25519PrivateKey.generate()
    records: dict[bytes, bytes] = {}
    async with app.db.acquire() as conn:
        await conn.execute(
            "INSERT INTO email_accounts (id, tenant_id, address, smtp_host, smtp_port,"
            " smtp_security, smtp_username, smtp_password_enc)"
            " VALUES ('acct_1', $1, $2, '127.0.0.1', $3, $4, $5, $6)",
            TENANT,
            f"ops@{DOMAIN}",
            port,
            security,
            username,
            box.seal(password) if password else None,
        )
        await conn.execute(
            "INSERT INTO email_templates (id, tenant_id, subject, html, text) VALUES"
            " ('tpl_1', $1, 'Hello {{ first_name }}',"
            " '<p>Hi {{ first_name }} at {{ company }}</p>', NULL)",
            TENANT,
        )
        await conn.execute(
            "INSERT INTO campaigns (id, tenant_id, email_account_id, template_id, from_email,"
            " from_name) VALUES ('camp_1', $1, 'acct_1', 'tpl_1', $2, 'Ops Team')",
            TENANT,
            f"ops@{DOMAIN}",
        )
        await conn.execute(
            "INSERT INTO contacts (id, tenant_id, email, name, fields) VALUES"
            " ('ct_1', $1, 'ada@example.net', 'Ada L', '{\"company\": \"Engines\"}'::jsonb)",
            TENANT,
        )
        for selector, key in (("rsa1", rsa_key), ("ed1", ed_key)):
            parsed = DkimKey.from_pem(DOMAIN, selector, pem_of(key))
            await conn.execute(
                "INSERT INTO dkim_keys (tenant_id, domain, selector, algorithm, private_key_enc,"
                " public_key) VALUES ($1, $2, $3, $4, $5, $6)",
                TENANT,
                DOMAIN,
                selector,
                parsed.algorithm,
                box.seal(pem_of(key).decode()),
                parsed.public_txt,
            )
            records[f"{selector}._domainkey.{DOMAIN}.".encode()] = parsed.dns_record()
    return records


@pytest.fixture(params=["pipelining", "stepwise"])
async def peer(request: pytest.FixtureRequest) -> AsyncIterator[ScriptedPeer]:
    """A started scriptable SMTP peer (plain, no AUTH), with and without PIPELINING."""
    p = await ScriptedPeer(pipelining=request.param == "pipelining").start()
    yield p
    await p.stop()


@pytest.fixture
async def world(app: App, peer: ScriptedPeer) -> AsyncIterator[World]:
    """The seeded tenant sending to ``peer``; its Sender is closed afterwards."""
    keys = await seed(app, peer.port)
    services = Services(app)
    try:
        yield World(app, peer, keys, services)
    finally:
        await services.aclose()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def new_id() -> str:
    return uuid.uuid4().hex
