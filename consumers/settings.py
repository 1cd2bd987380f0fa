"""The processor's settings: one frozen object, built once from the environment."""

from __future__ import annotations

from dataclasses import dataclass

from common.env import (
    Secret,
    Settings,
    SettingsError,
    flag,
    integer,
    items,
    log_format_setting,
    log_level_setting,
    port_number,
    seconds_as_ms,
    secret,
    section,
    setting,
    text,
)
from common.kafka import KafkaSettings
from common.raw_record import KEY_FIELD
from common.topics import TopicSettings
from consumers.processor.window import DEFAULT_MAX_KEYS

HOUR_MS = 60 * 60 * 1000
# An HMAC key shorter than its hash's output (32 bytes for SHA-256) weakens it (RFC 2104 §3).
PSEUDONYM_KEY_MIN_CHARS = 32


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
class ProcessorGroupSettings(Settings):
    """What a reader of the processor's work needs, and nothing it does not (`trace` reads the
    topics, the group's offsets and the identity, and emits nothing)."""

    kafka: KafkaSettings = section(KafkaSettings.from_environ)
    topics: TopicSettings = section(TopicSettings.from_environ)
    group_id: str = setting("PROCESSOR_GROUP_ID", text, "postback-processor")
    identity_fields: tuple[str, ...] = setting("DEDUPE_IDENTITY_FIELDS", identity_fields, ())


@dataclass(frozen=True, slots=True)
class ProcessorSettings(ProcessorGroupSettings):
    # Transactional ids are `<prefix>.<raw topic>.<partition>`: one per input partition, so a
    # new owner of a partition fences whoever held it before (see consumers/runtime.py).
    transactional_id_prefix: str = setting(
        "PROCESSOR_TRANSACTIONAL_ID_PREFIX", text, "postback-processor"
    )
    # Each partition's state changes, written with its events (consumers/changelog.py).
    state_topic: str = setting("KAFKA_TOPIC_STATE", text, "postbacks.processor-state")
    commit_interval_ms: int = setting("PROCESSOR_COMMIT_INTERVAL_MS", integer(minimum=1), 100)
    commit_max_records: int = setting("PROCESSOR_COMMIT_MAX_RECORDS", integer(minimum=1), 5000)
    # The coordinator aborts (and fences) a transaction left open longer than this: the most
    # a crashed instance's open transaction holds up read_committed readers of its partitions.
    transaction_timeout_ms: int = setting(
        "PROCESSOR_TRANSACTION_TIMEOUT_MS", integer(minimum=1000), 60_000
    )
    dedupe_window_ms: int = setting(
        "DEDUPE_WINDOW_SECONDS", seconds_as_ms(minimum=1801), 6 * HOUR_MS
    )
    dedupe_max_keys: int = setting("DEDUPE_MAX_KEYS", integer(minimum=1), DEFAULT_MAX_KEYS)
    latency_max_age_ms: int = setting(
        "LATENCY_MAX_AGE_SECONDS", seconds_as_ms(minimum=1), 6 * HOUR_MS
    )
    # How soon the group notices a dead instance and moves its partitions.
    session_timeout_ms: int = setting("PROCESSOR_SESSION_TIMEOUT_MS", integer(minimum=1000), 10_000)
    host: str = setting("PROCESSOR_HOST", text, "127.0.0.1")
    port: int = setting("PROCESSOR_PORT", port_number, 9101)
    log_level: str = log_level_setting()
    log_format: str = log_format_setting()
    # Privacy of postbacks.events (docs/events.md, "Privacy"): subscriber numbers become keyed
    # pseudonyms unless turned off, and message content is left out unless turned on.
    pseudonymise_numbers: bool = setting("EVENTS_PSEUDONYMISE_NUMBERS", flag, True)
    pseudonym_key: Secret | None = setting("EVENTS_PSEUDONYM_KEY", secret, None)
    include_content: bool = setting("EVENTS_INCLUDE_CONTENT", flag, False)

    def __post_init__(self) -> None:
        """The pseudonym key is required while numbers are pseudonymised, so privacy is the
        default and publishing numbers verbatim takes EVENTS_PSEUDONYMISE_NUMBERS=false."""
        if not self.pseudonymise_numbers:
            return
        if self.pseudonym_key is None:
            raise SettingsError(
                "EVENTS_PSEUDONYM_KEY: required, the secret that turns subscriber numbers into "
                "pseudonyms on postbacks.events (or set EVENTS_PSEUDONYMISE_NUMBERS=false to "
                "publish them verbatim)"
            )
        if len(self.pseudonym_key.reveal()) < PSEUDONYM_KEY_MIN_CHARS:
            raise SettingsError(
                f"EVENTS_PSEUDONYM_KEY: must be at least {PSEUDONYM_KEY_MIN_CHARS} characters "
                "(e.g. `openssl rand -hex 32`)"
            )
