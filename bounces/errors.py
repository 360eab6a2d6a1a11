"""Errors of the bounce listener and bounce processing, and the one place where the errors
of the libraries they use (asyncpg, redis, the socket layer) are translated.

::

    BounceError
    ├── StorageUnavailable   PostgreSQL cannot take or give the data now: the SMTP peer gets
    │                        451 4.3.0 and retries; a job is retried with backoff
    ├── QueueUnavailable     Redis cannot take the follow-up job now: same treatment
    └── BadBounceJob         a bounce job whose payload can never be processed (permanent;
                             also a :class:`gateway.jobs.PermanentJobError`)

Everything the listener cannot explain becomes a 451 as well: a peer never sees internal
error text, and a message it was not told "250" about is retried by the peer, never lost.
"""

from __future__ import annotations

import asyncpg
import redis.exceptions

from gateway.jobs import PermanentJobError


class BounceError(Exception):
    """Base of the bounce package's errors."""


class StorageUnavailable(BounceError):
    """PostgreSQL is unreachable, overloaded, or refused the statement."""


class QueueUnavailable(BounceError):
    """Redis is unreachable or refused the command."""


class BadBounceJob(BounceError, PermanentJobError):
    """A ``queue:bounce:process`` payload that can never be processed."""


def translate_storage(exc: BaseException) -> BounceError:
    """Map an exception raised while talking to PostgreSQL to our tree.

    Every failure there is a :class:`StorageUnavailable`: availability errors obviously,
    and statement errors too, because the listener must answer 451 (never lose the message
    by answering 5xx for our own bug) and a job should be retried after a fix.
    """
    if isinstance(exc, BounceError):
        return exc
    if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError):
        return StorageUnavailable(f"postgresql: {type(exc).__name__}")
    if isinstance(exc, TimeoutError):
        return StorageUnavailable("postgresql: timed out")
    if isinstance(exc, OSError):
        return StorageUnavailable(f"postgresql unreachable: {type(exc).__name__}")
    return StorageUnavailable(f"postgresql: unexpected {type(exc).__name__}")


def translate_queue(exc: BaseException) -> BounceError:
    """Map an exception raised while talking to Redis to our tree."""
    if isinstance(exc, BounceError):
        return exc
    if isinstance(exc, redis.exceptions.RedisError):
        return QueueUnavailable(f"redis: {type(exc).__name__}")
    if isinstance(exc, TimeoutError):
        return QueueUnavailable("redis: timed out")
    if isinstance(exc, OSError):
        return QueueUnavailable(f"redis unreachable: {type(exc).__name__}")
    return QueueUnavailable(f"redis: unexpected {type(exc).__name__}")
