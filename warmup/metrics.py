"""Prometheus metrics of warmup: the :data:`METRICS` service, one set per process."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter, Gauge

from gateway.app import App
from gateway.services import Service, Services


@dataclass(frozen=True)
class WarmupMetrics:
    sent: Counter
    placement: Counter
    replies: Counter
    inbox_placement: Gauge


def _build(app: App, services: Services) -> WarmupMetrics:
    r = app.metrics.registry
    return WarmupMetrics(
        sent=Counter(
            "warmup_sent_total",
            "Warmup messages sent (new conversations and replies).",
            registry=r,
        ),
        placement=Counter(
            "warmup_placement_total",
            "Warmup messages judged at the receiver, by folder: inbox, spam, other, missing.",
            ["folder"],
            registry=r,
        ),
        replies=Counter("warmup_replies_total", "Threaded warmup replies sent.", registry=r),
        inbox_placement=Gauge(
            "warmup_inbox_placement_ratio",
            "Share of an account's warmup mail of the last 7 days found in INBOX (0-1).",
            ["tenant", "account"],
            registry=r,
        ),
    )


METRICS: Service[WarmupMetrics] = Service("warmup.metrics", _build)
