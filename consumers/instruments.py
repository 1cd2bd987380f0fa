"""Every metric the processor exports, declared against an injected registry.

Counters move once per batch (by the batch's count), never per record: the per-record path
stays free of metric calls.
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

TRANSACTION_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5)
RESTORE_BUCKETS = (0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class ProcessorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.consumed = Counter(
            "postback_processor_records_consumed",
            "Raw records read from the raw topic and processed (committed or not).",
            registry=registry,
        )
        self.emitted = Counter(
            "postback_processor_events_emitted",
            "Events written to the events topic in committed transactions.",
            registry=registry,
        )
        self.duplicates = Counter(
            "postback_processor_duplicates_dropped",
            "Records dropped because the same notification was emitted inside the window.",
            registry=registry,
        )
        self.dead_letters = Counter(
            "postback_processor_dead_letters",
            "Records written to the dead-letter topic in committed transactions, by reason.",
            ["reason"],
            registry=registry,
        )
        self.transactions = Counter(
            "postback_processor_transactions",
            "Kafka transactions ended, by result (committed or aborted).",
            ["result"],
            registry=registry,
        )
        self.transaction_seconds = Histogram(
            "postback_processor_transaction_duration_seconds",
            "Time to add the offsets to a transaction and commit it.",
            buckets=TRANSACTION_BUCKETS,
            registry=registry,
        )
        self.lag = Gauge(
            "postback_processor_consumer_lag",
            "Records in the raw topic not yet processed, per partition (at the last commit).",
            ["partition"],
            registry=registry,
        )
        self.dedupe_keys = Gauge(
            "postback_processor_dedupe_keys",
            "Notification digests held by the dedupe window, per partition.",
            ["partition"],
            registry=registry,
        )
        self.dedupe_bytes = Gauge(
            "postback_processor_dedupe_bytes",
            "Approximate memory held by the dedupe window, per partition.",
            ["partition"],
            registry=registry,
        )
        self.dedupe_evicted_early = Gauge(
            "postback_processor_dedupe_evicted_early",
            "Keys the DEDUPE_MAX_KEYS cap forgot before the window ended (should stay 0).",
            ["partition"],
            registry=registry,
        )
        self.latency_waiting = Gauge(
            "postback_processor_latency_join_entries",
            "Messages waiting for their other delivery notification, per partition.",
            ["partition"],
            registry=registry,
        )
        self.restore_seconds = Histogram(
            "postback_processor_restore_duration_seconds",
            "Time to rebuild a partition's dedupe and latency state on assignment.",
            buckets=RESTORE_BUCKETS,
            registry=registry,
        )
        self.restored_records = Counter(
            "postback_processor_restored_records",
            "Records read to rebuild state on assignment, by source: state (records of the "
            "state topic, each a transaction's change) or raw (raw records re-read).",
            ["source"],
            registry=registry,
        )
        self.partition_opens = Counter(
            "postback_processor_partition_opens",
            "Partitions taken on, by how their state was had: kept (this instance owned it "
            "until a moment ago), state (rebuilt from the state topic), raw (re-read from the "
            "raw topic: the state topic could not serve, see the log).",
            ["state"],
            registry=registry,
        )
        self.assigned_partitions = Gauge(
            "postback_processor_assigned_partitions",
            "Raw-topic partitions this instance owns right now.",
            registry=registry,
        )

    def forget_partition(self, partition: int) -> None:
        """A revoked partition's gauges would otherwise report stale state forever."""
        label = str(partition)
        for gauge in (
            self.lag,
            self.dedupe_keys,
            self.dedupe_bytes,
            self.dedupe_evicted_early,
            self.latency_waiting,
        ):
            with contextlib.suppress(KeyError):
                gauge.remove(label)
