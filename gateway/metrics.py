"""Prometheus metrics of one mailgate process.

All metrics live in one :class:`~prometheus_client.CollectorRegistry` owned by the daemon
(not the library's global default), so tests build as many independent daemons as they
like. Components add their own metrics to ``Metrics.registry`` when they start.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

log = logging.getLogger(__name__)

Refresher = Callable[[], Awaitable[object]]

JOB_BUCKETS_S = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
)


class Metrics:
    """The registry and the metrics the ground floor itself updates."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.jobs_completed = Counter(
            "jobs_completed_total", "Jobs completed successfully.", ["queue"], registry=r
        )
        self.jobs_failed = Counter(
            "jobs_failed_total",
            "Job attempts that raised (retried or dead-lettered).",
            ["queue"],
            registry=r,
        )
        self.job_duration = Histogram(
            "job_duration_seconds",
            "Time spent running a job's handler.",
            ["queue"],
            buckets=JOB_BUCKETS_S,
            registry=r,
        )
        self.jobs_retried = Counter(
            "jobs_retried_total",
            "Jobs scheduled for a retry after a failure.",
            ["queue"],
            registry=r,
        )
        self.jobs_timed_out = Counter(
            "jobs_timed_out_total",
            "Job attempts cancelled for running past their family's limit (job_timeouts).",
            ["queue"],
            registry=r,
        )
        self.jobs_dead = Counter(
            "jobs_dead_total", "Jobs moved to the dead-letter queue.", ["queue"], registry=r
        )
        self.queue_depth = Gauge(
            "queue_depth",
            "Jobs waiting per queue (also :delayed and :dead).",
            ["queue"],
            registry=r,
        )
        self.component_up = Gauge(
            "component_up", "1 while a daemon component runs.", ["component"], registry=r
        )
        self.build_info = Gauge(
            "mailgate_info",
            "Constant 1, labelled with the running version.",
            ["version"],
            registry=r,
        )

        # Gauges read from elsewhere (queue depths in Redis) are refreshed when scraped, so
        # an unscraped daemon spends nothing on them.
        self._refreshers: list[Refresher] = []

    def add_refresher(self, refresher: Refresher) -> None:
        """Run ``refresher`` before each scrape (at most 2 s; failures are logged)."""
        self._refreshers.append(refresher)

    def remove_refresher(self, refresher: Refresher) -> None:
        if refresher in self._refreshers:
            self._refreshers.remove(refresher)

    async def refresh(self) -> None:
        if not self._refreshers:
            return
        results = await asyncio.gather(
            *(asyncio.wait_for(r(), timeout=2.0) for r in self._refreshers),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                log.warning("metrics refresh failed: %s", result)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric in the registry."""
        return generate_latest(self.registry)
