"""The processor's settings: one frozen object, built once from the environment."""

from __future__ import annotations

from dataclasses import dataclass

from common.env import (
    Settings,
    SettingsError,
    integer,
    items,
    log_level_setting,
    port_number,
    seconds_as_ms,
    section,
    setting,
    text,
)
from common.kafka import KafkaSettings
from common.raw_record import KEY_FIELD
from common.topics import TopicSettings

HOUR_MS = 60 * 60 * 1000


def identity_fields(variable: str, raw: str) -> tuple[str, ...]:
    """Field names for the dedupe identity; they must include the field raw records are keyed by.

    Dedupe windows are per raw partition and the edge picks the partition from the tracking
    id. An identity blind to it would call two notifications with different tracking ids the
    same, yet they could land in different partitions, and each would be emitted.
    """
    fields = items(variable, raw)
    if KEY_FIELD not in fields:
        raise SettingsError(
            f"{variable}: must include {KEY_FIELD} (got {','.join(fields)!r}): the edge "
            f"partitions postbacks by {KEY_FIELD} and each partition dedupes on its own, so "
            f"notifications this identity calls the same could still each be emitted; "
            f"e.g. origin,{KEY_FIELD},code,status"
        )
    return fields


@dataclass(frozen=True, slots=True)
class ProcessorSettings(Settings):
    kafka: KafkaSettings = section(KafkaSettings.from_environ)
    topics: TopicSettings = section(TopicSettings.from_environ)
    group_id: str = setting("PROCESSOR_GROUP_ID", text, "postback-processor")
    # Transactional ids are `<prefix>.<raw topic>.<partition>`: one per input partition, so a
    # new owner of a partition fences whoever held it before (see consumers/runtime.py).
    transactional_id_prefix: str = setting(
        "PROCESSOR_TRANSACTIONAL_ID_PREFIX", text, "postback-processor"
    )
    commit_interval_ms: int = setting("PROCESSOR_COMMIT_INTERVAL_MS", integer(minimum=1), 100)
    commit_max_records: int = setting("PROCESSOR_COMMIT_MAX_RECORDS", integer(minimum=1), 5000)
    dedupe_window_ms: int = setting(
        "DEDUPE_WINDOW_SECONDS", seconds_as_ms(minimum=1801), 6 * HOUR_MS
    )
    dedupe_max_keys: int = setting("DEDUPE_MAX_KEYS", integer(minimum=1), 2_000_000)
    identity_fields: tuple[str, ...] = setting("DEDUPE_IDENTITY_FIELDS", identity_fields, ())
    latency_max_age_ms: int = setting(
        "LATENCY_MAX_AGE_SECONDS", seconds_as_ms(minimum=1), 6 * HOUR_MS
    )
    # How soon the group notices a dead instance and moves its partitions.
    session_timeout_ms: int = setting("PROCESSOR_SESSION_TIMEOUT_MS", integer(minimum=1000), 10_000)
    host: str = setting("PROCESSOR_HOST", text, "127.0.0.1")
    port: int = setting("PROCESSOR_PORT", port_number, 9101)
    log_level: str = log_level_setting()
