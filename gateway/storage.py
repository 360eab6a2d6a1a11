"""PostgreSQL access: the asyncpg pool and the versioned SQL migrations.

Migrations are plain SQL files ``gateway/migrations/NNNN_name.sql`` shipped in the package.
:func:`migrate` applies the pending ones in order, each in its own transaction, under a
PostgreSQL advisory lock: two instances migrating at once serialise on the lock, the first
applies, the second finds nothing to do.
"""

from __future__ import annotations

import json
import logging
import re
import socket
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from gateway.errors import BackendUnavailable

log = logging.getLogger(__name__)

# pg_advisory_lock key for migrations: any constant unique to mailgate ("mailgate" in ASCII).
MIGRATION_LOCK_KEY = 0x6D61696C67617465

_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class StorageError(Exception):
    """The database cannot be reached or refused a statement we expected to work."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available_migrations() -> list[Migration]:
    """The migrations shipped in the package, ordered by version."""
    found: list[Migration] = []
    for entry in resources.files("gateway.migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise StorageError(f"duplicate migration versions: {versions}")
    return found


async def migrate(conn: asyncpg.Connection) -> list[Migration]:
    """Apply pending migrations; returns the ones this call applied (empty: up to date)."""
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
            " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        applied = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        done: list[Migration] = []
        for migration in available_migrations():
            if migration.version in applied:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
            log.info(
                "applied migration",
                extra={"version": migration.version, "migration": migration.name},
            )
            done.append(migration)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)


async def schema_version(conn: asyncpg.Connection) -> int:
    """The highest applied migration version (0 on an empty database)."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return 0
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations"))


async def _init_connection(conn: asyncpg.Connection) -> None:
    # JSON/JSONB as Python values in both directions.
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(
            typename, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )


async def _no_reset(conn: asyncpg.Connection) -> None:
    return None


def address_of(url: str) -> str:
    """``host:port/database`` of a URL, without its credentials (for messages and logs)."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{host}:{port or 5432}{parts.path or '/'}"


def unavailable(exc: BaseException, url: str) -> BackendUnavailable:
    """A connection failure as one line naming the server and the fix."""
    where = address_of(url)
    if isinstance(
        exc, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError
    ):
        return BackendUnavailable(
            f"PostgreSQL at {where} refused the login: {exc} "
            "(check the user and password in MAILGATE_DATABASE_URL)"
        )
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return BackendUnavailable(
            f"PostgreSQL at {where}: {exc} (create the database, or fix MAILGATE_DATABASE_URL)"
        )
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, TimeoutError):
        reason = "no answer in time"
    elif isinstance(exc, ConnectionRefusedError):
        reason = "connection refused"
    elif isinstance(exc, socket.gaierror):
        reason = "the host name does not resolve"
    elif isinstance(exc, OSError) and exc.strerror:
        reason = exc.strerror
    return BackendUnavailable(
        f"cannot connect to PostgreSQL at {where}: {reason} "
        "(is it running? check MAILGATE_DATABASE_URL)"
    )


_CONNECT_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


async def connect(url: str, *, timeout_s: float = 10.0) -> asyncpg.Connection:
    """One connection with mailgate's codecs (CLI commands, migrations); a server that
    cannot be reached is :class:`~gateway.errors.BackendUnavailable`."""
    try:
        conn = await asyncpg.connect(url, timeout=timeout_s)
    except _CONNECT_ERRORS as exc:
        raise unavailable(exc, url) from exc
    await _init_connection(conn)
    return conn


async def create_pool(
    url: str,
    *,
    min_size: int = 2,
    max_size: int = 20,
    connect_timeout_s: float = 10.0,
    command_timeout_s: float = 30.0,
) -> asyncpg.Pool:
    """The process's pool. ``reset=None``: our code leaves no session state behind, and the
    reset query asyncpg runs on every release costs a round trip on the hot path
    (``reset=_no_reset``)."""
    try:
        pool: asyncpg.Pool = await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            timeout=connect_timeout_s,
            command_timeout=command_timeout_s,
            init=_init_connection,
            max_inactive_connection_lifetime=300.0,
            reset=_no_reset,
        )
    except _CONNECT_ERRORS as exc:
        raise unavailable(exc, url) from exc
    return pool


def jsonable(value: Any) -> Any:
    """Round-trip through JSON so only JSON types go into a JSONB parameter."""
    return json.loads(json.dumps(value, default=str))


# SQLSTATE classes that mean "try again later": connection exception, insufficient
# resources, operator intervention (shutdown, crash recovery), transaction rollback.
_TRANSIENT_CLASSES = ("08", "53", "57", "40")


def is_transient(exc: BaseException) -> bool:
    """True when a database error is about availability, not about the statement or data:
    retrying the same statement later may succeed."""
    if isinstance(exc, OSError | TimeoutError | asyncpg.InterfaceError):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", "") or ""
        return state[:2] in _TRANSIENT_CLASSES
    return False
