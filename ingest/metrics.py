"""Ingest's metrics, on the process registry (``app.metrics.registry``)."""

from __future__ import annotations

import weakref

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ingest.machine import State

LATENCY_BUCKETS_S = (0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30, 60, 300, 1800, 3600, 86400)


_BY_REGISTRY: weakref.WeakKeyDictionary[CollectorRegistry, IngestMetrics] = (
    weakref.WeakKeyDictionary()
)


class IngestMetrics:
    """The ingest metrics of one registry (one set per registry, however many components)."""

    @classmethod
    def of(cls, registry: CollectorRegistry) -> IngestMetrics:
        found = _BY_REGISTRY.get(registry)
        if found is None:
            found = _BY_REGISTRY[registry] = cls(registry)
        return found

    def __init__(self, registry: CollectorRegistry):
        self.connections = Gauge(
            "imap_connections", "IMAP watchers by state.", ["state"], registry=registry
        )
        self.messages = Counter(
            "ingest_messages_total",
            "Messages stored from mailboxes, by type (email, reply, auto_reply, bounce, "
            "complaint, duplicate).",
            ["type"],
            registry=registry,
        )
        self.latency = Histogram(
            "ingest_latency_seconds",
            "Server arrival (INTERNALDATE, whole seconds) to committed row.",
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.reconnects = Counter(
            "imap_reconnects_total", "IMAP sessions re-opened after a failure.", registry=registry
        )

    def set_states(self, counts: dict[State, int]) -> None:
        for state in State:
            self.connections.labels(state.value).set(counts.get(state, 0))
