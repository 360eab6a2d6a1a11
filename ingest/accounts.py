"""Mailbox accounts: the ``email_accounts`` rows ingest watches, and how they are written.

Passwords are sealed with :class:`gateway.secretkey.CredentialBox` before they reach the
database and opened only to log in; :class:`Account` keeps the sealed token, never the
plaintext, so neither its ``repr`` nor a log line can leak it. Every query names the tenant
except the daemon's own listing of all enabled accounts (it serves every tenant).
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from dataclasses import dataclass

import asyncpg

from gateway.secretkey import CredentialBox, SecretKeyError
from ingest.errors import AccountError
from ingest.imap import Endpoint

SECURITIES = ("tls", "starttls", "none")
_FOLDER_BAD = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Account:
    """One mailbox to watch (the password stays sealed)."""

    id: str
    tenant_id: str
    address: str
    imap_host: str
    imap_port: int
    imap_security: str
    imap_username: str
    password_enc: bytes
    master_user: str | None
    folders: tuple[str, ...]
    updated_at: dt.datetime | None = None

    def endpoint(self, box: CredentialBox) -> Endpoint:
        """Where and how to log in, with the password opened (raises AccountError)."""
        try:
            password = box.open(self.password_enc)
        except SecretKeyError as exc:
            raise AccountError(f"account {self.id}: {exc}") from None
        return Endpoint(
            host=self.imap_host,
            port=self.imap_port,
            security=self.imap_security,
            username=self.imap_username,
            password=password,
            master_user=self.master_user,
        )

    @property
    def version(self) -> tuple[object, ...]:
        """Changes when anything the watchers depend on changes (restart them then)."""
        return (
            self.imap_host,
            self.imap_port,
            self.imap_security,
            self.imap_username,
            self.password_enc,
            self.master_user,
            self.folders,
        )


def new_account_id() -> str:
    return f"acct_{secrets.token_hex(8)}"


def validate_folders(folders: list[str]) -> tuple[str, ...]:
    cleaned = []
    for folder in folders:
        name = folder.strip()
        if not name or len(name) > 500 or _FOLDER_BAD.search(name):
            raise AccountError(f"bad folder name {folder!r}")
        cleaned.append("INBOX" if name.upper() == "INBOX" else name)
    if not cleaned:
        raise AccountError("at least one folder is needed")
    return tuple(dict.fromkeys(cleaned))


_COLUMNS = """id, tenant_id, address, imap_host, imap_port, imap_security, imap_username,
imap_password_enc, imap_master_user, folders, updated_at"""


def _row(row: asyncpg.Record) -> Account:
    return Account(
        id=row["id"],
        tenant_id=row["tenant_id"],
        address=row["address"],
        imap_host=row["imap_host"],
        imap_port=row["imap_port"],
        imap_security=row["imap_security"],
        imap_username=row["imap_username"],
        password_enc=bytes(row["imap_password_enc"]),
        master_user=row["imap_master_user"],
        folders=tuple(row["folders"]),
        updated_at=row["updated_at"],
    )


async def add_account(
    db: asyncpg.Pool | asyncpg.Connection,
    box: CredentialBox,
    *,
    tenant_id: str,
    address: str,
    imap_host: str,
    imap_port: int,
    imap_security: str,
    username: str,
    password: str,
    master_user: str | None = None,
    folders: tuple[str, ...] = ("INBOX",),
) -> Account:
    """Insert a mailbox (password sealed). Raises AccountError on bad input or a duplicate."""
    if imap_security not in SECURITIES:
        raise AccountError(f"imap security must be one of {', '.join(SECURITIES)}")
    if not 1 <= imap_port <= 65535:
        raise AccountError(f"imap port {imap_port} out of range")
    if not tenant_id or not address or "@" not in address:
        raise AccountError("tenant and a mailbox address (with @) are required")
    if not password:
        raise AccountError("the password is empty")
    folders = validate_folders(list(folders))
    try:
        row = await db.fetchrow(
            f"""INSERT INTO email_accounts (id, tenant_id, address, imap_host, imap_port,
                imap_security, imap_username, imap_password_enc, imap_master_user, folders)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {_COLUMNS}""",  # noqa: S608 - fixed column list
            new_account_id(),
            tenant_id,
            address,
            imap_host,
            imap_port,
            imap_security,
            username,
            box.seal(password),
            master_user,
            list(folders),
        )
    except asyncpg.UniqueViolationError:
        raise AccountError(f"tenant {tenant_id} already has a mailbox {address}") from None
    assert row is not None
    return _row(row)


async def list_accounts(
    db: asyncpg.Pool | asyncpg.Connection, tenant_id: str | None = None
) -> list[Account]:
    """Enabled IMAP accounts of one tenant, or of every tenant (``None``: the daemon)."""
    rows = await db.fetch(
        f"""SELECT {_COLUMNS} FROM email_accounts
            WHERE enabled AND imap_host IS NOT NULL AND imap_password_enc IS NOT NULL
              AND ($1::text IS NULL OR tenant_id = $1)
            ORDER BY tenant_id, address""",  # noqa: S608 - fixed column list
        tenant_id,
    )
    return [_row(r) for r in rows]


async def get_account(
    db: asyncpg.Pool | asyncpg.Connection, tenant_id: str, account: str
) -> Account | None:
    """One tenant's account by id or address."""
    row = await db.fetchrow(
        f"""SELECT {_COLUMNS} FROM email_accounts
            WHERE tenant_id = $1 AND (id = $2 OR lower(address) = lower($2))""",  # noqa: S608
        tenant_id,
        account,
    )
    return _row(row) if row is not None else None


async def remove_account(
    db: asyncpg.Pool | asyncpg.Connection, tenant_id: str, account: str
) -> bool:
    """Delete one tenant's account (by id or address); its sync state goes with it."""
    result: str = await db.execute(
        "DELETE FROM email_accounts "
        "WHERE tenant_id = $1 AND (id = $2 OR lower(address) = lower($2))",
        tenant_id,
        account,
    )
    return not result.endswith(" 0")
