"""The test harness: real PostgreSQL and Redis (and, through tests.peers, Dovecot, Postfix,
smtp-sink and a TCP proxy), each private, on free loopback ports.

PostgreSQL and Redis come from ``MAILGATE_TEST_DATABASE_URL`` / ``MAILGATE_TEST_REDIS_URL``
when set, otherwise from private instances started here with the same embedded-server code
``mailgate run`` uses. Each test gets a fresh database cloned from a migrated template (a
few tens of milliseconds) and a flushed Redis. A missing server fails the run: nothing is
skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from gateway.app import App, Urls, open_app
from gateway.embedded import EmbeddedError, EmbeddedPostgres, EmbeddedRedis
from gateway.services import Services
from gateway.settings import Settings, load_settings
from gateway.storage import migrate

pytest_plugins = ["tests.peers.fixtures"]

TEMPLATE_DB = "mailgate_template"
_db_counter = itertools.count()


def _private_dir(name: str) -> Path:
    """A directory of this session's own for a server's data. Not under pytest's temp root:
    another pytest session on the machine prunes old numbered folders there, which would
    delete a running server's data under it."""
    return Path(tempfile.mkdtemp(prefix=f"mailgate-test-{name}-"))


def _with_database(url: str, database: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{database}"


@pytest.fixture(scope="session")
def pg_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a PostgreSQL server for the whole session (env or a private instance)."""
    url = os.environ.get("MAILGATE_TEST_DATABASE_URL")
    if url:
        yield url
        return
    root = _private_dir("postgres")
    server = EmbeddedPostgres(root)
    try:
        url = server.start(timeout_s=60)
    except EmbeddedError as exc:
        pytest.fail(f"cannot start a private PostgreSQL: {exc}")
    try:
        yield url
    finally:
        server.stop(force=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_template(pg_server_url: str) -> str:
    """Name of a migrated template database each test clones."""

    async def build() -> None:
        conn = await asyncpg.connect(pg_server_url)
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE_DB}")
            await conn.execute(f"CREATE DATABASE {TEMPLATE_DB}")
        finally:
            await conn.close()
        conn = await asyncpg.connect(_with_database(pg_server_url, TEMPLATE_DB))
        try:
            await migrate(conn)
        finally:
            await conn.close()

    asyncio.run(build())
    return TEMPLATE_DB


@contextlib.asynccontextmanager
async def _scratch_database(server_url: str, options: str) -> AsyncIterator[str]:
    """A database created for one test (``CREATE DATABASE ... options``), dropped after."""
    name = f"t_{os.getpid()}_{next(_db_counter)}"
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f"CREATE DATABASE {name} {options}")
    finally:
        await conn.close()
    try:
        yield _with_database(server_url, name)
    finally:
        conn = await asyncpg.connect(server_url)
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await conn.close()


@pytest.fixture
async def database_url(pg_server_url: str, pg_template: str) -> AsyncIterator[str]:
    """A fresh, migrated database for one test (dropped afterwards)."""
    async with _scratch_database(pg_server_url, f"TEMPLATE {pg_template}") as url:
        yield url


@pytest.fixture
async def empty_database_url(pg_server_url: str) -> AsyncIterator[str]:
    """A fresh database with no schema at all (for migration tests)."""
    async with _scratch_database(pg_server_url, "") as url:
        yield url


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis | None]:
    """A private Redis for the session (None when MAILGATE_TEST_REDIS_URL is set)."""
    if os.environ.get("MAILGATE_TEST_REDIS_URL"):
        yield None
        return
    root = _private_dir("redis")
    server = EmbeddedRedis(root)
    try:
        server.start(timeout_s=30)
    except EmbeddedError as exc:
        pytest.fail(f"cannot start a private Redis: {exc}")
    try:
        yield server
    finally:
        server.stop(force=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def redis_url(redis_server: EmbeddedRedis | None) -> str:
    """URL of a flushed Redis database for one test."""
    url = os.environ.get("MAILGATE_TEST_REDIS_URL") or (
        redis_server.url if redis_server is not None else ""
    )
    client = aioredis.Redis.from_url(url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()
    return url


@pytest.fixture
async def private_redis(tmp_path: Path) -> AsyncIterator[EmbeddedRedis]:
    """A Redis of this test's own, so it can be restarted."""
    server = EmbeddedRedis(tmp_path / "redis")
    await asyncio.to_thread(server.start)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop, force=True)


@pytest.fixture
def settings(tmp_path: Path, database_url: str, redis_url: str) -> Settings:
    """Settings pointing at this test's database and Redis, ephemeral ports, fixed key."""
    return load_settings(
        database_url=database_url,
        redis_url=redis_url,
        data_dir=tmp_path / "data",
        http_listen="127.0.0.1:0",
        smtp_listen="127.0.0.1:0",
        secret_key="test-secret-key-0123456789abcdef0123456789",
        bounce_domains="bounces.test",
        log_format="text",
        # Import and export files live in the test's own directory (the default allows only
        # data_dir/imports and data_dir/exports; tests/campaigns checks that default).
        file_roots=[str(tmp_path)],
    )


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[App]:
    """An open App (pool, Redis client, metrics) on this test's servers."""
    assert settings.database_url is not None and settings.redis_url is not None
    urls = Urls(settings.database_url.get_secret_value(), settings.redis_url.get_secret_value())
    async with open_app(settings, urls) as opened:
        yield opened


@pytest.fixture
async def services(app: App) -> AsyncIterator[Services]:
    """The process's services on ``app`` (delivery's Sender, metrics), closed afterwards."""
    made = Services(app)
    try:
        yield made
    finally:
        await made.aclose()


@pytest.fixture(autouse=True)
def fail_on_loop_exceptions(request: pytest.FixtureRequest) -> Iterator[list[dict[str, Any]]]:
    """Fail a test when its event loop reports an unhandled exception (a task that died
    unobserved, a callback that raised), which asyncio would otherwise only log."""
    errors: list[dict[str, Any]] = []
    if request.node.get_closest_marker("allow_loop_errors"):
        yield errors
        return
    original = asyncio.BaseEventLoop.call_exception_handler

    def record(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        errors.append(context)
        original(loop, context)  # type: ignore[arg-type]

    asyncio.BaseEventLoop.call_exception_handler = record  # type: ignore[method-assign,assignment]
    try:
        yield errors
    finally:
        asyncio.BaseEventLoop.call_exception_handler = original  # type: ignore[method-assign]
    if errors:
        described = "; ".join(f"{c.get('message')}: {c.get('exception')!r}" for c in errors)
        pytest.fail(f"unhandled event-loop exception(s): {described}")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "allow_loop_errors: the test provokes event-loop errors on purpose"
    )
