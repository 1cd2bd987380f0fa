"""The metrics service's settings: one frozen object, built once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from common.env import Env, SettingsError
from common.kafka import KafkaSettings
from common.logs import FORMATS as LOG_FORMATS
from common.topics import TopicSettings

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
OFFSET_RESETS = ("latest", "earliest")


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    kafka: KafkaSettings
    topics: TopicSettings
    # Its own group: the metrics service must see every event whatever other readers do.
    group_id: str = "postback-metrics"
    host: str = "127.0.0.1"
    port: int = 9102
    # Distinct operator ids / recipient countries that get their own label value; later ones
    # are counted as `other` (see consumers.metrics.aggregate.LabelGuard).
    top_operators: int = 50
    top_countries: int = 100
    # Where a group with no committed offset starts. "latest": a new deployment counts what
    # happens from now on instead of replaying a week of history into its counters at once.
    auto_offset_reset: str = "latest"
    log_level: str = "INFO"
    log_format: str = "json"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> MetricsSettings:
        env = Env(environ)
        port = env.integer("METRICS_PORT", 9102, minimum=0)
        if port > 65535:
            raise SettingsError(f"METRICS_PORT: must be at most 65535, got {port}")
        return cls(
            kafka=KafkaSettings.from_environ(environ),
            topics=TopicSettings.from_environ(environ),
            group_id=env.text("METRICS_GROUP_ID", "postback-metrics"),
            host=env.text("METRICS_HOST", "127.0.0.1"),
            port=port,
            top_operators=env.integer("METRICS_TOP_OPERATORS", 50, minimum=0),
            top_countries=env.integer("METRICS_TOP_COUNTRIES", 100, minimum=0),
            auto_offset_reset=env.choice("METRICS_AUTO_OFFSET_RESET", "latest", OFFSET_RESETS),
            log_level=env.choice("LOG_LEVEL", "INFO", LOG_LEVELS),
            log_format=env.choice("LOG_FORMAT", "json", LOG_FORMATS),
        )
