"""Prometheus metrics of delivery: the :data:`METRICS` service, one set per process."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

from gateway.app import App
from gateway.services import Service, Services

SEND_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


@dataclass(frozen=True)
class DeliveryMetrics:
    deliveries: Counter
    send_seconds: Histogram
    rate_limited: Counter
    pool_connections: Gauge


def _build(app: App, services: Services) -> DeliveryMetrics:
    """The delivery metrics on ``app``'s registry."""
    r = app.metrics.registry
    return DeliveryMetrics(
        deliveries=Counter(
            "smtp_deliveries_total",
            "Send attempts by result class: sent, deferred (4xx/transport), failed (5xx), "
            "suppressed, expired, duplicate (already final).",
            ["result"],
            registry=r,
        ),
        send_seconds=Histogram(
            "smtp_send_seconds",
            "Time of one SMTP transaction (connection from the pool, MAIL, RCPT, DATA).",
            buckets=SEND_BUCKETS_S,
            registry=r,
        ),
        rate_limited=Counter(
            "rate_limited_total",
            "Sends deferred by a rate limit, by limit scope.",
            ["scope"],
            registry=r,
        ),
        pool_connections=Gauge(
            "smtp_pool_connections", "Open pooled SMTP connections in this process.", registry=r
        ),
    )


METRICS: Service[DeliveryMetrics] = Service("delivery.metrics", _build)
