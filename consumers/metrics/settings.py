"""The metrics service's settings: one frozen object, built once from the environment."""

from __future__ import annotations

from dataclasses import dataclass

from common.env import (
    Settings,
    choice,
    integer,
    log_format_setting,
    log_level_setting,
    port_number,
    section,
    setting,
    text,
)
from common.kafka import KafkaSettings
from common.topics import TopicSettings


@dataclass(frozen=True, slots=True)
class MetricsSettings(Settings):
    kafka: KafkaSettings = section(KafkaSettings.from_environ)
    topics: TopicSettings = section(TopicSettings.from_environ)
    # Its own group: the metrics service must see every event whatever other readers do.
    group_id: str = setting("METRICS_GROUP_ID", text, "postback-metrics")
    host: str = setting("METRICS_HOST", text, "127.0.0.1")
    port: int = setting("METRICS_PORT", port_number, 9102)
    # Distinct operator ids / recipient countries that get their own label value; later ones
    # are counted as `other` (see consumers.metrics.aggregate.LabelGuard).
    top_operators: int = setting("METRICS_TOP_OPERATORS", integer(minimum=0), 50)
    top_countries: int = setting("METRICS_TOP_COUNTRIES", integer(minimum=0), 100)
    # Where a group with no committed offset starts. "latest": a new deployment counts what
    # happens from now on instead of replaying a week of history into its counters at once.
    auto_offset_reset: str = setting(
        "METRICS_AUTO_OFFSET_RESET", choice("latest", "earliest"), "latest"
    )
    log_level: str = log_level_setting()
    log_format: str = log_format_setting()
