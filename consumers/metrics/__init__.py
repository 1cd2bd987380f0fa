"""The metrics service: reads `postbacks.events` in its own consumer group, exports Prometheus.

It is a reader only: it never writes to Kafka, and losing its state costs nothing but counters
that restart at zero, which Prometheus' `rate()` and `increase()` already treat as a reset.
aggregate.py turns one event into metric updates (pure), instruments.py declares every metric,
service.py owns the Kafka consumer and the ops HTTP server. Metric list: docs/metrics.md.
"""
