"""The bounce package's Prometheus metrics, one set per process.

The listener component and the bounce job handler are built separately (one by the
daemon, one by the worker); both name the :data:`METRICS` service, so they update the same
counters (a registry takes each metric name once).
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter

from gateway.app import App
from gateway.services import Service, Services


@dataclass(frozen=True)
class BounceMetrics:
    bounces: Counter
    sessions: Counter
    rejections: Counter
    unattributed: Counter


def _build(app: App, services: Services) -> BounceMetrics:
    """The metrics on ``app``'s registry."""
    r = app.metrics.registry
    return BounceMetrics(
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
            "connections, connections_per_ip, bad_address, envelope, memory, storage).",
            ["cause"],
            registry=r,
        ),
        unattributed=Counter(
            "bounces_unattributed_total",
            "Reports kept but attributed to no delivery, by cause (not_verp, malformed, "
            "forged, unknown_delivery, postmaster, no_match, no_evidence).",
            ["cause"],
            registry=r,
        ),
    )


METRICS: Service[BounceMetrics] = Service("bounces.metrics", _build)
