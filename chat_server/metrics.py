"""Prometheus metrics, one registry per application (no import-time global state)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.events = Counter(
            "chat_events_total", "Client events handled, by event and outcome code", ["event", "outcome"], registry=self.registry
        )
        self._event_counters: dict[tuple[str, str], Any] = {}
        self.connections = Gauge("chat_connections", "Live connections on this node", ["transport"], registry=self.registry)
        # Group commit of new messages: batches written and messages in them (mean batch
        # size = batched / batches).
        self.message_batches = Counter("chat_message_batches", "Message insert batches written", registry=self.registry)
        self.messages_batched = Counter("chat_message_batched", "Messages written in insert batches", registry=self.registry)
        # What a sender's ack waits for besides this node: the statement and its commit
        # (the flush to disk).  Its tail is the ack latency's tail (docs/protocol.md §6).
        self.message_batch_seconds = Histogram(
            "chat_message_batch_seconds", "Time to store one insert batch of messages (statement and commit)",
            buckets=BATCH_SECONDS_BUCKETS, registry=self.registry)

    def count_batch(self, size: int, seconds: float) -> None:
        self.message_batches.inc()
        self.messages_batched.inc(size)
        self.message_batch_seconds.observe(seconds)

    def watch_fanout(self, stats: Any) -> None:
        """Expose realtime/fanout.py's counters (plain ints on the hot path, read at scrape time)."""
        self.registry.register(_FanoutCollector(stats))

    def count_event(self, event: str, outcome: str) -> None:
        # Unknown event names come from clients: bucket them to keep cardinality bounded.
        key = (event if event in KNOWN_EVENTS else "other", outcome)
        child = self._event_counters.get(key)
        if child is None:  # labels() takes a lock and builds the key: once per pair, not per event
            child = self._event_counters[key] = self.events.labels(*key)
        child.inc()


#: Fine below 20 ms (the ack latency target) so that a percentile read from the buckets
#: says on which side of it the commits fall.
BATCH_SECONDS_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

KNOWN_EVENTS = frozenset(
    {"join_room", "leave_room", "send_message", "typing", "react", "edit_message", "delete_message"}
)


class _FanoutCollector(Collector):
    def __init__(self, stats: Any) -> None:
        self._stats = stats

    def collect(self) -> Iterator[CounterMetricFamily]:
        stats = self._stats
        deliveries = CounterMetricFamily("chat_fanout_deliveries", "Socket.IO broadcast deliveries on this node, by path "
                                         "(direct: frame written straight to the WebSocket; queued: the library's queue)", labels=["path"])
        deliveries.add_metric(["direct"], stats.direct_deliveries)
        deliveries.add_metric(["queued"], stats.queued_deliveries)
        yield deliveries
        yield CounterMetricFamily("chat_fanout_broadcasts", "Broadcasts encoded once by the fast fan-out path", value=stats.broadcasts)
        yield CounterMetricFamily("chat_fanout_direct_packets", "Other Socket.IO packets (acks, pings, calls) written straight to the WebSocket",
                                  value=stats.direct_packets)
        yield CounterMetricFamily("chat_direct_events", "Socket.IO events of WebSocket clients read and dispatched without the "
                                  "library's per-packet layers (the rest take the stock path)", value=stats.direct_events)
        yield CounterMetricFamily("chat_fanout_writes", "Writes to WebSocket transports by the fast path (most often one send system "
                                  "call each; fewer writes than deliveries and packets means frames shared writes)", value=stats.writes)
        yield CounterMetricFamily("chat_fanout_slow_disconnects", "Clients dropped because their unsent bytes passed SLOW_CLIENT_BUFFER_BYTES",
                                  value=stats.slow_disconnects)
