"""What ingest instances share in Redis: mailbox leases and the login rate limit.

Key schema (the only place these names are spelled):

* ``mailgate:ingest:lease:{account_id}`` -> holder id, with a TTL (ms). Exactly one live
  instance watches a mailbox: it takes the lease with ``SET NX PX``, renews it every third of
  the TTL (:data:`RENEW` checks it still holds it), releases it on a clean stop
  (:data:`RELEASE`). A dead holder's lease expires, and another instance takes it on its
  next account poll.
* ``mailgate:ingest:logins:{imap_host}`` -> hash ``tokens``, ``ts_ms``: a token bucket
  (:data:`BUCKET_TAKE`) shared by every instance, so a storm of reconnects after a server
  restart logs in at ``ingest_logins_per_min`` at most.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import socket
import time

import redis.asyncio as aioredis

LEASE_PREFIX = "mailgate:ingest:lease:"
LOGINS_PREFIX = "mailgate:ingest:logins:"

# Renew a lease only if we still hold it.
#   KEYS[1]: lease key   ARGV[1]: holder id   ARGV[2]: ttl ms    -> 1 renewed, 0 lost
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# Release a lease only if we hold it.
#   KEYS[1]: lease key   ARGV[1]: holder id    -> 1 released, 0 not ours
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# Token bucket: take one token or say how long to wait.
#   KEYS[1]: bucket key   ARGV[1]: capacity   ARGV[2]: refill per ms   ARGV[3]: now ms
#   -> 0 (taken) or the milliseconds until a token is available
BUCKET_TAKE = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts_ms')
local tokens = tonumber(state[1]) or capacity
local ts = tonumber(state[2]) or now
if now > ts then tokens = math.min(capacity, tokens + (now - ts) * rate) end
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = math.ceil((1 - tokens) / rate) end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts_ms', tostring(math.max(now, ts)))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate) + 60000)
return wait
"""


def instance_id() -> str:
    return f"ingest-{socket.gethostname()}-{secrets.token_hex(4)}"


class Leases:
    """Mailbox leases held by one instance."""

    def __init__(self, redis: aioredis.Redis, holder: str, ttl_s: float):
        self.redis = redis
        self.holder = holder
        self.ttl_ms = max(1000, int(ttl_s * 1000))
        self._renew = redis.register_script(RENEW)
        self._release = redis.register_script(RELEASE)

    async def acquire(self, account_id: str) -> bool:
        """Take the lease if nobody holds it (or we already do)."""
        key = LEASE_PREFIX + account_id
        if await self.redis.set(key, self.holder, nx=True, px=self.ttl_ms):
            return True
        return bool(await self._renew(keys=[key], args=[self.holder, self.ttl_ms]))

    async def renew(self, account_ids: list[str]) -> set[str]:
        """Renew ours; return the ids whose lease we no longer hold (stop those watchers)."""
        if not account_ids:
            return set()
        async with self.redis.pipeline(transaction=False) as pipe:
            for account_id in account_ids:
                await self._renew(
                    keys=[LEASE_PREFIX + account_id], args=[self.holder, self.ttl_ms], client=pipe
                )
            results = await pipe.execute()
        return {a for a, ok in zip(account_ids, results, strict=True) if not ok}

    async def release(self, account_id: str) -> None:
        await self._release(keys=[LEASE_PREFIX + account_id], args=[self.holder])


class LoginLimiter:
    """Waits for a login token of the IMAP host's shared bucket."""

    def __init__(self, redis: aioredis.Redis, per_min: int, burst: int):
        self.redis = redis
        self.capacity = max(1, burst)
        self.rate_per_ms = per_min / 60_000.0
        self._take = redis.register_script(BUCKET_TAKE)

    async def wait_turn(self, host: str, rng: random.Random) -> float:
        """Return once a token is taken; the seconds waited."""
        waited = 0.0
        key = LOGINS_PREFIX + host.lower()
        while True:
            now_ms = int(time.time() * 1000)
            wait_ms = int(
                await self._take(keys=[key], args=[self.capacity, self.rate_per_ms, now_ms])
            )
            if wait_ms <= 0:
                return waited
            # A little jitter so waiters that were told the same time do not collide.
            delay = wait_ms / 1000.0 * (1.0 + 0.2 * rng.random())
            waited += delay
            await asyncio.sleep(delay)
