"""The runtime context every component receives, and how the backends are opened.

:class:`App` carries what every part needs (settings, the PostgreSQL pool, the Redis
client, metrics, the secret key): injected, never global, so tests build several. What one
package builds for others (delivery's Sender, a package's metrics) is not here but a
declared :class:`~gateway.services.Service`. The
backends come from the configured URLs or, where a URL is unset, from the embedded servers
(:mod:`gateway.embedded`), which :func:`open_backends` starts and later stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import AuthenticationError, RedisError

from gateway.embedded import EmbeddedServers
from gateway.errors import BackendUnavailable
from gateway.metrics import Metrics
from gateway.redisurl import SentinelUrl, is_sentinel, parse_sentinel_url
from gateway.secretkey import load_secret_key
from gateway.settings import Settings
from gateway.storage import create_pool

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Urls:
    """Where PostgreSQL and Redis are, after the embedded servers (if any) started."""

    database: str
    redis: str


@dataclass
class App:
    """Shared handles for one mailgate process."""

    settings: Settings
    urls: Urls
    db: asyncpg.Pool
    redis: aioredis.Redis
    metrics: Metrics
    secret_key: bytes


def make_redis(url: str, settings: Settings) -> aioredis.Redis:
    """A Redis client with mailgate's limits. The pool blocks (up to 10 s) for a free
    connection instead of failing when all ``redis_max_connections`` are busy, so a burst of
    concurrent handlers waits rather than errors.

    A ``redis+sentinel://`` URL gives a client of the service's current primary: each new
    connection asks the sentinels where it is, so after a failover the client reconnects to
    the promoted replica (commands in flight at that moment fail and are retried by their
    callers; the job runtime's WAIT keeps what it held on the replica, see
    :func:`wait_replicas`)."""
    if is_sentinel(url):
        return _sentinel_client(parse_sentinel_url(url), settings)
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=settings.redis_max_connections,
        timeout=10,
        socket_connect_timeout=5,
        health_check_interval=30,
        retry_on_timeout=False,
    )
    client: aioredis.Redis = aioredis.Redis.from_pool(pool)
    return client


class SentinelRedis(aioredis.Redis):
    """The client of a Sentinel-monitored primary; closing it also closes its connections
    to the sentinels (redis-py leaves those to the Sentinel object)."""

    sentinel_clients: list[aioredis.Redis]

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        for client in getattr(self, "sentinel_clients", []):
            await client.aclose()


def _sentinel_client(parsed: SentinelUrl, settings: Settings) -> aioredis.Redis:
    sentinel_kwargs: dict[str, Any] = {"socket_connect_timeout": 2, "socket_timeout": 2}
    if parsed.sentinel_password:
        sentinel_kwargs["password"] = parsed.sentinel_password
    sentinel = Sentinel(
        list(parsed.sentinels),
        sentinel_kwargs=sentinel_kwargs,
        socket_connect_timeout=5,
        health_check_interval=30,
        retry_on_timeout=False,
    )
    client: SentinelRedis = sentinel.master_for(
        parsed.service,
        redis_class=SentinelRedis,
        db=parsed.db,
        username=parsed.username,
        password=parsed.password,
        max_connections=settings.redis_max_connections,
    )
    client.sentinel_clients = list(sentinel.sentinels)
    return client


def wait_replicas(settings: Settings) -> int:
    """How many replicas must acknowledge the job runtime's writes (``redis_wait_replicas``;
    unset: 1 behind Sentinel, 0 otherwise)."""
    if settings.redis_wait_replicas is not None:
        return settings.redis_wait_replicas
    url = settings.redis_url.get_secret_value() if settings.redis_url is not None else ""
    return 1 if is_sentinel(url) else 0


def redis_where(url: str) -> str:
    """Where a Redis URL points, for messages (no password)."""
    if is_sentinel(url):
        try:
            return parse_sentinel_url(url).where
        except ValueError:
            return "the sentinels of MAILGATE_REDIS_URL"
    parts = urlsplit(url)
    try:
        port = parts.port or 6379
    except ValueError:
        port = 6379
    return f"{parts.hostname or 'localhost'}:{port}"


async def check_redis(client: aioredis.Redis, url: str) -> None:
    """PING once, so an unreachable Redis or a wrong password is one clear line at start
    instead of a failure deep inside the first command."""
    where = redis_where(url)
    try:
        await asyncio.wait_for(client.ping(), timeout=10)
    except AuthenticationError as exc:
        raise BackendUnavailable(
            f"Redis at {where} refused the login: {exc} (check the password in MAILGATE_REDIS_URL)"
        ) from exc
    except (RedisError, OSError, TimeoutError) as exc:
        reason = "no answer in time" if isinstance(exc, TimeoutError) else str(exc)
        raise BackendUnavailable(
            f"cannot connect to Redis at {where}: {reason} "
            "(is it running? check MAILGATE_REDIS_URL)"
        ) from exc


@contextlib.asynccontextmanager
async def open_urls(settings: Settings) -> AsyncIterator[Urls]:
    """The backend URLs, starting embedded servers for the unset ones (stopped on exit)."""
    embedded = EmbeddedServers(
        settings.data_dir,
        postgres=settings.database_url is None,
        redis=settings.redis_url is None,
    )
    db_url, redis_url = await asyncio.to_thread(embedded.start, settings.embedded_start_timeout_s)
    try:
        yield Urls(
            database=db_url or settings.database_url.get_secret_value(),  # type: ignore[union-attr]
            redis=redis_url or settings.redis_url.get_secret_value(),  # type: ignore[union-attr]
        )
    finally:
        await asyncio.to_thread(embedded.stop)


@contextlib.asynccontextmanager
async def open_app(
    settings: Settings, urls: Urls, metrics: Metrics | None = None
) -> AsyncIterator[App]:
    """Pools and clients for ``urls``; closed on exit."""
    pool = await create_pool(
        urls.database,
        min_size=settings.db_pool_min,
        max_size=max(settings.db_pool_min, settings.db_pool_max),
        connect_timeout_s=settings.db_connect_timeout_s,
        command_timeout_s=settings.db_command_timeout_s,
    )
    redis_client = make_redis(urls.redis, settings)
    try:
        await check_redis(redis_client, urls.redis)
        yield App(
            settings=settings,
            urls=urls,
            db=pool,
            redis=redis_client,
            metrics=metrics or Metrics(),
            secret_key=load_secret_key(settings),
        )
    finally:
        await redis_client.aclose()
        try:
            await asyncio.wait_for(pool.close(), timeout=10)
        except TimeoutError:
            pool.terminate()
