"""Mailbox accounts: the ``email_accounts`` rows ingest watches, and how they are written.

An account has an IMAP endpoint (what ingest watches) and an SMTP endpoint (what delivery
sends through; without one the global relay ``delivery_relay`` is used). Either may be
missing, not both.

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

from gateway.imapendpoint import Endpoint
from gateway.secretkey import CredentialBox, SecretKeyError
from ingest.errors import AccountError, DuplicateAccount

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


@dataclass(frozen=True)
class Summary:
    """An account as ``accounts list`` shows it: both endpoints, never a secret."""

    id: str
    tenant_id: str
    address: str
    imap: str | None
    smtp: str | None
    folders: tuple[str, ...]
    enabled: bool


# Columns an add or update may set, with the check each value must pass. Passwords arrive
# in the clear and are sealed before they reach a query.
_HOST = re.compile(r"^[A-Za-z0-9._:\[\]-]{1,253}$")


def _check_changes(box: CredentialBox, changes: dict[str, object]) -> dict[str, object]:
    """Validated column values for ``changes`` (``imap_password``/``smtp_password`` sealed
    into their ``*_enc`` columns). Raises AccountError naming the bad option."""
    out: dict[str, object] = {}
    for name, value in changes.items():
        if name.endswith("_host"):
            if value is not None and not _HOST.match(str(value)):
                raise AccountError(f"--{name.replace('_', '-')}: not a host name: {value!r}")
        elif name.endswith("_port"):
            if value is not None and not 1 <= int(str(value)) <= 65535:
                raise AccountError(f"--{name.replace('_', '-')} {value} is out of range 1-65535")
        elif name.endswith("_security"):
            if value is not None and value not in SECURITIES:
                raise AccountError(
                    f"--{name.replace('_', '-')} must be one of {', '.join(SECURITIES)}"
                )
        elif name.endswith("_password"):
            if value is not None and not value:
                raise AccountError(f"the {name.split('_')[0].upper()} password is empty")
            out[f"{name}_enc"] = box.seal(str(value)) if value is not None else None
            continue
        elif name == "folders":
            folders = value if isinstance(value, list | tuple) else ["INBOX"]
            value = list(validate_folders([str(f) for f in folders]))
        elif name not in ("imap_username", "imap_master_user", "smtp_username", "enabled"):
            raise AccountError(f"unknown account setting {name!r}")
        out[name] = value
    return out


async def add_account(
    db: asyncpg.Pool | asyncpg.Connection,
    box: CredentialBox,
    *,
    tenant_id: str,
    address: str,
    imap_host: str | None,
    imap_port: int = 993,
    imap_security: str = "tls",
    username: str | None = None,
    password: str | None = None,
    master_user: str | None = None,
    folders: tuple[str, ...] = ("INBOX",),
    smtp_host: str | None = None,
    smtp_port: int | None = None,
    smtp_security: str | None = None,
    smtp_username: str | None = None,
    smtp_password: str | None = None,
) -> Account | None:
    """Insert an account (passwords sealed); returns its IMAP view, or None for an
    account that only sends. Raises AccountError on bad input or a duplicate."""
    if not tenant_id or not address or "@" not in address:
        raise AccountError("tenant and a mailbox address (with @) are required")
    if imap_host is None and smtp_host is None:
        raise AccountError("give --imap-host (to watch), --smtp-host (to send), or both")
    if imap_host is not None and not password:
        raise AccountError("the IMAP password is empty (--password-env or --password-file)")
    changes: dict[str, object] = {"smtp_host": smtp_host, "smtp_port": smtp_port}
    changes.update(smtp_security=smtp_security, smtp_username=smtp_username)
    changes["smtp_password"] = smtp_password
    if imap_host is not None:
        changes.update(imap_host=imap_host, imap_port=imap_port, imap_security=imap_security)
        changes.update(imap_username=username or address, imap_password=password)
        changes.update(imap_master_user=master_user, folders=folders)
    columns = _check_changes(box, changes)
    names = ["id", "tenant_id", "address", *columns]
    values = [new_account_id(), tenant_id, address, *columns.values()]
    placeholders = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    try:
        row = await db.fetchrow(
            f"INSERT INTO email_accounts ({', '.join(names)}) VALUES ({placeholders}) "  # noqa: S608 - names come from _check_changes
            f"RETURNING {_COLUMNS}",
            *values,
        )
    except asyncpg.UniqueViolationError:
        raise DuplicateAccount(f"tenant {tenant_id} already has a mailbox {address}") from None
    assert row is not None
    return _row(row) if row["imap_host"] is not None else None


async def update_account(
    db: asyncpg.Pool | asyncpg.Connection,
    box: CredentialBox,
    tenant_id: str,
    account: str,
    changes: dict[str, object],
) -> str | None:
    """Change the given settings of one tenant's account (by id or address); returns its
    id, or None when the tenant has no such account. Watchers notice the change on their
    next read of the accounts (``ingest_account_poll_s``)."""
    columns = _check_changes(box, changes)
    if not columns:
        raise AccountError("nothing to change: give at least one option")
    sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(columns, start=3))
    found: str | None = await db.fetchval(
        f"UPDATE email_accounts SET {sets}, updated_at = now() "  # noqa: S608 - names checked
        "WHERE tenant_id = $1 AND (id = $2 OR lower(address) = lower($2)) RETURNING id",
        tenant_id,
        account,
        *columns.values(),
    )
    return found


async def summaries(db: asyncpg.Pool | asyncpg.Connection, tenant_id: str | None) -> list[Summary]:
    """Every account (enabled or not) of one tenant or of all, for listing."""
    rows = await db.fetch(
        """SELECT id, tenant_id, address, imap_host, imap_port, imap_security, smtp_host,
                  smtp_port, smtp_security, folders, enabled
           FROM email_accounts WHERE ($1::text IS NULL OR tenant_id = $1)
           ORDER BY tenant_id, address""",
        tenant_id,
    )

    def endpoint(r: asyncpg.Record, kind: str) -> str | None:
        host = r[f"{kind}_host"]
        if host is None:
            return None
        port = r[f"{kind}_port"] or ""
        return f"{host}:{port}/{r[f'{kind}_security'] or 'starttls'}"

    return [
        Summary(
            id=r["id"],
            tenant_id=r["tenant_id"],
            address=r["address"],
            imap=endpoint(r, "imap"),
            smtp=endpoint(r, "smtp"),
            folders=tuple(r["folders"]),
            enabled=r["enabled"],
        )
        for r in rows
    ]


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
