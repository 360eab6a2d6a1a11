"""Helpers for ingest tests: mailboxes on the private Dovecot, messages, APPEND, polling."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import aioimaplib

from gateway.app import App
from gateway.secretkey import CredentialBox
from ingest.accounts import Account, add_account
from tests.daemon import poll  # noqa: F401 - the helpers' poll, shared
from tests.peers.dovecot import Dovecot

PDF_200K = b"%PDF-1.4\n" + os.urandom(200 * 1024) + b"\n%%EOF\n"


@dataclass
class Mailbox:
    address: str
    password: str


def new_mailbox(dovecot: Dovecot, prefix: str = "u") -> Mailbox:
    """A fresh user on the shared Dovecot (unique name, so tests never share mail)."""
    address = f"{prefix}{secrets.token_hex(5)}@ingest.test"
    password = secrets.token_hex(8)
    dovecot.add_user(address, password)
    return Mailbox(address, password)


async def add(app: App, dovecot: Dovecot, box: Mailbox, tenant: str = "t1", **kw: Any) -> Account:
    return await add_account(
        app.db,
        CredentialBox(app.secret_key),
        tenant_id=tenant,
        address=box.address,
        imap_host=dovecot.host,
        imap_port=dovecot.port,
        imap_security="none",
        username=box.address,
        password=kw.pop("password", box.password),
        **kw,
    )


def message(n: int, *, to: str = "me@ingest.test", pdf: bool = False, **headers: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Sender {n} <sender{n}@example.test>"
    msg["To"] = to
    msg["Subject"] = headers.pop("Subject", f"message {n}")
    msg["Message-ID"] = headers.pop("Message_ID", f"<m{n}.{secrets.token_hex(6)}@example.test>")
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(f"Hello number {n}\n")
    if pdf:
        msg.add_attachment(PDF_200K, maintype="application", subtype="pdf", filename=f"doc{n}.pdf")
    return msg.as_bytes().replace(b"\n", b"\r\n")


class Appender:
    """An IMAP client that APPENDs messages (as a mail client or an MTA would)."""

    def __init__(self, dovecot: Dovecot, box: Mailbox):
        self.dovecot, self.box = dovecot, box
        self.client: aioimaplib.IMAP4 | None = None

    async def __aenter__(self) -> Appender:
        self.client = aioimaplib.IMAP4(self.dovecot.host, self.dovecot.port, timeout=30)
        await self.client.wait_hello_from_server()
        res = await self.client.login(self.box.address, self.box.password)
        assert res.result == "OK", res
        return self

    async def append(self, raw: bytes, folder: str = "INBOX") -> float:
        assert self.client is not None
        res = await self.client.append(raw, mailbox=folder)
        assert res.result == "OK", res
        return time.monotonic()

    async def __aexit__(self, *exc: object) -> None:
        assert self.client is not None
        with contextlib.suppress(Exception):  # the server may be gone in fault tests
            await asyncio.wait_for(self.client.logout(), 5)


async def count(app: App, account_id: str) -> int:
    return int(
        await app.db.fetchval(
            "SELECT count(*) FROM email_messages WHERE email_account_id = $1", account_id
        )
    )
