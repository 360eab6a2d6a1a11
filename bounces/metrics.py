"""The bounce package's Prometheus metrics, created once per process registry.

The listener component and the bounce job handler are built separately (one by the
daemon, one by the worker), but share one :class:`~gateway.app.App`: the metrics are made
on first use and kept in ``app.extras`` so both update the same counters.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter

from gateway.app import App

_EXTRAS_KEY = "bounces.metrics"


@dataclass(frozen=True)
class BounceMetrics:
    bounces: Counter
    sessions: Counter
    rejections: Counter
    unattributed: Counter


def bounce_metrics(app: App) -> BounceMetrics:
    """The metrics of ``app``'s registry (made on first call)."""
    existing = app.extras.get(_EXTRAS_KEY)
    if isinstance(existing, BounceMetrics):
        return existing
    r = app.metrics.registry
    made = BounceMetrics(
        bounces=Counter(
            "bounces_total",
            "Reports processed and attributed to a delivery, by kind (dsn, delayed, "
            "complaint, auto_reply, not_bounce), bounce type and Sisimai reason.",
            ["kind", "bounce_type", "reason"],
            registry=r,
        ),
        sessions=Counter(
            "smtp_sessions_total",
            "Bounce listener SMTP sessions by result (accepted: at least one message "
            "stored; empty, refused, timeout, error).",
            ["result"],
            registry=r,
        ),
        rejections=Counter(
            "smtp_listener_rejections_total",
            "Bounce listener refusals by cause (relay, recipients, size, line_length, "
            "connections, connections_per_ip, bad_address, storage).",
            ["cause"],
            registry=r,
        ),
        unattributed=Counter(
            "bounces_unattributed_total",
            "Reports kept but attributed to no delivery, by cause (not_verp, malformed, "
            "forged, unknown_delivery, no_match).",
            ["cause"],
            registry=r,
        ),
    )
    app.extras[_EXTRAS_KEY] = made
    return made
