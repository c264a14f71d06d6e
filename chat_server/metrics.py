"""Prometheus metrics, one registry per application (no import-time global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.events = Counter(
            "chat_events_total", "Client events handled, by event and outcome code", ["event", "outcome"], registry=self.registry
        )
        self.connections = Gauge("chat_connections", "Live connections on this node", ["transport"], registry=self.registry)

    def count_event(self, event: str, outcome: str) -> None:
        # Unknown event names come from clients: bucket them to keep cardinality bounded.
        self.events.labels(event if event in KNOWN_EVENTS else "other", outcome).inc()


KNOWN_EVENTS = frozenset(
    {"join_room", "leave_room", "send_message", "typing", "react", "edit_message", "delete_message"}
)
