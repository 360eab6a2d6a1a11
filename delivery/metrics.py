"""Prometheus metrics of delivery, created once per registry (several handlers, one set)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

from gateway.app import App

SEND_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_EXTRA_KEY = "delivery.metrics"


@dataclass(frozen=True)
class DeliveryMetrics:
    deliveries: Counter
    send_seconds: Histogram
    rate_limited: Counter
    pool_connections: Gauge


def delivery_metrics(app: App) -> DeliveryMetrics:
    """The delivery metrics on ``app``'s registry (made on first use)."""
    found = app.extras.get(_EXTRA_KEY)
    if isinstance(found, DeliveryMetrics):
        return found
    r = app.metrics.registry
    made = DeliveryMetrics(
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
    app.extras[_EXTRA_KEY] = made
    return made
