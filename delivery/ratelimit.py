"""Rate limits that hold across instances: sliding-window logs in Redis, one Lua call.

Limits (all optional, 0 = none): per sending account per minute / hour / day (the day cap
ramps for warmup), per recipient domain per minute plus concurrent transactions, per tenant
per minute. A send asks :meth:`RateLimiter.acquire` for all of them at once; the script
either admits it into every window (and takes a concurrency lease) or admits it into none
and says how long until it would fit. Windows are exact sliding logs (a sorted set of
admission times), so no rolling window ever holds more than its limit, unlike fixed
windows which allow twice the limit across a boundary. Each period is stretched by
``SLACK`` (1 %) so sends that leave a moment after admission still fit a rolling window
counted at the receiver.

Pacing: a limit of at least ``PACE_MIN`` also gets a sub-window of a twelfth of its period
holding a sixth of the limit (600/minute: at most 100 in any 5 s). Without it a fresh window
admits the whole limit at once, that burst queues behind the connection pool and DKIM, and
its sends reach the receiver seconds after their admission, where they share a rolling
minute with the next window's first admissions (measured: 654 in a rolling minute of sent
times under a 600/minute limit on a loaded machine). Paced, admission and send stay close.

Key schema (the one place)::

    mailgate:rl:{scope}:{id}:{period_ms}   zset  member = admission id, score = time (ms)
    mailgate:rl:conc:{domain}              zset  member = admission id, score = lease expiry

ACQUIRE  KEYS: the window keys, then the concurrency key (or none)
         ARGV[1] now_ms  ARGV[2] member  ARGV[3] n windows
         ARGV[4..]: limit, period_ms per window; then conc limit, lease_ms (if a conc key)
         returns {0} admitted, or {wait_ms, index} (index: the first full limit, 1-based)
RELEASE  KEYS[1] the concurrency key   ARGV[1] member
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as aioredis

SLACK = 1.01
PACE_MIN = 60  # limits from this size up are paced
PACE_SLICES = 12  # sub-window = period / 12
PACE_SHARE = 6  # holding limit / 6 (twice the even rate)
CONC_RETRY_MS = 250
PREFIX = "mailgate:rl:"

ACQUIRE = """
local now = tonumber(ARGV[1])
local member = ARGV[2]
local n = tonumber(ARGV[3])
local wait = 0
local which = 0
for i = 1, n do
  local limit = tonumber(ARGV[2 + 2 * i])
  local period = tonumber(ARGV[3 + 2 * i])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - period)
  local count = redis.call('ZCARD', KEYS[i])
  if count >= limit then
    local oldest = redis.call('ZRANGE', KEYS[i], count - limit, count - limit, 'WITHSCORES')
    local w = tonumber(oldest[2]) + period - now + 1
    if w > wait then wait = w; which = i end
  end
end
local conc = KEYS[n + 1]
if conc then
  local climit = tonumber(ARGV[4 + 2 * n])
  redis.call('ZREMRANGEBYSCORE', conc, '-inf', now)
  if redis.call('ZCARD', conc) >= climit then
    if wait < tonumber(ARGV[6 + 2 * n]) then wait = tonumber(ARGV[6 + 2 * n]); which = n + 1 end
  end
end
if wait > 0 then return {wait, which} end
for i = 1, n do
  redis.call('ZADD', KEYS[i], now, member)
  redis.call('PEXPIRE', KEYS[i], tonumber(ARGV[3 + 2 * i]))
end
if conc then
  local lease = tonumber(ARGV[5 + 2 * n])
  redis.call('ZADD', conc, now + lease, member)
  redis.call('PEXPIRE', conc, lease)
end
return {0}
"""

RELEASE = "return redis.call('ZREM', KEYS[1], ARGV[1])"


@dataclass(frozen=True)
class Window:
    """At most ``limit`` admissions per rolling ``period_s`` for ``scope``/``ident``."""

    scope: str  # account, domain, tenant
    ident: str
    limit: int
    period_s: float

    @property
    def key(self) -> str:
        return f"{PREFIX}{self.scope}:{self.ident}:{round(self.period_s * 1000)}"

    @property
    def name(self) -> str:
        return f"{self.scope}:{self.ident}/{self.period_s:g}s"

    def pacing(self) -> Window | None:
        """The sub-window that spreads this window's admissions (see the module text)."""
        if self.limit < PACE_MIN:
            return None
        share = -(-self.limit // PACE_SHARE)  # ceil
        return Window(self.scope, self.ident, share, self.period_s / PACE_SLICES)


@dataclass(frozen=True)
class Admission:
    """The answer: admitted (``wait_s`` 0, holding ``lease``) or wait ``wait_s``."""

    wait_s: float
    limit: str | None = None
    lease: tuple[str, str] | None = None  # (conc key, member) to release after the send

    @property
    def admitted(self) -> bool:
        return self.wait_s <= 0


class RateLimiter:
    """Admits sends against windows and a concurrency cap, atomically, in Redis."""

    def __init__(self, redis: aioredis.Redis, clock: Callable[[], float] = time.time):
        self._redis = redis
        self._acquire = redis.register_script(ACQUIRE)
        self._release = redis.register_script(RELEASE)
        self._clock = clock

    async def acquire(
        self,
        windows: list[Window],
        concurrency: tuple[str, int] | None = None,
        lease_s: float = 300.0,
    ) -> Admission:
        """Admit one send into every window (and a lease of ``concurrency=(domain, cap)``)."""
        active = [w for w in windows if w.limit > 0]
        active += [paced for w in active if (paced := w.pacing()) is not None]
        keys = [w.key for w in active]
        args: list[str | int] = [round(self._clock() * 1000), secrets.token_hex(8), len(active)]
        for w in active:
            args += [w.limit, round(w.period_s * 1000 * SLACK)]
        conc_key = None
        if concurrency is not None and concurrency[1] > 0:
            conc_key = f"{PREFIX}conc:{concurrency[0]}"
            keys.append(conc_key)
            args += [concurrency[1], round(lease_s * 1000), CONC_RETRY_MS]
        if not keys:
            return Admission(0.0)
        result = await self._acquire(keys=keys, args=args)
        wait_ms = int(result[0])
        if wait_ms > 0:
            index = int(result[1])
            name = (
                active[index - 1].name
                if index <= len(active)
                else f"conc:{concurrency[0] if concurrency else ''}"
            )
            return Admission(wait_ms / 1000.0, name)
        return Admission(0.0, None, (conc_key, str(args[1])) if conc_key else None)

    async def release(self, admission: Admission) -> None:
        """End the concurrency lease taken by ``admission`` (no-op without one)."""
        if admission.lease is not None:
            await self._release(keys=[admission.lease[0]], args=[admission.lease[1]])
