"""The warmup plan, pure: the quota ramp, the day's send times, pairing, reply decisions.

Nothing here reads a clock or a database: every function takes the day, the time and a
seed, so the planner, the CLI and the tests (with simulated days) compute the same plan.

* Day n's quota (n = 0 on ``started_on``): ``min(daily_start + n x daily_increment,
  daily_max)``, never above the account's own daily send limit; 0 before the start and, with
  ``weekdays_only``, on Saturdays and Sundays.
* The day's send times: the quota spread over the sending window (whole hours in the
  account's time zone), one send per equal slot at a random point inside it (jitter), from
  a generator seeded by account and day. The schedule is therefore the same in every
  instance and after a restart: "due now" is how many of its times have passed, and the
  planner plans only what is due and not yet planned.
* Pairing: never the sender itself; never the receiver of the sender's previous message
  when another is possible (the stronger rule); among the rest, another mailbox host when
  one exists.
* Replies: the k-th message of a sender's day is answered when ``floor((k+1)*r) >
  floor(k*r)`` (r the receiver's reply rate): over any day the replies are within one of
  ``r x sent``, not a coin toss's spread.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class Ramp:
    """The ramp part of a ``warmup_configs`` row."""

    daily_start: int
    daily_increment: int
    daily_max: int
    started_on: dt.date
    weekdays_only: bool = False


def day_index(ramp: Ramp, day: dt.date) -> int:
    """n of the issue: 0 on ``started_on`` (negative before it)."""
    return (day - ramp.started_on).days


def quota(ramp: Ramp, day: dt.date, account_limit: int | None = None) -> int:
    """Sends allowed on ``day``; ``account_limit`` is the account's own daily limit
    (``None`` or 0: none)."""
    n = day_index(ramp, day)
    if n < 0 or (ramp.weekdays_only and day.weekday() >= 5):
        return 0
    q = min(ramp.daily_start + n * ramp.daily_increment, ramp.daily_max)
    if account_limit:
        q = min(q, account_limit)
    return max(0, q)


@dataclass(frozen=True)
class Window:
    """The sending window: ``[start_hour, end_hour)`` local time in ``time_zone``."""

    start_hour: int = 8
    end_hour: int = 18
    time_zone: str = "UTC"

    def bounds(self, day: dt.date) -> tuple[dt.datetime, dt.datetime]:
        """The window of ``day`` as two aware UTC datetimes."""
        tz = ZoneInfo(self.time_zone)
        start = dt.datetime.combine(day, dt.time(self.start_hour), tzinfo=tz)
        if self.end_hour >= 24:
            end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), tzinfo=tz)
        else:
            end = dt.datetime.combine(day, dt.time(self.end_hour), tzinfo=tz)
        return start.astimezone(dt.UTC), end.astimezone(dt.UTC)

    def local_day(self, now: dt.datetime) -> dt.date:
        """The account's calendar day at ``now`` (aware)."""
        return now.astimezone(ZoneInfo(self.time_zone)).date()


def schedule(count: int, day: dt.date, window: Window, seed: str) -> list[dt.datetime]:
    """``count`` send times on ``day``, sorted: one per equal slot of the window, at a
    random point between 10 % and 90 % of it (so two sends never share a slot edge)."""
    if count <= 0:
        return []
    start, end = window.bounds(day)
    slot = (end - start) / count
    rng = random.Random(f"{seed}:{day.isoformat()}")
    return [start + slot * i + slot * rng.uniform(0.1, 0.9) for i in range(count)]


def to_plan(times: Sequence[dt.datetime], planned: int, now: dt.datetime, all_now: bool) -> int:
    """How many sends to plan now: the due ones (all of today's with ``all_now``) not yet
    planned."""
    due = len(times) if all_now else sum(1 for t in times if t <= now)
    return max(0, due - planned)


@dataclass(frozen=True)
class Member:
    """A pool account: who, whose, and which mailbox host it lives on."""

    account_id: str
    tenant_id: str
    host: str
    reply_rate: float = 0.3
    address: str = ""


def pick_receiver(
    sender: Member, pool: Sequence[Member], last_receiver: str | None, rng: random.Random
) -> Member | None:
    """The receiver of the sender's next message (None: the pool has no one else)."""
    candidates = [m for m in pool if m.account_id != sender.account_id]
    if not candidates:
        return None
    fresh = [m for m in candidates if m.account_id != last_receiver]
    if fresh:
        candidates = fresh
    elsewhere = [m for m in candidates if m.host != sender.host]
    if elsewhere:
        candidates = elsewhere
    return rng.choice(sorted(candidates, key=lambda m: (m.tenant_id, m.account_id)))


def reply_planned(k: int, rate: float) -> bool:
    """Whether the k-th message (0-based) of a sender's day gets a reply at ``rate``."""
    if rate <= 0:
        return False
    return math.floor((k + 1) * rate + 1e-9) > math.floor(k * rate + 1e-9)


def chance(key: str, rate: float) -> bool:
    """A stable yes at ``rate`` for ``key`` (a retried step decides the same)."""
    if rate >= 1:
        return True
    value = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")
    return value / 2**64 < rate
