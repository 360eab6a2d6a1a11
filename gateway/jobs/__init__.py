"""The job runtime: reliable, prioritised consumption of the platform's Redis queues.

Producers ``LPUSH`` JSON jobs onto the queue names of :mod:`gateway.jobs.keys`; one
:class:`~gateway.jobs.worker.Worker` per process takes them atomically into per-worker
processing lists (a Lua script, strict priority order, oldest first), runs the handler that
the job's queue routes to, records the outcome in PostgreSQL (batched) and then in Redis,
and schedules retries in a sorted set instead of sleeping. A reaper in every instance
returns the jobs of a worker whose heartbeat stopped.

Exceptions a handler may raise (everything else is a temporary failure, retried)::

    JobError
    ├── PermanentJobError   no further attempts: dead-lettered now
    ├── DeferJob            not a failure: run again after ``delay_s``, no attempt counted
    └── RetryJob            a failed attempt (counted, dead-lettered when the last), run
                            again after the handler's own ``delay_s`` (a retry schedule)
"""

from __future__ import annotations


class JobError(Exception):
    """Base of the exceptions handlers raise on purpose."""


class PermanentJobError(JobError):
    """The job can never succeed (bad payload, missing template variable): dead-letter it."""


class DeferJob(JobError):
    """Run the job again after ``delay_s`` without counting an attempt (e.g. rate limited)."""

    def __init__(self, delay_s: float, reason: str = "deferred"):
        super().__init__(reason)
        self.delay_s = max(0.0, float(delay_s))
        self.reason = reason


class RetryJob(JobError):
    """A failed attempt whose retry the handler times itself (webhooks' published retry
    schedule): counted like any failure, dead-lettered after the last attempt."""

    def __init__(self, delay_s: float, reason: str = "failed"):
        super().__init__(reason)
        self.delay_s = max(0.0, float(delay_s))
        self.reason = reason
